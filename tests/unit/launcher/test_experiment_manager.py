"""The experiment manager without processes: list formatting on recorded rows, sort/limit/tag filters, the
v2 -> v3 migration, status text, compare/export tables, plot curves, tags/notes and rm's refusals."""
from __future__ import annotations

import json
import re
import sqlite3

import pytest
from PIL import Image

import launcher.store as store_module
import launcher.store.schema as store_schema
from launcher import cli
from launcher.views.compare import comparison, comparison_lines, differing_keys, export_rows, flatten
from launcher.errors import LauncherError
from launcher.views.listing import duration_text, layout, lr_text, order_sql, table_lines
from launcher.views.metrics import best_evaluation
from launcher.views.plot import available_metrics, curve, plot_curves
from launcher.store.reconcile import observed_metrics
from launcher.spec import JobSpec, JobState, JobStatus, Mode, Resources
from launcher.views.status_text import status_lines
from launcher.store import ExperimentStore, experiment_from_spec

NOW = 1_800_000_000.0


def recorded(store: ExperimentStore, i: int, **kw) -> str:
    """A row as a real sweep left it (values from one, trimmed), written straight into the store."""
    values = experiment_from_spec(spec(i, name=f"shapes-lr=0.0{i}"), JobState.SUCCEEDED, now=NOW - 50,
                                  grid={"optimizer.lr": f"0.0{i}"})
    values.update(lr=0.005 * i, scaling=json.dumps({"base_lr": 0.01 * i, "lr": 0.005 * i}), last_iter=4, max_iter=4,
                  started=NOW - 45, ended=NOW, last_loss=2.0791708, best_ap=0.4321, last_ap=0.1,
                  tags=json.dumps(["best", "a"]), last_metrics=json.dumps({"epoch": 1}))
    values.update(kw)
    store.insert(values)
    return values["id"]


def test_list_shows_grid_values_as_columns_and_the_configured_lr_next_to_the_scaled_one(store):
    a = recorded(store, 1)
    b = recorded(store, 2, scaling=json.dumps({"base_lr": 0.02, "lr": 0.02}), lr=0.02, tags="[]", best_ap=None,
                 last_ap=None, state="running", ended=None)
    lines = table_lines(store, now=NOW + 15)
    head = lines[0].split()
    assert head[:4] == ["ID", "NAME", "LR", "STATE"] and head.count("LR") == 1 and head[-1] == "TAGS"  # one LR column
    assert lines[1].startswith(f"{a}  shapes  ") and "0.01 (x0.5 0.005)" in lines[1]
    assert "4/4" in lines[1] and "0:00:45" in lines[1] and "2.0792" in lines[1] and "0.432" in lines[1]
    assert lines[1].endswith("best,a") and lines[2].startswith(b)
    # the running row's duration grows with the clock; no AP yet; LR not scaled: one value
    assert "0:01:00" in lines[2] and " 0.02 " in lines[2] and "(x" not in lines[2] and lines[2].endswith("-")
    store.set_note(a, "first try")
    wide = table_lines(store, wide=True, now=NOW)
    assert "shapes-lr=0.01" in wide[1] and wide[1].endswith("first try") and "RESTARTS" in wide[0]


def test_progress_and_duration_texts(store):
    recorded(store, 1, mode="test", max_iter=None, last_iter=None, grid="{}", scaling="", lr=None)
    recorded(store, 2, max_epoch=12, max_iter=None, last_metrics=json.dumps({"epoch": 3}), started=None)
    recorded(store, 3, scaling='{"lr":0.04,"base_lr":0.02}', lr=0.04)  # compact JSON, keys in another order
    recorded(store, 4, scaling='{"base_lr": null, "lr": 0.04}', lr=0.04, tags='["x"]')
    lines = table_lines(store, now=NOW)
    assert "0.02 (x2 0.04)" in lines[3] and lines[4].split()[2] == "0.04" and lines[4].split()[-1] == "x"
    assert lines[1].split()[5] == "test" and lines[1].split()[2] == "-"  # a test job: no LR
    assert "3/12 ep" in lines[2] and re.split(r"  +", lines[2])[6] == "-"  # never started: no duration
    assert duration_text(None) == "-" and duration_text(3725.9) == "1:02:05" and duration_text(90061) == "25:01:01"
    assert lr_text(None, None) == "-" and lr_text(0.02, 0.02) == "0.02" and lr_text(0.02, 0.08) == "0.02 (x4 0.08)"
    assert layout(["A", "BB"], [("xyz", "1")]) == ["A    BB", "xyz  1"]


def test_sort_keys_are_checked_and_never_user_sql():
    assert order_sql("-ap").startswith("(COALESCE(best_ap, last_ap)) IS NULL, COALESCE(best_ap, last_ap) DESC")
    with pytest.raises(LauncherError, match="unknown key; choose one of created"):
        order_sql("name; DROP TABLE experiments")


