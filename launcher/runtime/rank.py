"""One attempt of one rank, the same under every backend.

The shim (:mod:`launcher.runtime.shim`) runs its worker as a child process (local, Slurm); Ray's
train loop (:mod:`launcher.backends.ray_train.train_loop`) runs detcore in-process. Both go through
:class:`RankAttempt` for what a rank owes the runtime: its log, its heartbeat folder and hang
watchdog, its ``start``, ``hang`` and ``end`` facts, and the one line that names its failure.
How each ends its worker on a hang (kill the child, or exit the process) stays theirs.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from detcore import contract
from detcore.facts import End, Hang, Start, append_fact

STARTUP_LIMIT_S = 600.0   # before the first heartbeat of an attempt, the watchdog waits at least this long


def heartbeat_dir(run_dir: str | os.PathLike, attempt: int) -> Path:
    """Heartbeats of one attempt (a fresh folder per attempt, so a restart never reads old ones)."""
    return contract.RunDir(run_dir).heartbeats(attempt)


def record_start(run_dir: str | os.PathLike, rank: int, attempt: int, pid: int, node_id: str | None = None,
                 restored: Mapping[str, Any] | None = None) -> None:
    env = os.environ
    append_fact(run_dir, Start(
        rank=rank, attempt=attempt, pid=pid, shim_pid=os.getpid(), host=socket.gethostname(), time=time.time(),
        master_addr=env.get("MASTER_ADDR"), master_port=int(env.get("MASTER_PORT") or 0),
        world_size=int(env.get("WORLD_SIZE") or 1), local_rank=int(env.get("LOCAL_RANK") or 0),
        cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"), node=env.get("SLURMD_NODENAME") or None,
        node_id=node_id, restored=restored))


def record_end(run_dir: str | os.PathLike, rank: int, attempt: int, pid: int, code: int, log: Path | None) -> None:
    from launcher.views.tail import last_line

    failed = code > 0 and code not in (contract.EXIT_STOPPED, contract.EXIT_HUNG)  # its own error: its last line
    detail = last_line(log) if (failed and log is not None) else ""
    append_fact(run_dir, End(rank=rank, attempt=attempt, pid=pid, exit_code=code, detail=detail[:500],
                             time=time.time()))


def hang_verdict(beats: Mapping[int, tuple[Any, ...] | None], started: float, now: float, timeout: float,
                 startup_limit: float = STARTUP_LIMIT_S) -> str | None:
    """Why the attempt counts as hung, or None (pure). ``beats``: rank -> (iteration, time) or None."""
    times = [b[1] for b in beats.values() if b is not None]
    if not times:
        limit = max(timeout, startup_limit)
        if now - started > limit:
            return f"no rank finished its first iteration within {limit:.0f} s of starting"
        return None
    if now - max(times) <= timeout:
        return None
    its = ", ".join(f"rank {r}: {'-' if b is None else b[0]}" for r, b in sorted(beats.items()))
    return f"no rank finished an iteration for {now - max(times):.0f} s (limit {timeout:g} s); last iterations {its}"


class HangWatchdog(threading.Thread):
    """Checks the attempt's heartbeats every few seconds; calls ``on_hang(verdict)`` once when hung."""

    def __init__(self, beat_dir: Path, world_size: int, timeout: float, on_hang: Callable[[str], None],
                 poll_s: float | None = None) -> None:
        super().__init__(name="hang-watchdog", daemon=True)
        self.beat_dir, self.world_size, self.timeout, self.on_hang = beat_dir, world_size, timeout, on_hang
        self.poll_s = poll_s if poll_s is not None else max(0.5, min(10.0, timeout / 10))
        self.started = time.time()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.poll_s):
            beats = {r: contract.read_heartbeat(self.beat_dir, r) for r in range(self.world_size)}
            verdict = hang_verdict(beats, self.started, time.time(), self.timeout)
            if verdict:
                self.on_hang(verdict)
                return


