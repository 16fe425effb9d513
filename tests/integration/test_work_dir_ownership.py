"""A work dir belongs to one run: a second submit or `detcore train` cannot touch a running or finished run,
and a claim whose holder was SIGKILLed is taken over with a line saying so."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.integration.helpers import env
from tests.integration.launcher_cli import DATA, SHAPES, checkpointed, done, launcher, tiny, wait_until

TRAIN = [*DATA, "auto_scale_lr.enable=false", "checkpoint_config.interval=2", "checkpoint_config.max_keep=2",
         "evaluation.interval=4", "runner.max_iters=8"]  # checkpoints at 2, 4, 6, 8 (6 and 8 kept), best at 4 or 8


def detcore_train(work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "detcore.tools.cli", "train", SHAPES, "--work-dir", str(work), *args],
                          env=env(), capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"detcore train -> {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (TensorBoard events included) with its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if ": error: " in line]


def test_a_second_submit_into_a_running_experiments_work_dir_is_refused_and_the_victim_finishes_untouched(
        home: Path, tmp_path: Path) -> None:
    work = tmp_path / "shared"
    victim = launcher(home, "submit", SHAPES, "--nproc", "1", "--detach", "--name", "victim", "--work-dir", str(work),
                      *tiny(24, 4)).stdout.strip()
    wait_until(home, victim, lambda r: r["state"] == "running" and checkpointed(r), poll=0.5)
    config = (work / "config.yaml").read_bytes()
    other_home = tmp_path / "someone-else"
    for who, extra in ((home, ()), (home, ("--resume", "auto")), (other_home, ("--resume", "auto"))):
        proc = launcher(who, "submit", SHAPES, "--nproc", "1", "--work-dir", str(work), *extra, *tiny(2),
                        check=False)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert len(errors(proc)) == 1 and proc.stderr.count("\n") == 1, proc.stderr  # one line, nothing else
        assert f"work dir {work} is in use by launcher experiment {victim} (victim, local backend)" in proc.stderr
        assert f"`launcher cancel {victim}`" in proc.stderr
    plain = detcore_train(work, "--resume", "auto", "--cfg-options", *TRAIN, check=False)
    assert plain.returncode == 2 and f"in use by launcher experiment {victim}" in errors(plain)[0], plain.stderr

    rec = wait_until(home, victim, done)
    assert rec["state"] == "succeeded", rec["reason"]
    assert rec["last_iter"] == rec["max_iter"] and rec["max_iter"] == 48, rec  # 24 at half the base batch
    assert (work / "config.yaml").read_bytes() == config  # nobody rewrote it
    assert yaml.safe_load(config)["runner"]["max_iters"] == 48
    assert [e["id"] for e in json.loads(launcher(home, "list", "--json").stdout)] == [victim]
    assert not (other_home / "experiments.db").exists() or \
        json.loads(launcher(other_home, "list", "--json").stdout) == []
    assert len(list((work / "runs").iterdir())) == 1  # only the victim's launch wrote facts
    assert not (work / "owner.json").exists()  # released at the end
    listed = launcher(home, "list").stdout
    assert "48/48" in listed


def test_a_second_detcore_train_keeps_the_first_runs_checkpoints_byte_for_byte(tmp_path: Path) -> None:
    work = tmp_path / "faster_rcnn_tiny_shapes"
    detcore_train(work, "--cfg-options", *TRAIN)
    first = snapshot(work)
    assert "best_bbox_AP.pth" in first and {"iter_6.pth", "iter_8.pth"} <= set(first), sorted(first)
    assert any(name.startswith("tb/events") for name in first)

    again = detcore_train(work, "--cfg-options", *TRAIN, "runner.max_iters=4", check=False)
    assert again.returncode == 2 and len(errors(again)) == 1, again.stderr
    assert f"work dir {work} holds an earlier run (best_bbox_AP.pth, iter_8.pth, iter_6.pth" in again.stderr
    assert "--resume auto" in again.stderr and f"--work-dir {work}-2 for a new one" in again.stderr
    weights = detcore_train(work, "--load-from", str(work / "iter_8.pth"), "--cfg-options", *TRAIN, check=False)
    assert weights.returncode == 2 and "holds an earlier run" in weights.stderr  # fine-tuning is a new run too
    assert snapshot(work) == first  # best, periodic checkpoints, logs, metrics and TensorBoard events untouched

    detcore_train(Path(f"{work}-2"), "--cfg-options", *TRAIN, "runner.max_iters=4")  # the suggested new run
    assert snapshot(work) == first


def test_a_sigkilled_holders_claim_is_taken_over_with_a_line(tmp_path: Path) -> None:
    work = tmp_path / "w"
    holder = subprocess.Popen([sys.executable, "-m", "detcore.tools.cli", "train", SHAPES, "--work-dir", str(work),
                               "--cfg-options", *TRAIN, "runner.max_iters=400"], env=env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (work / "last_checkpoint").exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the first run never checkpointed"
            time.sleep(0.2)
        claimed = json.loads((work / "owner.json").read_text())
        assert claimed["pid"] == holder.pid and claimed["what"] == "`detcore train`"
        busy = detcore_train(work, "--resume", "auto", "--cfg-options", *TRAIN, check=False)
        assert busy.returncode == 2 and f"in use by `detcore train`, pid {holder.pid} on" in busy.stderr
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert json.loads((work / "owner.json").read_text())["pid"] == holder.pid  # a SIGKILL cannot release it
    resumed = detcore_train(work, "--resume", "auto", "--cfg-options", *TRAIN, "runner.max_iters=4")
    took = [line for line in resumed.stderr.splitlines() if "took over the claim" in line]
    assert len(took) == 1 and f"of `detcore train`, pid {holder.pid}" in took[0], resumed.stderr
    assert f"its process (pid {holder.pid}) is gone" in took[0]
    assert "resumed from" in resumed.stderr and not (work / "owner.json").exists()


def test_a_torchrun_restart_continues_its_own_run(tmp_path: Path) -> None:
    """Plain torchrun (no launcher) restarting a SIGKILLed rank: the same run, so it resumes without --resume."""
    work = tmp_path / "w"
    agent = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                              "--max-restarts", "1", "-m", "detcore.tools.cli", "train", SHAPES, "--work-dir",
                              str(work), "--cfg-options", *TRAIN, "runner.max_iters=40"],
                             env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (work / "last_checkpoint").exists():
            assert agent.poll() is None and time.monotonic() < deadline, "the run never checkpointed"
            time.sleep(0.2)
        rank0 = json.loads((work / "owner.json").read_text())
        assert rank0["what"] == f"torchrun (agent pid {agent.pid}) running `detcore train`"
        os.kill(rank0["pid"], signal.SIGKILL)
        _, log = agent.communicate(timeout=600)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, log[-3000:]
    assert "torchrun restarted this run: continuing it from the newest checkpoint" in log
    assert "resumed from" in log and "took over" not in log  # its own claim, continued silently
    assert (work / "last_checkpoint").read_text().strip() == "iter_40.pth"
