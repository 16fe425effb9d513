"""What the facts of one launch say: restarts, ports, failures, a user error, a hang (all pure).

The facts are the JSON lines of ``WORK_DIR/runs/<run id>/events.jsonl`` (see
:mod:`detcore.contract`):

``{"event": "start", "rank", "attempt", "pid", "host", "master_addr", "master_port", ...}``
    written by the worker shim when a rank's attempt begins;
``{"event": "end", "rank", "attempt", "pid", "exit_code", "detail"}``
    written by the shim when the worker returns or raises (a rank killed by a signal writes
    none: :func:`summarize` reports it from the start record and the liveness of its pid);
``{"event": "hang", "attempt", "detail"}``
    written by the monitor's hang watchdog before it ends the attempt.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from detcore.contract import EXIT_HUNG, EXIT_OK, EXIT_STOPPED, EXIT_USER_ERROR, describe_exit


@dataclass(frozen=True)
class RunFacts:
    """One launch, as its facts describe it."""

    attempt: int = -1                          # the newest attempt any rank started (-1: none yet)
    ports: tuple[int, ...] = ()
    master_addrs: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()             # one line per failed attempt, oldest first
    user_error: str = ""                       # the first rank that ended with EXIT_USER_ERROR
    current: Mapping[int, Mapping] = field(default_factory=dict)   # rank -> start record of the newest attempt
    ended: Mapping[int, Mapping] = field(default_factory=dict)     # rank -> end record of the newest attempt
    user_error_attempt: int = -1               # the attempt in which that user error happened

    @property
    def restarts(self) -> int:
        """Restarts that happened: attempts begun after a failure. A user error stops the group: an attempt
        torchrun began before the stop reached it is not a restart (the run was stopped, not restarted)."""
        newest = self.attempt if self.user_error_attempt < 0 else min(self.attempt, self.user_error_attempt)
        return max(0, newest)

    def all_succeeded(self, world_size: int) -> bool:
        """Every rank of the newest attempt ended with exit code 0."""
        return (len(self.ended) >= world_size
                and all(int(self.ended.get(r, {}).get("exit_code", 1)) == EXIT_OK for r in range(world_size)))

    @property
    def last_failure(self) -> str:
        return self.failures[-1] if self.failures else ""


def end_line(rec: Mapping) -> str:
    """``rank 1 killed by SIGKILL`` or ``rank 1: exit code 2 (user error): <detail>`` for an end record."""
    code = int(rec.get("exit_code", 0) or 0)
    if code < 0:
        return f"rank {rec.get('rank')} killed by {describe_exit(code).removeprefix('signal ')}"
    text = f"rank {rec.get('rank')}: {describe_exit(code)}"
    return text + (f": {rec['detail']}" if rec.get("detail") else "")


def hang_line(records: list[Mapping]) -> str:
    """One line from the watchdog's hang facts of an attempt: the verdict and which ranks are stuck."""
    verdict = str(records[0].get("detail") or "no rank finished an iteration in time")
    stuck = sorted({(int(r.get("rank", 0) or 0), r.get("state")) for r in records
                    if r.get("state") not in (None, "running")})
    if stuck:
        who = ", ".join(f"rank {r} is {state}" for r, state in stuck)
    else:
        who = "every rank that reported is running (waiting in a collective?)"
    return f"hang: {who}; {verdict}; Python stacks are in the rank logs"


def _blame(code: int) -> int:
    """Which ending caused an attempt's failure, lowest first: a worker's own error, a signal from outside,
    the hang watchdog, and last a SIGTERM/SIGINT that torchrun or srun sent to stop the rest of the group."""
    if code > 0:
        return 2 if code == EXIT_HUNG else 0
    return 3 if -code in (signal.SIGTERM, signal.SIGINT) else 1


def summarize(events: Iterable[Mapping], alive: Callable[[Mapping], bool | None] | None = None) -> RunFacts:
    """The :class:`RunFacts` of a launch's events.

    ``alive(start_record)`` says whether that rank's process still runs (None: cannot tell, e.g. on
    another host). A rank whose newest attempt has a start record, no end record and a dead pid
    was killed by a signal (SIGKILL, the OOM killer, a node failure) and is reported as such.
    """
    starts: dict[tuple[int, int], Mapping] = {}
    ends: dict[tuple[int, int], Mapping] = {}
    hangs: dict[int, list[Mapping]] = {}
    ports, addrs = set(), set()
    for rec in events:
        kind, attempt = rec.get("event"), int(rec.get("attempt", 0) or 0)
        if kind == "hang":
            hangs.setdefault(attempt, []).append(rec)
            continue
        if kind not in ("start", "end"):
            continue
        key = (int(rec.get("rank", 0) or 0), attempt)
        if kind == "start":
            starts[key] = rec
            if rec.get("master_port"):
                ports.add(int(rec["master_port"]))
            if rec.get("master_addr"):
                addrs.add(str(rec["master_addr"]))
        else:
            ends.setdefault(key, rec)
    attempts = sorted({a for _, a in starts} | {a for _, a in ends} | set(hangs))
    failures: list[str] = []
    user_error, user_error_attempt = "", -1
    for attempt in attempts:
        if attempt in hangs:
            failures.append(hang_line(hangs[attempt]))
            continue
        candidates = [(_blame(int(rec.get("exit_code", 0) or 0)), r, end_line(rec))
                      for (r, a), rec in ends.items() if a == attempt
                      and int(rec.get("exit_code", 0) or 0) not in (EXIT_OK, EXIT_STOPPED)]
        if alive is not None:
            candidates += [(1, r, f"rank {r}: the worker (pid {rec.get('pid')} on {rec.get('host', '?')}) died "
                                  f"without recording an exit: killed by a signal (SIGKILL, the OOM killer or a "
                                  f"node failure)")
                           for (r, a), rec in starts.items() if a == attempt and (r, a) not in ends
                           and alive(rec) is False]
        if candidates:
            failures.append(min(candidates)[2])
        for (r, a), rec in sorted(ends.items()):
            if a == attempt and int(rec.get("exit_code", 0) or 0) == EXIT_USER_ERROR and not user_error:
                user_error, user_error_attempt = end_line(rec), attempt
    newest = attempts[-1] if attempts else -1
    current = {r: rec for (r, a), rec in starts.items() if a == newest}
    ended = {r: rec for (r, a), rec in ends.items() if a == newest}
    return RunFacts(newest, tuple(sorted(ports)), tuple(sorted(addrs)), tuple(failures), user_error, current, ended,
                    user_error_attempt)
