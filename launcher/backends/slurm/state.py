"""Reading Slurm's answers: ``squeue``/``sacct``/``sbatch`` output into launcher states (pure).

The commands are built here too, so a unit test can feed recorded output for exactly the
command the backend runs. ``squeue`` knows a job while it is pending or running (and
``RestartCnt``, the number of requeues); ``sacct -D`` keeps every attempt of a requeued job
(one record per attempt: ``REQUEUED`` for an ``scontrol requeue``, ``NODE_FAIL``, ``PREEMPTED``,
then the current one), and the final state.

Slurm does not record who ran ``scontrol requeue``, nor why its USR2 came; the launch's facts do
(:mod:`launcher.runtime.facts`): rank 0 appends a ``requeue`` fact before it requeues the job
after a USR2 (with the time the job had left) or a hang. :func:`requeue_cause` combines both,
and a failed job's reason names the rank that failed first, from the same facts as on every
backend. Attempt N of the facts (``SLURM_RESTART_COUNT``) is the N-th record of ``sacct -D``.
"""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from detcore.facts import Fact, Lost, Requeue
from launcher.errors import LauncherError
from launcher.runtime.facts import Ending, RunFacts, summarize
from launcher.spec import JobState, JobStatus

QUEUE_FIELDS = ("JobArrayID", "JobID", "State", "Reason", "RestartCnt", "NodeList", "StartTime")
ACCT_FIELDS = ("JobID", "JobIDRaw", "State", "ExitCode", "Start", "End", "NodeList")

RUNNING_STATES = {"RUNNING": JobState.RUNNING, "CONFIGURING": JobState.RUNNING, "COMPLETING": JobState.RUNNING,
                  "STAGE_OUT": JobState.RUNNING, "RESIZING": JobState.RUNNING, "SIGNALING": JobState.RUNNING}
WAITING_STATES = {"PENDING", "SUSPENDED", "STOPPED", "RESV_DEL_HOLD"}
REQUEUE_STATES = {"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "SPECIAL_EXIT"}
FAILURE_TEXT = {"TIMEOUT": "reached its time limit and was not requeued", "NODE_FAIL": "lost a node",
                "OUT_OF_MEMORY": "ran out of memory (raise --mem-gb)", "BOOT_FAIL": "its node failed to boot",
                "DEADLINE": "missed its deadline", "PREEMPTED": "was preempted and not requeued",
                "REVOKED": "was revoked"}
# A rank's ending explains these final states (the others are Slurm's own doing: a cancel, a time limit).
RANK_EXPLAINS = {"FAILED", "NODE_FAIL", "OUT_OF_MEMORY"}
# slurmctld checks time limits every 30 s and sends USR2 at the first check less than DELAY + 30 s before
# the limit: a USR2 with at most DELAY + this much left came from the time limit, not a preemption.
TIME_LIMIT_MARGIN_S = 60


@dataclass(frozen=True)
class QueueRow:
    job_id: str      # as Slurm names it: 123 or 123_4 for an array task
    raw_id: str      # the unique numeric id (a pending array task shows its array's id)
    state: str
    reason: str
    restarts: int
    nodes: str
    start: float | None = None


@dataclass(frozen=True)
class AcctRecord:
    job_id: str
    raw_id: str
    state: str       # first word only ("CANCELLED by 0" -> CANCELLED)
    exit_code: int | None
    signal: int | None
    start: float | None
    end: float | None
    nodes: str


def squeue_command(job_id: str) -> list[str]:
    return ["squeue", "-h", "-j", job_id, "-O", ",".join(f"{f}:|" for f in QUEUE_FIELDS)]


def sacct_command(job_id: str) -> list[str]:
    return ["sacct", "-n", "-P", "-D", "-X", "-j", job_id, "-o", ",".join(ACCT_FIELDS)]


def end_time_command(job_id: str) -> list[str]:
    """``squeue`` for the running job's end time (its start plus its current time limit)."""
    return ["squeue", "-h", "-j", job_id, "-O", "EndTime:|"]


def parse_end_time(text: str) -> float | None:
    """The time from :func:`end_time_command`'s answer (None: no limit, or no answer)."""
    lines = text.strip().splitlines()
    return _slurm_time(lines[0].strip().rstrip("|")) if lines else None


def parse_sbatch(output: str) -> str:
    """The job id from ``sbatch --parsable`` (``123`` or ``123;cluster``)."""
    for line in output.splitlines():
        m = re.fullmatch(r"\s*(\d+)(;\S+)?\s*", line)
        if m:
            return m.group(1)
    raise LauncherError(f"could not read a job id from sbatch's answer {output.strip()[:200]!r}")


def parse_squeue(text: str) -> list[QueueRow]:
    rows = []
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) < len(QUEUE_FIELDS) or not cells[0].strip():
            continue
        job_id, raw, state, reason, restarts, nodes, start = (c.strip() for c in cells[:len(QUEUE_FIELDS)])
        rows.append(QueueRow(job_id, raw, state.split()[0] if state else "", "" if reason == "None" else reason,
                             int(restarts) if restarts.isdigit() else 0, "" if nodes == "(null)" else nodes,
                             _slurm_time(start)))
    return rows