def spec(i: int, **kw) -> JobSpec:
    return JobSpec(**{**dict(id=f"{i:08x}", name=f"job{i}", config="/c.yaml", work_dir=f"/w/{i}", cwd="/",
                             resources=Resources(nproc=1)), **kw})


@pytest.fixture
def store(tmp_path):
    s = ExperimentStore(tmp_path / "home")
    yield s
    s.close()


def test_sort_limit_and_tag_filters_happen_in_the_store(store):
    for i, loss in enumerate([0.5, 0.2, None, 0.9], start=1):
        store.insert(experiment_from_spec(spec(i), JobState.SUCCEEDED, now=NOW + i))
        if loss is not None:
            store.record_metrics(spec(i).id, 10, loss, None, {"loss": loss})
    store.update_tags(spec(2).id, add=["good", "x"])
    store.update_tags(spec(4).id, add=["good"])
    def ids(**kw) -> list[str]:
        return [line[7] for line in table_lines(store, **kw)[1:]]

    assert ids(sort="loss") == ["2", "1", "4", "3"]  # no value: last
    assert ids(sort="-loss", limit=2) == ["4", "1"]
    assert ids(sort="created", reverse=True, limit=1) == ["4"]
    assert ids(tags=["good"]) == ["2", "4"]
    assert ids(tags=["good", "x"]) == ["2"]
    assert store.update_tags(spec(2).id, remove=["x"]) == ["good"]
    with pytest.raises(LauncherError, match="positive"):
        table_lines(store, limit=0)


def test_a_version_2_store_is_migrated_to_3_in_one_step(tmp_path):
    home = tmp_path / "v2"
    home.mkdir()
    conn = sqlite3.connect(home / "experiments.db")
    head, _, tail = store_schema.SCHEMA.partition(",\n    tags TEXT")
    conn.executescript(head + "\n" + tail[tail.index(");"):])
    conn.execute("PRAGMA user_version=2")
    conn.execute("INSERT INTO experiments (id, name, config, mode, backend, state, world_size, work_dir, created, "
                 "updated) VALUES ('0000000a', 'old', '/c.yaml', 'train', 'local', 'succeeded', 1, '/w', 1, 1)")
    conn.commit()
    conn.close()
    store = ExperimentStore(home)
    exp = store.get("0000000a")
    assert (exp.tag_list, exp.note, exp.best_ap, exp.grid_values) == ([], "", None, {})
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION == 3
    assert len(table_lines(store)) == 2


def test_status_is_plain_text(store):
    store.insert(experiment_from_spec(spec(1), JobState.PENDING, grid={"optimizer.lr": "0.02"}))
    store.record_status(spec(1).id, JobStatus(JobState.FAILED, exit_code=1, reason="rank 0: exit code 1"))
    text = "\n".join(status_lines(store.get(spec(1).id), now=NOW))
    assert "None" not in text and "{" not in text and "[" not in text
    assert "grid: optimizer.lr=0.02" in text and "state: failed" in text and "best AP: -" in text


