"""`launcher list` in a narrow terminal: lines fit COLUMNS, the key columns stay, --wide and --columns show more,
one LR column, grid columns in the order typed, `--sort lr` by the grid's LR, an empty store says what to do,
and --json rows carry the duration and the best checkpoint."""
from __future__ import annotations

import json

import pytest

from launcher import cli
from launcher.errors import LauncherError
from launcher.views.listing import list_table, table_lines
from launcher.spec import JobSpec, JobState, Resources
from launcher.store import ExperimentStore, experiment_from_spec
from launcher.views.table_fit import Cap, Drop, fit, shorten

NOW = 1_800_000_000.0
LONG = "faster_rcnn_r50_fpn_1x_coco_with_a_very_long_experiment_name"
# typed order, not alphabetical: the table must keep it
GRID = {"optimizer.lr": ["0.02", "0.01"], "data.samples_per_gpu": ["2", "4"], "seed": ["1", "2"],
        "model.rpn_head.anchor_generator.scales": ["[8]", "[4,8,16]"], "runner.max_iters": ["100", "20000"]}


def spec(i: int, name: str, work_dir: str = "/w") -> JobSpec:
    return JobSpec(id=f"{i:08x}", name=name, config="/c.yaml", work_dir=f"{work_dir}/{i}", cwd="/",
                   resources=Resources(nproc=1))


@pytest.fixture
def store(tmp_path):
    s = ExperimentStore(tmp_path / "home")
    yield s
    s.close()


def fill(store: ExperimentStore, sweeps: int = 3, per_sweep: int = 4) -> list[str]:
    """Several sweeps over many grid keys, plus two plain runs with long names."""
    ids, i = [], 0
    keys = list(GRID)
    for s in range(sweeps):
        for j in range(per_sweep):
            i += 1
            grid = {k: GRID[k][(j >> n) % 2] for n, k in enumerate(keys)}
            name = f"{LONG}{s}-lr={grid['optimizer.lr']}-samples_per_gpu={grid['data.samples_per_gpu']}"
            values = experiment_from_spec(spec(i, name), JobState.SUCCEEDED, now=NOW + i, sweep=f"{s:08x}", grid=grid)
            lr = float(grid["optimizer.lr"])
            values.update(lr=lr * 2, scaling=json.dumps({"base_lr": lr, "lr": lr * 2}), last_iter=20000,
                          max_iter=20000, started=NOW, ended=NOW + 3600 * 30, last_loss=0.123456, best_ap=0.5 + i / 100,
                          tags=json.dumps(["baseline", "ablation-anchors", "night-run"]), note="a long note " * 5)
            store.insert(values)
            ids.append(values["id"])
    for name in (LONG + "-plain", "short"):
        i += 1
        values = experiment_from_spec(spec(i, name), JobState.RUNNING, now=NOW + i)
        values.update(lr=0.02, last_iter=5, max_iter=90000, started=NOW)
        store.insert(values)
        ids.append(values["id"])
    return ids


def test_at_80_columns_no_line_is_longer_and_id_name_state_progress_ap_stay(store):
    ids = fill(store)
    lines, hidden = list_table(store, width=80, now=NOW + 10)
    assert max(map(len, lines)) <= 80
    head = lines[0]
    for column in ("ID", "NAME", "STATE", "PROGRESS", "BEST AP"):
        assert column in head
    assert "LOSS" in hidden and "TAGS" in hidden and "NOTE" not in hidden  # NOTE is a --wide column
    for exp_id, line in zip(ids, lines[1:]):
        assert line.startswith(exp_id) and ("succeeded" in line or "running" in line)
    assert "20000/20000" in lines[1] and "0.510" in lines[1] and "5/90000" in lines[-1]
    assert any("…" in line for line in lines[1:])  # the long names are cut, keeping their ends
    # a wider terminal gets more columns back, in the stated order: DURATION, then LOSS, then TAGS
    wider, hidden_wider = list_table(store, width=140, now=NOW + 10)
    assert max(map(len, wider)) <= 140 and len(hidden_wider) < len(hidden)


def test_one_lr_column_and_grid_columns_in_the_order_typed(store):
    fill(store, sweeps=1)
    head = table_lines(store, width=None, now=NOW)[0].split()
    assert head.count("LR") == 1 and "lr" not in head
    # optimizer.lr (as LR), samples_per_gpu, seed, scales, max_iters: as typed, not alphabetical
    grid = [head.index(h) for h in ("LR", "samples_per_gpu", "seed", "scales", "max_iters")]
    assert grid == sorted(grid) and grid[0] == 2
    line = table_lines(store, width=None, now=NOW)[1]
    assert "0.02 (x2 0.04)" in line  # the configured (grid) LR, then the scaled one


def test_sort_lr_sorts_by_the_grids_lr_not_the_scaled_one(store):
    for i, (base, used) in enumerate([(0.01, 0.08), (0.02, 0.02), (0.04, 0.04)], start=1):
        values = experiment_from_spec(spec(i, f"run{i}"), JobState.SUCCEEDED, now=NOW + i,
                                      grid={"optimizer.lr": str(base)})
        values.update(lr=used, scaling=json.dumps({"base_lr": base, "lr": used}))
        store.insert(values)
    order = [line[7] for line in table_lines(store, sort="-lr")[1:]]
    assert order == ["3", "2", "1"]


