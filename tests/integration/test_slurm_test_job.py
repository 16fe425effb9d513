"""A test job (``launcher submit --test CKPT``) on the project's real Slurm cluster: it runs the
checkpoint's evaluation as a Slurm job and prints its AP; and ``--gres``/``--time``/``-p`` in Slurm's
own spellings reach that cluster's sbatch for real."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import pytest

from tests.integration.slurm_cluster import slurm_cluster  # noqa: F401  (the fixture)
from tests.integration.test_slurm import DATA, ROOT, SHAPES, home, launcher, record  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_a_test_job_on_slurm_prints_the_checkpoints_ap(slurm_cluster, home, tmp_path, shapes_checkpoint):
    """The session's checkpoint (conftest's ``shapes_checkpoint``) evaluated by a Slurm job asked for with
    Slurm's own ``-t H:MM:SS`` and ``-p PARTITION`` spellings."""
    # not detached: the submitting command follows the test job to its end and prints what it printed
    proc = launcher(slurm_cluster, home, "submit", SHAPES, "--backend", "slurm", "--test", str(shapes_checkpoint),
                    "--eval", "bbox", "--nproc", "1", "-t", "0:15:00", "-p", "debug", "--work-dir", str(tmp_path / "test"),
                    "--cfg-options", *DATA)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"^metric\s+AP\s+AP50\s", proc.stdout, re.M), proc.stdout[-3000:]
    printed = re.search(r"^bbox\s+([0-9.]+)\s", proc.stdout, re.M)
    assert printed, proc.stdout[-3000:]
    test_id = next(line.split()[0] for line in proc.stdout.splitlines() if re.fullmatch(r"[0-9a-f]{8}", line.strip()))
    test_rec = record(slurm_cluster, home, test_id)
    assert (test_rec["state"], test_rec["backend"]) == ("succeeded", "slurm")
    assert test_rec["last_ap"] is not None and "bbox_AP50" in test_rec["last_metrics"], test_rec
    assert abs(test_rec["last_ap"] - float(printed[1])) <= 0.0005, (test_rec["last_ap"], printed[0])


def test_gres_and_time_dry_run_asks_the_real_cluster(slurm_cluster, home):
    """The test cluster runs select/cons_tres: one --gpus-per-node line, and the note says so."""
    out = launcher(slurm_cluster, home, "submit", SHAPES, "--backend", "slurm", "--gres", "gpu:2", "--time",
                   "1:30:00", "--dry-run").stdout
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("#SBATCH")]
    assert [x for x in lines if x.startswith(("#SBATCH --gres", "#SBATCH --gpus"))] == ["#SBATCH --gpus-per-node=2"]
    assert "#SBATCH --time=90" in lines and "SelectType=select/cons_tres" in out


def test_no_slurm_conf_is_one_line_with_the_real_clients(slurm_cluster, home, tmp_path):
    """Slurm's own clients without a slurm.conf (configless DNS lookup fails): one line, nothing recorded."""
    env = {k: v for k, v in slurm_cluster.env.items() if k != "SLURM_CONF"}
    proc = subprocess.run([sys.executable, "-m", "launcher", "submit", SHAPES, "--backend", "slurm", "--detach"],
                          cwd=tmp_path, env={**env, "LAUNCHER_HOME": str(home), "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and all(s in lines[0] for s in ("SLURM_CONF", "sinfo", "cluster/slurm/start.sh")), lines
    assert json.loads(launcher(slurm_cluster, home, "list", "--json").stdout) == []
