"""The run monitor the local supervisor and the Ray driver share, and how its files are read back.

A monitor is the one process that follows a launch from the submitting side. It owns the job's
``status.json`` (in ``$LAUNCHER_HOME``) and the launch's ``outcome.json`` (in the run directory,
in the work dir). Every write is best effort: when ``$LAUNCHER_HOME`` is full the monitor keeps
the status in memory, says so once in its log, retries on the next change, and still records
the ending in ``outcome.json`` beside the facts, so a finished job is never reported failed.

:func:`observed_status` is the read side, used by the backends' ``status``: a terminal
``status.json`` or ``outcome.json`` is the answer; a live monitor (pid plus start tick) means
the status file is current; a dead monitor without an ending is ``failed`` with the reason
"monitor lost", and the experiment can be resumed.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from detcore import contract
from detcore.facts import Start, read_facts
from launcher.resources.procinfo import current_process, process_start
from launcher.runtime.facts import RunFacts, summarize
from launcher.runtime.job_folder import JobFolder
from launcher.runtime.phase import running_reason, stage_line
from launcher.runtime.files import read_json, write_json_atomic
from launcher.state import JobState
from launcher.runtime.rank import heartbeat_dir

if TYPE_CHECKING:
    from launcher.spec import JobSpec, JobStatus

logger = logging.getLogger(__name__)
HOST = socket.gethostname()


def local_alive(rec: Start) -> bool | None:
    """Whether the rank of a start record still runs (its shim or its worker); None on another host."""
    if rec.host not in ("", HOST):
        return None
    return any(process_start(pid) is not None for pid in (rec.shim_pid, rec.pid))


class RunMonitor:
    """The status of one launch, kept from its facts and written where it can be.

    ``status.json`` holds what its readers use and nothing else: ``state``, ``restarts``, ``ports``,
    ``reason``, ``exit_code``, ``started``, ``ended`` (:func:`observed_status`, hence ``launcher status``),
    and ``run_dir``, ``monitor_pid``, ``monitor_start`` (whether the monitor still runs; the store's repair
    rebuilds a lost row from them). The local supervisor adds ``devices`` and ``cores``: the GPUs and cores
    the job held, still there once its leases are given back (``python -m benchmarks --gpu`` checks that two
    jobs held different GPUs)."""

    def __init__(self, status_path: Path, run_dir: Path, max_restarts: int) -> None:
        self.status_path, self.run_dir, self.max_restarts = Path(status_path), Path(run_dir), max_restarts
        pid, start = current_process()
        self.status: dict[str, Any] = {"state": JobState.PENDING.value, "restarts": 0, "ports": [], "reason": "",
                                       "exit_code": None, "started": None, "ended": None, "run_dir": str(run_dir),
                                       "monitor_pid": pid, "monitor_start": start}
        self._lock = threading.Lock()
        self._unwritten = False

    # ---- writing ---------------------------------------------------------------------------------
    def set(self, state: JobState | None = None, **fields: Any) -> None:
        """Change the status; written at once, or kept and retried when the disk refuses."""
        with self._lock:
            if JobState(self.status["state"]).is_terminal():
                return
            if state is not None:
                fields["state"] = state.value
            changed = {k: v for k, v in fields.items() if self.status.get(k) != v}
            if not changed and not self._unwritten:
                return
            self.status.update(changed)
            self._write()

    def _write(self) -> None:
        try:
            write_json_atomic(self.status_path, self.status)
        except OSError as exc:
            if not self._unwritten:
                logger.warning("cannot write %s (%s); the job goes on, its status is kept in memory and written "
                               "again later", self.status_path, exc.strerror or exc)
            self._unwritten = True
        else:
            self._unwritten = False

    def finish(self, state: JobState, exit_code: int | None, reason: str) -> None:
        """The ending: status.json (retried a few times) and outcome.json in the run directory."""
        self.set(state, exit_code=exit_code, reason=reason, ended=time.time())
        for _ in range(3):
            if not self._unwritten:
                break
            time.sleep(0.5)
            with self._lock:
                self._write()
        try:
            write_json_atomic(contract.RunDir(self.run_dir).outcome, self.status)
        except OSError as exc:
            logger.warning("cannot write %s: %s", contract.RunDir(self.run_dir).outcome, exc.strerror or exc)
        logger.info("%s%s", state.value, f": {reason}" if reason else "")

    # ---- following the facts ---------------------------------------------------------------------
    def facts(self) -> RunFacts:
        return summarize(read_facts(self.run_dir), local_alive)

    def observe(self) -> RunFacts:
        """State, restarts, ports and the reason (the stage, the newest restart and its cause) from the facts
        of this launch and the heartbeats of its newest attempt."""
        facts = self.facts()
        fields: dict[str, Any] = {"ports": list(facts.ports)}
        state = None
        if JobState(self.status["state"]) in (JobState.PENDING, JobState.RESTARTING, JobState.RUNNING):
            if facts.attempt >= 0:
                state = JobState.RUNNING
            if facts.restarts > self.status["restarts"]:
                fields["restarts"] = facts.restarts
            world_size = max([rec.world_size or 1 for rec in facts.current.values()] or [1])
            reason = running_reason(facts, self._beats(facts.attempt, world_size), world_size, self.max_restarts)
            if facts.newest_failed and not facts.user_error:
                stage = stage_line(facts, {}, world_size) if facts.stage is not None else ""
                if self.max_restarts < 0 or facts.restarts < self.max_restarts:
                    state = JobState.RESTARTING
                    reason = f"restarting after {facts.last_failure}" + (f"; {stage}" if stage else "")
                else:
                    reason = f"ending after {facts.last_failure}"
            if reason:
                fields["reason"] = reason
        self.set(state, **fields)
        return facts

    def _beats(self, attempt: int, world_size: int) -> dict[int, contract.Beat | None]:
        if attempt < 0:
            return {}
        beats = heartbeat_dir(self.run_dir, attempt)
        return {r: contract.read_heartbeat(beats, r) for r in range(world_size)}


def observed_status(status: Mapping | None, outcome: Mapping | None, monitor_alive: bool, who: str,
                    cancel_requested: bool = False) -> JobStatus:
    """The job's status from its monitor's files and whether the monitor still runs (pure). A dead monitor
    whose job was asked to cancel is ``cancelled`` (``launcher cancel`` may have had to kill it)."""
    from launcher.spec import JobStatus

    def parsed(st: Mapping) -> JobStatus:
        return JobStatus(JobState(st["state"]), exit_code=st.get("exit_code"), restarts=int(st.get("restarts", 0)),
                         reason=st.get("reason", ""), ports=tuple(st.get("ports", ())), started=st.get("started"),
                         ended=st.get("ended"))

    for st in (status, outcome):
        if st is not None and JobState(st["state"]).is_terminal():
            return parsed(st)
    if monitor_alive:
        return parsed(status) if status else JobStatus(JobState.PENDING)
    restarts = int(status.get("restarts", 0)) if status else 0
    if cancel_requested:
        return JobStatus(JobState.CANCELLED, restarts=restarts, ended=time.time(), reason="cancelled")
    return JobStatus(JobState.FAILED, restarts=restarts, ended=time.time(),
                     reason=f"monitor lost: {who} died without recording an ending (killed, out of memory or a "
                            f"reboot); its workers were stopped with it; `launcher resume` continues from the newest "
                            f"checkpoint")


def read_monitor_files(status_path: Path, run_dir: str | None) -> tuple[dict | None, dict | None]:
    """``status.json`` and the launch's ``outcome.json`` (either may be None)."""
    return read_json(status_path), (read_json(contract.RunDir(run_dir).outcome) if run_dir else None)


def monitor_main(prog: str, folder: str, argv: list[str] | None,
                 options_type: type | None) -> tuple[JobSpec, Path, Path] | None:
    """The command line of a detached monitor (``--home H ID``): its umask and logging set up, and
    ``(spec, home, job_dir)`` from ``H/<folder>/<ID>/spec.json``, or None (logged) without one."""
    import argparse
    import os
    import sys

    from launcher.spec import spec_from_dict

    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--home", required=True, help="launcher home (store, leases, job folders)")
    parser.add_argument("id", help=f"experiment id; its spec is {folder}/<id>/spec.json")
    args = parser.parse_args(argv)
    os.umask(os.umask(0) | 0o022)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    home = Path(args.home)
    job_dir = home / folder / args.id
    data = read_json(JobFolder(job_dir).spec)
    if data is None:
        logger.error("no spec for %s under %s", args.id, home)
        return None
    return spec_from_dict(data, options_type), home, job_dir