def _slurm_time(text: str) -> float | None:
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:  # Unknown, None, empty
        return None


def parse_sacct(text: str) -> list[AcctRecord]:
    records = []
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) < len(ACCT_FIELDS) or not cells[0].strip() or "." in cells[0]:
            continue
        job_id, raw, state, exit_code, start, end, nodes = (c.strip() for c in cells[:len(ACCT_FIELDS)])
        code, _, sig = exit_code.partition(":")
        records.append(AcctRecord(job_id, raw, state.split()[0] if state else "",
                                  int(code) if code.isdigit() else None, int(sig) if sig.isdigit() else None,
                                  _slurm_time(start), _slurm_time(end), "" if nodes == "None assigned" else nodes))
    return records


def _ports(raw_id: str, port_of) -> tuple[int, ...]:
    return (port_of(int(raw_id)),) if raw_id.isdigit() else ()


def requeue_cause(acct_state: str | None, fact: Requeue | None, facts: RunFacts, attempt: int) -> str:
    """Why ``attempt`` was requeued, as words after "requeued after" (pure).

    From the ``requeue`` fact rank 0 wrote (a hang; a USR2 with little time left: the time limit;
    else a preemption signal) and Slurm's record of the attempt (``NODE_FAIL``, ``PREEMPTED``, or
    ``REQUEUED`` without a fact: someone ran ``scontrol requeue``).
    """
    if fact is not None:
        if fact.cause == "hang":
            stuck = facts.hangs.get(attempt)
            return f"a hang ({stuck})" if stuck else "a hang"
        left, delay = fact.time_left_s, fact.signal_delay_s or 0
        if not isinstance(left, (int, float)):
            return "a USR2 signal (a preemption or the time limit)"
        if left <= delay + TIME_LIMIT_MARGIN_S:
            return f"the time limit (USR2 with {max(0.0, left):.0f} s left)"
        return f"a preemption signal (USR2 with {left / 60:.0f} min left before the time limit)"
    if acct_state == "NODE_FAIL":
        ending = facts.endings.get(attempt)
        return "a node failure" + (f" ({ending.text})" if ending is not None else "")
    if acct_state == "PREEMPTED":
        return "a preemption (Slurm: PREEMPTED)"
    if acct_state == "TIMEOUT":
        return "the time limit (Slurm: TIMEOUT)"
    if acct_state == "REQUEUED":
        return "a manual scontrol requeue (no preemption, time limit or hang was recorded)"
    return "a requeue (Slurm does not say why)"


def requeue_recorded(events: Sequence[Fact], attempt: int) -> bool:
    """Rank 0 recorded why it requeued ``attempt`` (then sacct need not be asked)."""
    return any(isinstance(e, Requeue) and e.attempt == attempt for e in events)


def _facts(events: Sequence[Fact], mine: Sequence[AcctRecord], over_before: int) -> RunFacts:
    """The launch's facts with Slurm's word added: a ``NODE_FAIL`` attempt lost the ranks that left no end
    record. Every attempt before ``over_before`` has ended, so a rank of it without an end record is dead."""
    lost = [Lost(attempt=a, rank=None, kind="node", source="slurm", detail="")
            for a, rec in enumerate(mine) if rec.state == "NODE_FAIL"]
    return summarize([*events, *lost], alive=lambda rec: False if rec.attempt < over_before else None)


