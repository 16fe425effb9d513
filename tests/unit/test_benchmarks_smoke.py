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
    """The GPU check is import-safe and its dry run prints its steps and where each package it
    needs comes from (every step runs on the CPU in integration/test_gpu_check_smoke.py)."""
    import pycocotools
    import torch

    from benchmarks import gpu_check
    from benchmarks.__main__ import main
    from benchmarks.harness import Context, NotAvailable

    assert main(["--gpu", "--dry-run", "--cpu-smoke"]) == 0
    out = capsys.readouterr().out
    assert all(step in out for step in gpu_check.STEPS) and "fake GPUs" in out
    assert "nccl + ddp (1 rank): python -m benchmarks.gpu_ddp --device cpu (gloo" in out
    assert f"pycocotools: {Path(pycocotools.__file__)}" in out
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


def test_gpu_check_resume_follows_the_schedule_the_run_had() -> None:
    """The resume step judges the iterations against the scaled schedule read from the runs: a
    resume continues right after the checkpoint and ends where the resumed run's schedule ends."""
    from benchmarks.gpu_check import resume_problem

    assert resume_problem(list(range(1, 9)), saved=4, end=8) is None  # 2 -> 4 and 4 -> 8 iterations (x2 scaling)
    assert "trained twice" in resume_problem([1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8], saved=4, end=8)
    assert "missing [7, 8]" in resume_problem([1, 2, 3, 4, 5, 6], saved=4, end=8)
    assert "nothing to resume" in resume_problem([1, 2, 3, 4], saved=4, end=4)


def test_gpu_check_waits_for_the_lease_release(tmp_path: Path) -> None:
    """The leases step waits (with a deadline) for the supervisors to release, instead of reading
    the lease file at the moment the jobs' states turn final."""
    import os
    import threading

    from benchmarks.gpu_check import leases_of, wait_for_release
    from launcher.resources.leases import GPU_POOL, LeaseBook

    book = LeaseBook(tmp_path)
    assert book.acquire(GPU_POOL, ("0", "1"), 1, "exp-a", os.getpid(), 0) == ("0",)
    assert leases_of(tmp_path, ["exp-a", "exp-b"]) == {"exp-a": {GPU_POOL: ("0",)}}
    assert wait_for_release(tmp_path, ["exp-a"], timeout_s=0.3, poll_s=0.05) == {"exp-a": {GPU_POOL: ("0",)}}
    releaser = threading.Timer(0.3, book.release, args=("exp-a",))
    releaser.start()
    try:
        assert wait_for_release(tmp_path, ["exp-a"], timeout_s=30, poll_s=0.05) == {}
    finally:
        releaser.join()
    assert not releaser.is_alive()


def test_gpu_check_names_missing_packages_and_brings_wheels() -> None:
    from importlib.metadata import version

    from benchmarks.gpu_check import missing_modules
    from benchmarks.gpu_wheels import PLATFORMS, download_command, pinned

    assert missing_modules({"json": "json", "detlaunch_no_such_module": "no-such-package"}) == ["no-such-package"]
    assert missing_modules() == []  # everything the check imports is installed here
    assert pinned() == [f"pycocotools=={version('pycocotools')}"]  # the version CI tests
    cmd = download_command(Path("/w"), "3.12", pinned())
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert all(p in cmd for p in PLATFORMS) and cmd[-1].startswith("pycocotools==")


def _wheel(folder: Path, module: str, body: str) -> Path:
    """A minimal pure-Python wheel holding ``module`` (built here: no network, no build tools)."""
    import zipfile

    path = folder / "detlaunch_probe-1.0-py3-none-any.whl"
    info = "detlaunch_probe-1.0.dist-info"
    files = {f"{module}/__init__.py": body, f"{info}/METADATA": "Metadata-Version: 2.1\nName: detlaunch-probe\n"
             "Version: 1.0\n", f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
             "Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_gpu_node_script_puts_carried_wheels_on_the_path(tmp_path: Path) -> None:
    """``bash benchmarks/gpu_node.sh`` installs the carried wheels into a temporary folder that every
    process of the check imports from (here a stand-in ``pycocotools``, seen by the dry run), and
    removes the folder afterwards."""
    import os
    import subprocess
    import sys

    from benchmarks.harness import REPO_ROOT

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "pycocotools", "")
    env = {**os.environ, "GPU_CHECK_WHEELS": str(wheels), "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_node.sh"), "--dry-run", "--cpu-smoke"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("pycocotools:"))
    assert line.strip().startswith(f"pycocotools: {tmp_path}/detlaunch-wheels.") and "1 wheel(s)" in proc.stderr
    assert not list(tmp_path.glob("detlaunch-wheels.*"))  # removed at exit


