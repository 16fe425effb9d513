"""What the facts of one launch say: restarts, ports, the rank that failed first, requeues (all pure).

The facts are the typed records of :mod:`detcore.facts` (``start``, ``end``, ``hang``, ``lost``,
``requeue``, ``stage``, ``scaling``, ``weights``: who writes each, and their JSON lines in
``WORK_DIR/runs/<run id>/events.jsonl``, are described there). Here they are read together:
:func:`summarize` turns a launch's facts into :class:`RunFacts`; ``scaling``, ``weights`` and facts of a
kind this reader does not know say nothing about how a launch ends and are passed over.

Which rank failed first (:func:`first_failure`) is decided here once, for every backend.
"""
from __future__ import annotations

import math
import signal
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping

from detcore.contract import EXIT_OK, EXIT_STOPPED, EXIT_USER_ERROR, describe_exit
from detcore.facts import End, Fact, Hang, Lost, Requeue, Stage, Start

GROUP_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # how torchrun, srun and Ray stop the rest of a group


@dataclass(frozen=True)
class Ending:
    """The failure that ended an attempt: which rank (None for a hang), in one line."""

    rank: int | None
    text: str


@dataclass(frozen=True)
class RunFacts:
    """One launch, as its facts describe it."""

    attempt: int = -1                          # the newest attempt any rank started (-1: none yet)
    ports: tuple[int, ...] = ()
    failures: tuple[str, ...] = ()             # one line per failed attempt, oldest first
    user_error: str = ""                       # the first rank that ended with EXIT_USER_ERROR
    current: Mapping[int, Start] = field(default_factory=dict)     # rank -> start record of the newest attempt
    ended: Mapping[int, End] = field(default_factory=dict)         # rank -> end record of the newest attempt
    user_error_attempt: int = -1               # the attempt in which that user error happened
    endings: Mapping[int, Ending] = field(default_factory=dict)    # attempt -> the failure that ended it
    requeues: Mapping[int, Requeue] = field(default_factory=dict)  # attempt -> the requeue fact rank 0 wrote
    hangs: Mapping[int, str] = field(default_factory=dict)         # attempt -> which ranks a hang found stuck
    stage: Stage | None = None                 # the newest ``stage`` fact, when no rank has started since

    @property
    def restarts(self) -> int:
        """Restarts that happened: attempts begun after a failure. A user error stops the group: an attempt
        torchrun began before the stop reached it is not a restart (the run was stopped, not restarted)."""
        newest = self.attempt if self.user_error_attempt < 0 else min(self.attempt, self.user_error_attempt)
        return max(0, newest)

    def all_succeeded(self, world_size: int) -> bool:
        """Every rank of the newest attempt ended with exit code 0."""
        return (len(self.ended) >= world_size
                and all(r in self.ended and self.ended[r].exit_code == EXIT_OK for r in range(world_size)))

    @property
    def last_failure(self) -> str:
        return self.failures[-1] if self.failures else ""

    @property
    def stop_reason(self) -> str:
        """Why the run must end now without a restart: a rank's user error (exit code 2), which no restart can
        mend; '' without one. Every monitor stops the group on it (the local supervisor, the Ray driver and
        Ray's rank 0; Slurm's task neither requeues nor waits for a requeue)."""
        return f"{self.user_error} (a user error: the run was stopped, not restarted)" if self.user_error else ""

    def failure_reason(self, fallback: str, allowed: int, option: str, restarts: int | None = None) -> str:
        """The reason of a run that failed: the failure that ended it (``fallback`` when no fact names one)
        and why it was not restarted again (``allowed`` restarts, set by ``option``; -1: unlimited).
        ``restarts``: those that count against ``allowed`` when not all do (a Slurm job's hang requeues, not
        its preemptions); default :attr:`restarts`."""
        reason = self.last_failure or fallback
        done = self.restarts if restarts is None else restarts
        if allowed == 0:
            return f"{reason} (not restarted: {option} 0)"
        if 0 < allowed <= done:
            return f"{reason} (after {done} restart(s), the most allowed by {option})"
        return f"{reason} (after {done} restart(s))" if done else reason

    def success_note(self) -> str:
        """The reason of a run that succeeded: which failures it recovered from ('' without restarts)."""
        if not self.restarts:
            return ""
        return f"finished after {self.restarts} restart(s)" + (
            f"; last failure: {self.last_failure}" if self.last_failure else "")

    @property
    def newest_failed(self) -> bool:
        """The newest attempt has ended with a failure (a restart or the end of the run follows)."""
        return self.attempt in self.endings

    def failure_before(self, attempt: int) -> str:
        """The failure of the newest attempt before ``attempt``: what the restart into ``attempt`` followed."""
        earlier = [a for a in self.endings if a < attempt]
        return self.endings[max(earlier)].text if earlier else ""