def job_status(job_id: str, queue: Sequence[QueueRow], records: Sequence[AcctRecord], port_of,
               events: Sequence[Fact] = (), failure_detail: Callable[[], str] | None = None) -> JobStatus:
    """The launcher's view of Slurm job ``job_id`` from its squeue row (if any), sacct records and the
    launch's facts (``events``).

    ``port_of(raw_id) -> port`` gives the rendezvous port (shown once the job has its own id).
    A requeued job waiting to start again is PREEMPTED with its restart count and why it was
    requeued; Slurm's failure states are FAILED with the reason in words and the rank that failed
    first (from the facts; else ``failure_detail()``, e.g. what submitit recorded).
    """
    row = next((q for q in queue if q.job_id == job_id), queue[0] if len(queue) == 1 else None)
    mine = [r for r in records if r.job_id == job_id] or list(records)
    restarts = max(row.restarts if row else 0, len(mine) - 1)  # sacct -D: one record per attempt
    last = mine[-1] if mine else None

    def cause(attempt: int, over_before: int) -> str:
        state = mine[attempt].state if attempt < len(mine) else None
        facts = _facts(events, mine, over_before)
        return requeue_cause(state, facts.requeues.get(attempt), facts, attempt)

    # A COMPLETING job that timed out, failed or lost a node may still be requeued (by submitit's
    # handler, or by Slurm after a node failure), so only a cancel or a success is final before
    # it has left the queue: a terminal state written to the store is never taken back.
    final_while_completing = last is not None and last.state in ("CANCELLED", "COMPLETED")
    if row is not None and not (row.state == "COMPLETING" and final_while_completing):
        if row.state in RUNNING_STATES:
            reason = f"running again after {restarts} requeue(s), the last after {cause(restarts - 1, restarts)}" \
                if restarts else ""
            if row.state == "COMPLETING":
                reason = "ending (Slurm: COMPLETING)"
            return JobStatus(JobState.RUNNING, restarts=restarts, reason=reason, ports=_ports(row.raw_id, port_of),
                             started=row.start)
        if row.state in REQUEUE_STATES or (row.state in WAITING_STATES and restarts):
            why = f"; Slurm: {row.reason}" if row.reason else ""
            return JobStatus(JobState.PREEMPTED, restarts=restarts,
                             reason=f"requeued after {cause(restarts - 1, restarts)}, waiting to start again "
                                    f"(restart {restarts}){why}")
        if row.state in WAITING_STATES:
            ports = _ports(row.raw_id, port_of) if "_" not in row.job_id else ()
            return JobStatus(JobState.PENDING, reason=f"Slurm: {row.reason}" if row.reason else "", ports=ports)
        last = AcctRecord(row.job_id, row.raw_id, row.state, None, None, None, None, row.nodes)
    if last is None:
        return JobStatus(JobState.FAILED, reason=f"Slurm knows no job {job_id} (neither squeue nor sacct lists it)")
    st = _from_record(last, restarts, port_of)
    if st.state is JobState.PREEMPTED:
        return JobStatus(JobState.PREEMPTED, restarts=st.restarts, reason=f"requeued after "
                         f"{cause(st.restarts - 1, st.restarts)}, waiting to start again (restart {st.restarts})")
    if st.state is JobState.SUCCEEDED and restarts:
        return dataclasses.replace(st, reason=f"finished after {restarts} requeue(s), the last after "
                                              f"{cause(restarts - 1, restarts)}")
    if st.state is JobState.FAILED and last.state in RANK_EXPLAINS:
        facts = _facts(events, mine, restarts + 1)
        ending: Ending | None = facts.endings.get(restarts) or facts.endings.get(facts.attempt)
        if facts.stop_reason and facts.user_error_attempt == restarts:  # the shared policy's words, as elsewhere
            detail = facts.stop_reason
        else:
            detail = ending.text if ending is not None else (failure_detail() if failure_detail else "")
        return dataclasses.replace(st, reason=f"{st.reason}: {detail}" if detail else st.reason)
    return st


def _from_record(rec: AcctRecord, restarts: int, port_of) -> JobStatus:
    ports = _ports(rec.raw_id, port_of)
    common = dict(restarts=restarts, ports=ports, started=rec.start, ended=rec.end)
    if rec.state in RUNNING_STATES:
        return JobStatus(JobState.RUNNING, restarts=restarts, ports=ports, started=rec.start)
    if rec.state == "PENDING":
        return JobStatus(JobState.PREEMPTED if restarts else JobState.PENDING, restarts=restarts)
    if rec.state in REQUEUE_STATES - {"PREEMPTED"}:
        return JobStatus(JobState.PREEMPTED, restarts=max(restarts, 1))
    if rec.state == "COMPLETED":
        return JobStatus(JobState.SUCCEEDED, exit_code=0, **common)
    if rec.state == "CANCELLED":
        return JobStatus(JobState.CANCELLED, exit_code=rec.exit_code, reason="cancelled (scancel)", **common)
    code = f" (exit {rec.exit_code}" + (f", signal {rec.signal})" if rec.signal else ")") \
        if rec.exit_code is not None else ""
    what = FAILURE_TEXT.get(rec.state, "failed")
    return JobStatus(JobState.FAILED, exit_code=rec.exit_code, reason=f"Slurm job {rec.job_id} {what}{code}", **common)


def scancel_error_is_harmless(message: str) -> bool:
    """scancel's complaint about a job that already ended (cancelling is idempotent)."""
    text = message.lower()
    return "invalid job id" in text or "already completing or completed" in text or "job has already finished" in text


def sbatch_error_line(stderr: str) -> str:
    """sbatch's error output as one line (``sbatch: error:`` prefixes and the --help hint dropped)."""
    parts = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line or line.startswith("Try \"sbatch --help\""):
            continue
        line = re.sub(r"^(sbatch|squeue|sacct|scancel|srun|scontrol|sinfo): (error: |fatal: )?", "", line)
        if line not in parts:
            parts.append(line)
    return "; ".join(parts) or "no error message"