def test_gpu_ddp_step_runs_ddp_on_one_gloo_rank(tmp_path: Path) -> None:
    """The NCCL + DDP step's program on the CPU: one gloo rank, an all-reduce, DDP's gradient
    buckets all-reduced each step, the same parameters as an unwrapped copy, groups ended."""
    import os
    import subprocess
    import sys

    from benchmarks.harness import REPO_ROOT

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_ddp", "--device", "cpu", "--store",
                           str(tmp_path / "store")], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["backend"] == "gloo" and got["device"] == "cpu" and got["buckets"] >= got["steps"] == 3
    assert got["values_reduced"] == 3 * (8 * 16 + 16 + 16 * 2 + 2)  # every gradient, once per step


def test_gpu_only_checks_look_for_what_detcore_really_logs() -> None:
    """The GPU check's GPU-only verdicts read detcore's own log lines, which the CPU smoke never
    produces: the words they look for must still be the words detcore writes."""
    import inspect

    from benchmarks import gpu_check
    from detcore.engine import dist, trainer

    assert gpu_check.NO_SCALER_STATE in inspect.getsource(trainer.Trainer)  # the --amp resume of a CPU checkpoint
    joined = inspect.getsource(dist.init_distributed)  # the nccl job reads rank 0's "backend=nccl ... device=cuda:0"
    assert "backend=%s" in joined and "device=%s" in joined