def end_line(rec: End) -> str:
    """``rank 1 killed by SIGKILL`` or ``rank 1: exit code 2 (user error): <detail>`` for an end record."""
    code = rec.exit_code
    if code < 0:
        return f"rank {rec.rank} killed by {describe_exit(code).removeprefix('signal ')}"
    text = f"rank {rec.rank}: {describe_exit(code)}"
    return text + (f": {rec.detail}" if rec.detail else "")


def hang_stuck(records: list[Hang]) -> str:
    """Which ranks a hang found stuck: ``rank 1 is stopped``, or that every rank was running."""
    stuck = sorted({(r.rank, r.state) for r in records if r.state is not None and r.state != "running"})
    if stuck:
        return ", ".join(f"rank {r} is {state}" for r, state in stuck)
    return "every rank that reported is running (waiting in a collective?)"


def hang_line(records: list[Hang]) -> str:
    """One line from the watchdog's hang facts of an attempt: the verdict and which ranks are stuck."""
    verdict = records[0].detail or "no rank finished an iteration in time"
    return f"hang: {hang_stuck(records)}; {verdict}; Python stacks are in the rank logs"


def _worker(start: Start | None) -> str:
    if start is None:
        return "its worker"
    return f"its worker (pid {start.pid} on {start.node or start.host or '?'})"


def vanished_line(rank: int, start: Start) -> str:
    """A rank known dead that left no end record and that no scheduler reported."""
    return (f"rank {rank}: the worker (pid {start.pid} on {start.host or '?'}) died without recording "
            f"an exit: killed by a signal (SIGKILL, the OOM killer or a node failure)")


def lost_line(rank: int, lost: Lost, start: Start | None) -> str:
    """A rank the scheduler reported lost (a ``lost`` fact), in one line."""
    kind, detail = lost.kind, lost.detail.strip()
    if kind == "node":
        node = lost.node or (start.node or start.host if start is not None else "") or "?"
        return f"rank {rank} lost with its node {node}" + (f" ({detail})" if detail else "")
    if kind == "process":
        return (f"rank {rank}: {_worker(start)} died without recording an exit; Ray reports its process died "
                f"(a signal such as SIGKILL, the OOM killer or a crash)")
    if kind == "unreachable":
        return f"rank {rank}: {_worker(start)} stopped answering Ray (its process or its node is gone)"
    if kind == "unresponsive":
        return f"rank {rank}: {_worker(start)} missed Ray Train's health checks (hung or overloaded)"
    return f"rank {rank}: {detail or 'failed'}"


def late_loss_line(rank: int, lost: Lost, start: Start | None) -> str:
    """A rank whose training had ended (its end fact says so) when the scheduler reported it lost."""
    how = {"node": f"with its node {lost.node or '?'}", "process": "its process died",
           "unreachable": "it stopped answering Ray"}.get(lost.kind, "lost")
    return f"rank {rank}: {_worker(start)} was lost after its training had ended ({how})"


EXTERNAL_LOSSES = ("node", "process", "unreachable")  # killed or cut off from outside: a cause, not a consequence


@dataclass(frozen=True)
class _Candidate:
    rank: int
    text: str
    tier: int            # 0 lost from outside, 1 unresponsive, 2 a failure of its own, 3 stopped with the group
    when: float          # when it ended: the end fact's time, the scheduler's report; inf when unknown

    def key(self) -> tuple:
        return (self.tier, self.when, self.rank)


def _when(rec: End | Lost) -> float:
    t = rec.time
    return t if t is not None and math.isfinite(t) else math.inf


def _tier_of_loss(report: Lost) -> int:
    kind = report.kind
    return 0 if kind in EXTERNAL_LOSSES else 1 if kind == "unresponsive" else 2


Alive = Callable[[Start], bool | None]


