"""Estimates of a run's wall time from finished runs that resemble it: the pure policy, the store reader and
``launcher submit --dry-run``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from detcore.config import load_config
from launcher.cli import main
from launcher.views.estimate import PastRun, count_evaluations, estimate, measure, run_shape, scaled_config
from launcher.views.estimate_runs import estimate_for_spec
from launcher.jobs import SubmitRequest, build_spec
from launcher.spec import JobState, Resources
from launcher.store import ExperimentStore, experiment_from_spec

ROOT = Path(__file__).resolve().parents[3]
SHAPES = str(ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml")
SMALL = ("data.samples_per_gpu=2", "runner.max_iters=60", "evaluation.interval=30", "log_config.interval=10")


def shapes_cfg(*overrides: str) -> dict:
    return load_config(SHAPES, overrides, import_custom=False)


def train_records(iters: int, interval: int, warm: float, steady: float) -> list[dict]:
    """metrics.jsonl train records as the logger writes them: the mean iter_time of each interval, the first
    one holding the warm-up."""
    return [{"mode": "train", "iter": it, "epoch": 0, "loss": 1.0, "iter_time": warm if it == interval else steady}
            for it in range(interval, iters + 1, interval)]


def test_a_shape_names_what_decides_an_iterations_time():
    shape = run_shape(shapes_cfg(*SMALL), world_size=1, gpus=0)
    assert shape.resembles_key == ("FasterRCNN TinyNet", "128-128", 2, 1, "cpu", False)
    assert (shape.by_epoch, shape.length, shape.evaluations) == (False, 60, 2)
    assert run_shape(shapes_cfg(*SMALL), 1, 0, validate=False).evaluations == 0
    assert run_shape(shapes_cfg(*SMALL), 2, 2, amp=True).resembles_key[3:] == (2, "cuda", True)
    coco = run_shape(load_config(str(ROOT / "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml"), (),
                                 import_custom=False), 8, 8)
    assert coco.model == "FasterRCNN ResNet-50" and coco.input_size == "800-1333" and coco.by_epoch
    assert (coco.length, coco.evaluations) == (12, 12)


def test_evaluations_follow_the_eval_hook_interval_and_the_end():
    assert [count_evaluations(n, i) for n, i in [(300, 300), (300, 100), (300, 250), (12, 1), (5, 0), (0, 1)]] \
        == [1, 3, 2, 12, 1, 0]


def test_the_schedule_scaling_changes_the_length_and_the_evaluation_interval():
    cfg = scaled_config(shapes_cfg(*SMALL), [{"key": "runner.max_iters", "new": 120},
                                             {"key": "evaluation.interval", "new": 60},
                                             {"key": "optimizer.lr", "new": 0.01}])
    shape = run_shape(cfg, 1, 0)
    assert (shape.length, shape.evaluations) == (120, 2) and cfg["optimizer"]["lr"] == 0.02


def test_a_run_is_measured_after_warm_up():
    shape = run_shape(shapes_cfg(*SMALL), 1, 0)
    records = train_records(60, 10, warm=3.0, steady=0.5)
    records += [{"mode": "val", "iter": 30, "bbox_AP": 0.1, "eval_time": 4.0},
                {"mode": "val", "iter": 60, "bbox_AP": 0.2, "eval_time": 6.0}]
    run = measure("aaaa0001", shape, wall_s=100.0, records=records)
    assert run.step_s == pytest.approx(0.5 + (3.0 - 0.5) * 5 / 55)  # the first 5 iterations are warm-up
    assert run.evaluation_s == 5.0 and run.iterations == 60
    assert run.startup_s == pytest.approx(100.0 - 60 * run.step_s - 10.0)
    assert measure("aaaa0002", shape, 100.0, [{"mode": "val", "iter": 60, "bbox_AP": 0.2}]) is None
    damaged = [{**r, "iter_time": float("nan")} if r["iter"] == 30 else r for r in records] + [
        {"mode": "val", "iter": 60, "eval_time": float("inf")}, {"mode": "train", "iter": "x", "iter_time": 1.0}]
    again = measure("aaaa0003", shape, wall_s=100.0, records=damaged)  # bad values are skipped, not averaged in
    assert math.isfinite(again.step_s) and again.evaluation_s == 5.0 and again.iterations == 60


def past(exp_id: str, shape, step: float, evaluation: float | None = 5.0, startup: float = 20.0,
         iterations: int = 60) -> PastRun:
    return PastRun(exp_id, shape, iterations, step, evaluation, startup)


def test_the_estimate_is_iterations_evaluations_and_start_up_of_the_resembling_runs():
    new = run_shape(shapes_cfg("data.samples_per_gpu=2", "runner.max_iters=600", "evaluation.interval=300"), 1, 0)
    same = run_shape(shapes_cfg(*SMALL), 1, 0)
    other = [run_shape(shapes_cfg(*SMALL), 2, 0), run_shape(shapes_cfg(*SMALL), 1, 1),
             run_shape(shapes_cfg(*SMALL, "model.min_size=256", "model.max_size=256"), 1, 0),
             run_shape(shapes_cfg("data.samples_per_gpu=4"), 1, 0)]
    runs = [past(f"0000000{i}", s, 9.0) for i, s in enumerate(other)] + [past("aaaa0001", same, 0.5)]
    got = estimate(new, runs)
    assert got.runs == ("aaaa0001",)
    assert got.seconds == pytest.approx(600 * 0.5 + 2 * 5.0 + 20.0)
    assert got.basis == "from run aaaa0001: 600 iterations x 0.5 s + 2 evaluations x 5 s + start-up 20 s"
    assert got.to_json() == {"seconds": 330, "from": ["aaaa0001"], "basis": got.basis}
    assert got.text().startswith("estimate: 0:05:30 (from run aaaa0001")


def test_the_median_of_the_newest_five_resembling_runs():
    shape = run_shape(shapes_cfg(*SMALL), 1, 0)
    runs = [past(f"bbbb000{i}", shape, step) for i, step in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 100.0])]
    got = estimate(shape, runs)
    assert got.runs == tuple(f"bbbb000{i}" for i in range(5))
    assert got.seconds == pytest.approx(60 * 3.0 + 2 * 5.0 + 20.0)


def test_no_estimate_says_why():
    new = run_shape(shapes_cfg(*SMALL), 1, 0)
    got = estimate(new, [past("cccc0001", run_shape(shapes_cfg(*SMALL), 1, 1), 0.5)], checked=1)
    assert got.seconds is None and got.runs == () and got.to_json()["seconds"] is None
    assert got.basis == ("no finished run resembles it (FasterRCNN TinyNet, input 128-128, 2 images per worker, "
                         "world size 1 on cpu); 1 finished training run checked")


def test_evaluations_never_timed_on_the_same_data_are_said_not_counted():
    new = run_shape(shapes_cfg(*SMALL), 1, 0)
    runs = [past("dddd0001", new, 0.5, evaluation=None),
            past("dddd0002", run_shape(shapes_cfg(*SMALL, "data.val.num_val=400"), 1, 0), 0.5)]
    got = estimate(new, runs)
    assert got.seconds == pytest.approx(60 * 0.5 + 20.0) and got.runs == ("dddd0001", "dddd0002")
    assert got.basis.endswith("; 2 evaluation(s) not counted: no resembling run timed one on the same data.val")


def test_an_epoch_based_run_needs_a_resembling_run_on_the_same_training_data():
    epochs = ("data.samples_per_gpu=2", "runner.type=EpochBasedRunner", "+runner.max_epochs=3",
              "evaluation.interval=1")
    shape = run_shape(shapes_cfg(*epochs), 1, 0)
    ran = past("eeee0001", run_shape(shapes_cfg(*epochs[:2], "+runner.max_epochs=2", epochs[3]), 1, 0), 0.5,
               iterations=400)  # 2 epochs of 200 iterations
    assert estimate(shape, [ran]).seconds == pytest.approx(600 * 0.5 + 3 * 5.0 + 20.0)
    other_data = past("eeee0002", run_shape(shapes_cfg(*epochs, "data.train.num_train=800"), 1, 0), 0.5)
    got = estimate(shape, [other_data])
    assert got.seconds is None and "none trained epochs on the same data.train" in got.basis


def finished_run(store: ExperimentStore, tmp_path: Path, exp_id: str, overrides=SMALL, world: int = 1) -> str:
    """A succeeded row with its work dir as a run leaves it: the resolved config.yaml and metrics.jsonl."""
    spec = build_spec(SubmitRequest(config=SHAPES, overrides=overrides, resources=Resources(nproc=world),
                                    work_dir=str(tmp_path / exp_id)), cwd=str(tmp_path), exp_id=exp_id)
    work = Path(spec.work_dir)
    work.mkdir()
    changes = [{"key": c.key, "new": c.new} for c in spec.scaling.changes]
    (work / "config.yaml").write_text(yaml.safe_dump(scaled_config(shapes_cfg(*overrides), changes)))
    records = train_records(120, 10, warm=2.0, steady=0.4) + [{"mode": "val", "iter": 120, "eval_time": 3.0}] * 2
    (work / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    values = experiment_from_spec(spec, JobState.SUCCEEDED, now=1_800_000_000.0)
    values.update(started=1_800_000_000.0, ended=1_800_000_100.0, last_iter=120, max_iter=120)
    store.insert(values)
    return exp_id


def test_the_store_reader_measures_finished_runs_in_their_work_dirs(tmp_path):
    store = ExperimentStore(tmp_path / "home")
    finished_run(store, tmp_path, "ffff0001")
    finished_run(store, tmp_path, "ffff0002", world=2)
    spec = build_spec(SubmitRequest(config=SHAPES, overrides=SMALL), cwd=str(tmp_path))
    got = estimate_for_spec(store, spec, shapes_cfg(*SMALL))
    assert got.runs == ("ffff0001",) and got.seconds == pytest.approx(100.0, abs=0.5)  # the same run again
    empty = ExperimentStore(tmp_path / "nowhere")
    assert estimate_for_spec(empty, spec, shapes_cfg(*SMALL)).seconds is None and not empty.home.exists()
    bigger = build_spec(SubmitRequest(config=SHAPES, overrides=SMALL, resources=Resources(nproc=4)),
                        cwd=str(tmp_path))
    assert estimate_for_spec(store, bigger, shapes_cfg(*SMALL)).seconds is None
    store.close()


def test_submit_dry_run_prints_the_estimate_in_text_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    store = ExperimentStore(tmp_path / "home")
    finished_run(store, tmp_path, "abab0001")
    store.close()
    assert main(["submit", SHAPES, "--dry-run", "--json", "--cfg-options", *SMALL]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["estimate"]["from"] == ["abab0001"] and data["estimate"]["seconds"] == 100
    assert main(["submit", SHAPES, "--dry-run", "--cfg-options", *SMALL, "runner.max_iters=600"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    # max_iters 600 is scaled x2 for a total batch of 2 against the config's 4
    assert last.startswith("estimate: 0:") and "from run abab0001: 1200 iterations x" in last
    assert main(["submit", SHAPES, "--dry-run", "--json"]) == 0  # 4 images per worker: no run resembles it
    assert json.loads(capsys.readouterr().out)["estimate"]["seconds"] is None


def running_row(store: ExperimentStore, exp_id: str, eta_s, last_iter: int = 120) -> None:
    values = experiment_from_spec(build_spec(SubmitRequest(config=SHAPES, overrides=SMALL,
                                                           work_dir=f"/w/{exp_id}"), cwd="/", exp_id=exp_id),
                                  JobState.RUNNING, now=1_800_000_000.0)
    values.update(started=1_800_000_000.0, last_iter=last_iter, max_iter=1200, last_loss=0.5,
                  last_metrics=json.dumps({"iter": last_iter, "loss": 0.5, "eta_s": eta_s}))
    store.insert(values)


def test_list_and_status_show_a_running_jobs_eta_in_its_progress_within_80_columns(tmp_path):
    from launcher.views.listing import list_table
    from launcher.views.status_text import status_lines

    store = ExperimentStore(tmp_path / "home")
    finished_run(store, tmp_path, "abcd0001")
    running_row(store, "abcd0002", 277.4)
    running_row(store, "abcd0003", None, last_iter=1)
    for width in (None, 80):
        lines, _ = list_table(store, now=1_800_000_200.0, width=width)
        assert width is None or max(map(len, lines)) <= 80
        progress = lines[0].index("PROGRESS")
        by_id = {line.split()[0]: line[progress:].split("  ")[0] for line in lines[1:]}
        assert by_id == {"abcd0001": "120/120", "abcd0002": "120/1200 eta 0:04:37", "abcd0003": "1/1200 eta ?"}
    assert "eta: 0:04:37 (at iteration 120)" in status_lines(store.get("abcd0002"))
    assert "eta: estimating" in status_lines(store.get("abcd0003"))
    assert "eta: -" in status_lines(store.get("abcd0001"))
    store.close()


def test_time_auto_is_the_estimate_x1_5_plus_10_minutes_rounded_up():
    from launcher.views.estimate import Estimate
    from launcher.errors import LauncherError
    from launcher.views.time_auto import auto_minutes, auto_time

    assert [auto_minutes(s) for s in (0, 40, 3600, 3601)] == [10, 11, 100, 101]
    minutes, line = auto_time([Estimate(100.0, ("a",), "x"), Estimate(3600.0, ("b",), "y")])
    assert minutes == 100 and line == ("--time auto: 100 min = the estimate 1:00:00 x1.5 + 10 min, rounded up to "
                                       "whole minutes")
    with pytest.raises(LauncherError, match=r"^--time auto: no finished run resembles it \(x\); pass --time"):
        auto_time([Estimate(100.0, ("a",), "x"), Estimate(None, (), "no finished run resembles it (x)")])


def test_slurm_time_auto_asks_the_estimate_with_its_margin_or_one_line_for_an_explicit_time(tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    store = ExperimentStore(tmp_path / "home")
    finished_run(store, tmp_path, "abab0002")  # 100 s: 100 x 1.5 + 600 = 750 s -> 13 min
    store.close()
    args = ["submit", SHAPES, "--backend", "slurm", "--time", "auto", "--dry-run"]
    assert main([*args, "--cfg-options", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --time=13\n" in out and out.splitlines()[-1] == (
        "--time auto: 13 min = the estimate 0:01:40 x1.5 + 10 min, rounded up to whole minutes")
    assert main([*args, "--json", "--cfg-options", *SMALL]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["resources"]["time_min"] == 13 and data["time_auto"].startswith("--time auto: 13 min")
    assert main(args) == 2  # 4 images per worker: nothing resembles it
    err = capsys.readouterr().err.strip()
    assert err.startswith("launcher submit: error: --time auto: no finished run resembles it (") and "\n" not in err
    assert err.endswith("pass --time with a limit in minutes (e.g. --time 120)")


def test_status_of_a_run_still_estimating_its_eta_shows_what_is_left_of_the_estimate(tmp_path, monkeypatch, capsys):
    from launcher.views.estimate_runs import estimate_started
    from launcher.views.status_text import status_lines

    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    store = ExperimentStore(tmp_path / "home")
    finished_run(store, tmp_path, "abcd0011")  # 100 s for the same run
    exp_id = finished_run(store, tmp_path, "abcd0012")  # then made the running one: started, nothing measured
    store.conn.execute("UPDATE experiments SET state = 'running', ended = NULL, last_metrics = '{}' WHERE id = ?",
                       (exp_id,))
    exp = store.get(exp_id)
    estimate = estimate_started(store, exp)
    assert estimate.runs == ("abcd0011",) and estimate.seconds == pytest.approx(100.0, abs=0.5)
    lines = status_lines(exp, now=exp.started + 30, estimate=estimate)
    assert "eta: estimating; about 0:01:10 by the estimate from finished run abcd0011" in lines
    assert "eta: estimating" in status_lines(exp, now=exp.started + 30)
    store.close()


def test_a_run_whose_trainer_has_not_started_is_estimated_from_its_config_and_scaling(tmp_path):
    from launcher.views.estimate_runs import estimate_started
    from launcher.views.listing import list_table

    store = ExperimentStore(tmp_path / "home")
    finished_run(store, tmp_path, "abcd0021")
    exp_id = finished_run(store, tmp_path, "abcd0022")
    (tmp_path / exp_id / "config.yaml").unlink()  # the trainer is still starting: no resolved config yet
    store.conn.execute("UPDATE experiments SET state = 'running', ended = NULL, last_iter = NULL, max_iter = NULL, "
                       "last_metrics = '{}' WHERE id = ?", (exp_id,))
    estimate = estimate_started(store, store.get(exp_id))
    assert estimate.runs == ("abcd0021",) and estimate.seconds == pytest.approx(100.0, abs=0.5)
    lines, _ = list_table(store, width=80)
    assert lines[-1].split()[:5] == [exp_id, "faster_rcnn_tiny_shapes", "running", "-", "eta"]
    assert lines[-1].split()[5] == "?"
    store.close()
