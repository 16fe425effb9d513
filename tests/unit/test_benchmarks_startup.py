"""The start-up benchmark's plain cluster equivalents and stage breakdown (no cluster, no timings asserted)."""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from benchmarks import jobs, plain_slurm, startup
from benchmarks import startup_stages as stages
from benchmarks.harness import Context, NotAvailable
from benchmarks.plain_ray import stamp


def test_plain_sbatch_script_runs_torchrun_once_with_every_ranks_cpus(tmp_path: Path) -> None:
    work = tmp_path / "work dir"  # a space: every path must reach srun as one word
    job = plain_slurm.PlainSlurmJob(
        name="bench plain", cwd=tmp_path, output=tmp_path / "out $x.log",
        module_args=plain_slurm.module_args(jobs.SHAPES_CONFIG, work, ["runner.max_iters=2"]),
        nproc=2, cpus_per_rank=3, threads_per_rank=3)
    text = plain_slurm.render_script(job)
    directives = dict(line[len("#SBATCH --"):].split("=", 1) for line in text.splitlines()
                      if line.startswith("#SBATCH"))
    assert directives["nodes"] == "1" and directives["ntasks-per-node"] == "1"
    assert directives["cpus-per-task"] == "6"  # one torchrun task holding both ranks' CPUs
    assert shlex.split(directives["output"]) == [str(tmp_path / "out $x.log")]
    assert "export OMP_NUM_THREADS=3 MKL_NUM_THREADS=3" in text
    srun = shlex.split(text.splitlines()[-1])
    assert srun[:3] == ["srun", "--cpus-per-task=$SLURM_CPUS_PER_TASK", "--kill-on-bad-exit=1"]
    torchrun = srun[3:]
    assert torchrun[torchrun.index("--nproc-per-node") + 1] == "2" and "--standalone" in torchrun
    assert torchrun[-len(job.module_args):] == list(job.module_args)
    assert torchrun[torchrun.index("--work-dir") + 1] == str(work)
    assert "--no-validate" not in torchrun  # it validates, as the launcher's job does
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def _log_line(t: float, text: str) -> str:
    ms = int(round((t - int(t)) * 1000))
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(t))) + f",{ms:03d} {text}"


def _work_dir_with_two_iterations(work: Path, t_log: float, t_iter1: float) -> None:
    work.mkdir(parents=True)
    (work / "train.log").write_text(
        _log_line(t_log, "INFO detcore.tools.train: config loaded\n") +
        _log_line(t_iter1, "INFO detcore.engine.hooks: iter 1/2 epoch 0 lr 0.1\n"))


def test_launcher_ray_stages_come_from_the_plan_the_driver_log_and_the_facts(tmp_path: Path) -> None:
    from detcore.facts import Stage, Start, append_fact

    t0 = 1_800_000_000.0
    job = tmp_path / "home" / "ray" / "abcd1234"
    job.mkdir(parents=True)
    (job / "plan.json").write_text("{}")
    os.utime(job / "plan.json", (t0 + 1.0, t0 + 1.0))
    (job / "driver.log").write_text(_log_line(t0 + 2.0, "INFO ray: started\n") +
                                    _log_line(t0 + 3.5, "INFO launcher.ray_driver: connected to Ray at x\n"))
    work = tmp_path / "run"
    _work_dir_with_two_iterations(work, t0 + 7.0, t0 + 9.25)
    run = work / "runs" / "20260101-000000-abcd"
    append_fact(run, Stage(stage="placing", workers=2, time=t0 + 4.0))
    append_fact(run, Stage(stage="starting", workers=2, time=t0 + 5.0))
    for rank, t in ((1, t0 + 6.5), (0, t0 + 6.0)):
        append_fact(run, Start(rank=rank, time=t))
    marks = {"spawn": t0, "exit": t0 + 20.0, **stages.launcher_marks(tmp_path / "home", work)}
    assert stages.offsets(marks) == pytest.approx({
        "spawn": 0.0, "planned": 1.0, "connected": 3.5, "placing": 4.0, "workers_started": 5.0, "worker_loop": 6.0,
        "detcore_log": 7.0, "iter1": 9.25, "exit": 20.0})
    assert stages.durations(marks)["connected -> placing"] == pytest.approx(0.5)


def test_plain_ray_stamps_and_the_median_breakdown(tmp_path: Path) -> None:
    t0 = 1_800_000_000.0
    stamps = tmp_path / "stamps.jsonl"
    stamp(str(stamps), "driver_start", at=t0 + 0.25)
    stamp(str(stamps), "connected", at=t0 + 2.0)
    stamp(str(stamps), "worker_loop", at=t0 + 4.5, rank=1)
    stamp(str(stamps), "worker_loop", at=t0 + 4.0, rank=0)
    with open(stamps, "a") as f:
        f.write('{"stage": "connec')  # a torn last line is skipped
    _work_dir_with_two_iterations(tmp_path / "run", t0 + 5.0, t0 + 6.0)
    marks = {"spawn": t0, "exit": t0 + 10.0, **stages.plain_ray_marks(stamps, tmp_path / "run")}
    first = stages.offsets(marks)
    assert first == pytest.approx({"spawn": 0.0, "driver_start": 0.25, "connected": 2.0, "worker_loop": 4.0,
                                   "detcore_log": 5.0, "iter1": 6.0, "exit": 10.0})
    second = {**first, "connected": 3.0, "iter1": 7.0}
    third = {k: v for k, v in first.items() if k != "connected"}  # a mark a run did not leave
    table = stages.stage_table({"plain": [first, second, third], "launcher": []})
    assert list(table) == ["plain"]
    assert table["plain"]["since_spawn_s"]["connected"] == pytest.approx(2.5)
    assert table["plain"]["stage_s"]["connected -> worker_loop"] == pytest.approx(1.5)
    assert sum(table["plain"]["stage_s"].values()) == pytest.approx(table["plain"]["since_spawn_s"]["exit"])
    both = stages.stage_table({"plain": [first], "launcher": [{**first, "planned": 1.0, "connected": 3.25}]})
    assert stages.gap_note(both) == ("launcher/plain median s since the command: connected 3.2/2.0, "
                                     "worker_loop 4.0/4.0, detcore_log 5.0/5.0, iter1 6.0/6.0, exit 10.0/10.0")
    assert stages.gap_note(table) == ""  # no launcher side


def test_a_cluster_that_is_down_is_a_not_available_row(tmp_path: Path) -> None:
    ctx = Context(quick=True, out_dir=tmp_path, tmp=tmp_path)

    def down() -> dict:
        raise NotAvailable("no Ray head on 127.0.0.1:6379 (start it with cluster/ray/start.sh)")

    rows, details = startup.cluster_rows(ctx, "ray", down, pairs=1, warmup=0, cpus=2, timeout=1.0)
    assert details == {} and len(rows) == 1
    assert rows[0].value is None and rows[0].note.startswith("not available: no Ray head")
    assert rows[0].note.endswith("or pass --start-clusters")