def first_failure(starts: Mapping[int, Start], ends: Mapping[int, End], hangs: list[Hang],
                  lost: Mapping[int | None, Lost], alive: Alive | None) -> Ending | None:
    """The failure that ended one attempt (None: nothing failed), from that attempt's facts.

    1. A hang: the watchdog recorded it before it ended any worker.
    2. A rank the scheduler reported killed or cut off from outside (its process died, it became
       unreachable, its node was lost) and that left no end record, or whose training had ended
       before its process was lost (Ray then restarts the group): such a death is a cause, and
       the other ranks' errors (a collective that lost its peer) are its consequences. Then a rank
       that missed the scheduler's health checks.
    3. The earliest failure of a rank's own, by the time its end fact was written: a worker's error
       (exit code > 0), a death by a signal other than SIGTERM/SIGINT, an error the scheduler
       reported, a rank known dead (``alive(start) is False``) that left no record, timed last.
    4. The earliest SIGTERM/SIGINT (how torchrun, srun and Ray stop the rest of a group), and
       ranks that died without a record after the scheduler reported another rank: torn down.
    Ties go to the lower rank. Times from different hosts are compared as they are (clocks in sync).
    """
    if hangs:
        return Ending(None, hang_line(hangs))
    found: list[_Candidate] = []
    for rank, rec in ends.items():
        code = rec.exit_code
        if code in (EXIT_OK, EXIT_STOPPED):
            report = lost.get(rank)
            if report is not None and report.kind in EXTERNAL_LOSSES:  # killed between its end and Ray's
                found.append(_Candidate(rank, late_loss_line(rank, report, starts.get(rank)), _tier_of_loss(report),
                                        _when(report)))
            continue
        stopped = code < 0 and -code in GROUP_STOP_SIGNALS
        found.append(_Candidate(rank, end_line(rec), 3 if stopped else 2, _when(rec)))
    for rank in sorted(set(starts) - set(ends)):
        report = lost.get(rank) or lost.get(None)
        if report is not None:
            found.append(_Candidate(rank, lost_line(rank, report, starts[rank]), _tier_of_loss(report), _when(report)))
        elif alive is not None and alive(starts[rank]) is False:
            found.append(_Candidate(rank, vanished_line(rank, starts[rank]), 3 if lost else 2, math.inf))
    for lost_rank, report in lost.items():  # reported before its start fact was written
        if lost_rank is not None and lost_rank not in starts and lost_rank not in ends:
            found.append(_Candidate(lost_rank, lost_line(lost_rank, report, None), _tier_of_loss(report),
                                    _when(report)))
    if not found:
        return None
    first = min(found, key=_Candidate.key)
    return Ending(first.rank, first.text)


def _merge_lost(into: dict[int | None, Lost], rec: Lost) -> None:
    """Keep the first report of a rank's loss (its time orders it); a later ``node`` verdict names the cause."""
    old = into.get(rec.rank)
    if old is None:
        into[rec.rank] = rec
    elif rec.kind == "node" and old.kind != "node":
        into[rec.rank] = replace(old, kind="node", node=rec.node or old.node, detail=rec.detail)


def summarize(events: Iterable[Fact], alive: Alive | None = None) -> RunFacts:
    """The :class:`RunFacts` of a launch's events.

    ``alive(start_record)`` says whether that rank's process still runs (None: cannot tell, e.g. on
    another host). A rank whose attempt has a start record, no end record and a dead pid died
    without recording an exit (SIGKILL of its shim, the OOM killer, a node failure).
    """
    starts: dict[tuple[int, int], Start] = {}
    ends: dict[tuple[int, int], End] = {}
    hangs: dict[int, list[Hang]] = {}
    lost: dict[int, dict[int | None, Lost]] = {}
    requeues: dict[int, Requeue] = {}
    ports: set[int] = set()
    stage: Stage | None = None
    for rec in events:
        if isinstance(rec, Hang):
            hangs.setdefault(rec.attempt, []).append(rec)
        elif isinstance(rec, Lost):
            _merge_lost(lost.setdefault(rec.attempt, {}), rec)
        elif isinstance(rec, Requeue):
            requeues.setdefault(rec.attempt, rec)
        elif isinstance(rec, Stage):
            stage = rec
        elif isinstance(rec, Start):
            starts[(rec.rank, rec.attempt)] = rec
            stage = None
            if rec.master_port:
                ports.add(rec.master_port)
        elif isinstance(rec, End):
            ends.setdefault((rec.rank, rec.attempt), rec)
    attempts = sorted({a for _, a in starts} | {a for _, a in ends} | set(hangs) | set(lost))
    failures: list[str] = []
    endings: dict[int, Ending] = {}
    user_error, user_error_attempt = "", -1
    for attempt in attempts:
        ending = first_failure({r: rec for (r, a), rec in starts.items() if a == attempt},
                               {r: rec for (r, a), rec in ends.items() if a == attempt},
                               hangs.get(attempt, []), lost.get(attempt, {}), alive)
        if ending is not None:
            endings[attempt] = ending
            failures.append(ending.text)
        for (_rank, a), rec in sorted(ends.items()):
            if a == attempt and rec.exit_code == EXIT_USER_ERROR and not user_error:
                user_error, user_error_attempt = end_line(rec), attempt
    newest = attempts[-1] if attempts else -1
    current = {r: rec for (r, a), rec in starts.items() if a == newest}
    ended = {r: rec for (r, a), rec in ends.items() if a == newest}
    return RunFacts(newest, tuple(sorted(ports)), tuple(failures), user_error, current, ended,
                    user_error_attempt, endings, requeues, {a: hang_stuck(recs) for a, recs in sorted(hangs.items())},
                    stage)
