"""The benchmark harness computes and reports figures correctly (no timings are asserted here)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import jobs
from benchmarks.__main__ import parse_args, write_summary
from benchmarks.evaluation import generate
from benchmarks.harness import Goal, Result, Row, compared, format_table, measured, not_available, summarize, \
    write_result
from benchmarks.plain_train import throughput


def test_summary_and_ratio_of_interleaved_runs() -> None:
    s = summarize([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.min, s.max, s.n) == (2.5, 1.0, 10.0, 4)
    row = compared("ours", [4.0, 6.0], [2.0, 3.0], "img/s", Goal("ratio", ">=", 1.0))
    assert row.value == 5.0 and row.ratio == pytest.approx(2.0)
    assert row.ratio_summary.samples == (2.0, 2.0)
    assert row.met is True
    assert compared("slow", [1.0], [2.0], "s", Goal("ratio", "<=", 0.4)).met is False
    assert measured("list", [0.2, 0.4, 0.25], "s", goal=Goal("value", "<", 0.3, "s")).met is True


def test_table_and_json_show_goals_and_unavailable_figures(tmp_path: Path) -> None:
    rows = [compared("detcore eval", [1.1, 1.0], [1.0, 1.0], "s", Goal("ratio", "<=", 1.05)),
            not_available("launcher submit --backend ray", "backend 'ray' is not written yet")]
    machine = {"cpu_model": "test", "usable_cores": 2, "memory_gb": 1.0, "gpu": "none", "os": "test",
               "python": "3", "torch": "t", "torchvision": "tv", "load_average_at_start": [0.0, 0.0, 0.0],
               "git_commit": None}
    write_result(tmp_path / "evaluation.json", "evaluation", "t", Result(rows, {"images": 5}), machine, 1.0, True,
                 note="noisy")
    doc = json.loads((tmp_path / "evaluation.json").read_text())
    assert doc["mode"] == "quick" and doc["settings"] == {"images": 5} and doc["note"] == "noisy"
    first, second = doc["rows"]
    assert first["goal"] == "ratio <= 1.05" and first["met"] is True and first["spread"]["n"] == 2
    assert second["value"] is None and second["note"].startswith("not available: backend 'ray'")
    table = format_table([("evaluation", doc["rows"])])
    assert "ratio <= 1.05" in table and "not available: backend 'ray'" in table
    summary = write_summary(tmp_path).read_text()
    assert "| evaluation | detcore eval | 1.05 s |" in summary


def test_unknown_benchmark_name_suggests_the_closest(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--only", "startp"])
    assert exc.value.code == 2
    assert "did you mean 'startup'" in capsys.readouterr().err


def test_steady_state_throughput_from_a_trainer_work_dir(tmp_path: Path) -> None:
    lines = [f"2026-01-01 00:00:{10 + 2 * i:02d},500 INFO detcore.engine.hooks: iter {5 * i}/20 epoch 0 lr 0.1"
             for i in range(1, 5)]
    (tmp_path / "train.log").write_text("\n".join(lines) + "\n")
    records = [{"mode": "train", "iter": 5 * i, "iter_time": 0.25, "data_time": 0.05} for i in range(1, 5)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    t = jobs.detcore_throughput(tmp_path, warmup=5, iters=20, images_per_iter=4)
    assert t.wall == pytest.approx(4 * 15 / 6.0)      # 15 iterations in 6 s of log time
    assert t.iter_time == pytest.approx(4 / 0.25)      # 4 images per 0.25 s step
    assert t.data_share == pytest.approx(0.2)
    assert jobs.has_iteration(tmp_path, 20)() and not jobs.has_iteration(tmp_path, 21)()


def test_concurrent_totals_count_every_image_end_to_end_and_steady_images_in_the_joint_window(tmp_path: Path) -> None:
    from benchmarks.concurrent_jobs import _totals

    # two jobs of 20 iterations (batch 4), logged every 10: the second ran 4 s later and slower
    for name, (t10, t20) in {"a": (10, 20), "b": (14, 34)}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.log").write_text("".join(
            f"2026-01-01 00:00:{t:02d},000 INFO detcore.engine.hooks: iter {i}/20 epoch 0 lr 0.1\n"
            for i, t in ((10, t10), (20, t20))))
    t = _totals([tmp_path / "a", tmp_path / "b"], warmup=10, iters=20, batch=4, wall=40.0)
    assert t.end_to_end == pytest.approx(2 * 20 * 4 / 40.0)  # all 160 images over the whole wall time
    assert t.steady == pytest.approx(2 * 10 * 4 / (34 - 10))  # 80 steady images from the first start to the last end
    assert t.own == pytest.approx([40 / 10, 40 / 20])
    with pytest.raises(jobs.JobFailed, match="iteration 10 or 30"):
        _totals([tmp_path / "a"], warmup=10, iters=30, batch=4, wall=1.0)


def test_plain_loop_throughput_skips_warmup() -> None:
    result = {"ends": [1.0, 2.0, 2.5, 3.0], "iter_times": [1.0, 1.0, 0.5, 0.5], "batch": 2}
    wall, step = throughput(result, warmup=2)
    assert wall == pytest.approx(2 * 2 / 1.0) and step == pytest.approx(4.0)


def test_synthetic_coco_files_are_deterministic(tmp_path: Path) -> None:
    gt, dt = generate(tmp_path / "a", images=4, dets=10)
    gt2, dt2 = generate(tmp_path / "b", images=4, dets=10)
    assert gt.read_bytes() == gt2.read_bytes() and dt.read_bytes() == dt2.read_bytes()
    results = json.loads(dt.read_text())
    assert len(results) == 40 and {r["image_id"] for r in results} == {1, 2, 3, 4}
    assert all(r["bbox"][2] >= 1 and r["bbox"][3] >= 1 for r in results)


def test_rows_of_one_kind_only_get_a_goal_verdict() -> None:
    assert Row("figure only", 3.0, "s").met is None


def test_gpu_check_starts_without_a_gpu(capsys: pytest.CaptureFixture, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU check of issues 18/19 is import-safe and prints its steps (the R50-FPN step's CPU
    path is the next test)."""
    import torch

    from benchmarks import gpu_check
    from benchmarks.__main__ import main
    from benchmarks.harness import Context, NotAvailable

    assert main(["--gpu", "--dry-run", "--cpu-smoke"]) == 0
    out = capsys.readouterr().out
    assert all(step in out for step in gpu_check.STEPS) and "fake GPUs" in out
    with pytest.raises(SystemExit):
        parse_args(["--cpu-smoke"])  # only with --gpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(NotAvailable, match="--cpu-smoke"):
        gpu_check.run(Context(quick=True, out_dir=tmp_path, tmp=tmp_path))
    assert "Faster and Mask R-CNN, detcore vs plain torchvision loop, fp32 and AMP" in out


def test_gpu_train_sides_build_the_same_model_and_step_on_the_cpu() -> None:
    """The GPU benchmark compares like with like (same trainable parameters on both sides) and
    its Mask R-CNN case runs end to end on the CPU path (no CUDA call there), with a table row
    carrying the published reference."""
    import math

    from benchmarks import gpu_train

    assert gpu_train.same_parameters("mask")  # Faster R-CNN is its box part
    both = [gpu_train.Case("mask", "detcore", True), gpu_train.Case("mask", "plain", True)]
    rows, figures = gpu_train.run_all("cpu", (64, 96), warmup=0, iters=1, budget_s=600, only=both)
    assert [f["side"] for f in figures] == ["detcore", "plain"]
    assert all(f["img_s"] > 0 and f["infer_img_s"] > 0 and math.isfinite(f["loss"]) for f in figures)
    assert rows[0].ratio is not None and rows[0].met and rows[1].ratio is None
    assert "0.21 s/iter" in gpu_train.table(figures) and "published" in rows[0].note


def test_pairs_option_is_checked() -> None:
    assert parse_args(["--only", "train_throughput", "--pairs", "8", "--case", "mobilenet"]).pairs == 8
    with pytest.raises(SystemExit):
        parse_args(["--pairs", "0"])
