"""The GPU check's logic runs in CI: ``python -m benchmarks --gpu --cpu-smoke`` runs every step of
``python -m benchmarks --gpu`` on the CPU (real launcher jobs, gloo instead of NCCL, 2 fake GPUs
for the leases, AMP skipped with a line) and passes, so the check a GPU node runs cannot rot
unnoticed between the rare runs on one."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from benchmarks.gpu_check import CPU_AMP_SKIPPED, STEPS
from tests.integration.helpers import ROOT, env


@pytest.mark.slow
def test_every_step_of_the_gpu_check_passes_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--gpu", "--cpu-smoke", "--out-dir", str(out)],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = json.loads((out / "gpu_check.json").read_text())["rows"]
    failed = [r for r in rows if r["met"] is not True]
    assert not failed, failed
    for step in STEPS:  # every step ran and has its passing row
        assert any(r["name"].startswith(step) for r in rows), (step, [r["name"] for r in rows])
    by_step = {step: next(r for r in rows if r["name"].startswith(step)) for step in STEPS}
    assert by_step["nccl + ddp (1 rank)"]["name"].endswith("(gloo, cpu)")
    assert "gradient bucket(s) all-reduced" in by_step["nccl + ddp (1 rank)"]["note"]
    assert CPU_AMP_SKIPPED in by_step["amp job"]["note"] and CPU_AMP_SKIPPED in proc.stderr
    # the resume continued the schedule the run really had (scaled: 2 images per worker against a base of 4)
    assert "resumed at 5 and finished at 8" in by_step["cpu checkpoint -> --amp resume"]["note"]
    assert "both released their leases" in by_step["leases"]["note"]
    with tarfile.open(out / "gpu_check_logs.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("nccl_job/w/logs/rank0.log") for n in names)
    assert any(n.endswith("nccl_ddp/gpu_ddp.log") for n in names)
    assert not any(n.endswith(".pth") for n in names)
