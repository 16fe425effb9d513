"""``python -m launcher.runtime.shim [--log-dir D] [--run-dir R] [--hang-timeout S] -- MODULE ARGS...``: the worker shim.

Every rank of every backend runs through this shim (the local backend under torchrun, each
Slurm task under submitit; Ray's train loop runs the same rank code in-process:
:class:`launcher.runtime.rank.RankAttempt`). The shim is a small parent process (no torch) that:

1. appends its worker's stdout and stderr to ``D/rank{RANK}.log``;
2. appends a ``start`` fact to ``R/events.jsonl`` (rank, attempt, pid, host, port; the records are
   :mod:`detcore.facts`), then runs ``python -m MODULE ARGS`` as its child, and appends an
   ``end`` fact with the child's exit status (``-N`` for signal N) and the last line of its log;
   it then exits the same way (re-raising the signal), so torchrun or srun see the worker's own
   ending. Because the shim outlives its worker, a rank killed by SIGKILL or the OOM killer is
   still recorded exactly;
3. forwards SIGTERM, SIGINT, SIGHUP and SIGUSR1 to the worker. SIGUSR2 (Slurm's
   checkpoint-and-requeue signal) is left as the shim found it: ignored until detcore installs its
   own handler, and delivered by Slurm to every process of the step, so never forwarded twice;
4. on a restart (attempt > 0) sets ``DETCORE_RESTART`` for the worker, so that ``detcore train``
   continues from the newest checkpoint (``--resume auto``);
5. runs the worker with ``TMPDIR`` set to a folder of its own (:mod:`launcher.runtime.scratch`) and,
   as the child subreaper of everything the worker starts, ends whatever the worker left running
   when it exits (DataLoader workers orphaned by a killed worker), then removes that folder, so
   no ``pymp-*`` folder or other temporary file outlives a rank;
6. with ``--hang-timeout S`` > 0 runs the hang watchdog: the worker writes a heartbeat per
   finished iteration (``DETCORE_HEARTBEAT_DIR``); when no rank of this attempt has finished an
   iteration for S seconds, the shim records a ``hang`` fact naming the ranks that are stuck,
   asks its worker for its Python stacks (SIGUSR1, detcore's ``faulthandler``), kills it and
   exits with ``EXIT_HUNG``, a retryable failure: torchrun restarts the group from the newest
   checkpoint within ``--max-restarts``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Mapping

from detcore import contract
from launcher.resources.procinfo import become_subreaper, die_with_parent, process_state
from launcher.runtime.rank import RankAttempt
from launcher.runtime.scratch import make_scratch

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
STACKS_WAIT_S = 2.0
ORPHAN_WAIT_S = 30.0


def attempt_number(environ: Mapping[str, str] = os.environ) -> int:
    return int(environ.get("TORCHELASTIC_RESTART_COUNT") or environ.get("SLURM_RESTART_COUNT") or 0)


def _child_setup(shim: int) -> Callable[[], None]:
    """The worker's preexec: die with the shim (``shim``: its pid, taken before the fork)."""
    return lambda: die_with_parent(signal.SIGKILL, shim)


def end_orphans(limit_s: float = ORPHAN_WAIT_S) -> int:
    """SIGKILL and reap every child this (subreaper) process still has once its worker was reaped: what the
    worker left running (a DataLoader worker outlives a killed trainer for seconds). How many were reaped;
    gives up after ``limit_s`` (a process stuck in the kernel ignores even SIGKILL)."""
    import psutil

    ended, deadline = 0, time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            ended += 1
        else:
            time.sleep(0.05)
    return ended


def _exit_like(code: int) -> None:
    """End this process the way the worker ended: the same exit code, or the same signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if code < 0:
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL and SIGSTOP cannot be caught (nor reset)
            pass
        os.kill(os.getpid(), -code)
        time.sleep(1.0)
    os._exit(code if code >= 0 else 128 - code)


class Shim:
    def __init__(self, args: argparse.Namespace, module: str, worker_args: list[str]) -> None:
        attempt = attempt_number()
        self.rank = RankAttempt(args.run_dir, args.log_dir, int(os.environ.get("RANK") or 0),
                                int(os.environ.get("WORLD_SIZE") or 1), attempt, float(args.hang_timeout or 0))
        self.module, self.argv = module, list(worker_args)
        self.proc: subprocess.Popen | None = None
        self.pending: int | None = None  # a signal that came before the worker started
        self.hung = False

    def forward(self, signum: int, frame: object) -> None:
        if self.proc is None:
            self.pending = signum
        elif self.proc.poll() is None:
            self.proc.send_signal(signum)

    def on_hang(self, verdict: str) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        state = process_state(proc.pid)
        self.hung = True
        self.rank.hung(proc.pid, state, verdict)
        os.write(2, f"[detlaunch] hang watchdog: {verdict}; this rank's worker is {state}; "
                    f"dumping its Python stacks and ending the attempt\n".encode())
        if state == "running":
            proc.send_signal(signal.SIGUSR1)  # detcore's faulthandler writes every thread's stack to this log
            time.sleep(STACKS_WAIT_S)
        proc.kill()

    def run(self) -> None:
        self.rank.redirect()
        env = {**os.environ, **self.rank.worker_env(self.rank.attempt)}  # a restart resumes (detcore train)
        for sig in FORWARDED:
            signal.signal(sig, self.forward)
        scratch = make_scratch(os.environ.get(contract.EXPERIMENT_ENV))
        if scratch is not None:
            env["TMPDIR"] = str(scratch)
        subreaper = become_subreaper()
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, *self.argv], env=env,
                                     preexec_fn=_child_setup(os.getpid()))
        if self.pending is not None:
            self.proc.send_signal(self.pending)
        self.rank.started(self.proc.pid)
        self.rank.watch(self.on_hang)
        code = self.proc.wait()
        if subreaper:
            end_orphans()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if self.hung and code == -signal.SIGKILL:  # ended by the watchdog, not on its own meanwhile
            code = contract.EXIT_HUNG
        self.rank.ended(self.proc.pid, code)
        _exit_like(code)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        sys.exit("usage: python -m launcher.runtime.shim [--log-dir D] [--run-dir R] [--hang-timeout S] -- MODULE [ARGS...]")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m launcher.runtime.shim", description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", help="append this rank's stdout/stderr to LOG_DIR/rank{RANK}.log")
    parser.add_argument("--run-dir", help="append this rank's start/end facts to RUN_DIR/events.jsonl")
    parser.add_argument("--hang-timeout", type=float, default=0.0,
                        help="seconds without a finished iteration on any rank before the attempt ends (0: off)")
    args = parser.parse_args(argv[:split])
    die_with_parent(signal.SIGTERM)  # torchrun or the Slurm task killed: the worker is stopped like a cancel
    Shim(args, argv[split + 1], argv[split + 2:]).run()


if __name__ == "__main__":
    main()
