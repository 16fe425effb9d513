"""detcore's CLI destroys the gloo group it created before the process exits, and leaves one it was given.

Exiting with a live gloo group can abort the process in this torch release (SIGABRT after a
finished run; under Slurm that failed the whole job). Real gloo processes throughout.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.helpers import ROOT, SHAPES, env, free_port

# One rank: `detcore train` through the CLI's main, in this process, then a look at the group.
TRAIN_RANK = r"""
import sys
import torch.distributed as dist
from detcore.tools.cli import main

code = main(sys.argv[1:])
print(f"exit {code}; group alive after the command: {dist.is_initialized()}", flush=True)
"""

# Ray Train's case: the group exists before detcore runs (here a one-process group) and is not detcore's to end.
GIVEN_GROUP = r"""
import sys
import torch.distributed as dist
from detcore.tools.cli import main

dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
code = main(sys.argv[1:])
print(f"exit {code}; group alive after the command: {dist.is_initialized()}", flush=True)
dist.destroy_process_group()
"""

TRAIN_ARGS = ["--no-validate", "--cfg-options", "runner.max_iters=3", "checkpoint_config.interval=3",
              "data.samples_per_gpu=1", "auto_scale_lr.enable=false", "data.workers_per_gpu=0", "data.train.num_train=8", "log_config.interval=1"]


def test_train_on_two_gloo_ranks_ends_its_process_group(tmp_path: Path) -> None:
    port = str(free_port())
    ranks = [subprocess.Popen([sys.executable, "-c", TRAIN_RANK, "train", str(SHAPES), "--work-dir",
                               str(tmp_path / "work"), *TRAIN_ARGS], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                      MASTER_PORT=port, OMP_NUM_THREADS="1"))
             for r in (0, 1)]
    for r, proc in enumerate(ranks):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"rank {r} exited with {proc.returncode}:\n{err[-3000:]}"
        assert out.strip() == "exit 0; group alive after the command: False", err[-3000:]
        assert "terminate called" not in err
    assert (tmp_path / "work" / "last_checkpoint").read_text().strip() == "iter_3.pth"


def test_a_group_detcore_did_not_create_outlives_the_command(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", GIVEN_GROUP, "train", str(SHAPES), "--work-dir",
                           str(tmp_path / "work"), *TRAIN_ARGS], cwd=ROOT, env=env(OMP_NUM_THREADS="1"), text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "exit 0; group alive after the command: True", proc.stderr[-3000:]
