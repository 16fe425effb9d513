"""``python -m launcher.backends.local_supervisor --home H ID``: one local job, start to finish.

Started detached by :meth:`LocalBackend.submit` (new session, stdin closed, output to
``jobs/<id>/supervisor.log``). It

1. waits (state ``queued``) for its sweep slot and GPU leases, kept in its own name;
2. runs the dry run's torchrun command with ``CUDA_VISIBLE_DEVICES`` set to the leased GPUs,
   the agent's output in ``WORK_DIR/logs/agent.log``, each rank's in ``logs/rank{R}.log``;
3. follows the workers: restarts and ports from the attempt records the worker shim writes,
   failures from the agent's log, the newest loss/AP from ``metrics.jsonl``;
4. on SIGTERM (``launcher cancel``) stops torchrun, which stops its workers; whatever is
   left after a grace period is killed;
5. writes the final ``status.json`` atomically, then the store row, then frees its leases.

``status.json`` is the truth for :meth:`LocalBackend.status`; store writes are best effort
(a locked or missing store never stops a job).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from launcher.backends.base import mirror_to_store, read_json, write_json_atomic
from launcher.backends.local import CANCEL_GRACE_S, LocalBackend, Options
from launcher.leases import GPU_POOL, LeaseBook
from launcher.procinfo import current_process
from launcher.spec import JobSpec, JobState, spec_from_dict
from launcher.store import ExperimentStore
from launcher.tail import last_line

logger = logging.getLogger("launcher.supervisor")
FAILURE_LINE = re.compile(r"failed \(exitcode: (-?\d+)\) local_rank: (\d+) \(pid: (\d+)\)")
NO_RESTART_EXIT_CODES = (2,)  # detcore's CLI exits 2 on a user error: restarting cannot help
POLL_S = 0.5
METRICS_EVERY_S = 3.0


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _die_with_parent() -> None:
    """preexec for torchrun: SIGTERM it when the supervisor dies (Linux PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Supervisor:
    def __init__(self, spec: JobSpec, home: Path) -> None:
        self.spec, self.home = spec, home
        self.backend = LocalBackend(home)
        self.job_dir = self.backend.job_dir(spec.id)
        self.log_dir = Path(spec.work_dir) / "logs"
        self.store = ExperimentStore(home)
        self.book = LeaseBook(home)
        self.pid, self.start = current_process()
        self.cancelled = False
        self.status = {"state": JobState.PENDING.value, "restarts": 0, "ports": [], "reason": "",
                       "exit_code": None, "started": None, "ended": None, "supervisor_pid": self.pid,
                       "supervisor_start": self.start, "torchrun_pid": None, "devices": []}
        self._attempts_pos = 0
        self._agent_pos = 0
        self._attempts: dict[int, set[int]] = {}
        self._failures: list[str] = []
        self.stop_reason = ""

    # ---- state ------------------------------------------------------------------------------
    def set(self, state: JobState | None = None, **fields) -> None:
        if state is not None:
            fields["state"] = state.value
        changed = {k: v for k, v in fields.items() if self.status.get(k) != v}
        if not changed:
            return
        self.status.update(changed)
        write_json_atomic(self.job_dir / "status.json", self.status)
        mirror_to_store(self.store, self.spec.id, self.status)

    def record_metrics(self) -> None:
        mirror_to_store(self.store, self.spec.id, work_dir=self.spec.work_dir)

    def on_sigterm(self, signum, frame) -> None:
        self.cancelled = True

    # ---- resources --------------------------------------------------------------------------
    def acquire(self) -> list[str] | None:
        """Sweep slot, then GPUs; queued until both are held. None when cancelled while waiting."""
        spec = self.spec
        pools = []
        if spec.slots:
            pools.append((f"slots:{spec.slots.name}", tuple(str(i) for i in range(spec.slots.size)), 1,
                          f"a free slot of sweep {spec.slots.name} ({spec.slots.size} at a time)"))
        if spec.resources.gpus:
            pools.append((GPU_POOL, self.backend.gpus, spec.resources.gpus,
                          f"{spec.resources.gpus} free GPUs of {len(self.backend.gpus)}"))
        devices: list[str] = []
        for pool, inventory, want, what in pools:
            while True:
                if self.cancelled or (self.job_dir / "cancel").exists():
                    self.cancelled = True
                    return None
                got = self.book.acquire(pool, inventory, want, spec.id, self.pid, self.start)
                if got is not None:
                    if pool == GPU_POOL:
                        devices = list(got)
                    break
                self.set(JobState.QUEUED, reason=f"waiting for {what}")
                time.sleep(1.0 + random.random())
        return devices

    # ---- following the workers ----------------------------------------------------------------
    def poll_attempts(self) -> None:
        try:
            with open(self.job_dir / "attempts.jsonl", "rb") as f:
                f.seek(self._attempts_pos)
                data = f.read()
        except FileNotFoundError:
            return
        complete = data[:data.rfind(b"\n") + 1]
        self._attempts_pos += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            self._attempts.setdefault(int(rec["attempt"]), set()).add(int(rec["master_port"]))
        if self._attempts:
            restarts = max(self._attempts)
            ports = sorted({p for ps in self._attempts.values() for p in ps if p})
            state = JobState.RUNNING if restarts >= len(self._failures) else JobState(self.status["state"])
            self.set(state, restarts=restarts, ports=ports)

    def poll_agent_log(self) -> None:
        try:
            with open(self.log_dir / "agent.log", "rb") as f:
                f.seek(self._agent_pos)
                data = f.read()
        except FileNotFoundError:
            return
        complete = data[:data.rfind(b"\n") + 1]
        self._agent_pos += len(complete)
        for m in FAILURE_LINE.finditer(complete.decode("utf-8", "replace")):
            code, rank = int(m.group(1)), int(m.group(2))
            detail = last_line(self.log_dir / f"rank{rank}.log") if code > 0 else ""
            reason = f"rank {rank} {describe_exit(code)}" + (f": {detail}" if detail else "")
            self._failures.append(reason)
            logger.info("worker failure %d: %s", len(self._failures), reason)
            if code in NO_RESTART_EXIT_CODES and not self.stop_reason:
                self.stop_reason = f"{reason} (a user error: the group was stopped, not restarted)"
            elif len(self._failures) <= self.spec.max_restarts:
                self.set(JobState.RESTARTING, reason=f"restart {len(self._failures)} of at most "
                                                     f"{self.spec.max_restarts} after {reason}")

    # ---- the run ------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.signal(signal.SIGINT, self.on_sigterm)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.set(JobState.PENDING)
        try:
            devices = self.acquire()
            if devices is None:
                return self.finish(JobState.CANCELLED, None, "cancelled while queued")
            return self.launch(devices)
        except Exception as exc:
            logger.exception("supervisor failed")
            return self.finish(JobState.FAILED, None, f"supervisor error: {type(exc).__name__}: {exc}")
        finally:
            self.book.release(self.spec.id)

    def launch(self, devices: list[str]) -> int:
        dry = self.backend.dryrun(self.spec)
        env = {**os.environ, **dict(dry.env)}
        if self.spec.resources.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "agent.log", "ab") as agent_log:
            proc = subprocess.Popen(list(dry.commands[0]), cwd=self.spec.cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=agent_log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        logger.info("started torchrun pid %d for %s (devices %s)", proc.pid, self.spec.id, devices or "cpu")
        self.set(JobState.RUNNING, torchrun_pid=proc.pid, devices=devices, reason="", started=time.time())
        term_sent, next_metrics = None, 0.0
        while proc.poll() is None:
            time.sleep(POLL_S)
            if self.stop_reason and term_sent is None:
                logger.info("stopping torchrun: %s", self.stop_reason)
                proc.send_signal(signal.SIGTERM)
                term_sent = time.monotonic()
            if (self.cancelled or (self.job_dir / "cancel").exists()) and term_sent is None:
                self.cancelled = True
                logger.info("cancel requested: stopping torchrun")
                proc.send_signal(signal.SIGTERM)
                term_sent = time.monotonic()
            if term_sent is not None and time.monotonic() - term_sent > CANCEL_GRACE_S:
                kill_tree(proc.pid)
            self.poll_agent_log()
            self.poll_attempts()
            if time.monotonic() >= next_metrics:
                self.record_metrics()
                next_metrics = time.monotonic() + METRICS_EVERY_S
        kill_tree(proc.pid, include_root=False)
        self.poll_agent_log()
        self.poll_attempts()
        self.record_metrics()
        rc = proc.returncode
        if self.cancelled:
            return self.finish(JobState.CANCELLED, rc, "cancelled")
        if self.stop_reason:
            return self.finish(JobState.FAILED, rc, self.stop_reason)
        if rc == 0:
            restarts = self.status["restarts"]
            note = f"finished after {restarts} restart(s); last failure: {self._failures[-1]}" if restarts else ""
            return self.finish(JobState.SUCCEEDED, 0, note)
        reason = self._failures[-1] if self._failures else (last_line(self.log_dir / "agent.log")
                                                            or f"torchrun {describe_exit(rc)}")
        if self._failures and len(self._failures) > self.spec.max_restarts:
            reason += f" (after {self.spec.max_restarts} restart(s), the most allowed)"
        return self.finish(JobState.FAILED, rc, reason)

    def finish(self, state: JobState, rc: int | None, reason: str) -> int:
        self.set(state, exit_code=rc, reason=reason, ended=time.time())
        logger.info("experiment %s %s: %s", self.spec.id, state.value, reason or "-")
        return 0


def kill_tree(pid: int, include_root: bool = True) -> None:
    """SIGKILL ``pid``'s descendants (workers sit in their own sessions) and, optionally, ``pid``."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + ([root] if include_root else [])
    except psutil.Error:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.backends.local_supervisor")
    parser.add_argument("--home", required=True, help="launcher home (store, leases, jobs/)")
    parser.add_argument("id", help="experiment id; its spec is jobs/<id>/spec.json")
    args = parser.parse_args(argv)
    os.umask(os.umask(0) | 0o022)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    home = Path(args.home)
    data = read_json(home / "jobs" / args.id / "spec.json")
    if data is None:
        logger.error("no spec for %s under %s", args.id, home)
        return 2
    return Supervisor(spec_from_dict(data, Options), home).run()


if __name__ == "__main__":
    sys.exit(main())