def test_gpu_ddp_step_on_a_gpu_asks_for_nccl_and_reports_its_failure(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The step's GPU branch: the program runs with --device cuda; its JSON line becomes the row,
    and a failure is the program's own one line (output in gpu_ddp's format, no GPU here)."""
    import subprocess

    from benchmarks import gpu_check
    from benchmarks.harness import Context

    ran: list[list[str]] = []
    replies = iter([
        subprocess.CompletedProcess([], 0, '{"backend": "nccl", "device": "cuda:0", "steps": 3, "buckets": 3, '
                                           '"values_reduced": 534, "seconds": 4.2, "torch": "2.11.0", '
                                           '"nccl": "2.27.7"}\n', ""),
        subprocess.CompletedProcess([], 1, "", "Traceback ...\ngpu_ddp: FAILED: DistBackendError: NCCL error in: "
                                              "init.cc, unhandled system error\n")])
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda cmd, **kw: ran.append(cmd) or next(replies))
    ctx = Context(quick=False, out_dir=tmp_path, tmp=tmp_path)
    row = gpu_check.step_ddp(ctx, gpus=1, smoke=False, env={})
    assert ran[0][ran[0].index("--device") + 1] == "cuda"
    assert row.name == "nccl + ddp (1 rank) (nccl, cuda:0)" and row.met and "second one aborted; NCCL 2.27.7" in row.note
    with pytest.raises(RuntimeError, match="^gpu_ddp: FAILED: DistBackendError: NCCL error"):
        gpu_check.step_ddp(ctx, gpus=1, smoke=False, env={})


def test_real_data_sides_load_the_same_samples_and_run(tmp_path: Path) -> None:
    """The real-size data benchmark's two sides, on 3 generated 800x1333 JPEGs: without flips
    detcore's loader and torchvision's reference pipeline give the same boxes, labels and masks and
    pixels within a level; each side runs through a one-worker loader (the rate is not checked)."""
    from benchmarks import real_data

    root = real_data.generate(tmp_path / "jpeg", 3)
    assert real_data.generate(tmp_path / "again", 3).joinpath("ann.json").read_text() == \
        (root / "ann.json").read_text()
    check = real_data.same_samples(root, 3)
    assert check["boxes_labels_masks_equal"] and check["max_pixel_difference"] <= 1.0
    order = real_data.kept_images(root) * 4  # enough batches that some are loaded after the first one
    for parts in (real_data.detcore_loader(root, order), real_data.plain_loader(root, order)):
        per_cpu_s, per_wall_s = real_data.rate(parts)
        assert per_cpu_s > 0 and per_wall_s > 0
    assert real_data.workers_needed(per_worker=9.6) == 2


def test_synthetic_results_with_masks_keep_the_boxes_and_add_octagons(tmp_path: Path) -> None:
    """The Mask R-CNN-like files: the same boxes as without masks, every object an octagon polygon
    with its area, every detection the RLE of its box's octagon."""
    from pycocotools import mask as mask_utils

    from benchmarks.evaluation import CORNER_CUT, octagon

    gt, dt = generate(tmp_path / "boxes", images=3, dets=20)
    mgt, mdt = generate(tmp_path / "masks", images=3, dets=20, masks=True)
    assert generate(tmp_path / "again", images=3, dets=20, masks=True)[1].read_bytes() == mdt.read_bytes()
    plain, with_masks = json.loads(dt.read_text()), json.loads(mdt.read_text())
    assert [r["bbox"] for r in plain] == [r["bbox"] for r in with_masks]
    assert all(isinstance(r["segmentation"]["counts"], str) for r in with_masks)
    first = with_masks[0]
    assert first["segmentation"] == {**mask_utils.frPyObjects([octagon(first["bbox"])], 480, 640)[0],
                                     "counts": first["segmentation"]["counts"]}
    ann = json.loads(mgt.read_text())["annotations"][0]
    w, h = ann["bbox"][2:]
    assert len(ann["segmentation"][0]) == 16 and ann["area"] == pytest.approx(w * h * (1 - 2 * CORNER_CUT ** 2),
                                                                               abs=0.01)


def test_timed_process_reports_that_process_peak_memory_and_failures() -> None:
    import sys

    from benchmarks.evaluation import timed_process

    ballast = bytearray(400 * 2 ** 20)  # this process's own memory must not show in its children's figures
    ballast[::4096] = b"x" * len(ballast[::4096])
    grow = "import json; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); print(json.dumps({'ok': 1}))"
    run = timed_process([sys.executable, "-c", grow], 120, "grow", json.loads)
    assert run.stats == {"ok": 1} and run.peak_mib >= 300 and run.seconds > 0 and run.cpu_s > 0
    small = timed_process([sys.executable, "-c", "print('{}')"], 120, "small", json.loads)
    assert small.peak_mib < 100  # its own peak: not the largest child's so far, nor this process's
    del ballast
    with pytest.raises(jobs.JobFailed, match="bad exited 3: boom"):
        timed_process([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"], 120, "bad",
                      json.loads)
    with pytest.raises(jobs.JobFailed, match="slow timed out after 1 s"):
        timed_process([sys.executable, "-c", "import time; time.sleep(60)"], 1, "slow", json.loads)


def test_mask_eval_compares_every_number_and_rotates_the_order() -> None:
    from benchmarks.evaluation import METRIC_KEYS, ProcessRun
    from benchmarks.mask_eval import interleaved, mismatches

    ref = {m: dict.fromkeys(METRIC_KEYS, 0.5) for m in ("bbox", "segm")}
    ours = {"bbox": dict(ref["bbox"]), "segm": {**ref["segm"], "APm": 0.5000000000000001}}
    assert mismatches(ref, ref) == {}
    assert mismatches(ours, ref) == {"segm/APm": (0.5000000000000001, 0.5)}
    calls: list[str] = []
    sides = {name: (lambda name=name: calls.append(name) or ProcessRun(1.0, 2.0, {})) for name in "abc"}
    runs = interleaved(sides, repeats=3, what="test")
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"] and all(len(v) == 3 for v in runs.values())