def test_wide_and_columns(store):
    fill(store, sweeps=1, per_sweep=2)
    wide = table_lines(store, wide=True, width=80, now=NOW)
    assert max(map(len, wide)) > 80 and "NOTE" in wide[0] and "CREATED" in wide[0] and LONG in wide[1]
    picked = table_lines(store, columns=["id", "seed", "lr", "ap"], width=80, now=NOW)
    assert picked[0].split() == ["ID", "seed", "LR", "BEST", "AP"]
    assert table_lines(store, columns=["name", "grid"], now=NOW)[0].split()[:3] == ["NAME", "LR", "samples_per_gpu"]
    with pytest.raises(LauncherError, match="--columns 'colour': unknown column; choose from id, name"):
        table_lines(store, columns=["colour"])


def test_fit_takes_the_steps_in_order_and_stops_when_it_fits():
    widths = [8, 30, 10, 10]
    assert fit(widths, 100, [Drop(3)]) == ([0, 1, 2, 3], {})
    assert fit(widths, 52, [Drop(3), Cap(1, 10), Drop(2)]) == ([0, 1, 2], {})
    assert fit(widths, 40, [Drop(3), Cap(1, 10), Drop(2)]) == ([0, 1, 2], {1: 18})  # the room left goes back
    assert fit(widths, None, [Drop(0)]) == ([0, 1, 2, 3], {})
    assert shorten("abcdefghij", 5) == "ab…ij" and shorten("abc", 5) == "abc" and len(shorten(LONG, 12)) == 12


def run_list(monkeypatch, tmp_path, capsys, *argv: str, columns: str = "80") -> str:
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", columns)
    assert cli.main(["list", *argv]) == 0
    return capsys.readouterr().out


def test_the_command_honours_columns_and_an_empty_store_says_what_to_do(monkeypatch, tmp_path, capsys):
    out = run_list(monkeypatch, tmp_path, capsys)
    assert out == "no experiments yet: launcher submit CONFIG starts one\n"
    store = ExperimentStore(tmp_path / "home")
    fill(store)
    store.close()
    out = run_list(monkeypatch, tmp_path, capsys)
    assert max(map(len, out.splitlines())) <= 80 and len(out.splitlines()) == 15
    assert max(map(len, run_list(monkeypatch, tmp_path, capsys, columns="200").splitlines())) > 80
    assert run_list(monkeypatch, tmp_path, capsys, "--state", "failed").startswith("no experiments match")


def test_json_rows_carry_the_duration_and_the_best_checkpoint(monkeypatch, tmp_path, capsys):
    store = ExperimentStore(tmp_path / "home")
    for i, files in enumerate([["best_bbox_AP.pth", "iter_4.pth"], ["iter_2.pth", "iter_4.pth"], []], start=1):
        work = tmp_path / f"w{i}"
        work.mkdir()
        for name in files:
            (work / name).write_bytes(b"x")
        values = experiment_from_spec(spec(i, f"run{i}", str(work)), JobState.SUCCEEDED, now=NOW + i)
        values.update(work_dir=str(work), started=NOW, ended=NOW + 90.5,
                      best_metrics=json.dumps({"iter": 2, "bbox_AP": 0.3}))
        store.insert(values)
    store.close()
    rows = json.loads(run_list(monkeypatch, tmp_path, capsys, "--json"))
    assert [r["duration_s"] for r in rows] == [90.5, 90.5, 90.5]
    assert rows[0]["best_checkpoint"] == str(tmp_path / "w1" / "best_bbox_AP.pth")
    assert rows[1]["best_checkpoint"] == str(tmp_path / "w2" / "iter_2.pth")  # the best evaluation's own
    assert rows[2]["best_checkpoint"] is None


def test_a_sweeps_grid_values_outlast_its_long_name(store):
    for i, (lr, momentum) in enumerate([("0.01", "0.9"), ("0.01", "0.8"), ("0.02", "0.9")], start=1):
        values = experiment_from_spec(spec(i, f"{LONG}-lr={lr}-momentum={momentum}"), JobState.SUCCEEDED,
                                      now=NOW + i, sweep="0000abcd", grid={"optimizer.lr": lr, "optimizer.momentum": momentum})
        values.update(lr=float(lr) / 2, scaling=json.dumps({"base_lr": float(lr), "lr": float(lr) / 2}), last_iter=2,
                      max_iter=2)
        store.insert(values)
    lines = table_lines(store, width=80, now=NOW)
    assert max(map(len, lines)) <= 80 and lines[0].split()[:4] == ["ID", "NAME", "LR", "momentum"]
    at = lines[0].index("momentum")
    assert [line[at:].split()[0] for line in lines[1:]] == ["0.9", "0.8", "0.9"]  # the points stay told apart
