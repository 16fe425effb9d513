"""After one finished run of a config, ``launcher submit CONFIG --dry-run`` estimates the next run's wall time
from it: a real tiny job on the local backend, then dry runs of the same config (text and ``--json``)."""
from __future__ import annotations

import json

from tests.integration.launcher_cli import SHAPES, launcher

# one worker x 2 images against the config's base batch of 4: max_iters 4 -> 8, one evaluation at the end
JOB = ["--nproc", "1", "--max-restarts", "0", "--cfg-options", "data.samples_per_gpu=2", "data.workers_per_gpu=0",
       "data.train.num_train=8", "data.train.num_val=4", "data.val.num_train=8", "data.val.num_val=4",
       "log_config.interval=2", "runner.max_iters=4", "evaluation.interval=4", "checkpoint_config.interval=4"]


def test_a_dry_run_after_one_finished_run_estimates_from_it(tmp_path):
    home = tmp_path / "home"
    before = json.loads(launcher(home, "submit", SHAPES, *JOB, "--dry-run", "--json").stdout)["estimate"]
    assert before["seconds"] is None and before["from"] == [] and "no finished run resembles it" in before["basis"]

    exp_id = launcher(home, "submit", SHAPES, "--name", "est", *JOB, timeout=300).stdout.split()[0]
    rec = json.loads(launcher(home, "status", exp_id, "--json").stdout)
    assert rec["state"] == "succeeded", rec["reason"]
    wall = rec["ended"] - rec["started"]

    estimate = json.loads(launcher(home, "submit", SHAPES, *JOB, "--dry-run", "--json").stdout)["estimate"]
    assert estimate["from"] == [exp_id], estimate
    # the same config again: its iterations, evaluation and start-up add up to that run's wall time
    assert isinstance(estimate["seconds"], int) and estimate["seconds"] > 0 and abs(estimate["seconds"] - wall) <= 1
    assert "8 iterations x" in estimate["basis"] and "1 evaluation x" in estimate["basis"]
    text = launcher(home, "submit", SHAPES, *JOB, "--dry-run").stdout.splitlines()[-1]
    assert text.startswith("estimate: 0:") and f"from run {exp_id}" in text
    other = launcher(home, "submit", SHAPES, *JOB, "--dry-run", "--json", "--nproc", "2").stdout
    assert json.loads(other)["estimate"]["seconds"] is None  # another world size does not resemble it
