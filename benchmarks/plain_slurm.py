"""The plain Slurm equivalent of ``launcher submit --backend slurm``: a hand-written sbatch script.

What a user without the launcher writes (PyTorch's Slurm recipe, on one node): one task that runs
``srun torchrun --standalone --nproc-per-node N -m detcore.tools.cli train CONFIG --work-dir D ...``, with the
same CPUs per rank and intra-op threads the launcher gives its ranks. It is submitted with
``sbatch --parsable``; the job is followed with ``squeue`` (every ``STATE_POLL_S``), which is more
often than ``sbatch --wait`` looks (2 s, then 8 s, then 32 s): the plain side's exit is timed as
early as Slurm knows it.

:func:`render_script` is pure (a unit test checks it); :func:`run_plain` submits and follows one job.
"""
from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from benchmarks import jobs

STATE_POLL_S = 0.25
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED")


@dataclass(frozen=True)
class PlainSlurmJob:
    """One hand-written sbatch job on one node: ``nproc`` ranks of ``module_args`` under torchrun."""

    name: str
    cwd: Path
    output: Path
    module_args: tuple[str, ...]
    nproc: int
    cpus_per_rank: int
    threads_per_rank: int
    python_path: str = str(jobs.REPO_ROOT)


def render_script(job: PlainSlurmJob) -> str:
    """The sbatch script (pure): one task with every rank's CPUs, ``srun torchrun --standalone``."""
    q = shlex.quote
    return "\n".join([
        "#!/bin/bash",
        f"#SBATCH --job-name={q(job.name)}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={job.cpus_per_rank * job.nproc}",
        f"#SBATCH --chdir={q(str(job.cwd))}",
        f"#SBATCH --output={q(str(job.output))}",
        "",
        f"export PYTHONPATH={q(job.python_path)}${{PYTHONPATH:+:$PYTHONPATH}}",
        f"export OMP_NUM_THREADS={job.threads_per_rank} MKL_NUM_THREADS={job.threads_per_rank}",
        'srun --cpus-per-task="$SLURM_CPUS_PER_TASK" --kill-on-bad-exit=1 '
        + shlex.join(jobs.torchrun_command(job.nproc, job.module_args)),
    ]) + "\n"


def job_state(job_id: str, env: Mapping[str, str]) -> str:
    """The job's state as ``squeue`` shows it (every state, ``""`` once Slurm forgot it)."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-t", "all", "-o", "%T"], env=dict(env),
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""


def run_plain(job: PlainSlurmJob, work_dir: Path, env: Mapping[str, str], timeout: float,
              ) -> tuple[float, float, dict[str, float]]:
    """Submit ``job`` and follow it: seconds from spawning ``sbatch`` to iteration 1 in ``work_dir``'s
    ``metrics.jsonl``, to the job's end, and the epoch times of the stages (``spawn``, ``submitted``:
    ``sbatch`` returned). A failed or timed-out job raises ``jobs.JobFailed`` with its output's tail."""
    script = job.output.with_suffix(".sbatch")
    script.write_text(render_script(job))
    spawn, t0 = time.time(), time.perf_counter()
    out = subprocess.run(["sbatch", "--parsable", str(script)], env=dict(env), capture_output=True, text=True,
                         timeout=60)
    submitted = time.time()
    if out.returncode != 0:
        raise jobs.JobFailed(f"sbatch {script} failed: {(out.stderr or out.stdout).strip()[:300]}")
    job_id = out.stdout.strip().split(";")[0]
    first_iter = jobs.has_iteration(work_dir, 1)
    first, state, next_state = None, "", 0.0
    deadline = t0 + timeout
    try:
        while True:
            now = time.perf_counter()
            if first is None and first_iter():
                first = now - t0
            if now >= next_state:
                state, next_state = job_state(job_id, env), now + STATE_POLL_S
                if state in ENDED or state == "":
                    break
            if now > deadline:
                raise jobs.JobFailed(f"plain sbatch job {job_id} did not end within {timeout:.0f} s; log {job.output}")
            time.sleep(0.02)
    finally:
        if state not in ENDED and state != "":
            subprocess.run(["scancel", job_id], env=dict(env), capture_output=True, timeout=30)
    total = time.perf_counter() - t0
    if state not in ("COMPLETED", "") or first is None:
        tail = "\n".join(job.output.read_text(errors="replace").splitlines()[-20:]) if job.output.exists() else ""
        raise jobs.JobFailed(f"plain sbatch job {job_id} ended {state or 'without a state'} "
                             f"{'before iteration 1 ' if first is None else ''}; log {job.output}:\n{tail}")
    return first, total, {"spawn": spawn, "submitted": submitted}


def module_args(config: Path, work_dir: Path, overrides: Sequence[str]) -> tuple[str, ...]:
    """The rank's ``-m detcore.tools.cli train ...`` (validating, as the launcher's job does)."""
    return tuple(jobs.detcore_train_args(config, work_dir, overrides, validate=True))