def redirect_output(log_dir: str, rank: int) -> None:
    """Append this process's stdout and stderr (fds 1 and 2) to ``log_dir/rank{rank}.log``."""
    os.makedirs(log_dir, exist_ok=True)
    fd = os.open(contract.rank_log_in(log_dir, rank), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


@dataclass
class RankAttempt:
    """``rank`` of a ``world_size`` group in its ``attempt`` of the launch whose facts go to ``run_dir``
    (None: record nothing), its output to ``log_dir`` (None: left as it is)."""

    run_dir: str | None
    log_dir: str | None
    rank: int
    world_size: int
    attempt: int
    hang_timeout_s: float = 0.0
    beats: Path | None = None
    _watchdog: HangWatchdog | None = field(default=None, repr=False)

    @property
    def log(self) -> Path | None:
        return contract.rank_log_in(self.log_dir, self.rank) if self.log_dir else None

    def redirect(self) -> None:
        """This process's stdout and stderr into the rank's log (appended)."""
        if self.log_dir:
            redirect_output(self.log_dir, self.rank)

    def heartbeats(self) -> Path | None:
        """Create this attempt's heartbeat folder (its path, for ``DETCORE_HEARTBEAT_DIR``); None without a
        run directory or on a full work dir: then no heartbeats and no watchdog, but the rank still runs."""
        if not self.run_dir:
            return None
        beats = heartbeat_dir(self.run_dir, self.attempt)
        try:
            beats.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        self.beats = beats
        return beats

    def worker_env(self, restart: int) -> dict[str, str]:
        """The environment detcore runs this rank with (a child's, or this process's under Ray): its heartbeat
        folder (created here), the launch's run directory (rank 0 appends the scaling and weights facts there)
        and ``restart`` (>0: resume from the newest checkpoint; see ``contract.restart_env``)."""
        env = dict(contract.restart_env(restart))
        beats = self.heartbeats()
        if beats is not None:
            env[contract.HEARTBEAT_DIR_ENV] = str(beats)
        if self.run_dir:
            env[contract.RUN_DIR_ENV] = str(self.run_dir)
        return env

    def started(self, pid: int, node_id: str | None = None, restored: Mapping[str, Any] | None = None) -> None:
        """The ``start`` fact of the process ``pid`` that runs detcore for this rank (under Ray: its node id and
        the checkpoint pointer it was handed)."""
        if self.run_dir:
            record_start(self.run_dir, self.rank, self.attempt, pid, node_id, restored)

    def watch(self, on_hang: Callable[[str], None]) -> None:
        """Start the hang watchdog (with ``--hang-timeout`` and a heartbeat folder): ``on_hang(verdict)`` once
        when no rank of the attempt finished an iteration in time."""
        if self.beats is not None and self.hang_timeout_s > 0:
            self._watchdog = HangWatchdog(self.beats, self.world_size, self.hang_timeout_s, on_hang)
            self._watchdog.start()

    def hung(self, pid: int, state: str, verdict: str) -> None:
        """The ``hang`` fact: the watchdog's verdict and the state of this rank's process (``running``,
        ``stopped``...), written before the worker is ended so the reason names the hang, not the kill."""
        if self.run_dir:
            append_fact(self.run_dir, Hang(attempt=self.attempt, rank=self.rank, pid=pid, state=state, detail=verdict,
                                           time=time.time()))

    def ended(self, pid: int, code: int) -> None:
        """Stop watching and write the ``end`` fact (with the log's last line for a failure of its own)."""
        if self._watchdog is not None:
            self._watchdog.stopped.set()
        if self.run_dir:
            record_end(self.run_dir, self.rank, self.attempt, pid, code, self.log)

    def failure_line(self, what: str, code: int) -> str:
        """``rank R: WHAT exited with code C: <the log's last line>``."""
        from launcher.views.tail import last_line

        detail = last_line(self.log) if self.log is not None else ""
        return f"rank {self.rank}: {what} exited with code {code}" + (f": {detail}" if detail else "")