def test_best_evaluation_and_a_test_jobs_ap_are_recorded(tmp_path, store):
    work = tmp_path / "w"
    work.mkdir()
    records = [{"mode": "train", "iter": 1, "loss": 2.0}, {"mode": "val", "iter": 1, "bbox_AP": 0.3},
               {"mode": "train", "iter": 2, "loss": 1.5}, {"mode": "val", "iter": 2, "bbox_AP": 0.2}]
    (work / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"half')
    (work / "config.yaml").write_text("runner: {type: IterBasedRunner, max_iters: 8}\n")
    assert best_evaluation(records) == {"iter": 1, "bbox_AP": 0.3}
    store.insert(experiment_from_spec(spec(1, work_dir=str(work)), JobState.RUNNING))
    seen = observed_metrics(store.get(spec(1).id))
    assert (seen["ap"], seen["best_ap"], seen["max_iter"], seen["last_iter"]) == (0.2, 0.3, 8, 2)
    store.record_metrics(spec(1).id, **seen)
    assert observed_metrics(store.get(spec(1).id)) is None  # nothing new: no write
    (work / "test_metrics.json").write_text(json.dumps({"bbox_AP": 0.55, "bbox_AP50": 0.8}))
    store.insert(experiment_from_spec(spec(2, work_dir=str(work), mode=Mode.TEST, checkpoint="/w/iter_2.pth"), JobState.RUNNING))
    test = observed_metrics(store.get(spec(2).id))
    store.record_metrics(spec(2).id, **test)
    line = table_lines(store, ids=[spec(2).id])[1]
    assert "0.550" in line and " test " in line


def test_compare_and_export_keep_the_differing_keys_only():
    a = flatten({"optimizer": {"lr": 0.01, "momentum": 0.9}, "data": {"samples_per_gpu": 2}, "steps": [1, 2]})
    b = flatten({"optimizer": {"lr": 0.02, "momentum": 0.9}, "data": {"samples_per_gpu": 2}, "steps": [1, 3],
                 "extra": {"x": 1}})
    assert differing_keys([a, b]) == ["extra.x", "optimizer.lr", "steps"]
    store_rows = [store_module.Experiment(**{**experiment_from_spec(spec(i), JobState.SUCCEEDED, now=NOW),
                                             "state": JobState.SUCCEEDED, "backend_job_id": "", "backend_extra": "{}",
                                             "exit_code": 0, "reason": "", "restarts": 0, "ports": "[]",
                                             "started": NOW, "ended": NOW + 10, "last_iter": 4, "last_loss": 1.0,
                                             "last_ap": 0.1 * i, "last_metrics": json.dumps({"bbox_AP": 0.1 * i}),
                                             "best_metrics": json.dumps({"bbox_AP": 0.2 * i, "iter": 2})})
                  for i in (1, 2)]
    data = comparison(store_rows, [a, b])
    assert data["config"]["optimizer.lr"] == [0.01, 0.02] and data["best"]["bbox_AP"] == [0.2, 0.4]
    assert any(line.startswith("optimizer.lr") and "0.02" in line for line in comparison_lines(data))
    rows = export_rows(store_rows, [a, b])
    assert rows[1]["optimizer.lr"] == 0.02 and rows[1]["steps"] == "[1, 3]" and rows[0]["extra.x"] is None
    assert rows[1]["final.bbox_AP"] == 0.2 and rows[0]["duration_s"] == 10 and list(rows[0]) == list(rows[1])


def test_plot_draws_each_curve_and_names_the_metrics_it_has(tmp_path):
    dirs = []
    for n in (1, 2):
        d = tmp_path / f"w{n}"
        d.mkdir()
        (d / "metrics.jsonl").write_text("".join(json.dumps({"mode": "train", "iter": i, "loss": 1.0 / (i + n)}) + "\n"
                                                 for i in range(1, 6)))
        dirs.append(str(d))
    assert curve([{"iter": 2, "loss": 1.0}, {"iter": 1, "loss": 3}, {"iter": 2, "loss": 0.5}], "loss") == (
        [1, 2], [3.0, 0.5])
    assert available_metrics([[{"mode": "val", "iter": 1, "bbox_AP": 0.1}]]) == ["bbox_AP"]
    with pytest.raises(LauncherError, match="choose one of loss"):
        plot_curves(["a", "b"], dirs, "bbox_AP", tmp_path / "x.png")
    assert plot_curves(["lr=0.01", "lr=0.02"], dirs, "loss", tmp_path / "loss.png") == [5, 5]
    with Image.open(tmp_path / "loss.png") as img:
        assert img.format == "PNG" and img.size[0] > 300


def test_rm_refuses_a_job_that_has_not_ended(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    s = ExperimentStore()
    s.insert(experiment_from_spec(spec(1), JobState.SUCCEEDED, now=NOW))
    s.insert({**experiment_from_spec(spec(2), JobState.QUEUED), "backend_job_id": ""})
    s.close()
    assert cli.main(["rm", spec(1).id, spec(2).id]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{spec(2).id} (queued)" in err and spec(1).id not in err
    assert cli.main(["tag", spec(1).id, "has space"]) == 2
    assert cli.main(["note", spec(1).id, "kept", "for", "later"]) == 0
    assert ExperimentStore().get(spec(1).id).note == "kept for later"
    assert cli.main(["list", "--sort", "-nope"]) == 2


def test_purge_never_deletes_a_work_dir_another_experiment_uses(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    shared, own = tmp_path / "shared", tmp_path / "own"
    shared.mkdir()
    own.mkdir()
    s = ExperimentStore()
    for i, work in ((1, shared), (2, shared), (3, own)):
        s.insert(experiment_from_spec(spec(i, work_dir=str(work)), JobState.SUCCEEDED, now=NOW))
    s.close()
    assert cli.main(["rm", spec(1).id, spec(3).id, "--purge", "--yes"]) == 0
    err = capsys.readouterr().err
    assert f"keeping {shared}: experiment {spec(2).id} still uses it" in err
    assert shared.is_dir() and not own.exists()
    assert [e.id for e in ExperimentStore().list()] == [spec(2).id]


def test_version_names_detlaunch_and_torch_without_importing_it(capsys):
    import sys

    had_torch = "torch" in sys.modules
    with pytest.raises(SystemExit) as ended:
        cli.main(["--version"])
    out = capsys.readouterr().out
    assert ended.value.code == 0 and out.startswith("launcher (detlaunch) ") and ", torch " in out
    assert had_torch or "torch" not in sys.modules
