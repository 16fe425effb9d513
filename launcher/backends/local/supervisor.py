"""``python -m launcher.backends.local.supervisor --home H ID``: one local job, start to finish.

Started detached by :meth:`LocalBackend.submit` (new session, stdin closed, output to
``jobs/<id>/supervisor.log``). It

1. takes over the experiment's claim on its work dir (:mod:`launcher.resources.work_dirs`) and keeps it
   fresh until the end (another run holding it: the job fails with that one line);
2. waits (state ``queued``) for its sweep slot, then its GPU and CPU-core leases (both at once),
   kept in its own name;
3. runs the dry run's torchrun command with ``CUDA_VISIBLE_DEVICES`` set to the leased GPUs and
   its CPU affinity set to the leased cores (inherited by the ranks and their loader workers),
   the agent's output in ``WORK_DIR/logs/agent.log``, each rank's in ``logs/rank{R}.log``;
4. follows the launch through a :class:`~launcher.runtime.monitor.RunMonitor`: restarts,
   ports and failure reasons come from the facts the worker shims append to the run
   directory (never from torchrun's log); a rank's user error (exit code 2) stops the group
   instead of letting torchrun restart it;
5. on SIGTERM (``launcher cancel``) stops torchrun, which stops its workers; whatever is
   left after a grace period is killed;
6. records the ending (``status.json`` and the run's ``outcome.json``), then frees its leases and
   the work dir.

It never writes the experiment store (see :mod:`launcher.store.reconcile`), and no write it makes
can stop the job: a full ``$LAUNCHER_HOME`` costs a status update, not the run.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from detcore.contract import EXIT_USER_ERROR, WorkDir, describe_exit
from detcore.errors import WorkDirError
from launcher.backends.local import CANCEL_GRACE_S, LocalBackend, LocalOptions
from launcher.backends.local.cores import describe_cores, pin_to
from launcher.resources.leases import CPU_POOL, GPU_POOL, LeaseBook
from launcher.resources.procinfo import die_with_parent
from launcher.runtime.command import run_dir
from launcher.runtime.detached import kill_marked, kill_tree, read_plan
from launcher.runtime.job_folder import JobFolder
from launcher.runtime.monitor import RunMonitor, monitor_main
from launcher.runtime.scratch import remove_dead_scratch
from launcher.spec import JobSpec, JobState
from launcher.resources.work_dirs import adopt

logger = logging.getLogger("launcher.supervisor")
POLL_S = 0.5
QUEUE_POLL_S = 0.5  # a queued job looks for free GPUs and cores every 0.5-1 s


def _preexec(cores: list[str]):
    """torchrun's preexec: die with the supervisor; run only on the leased cores (when any)."""
    pin = pin_to(cores) if cores else None
    parent = os.getpid()

    def preexec() -> None:
        die_with_parent(signal.SIGTERM, parent)
        if pin is not None:
            pin()
    return preexec


class Supervisor:
    def __init__(self, spec: JobSpec, home: Path) -> None:
        self.spec, self.home = spec, home
        self.backend = LocalBackend(home)
        self.job_dir = self.backend.job_dir(spec.id)
        self.book = LeaseBook(home)
        self.monitor = RunMonitor(JobFolder(self.job_dir).status, Path(run_dir(spec)), spec.max_restarts)
        self.pid, self.start = self.monitor.status["monitor_pid"], self.monitor.status["monitor_start"]
        self.cancelled = False

    def on_sigterm(self, signum, frame) -> None:
        self.cancelled = True

    def cancel_requested(self) -> bool:
        self.cancelled = self.cancelled or JobFolder(self.job_dir).cancel.exists()
        return self.cancelled

    # ---- resources --------------------------------------------------------------------------
    def acquire(self) -> dict[str, tuple[str, ...]] | None:
        """Sweep slot, then GPUs and cores together; queued until all are held. The leased units by
        pool (``gpu``, ``cpu``); None when cancelled while waiting."""
        spec = self.spec
        steps = []
        if spec.slots:
            steps.append(([(f"slots:{spec.slots.name}", tuple(str(i) for i in range(spec.slots.size)), 1)],
                          f"a free slot of sweep {spec.slots.name} ({spec.slots.size} at a time)"))
        wants = self.backend.lease_wants(spec)
        if wants:
            steps.append((wants, " and ".join(
                f"{want} free {'GPUs' if pool == GPU_POOL else 'CPU cores'} of {len(inventory)}"
                for pool, inventory, want in wants)))
        leased: dict[str, tuple[str, ...]] = {}
        for step, what in steps:
            while True:
                if self.cancel_requested():
                    return None
                got = self.book.acquire_all(step, spec.id, self.pid, self.start)
                if got is not None:
                    leased.update(got)
                    break
                self.monitor.set(JobState.QUEUED, reason=f"waiting for {what}")
                time.sleep(QUEUE_POLL_S * (1 + random.random()))  # jittered: waiters do not move in step
        return leased

    # ---- the run ------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.signal(signal.SIGINT, self.on_sigterm)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.monitor.set(JobState.PENDING)
        claim = None
        try:
            claim = adopt(self.spec, "supervisor")  # the work dir is this experiment's until the end
            leased = self.acquire()
            if leased is None:
                self.monitor.finish(JobState.CANCELLED, None, "cancelled while queued")
            else:
                self.launch(list(leased.get(GPU_POOL, ())), list(leased.get(CPU_POOL, ())))
        except WorkDirError as exc:
            self.monitor.finish(JobState.FAILED, EXIT_USER_ERROR, str(exc))
        except Exception as exc:
            logger.exception("supervisor failed")
            self.monitor.finish(JobState.FAILED, None, f"supervisor error: {type(exc).__name__}: {exc}")
        finally:
            kill_marked(self.spec.id)  # a shim or worker orphaned by a killed torchrun must not keep the GPUs
            remove_dead_scratch(self.spec.id)  # and the TMPDIRs of ranks killed before they removed them
            try:
                self.book.release(self.spec.id)
            except OSError as exc:  # a full disk: the lease is reclaimed anyway once this process is gone
                logger.warning("could not release leases: %s", exc)
            if claim is not None:
                claim.release()
        return 0

    def launch(self, devices: list[str], cores: list[str]) -> None:
        dry = read_plan(self.job_dir)["dry_run"]  # what submit computed and --dry-run prints
        env = {**os.environ, **dry["env"]}
        if self.spec.resources.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        agent_log_path = WorkDir(self.spec.work_dir).agent_log
        agent_log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(agent_log_path, "ab") as agent_log:
            proc = subprocess.Popen(list(dry["commands"][0]), cwd=self.spec.cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=agent_log, stderr=subprocess.STDOUT, preexec_fn=_preexec(cores))
        logger.info("started torchrun pid %d for %s (devices %s, cores %s)", proc.pid, self.spec.id,
                    devices or "cpu", describe_cores(cores) if cores else "all (--oversubscribe)")
        # what the job held, kept after its leases are given back (the GPU check reads ``devices``)
        self.monitor.set(JobState.PENDING, reason="", started=time.time(), devices=list(devices), cores=list(cores))
        term_sent, stop_reason = None, ""
        facts = self.monitor.observe()
        while not _exited(proc, POLL_S):
            facts = self.monitor.observe()
            if facts.stop_reason and not stop_reason:
                stop_reason = facts.stop_reason
                logger.info("stopping torchrun: %s", stop_reason)
            if (stop_reason or self.cancel_requested()) and term_sent is None:
                proc.send_signal(signal.SIGTERM)
                term_sent = time.monotonic()
            if term_sent is not None and time.monotonic() - term_sent > CANCEL_GRACE_S:
                kill_tree(proc.pid)
        kill_tree(proc.pid, include_root=False)
        facts = self.monitor.observe()
        rc = proc.returncode
        if self.cancel_requested():
            self.monitor.finish(JobState.CANCELLED, rc, "cancelled")
        elif stop_reason or facts.stop_reason:
            self.monitor.finish(JobState.FAILED, rc, stop_reason or facts.stop_reason)
        elif rc == 0:
            self.monitor.finish(JobState.SUCCEEDED, 0, facts.success_note())
        else:
            agent = f"torchrun ended with {describe_exit(rc)} (see {WorkDir(self.spec.work_dir).agent_log})"
            self.monitor.finish(JobState.FAILED, rc, facts.failure_reason(agent, self.spec.max_restarts,
                                                                          "--max-restarts"))


def _exited(proc: subprocess.Popen, within_s: float) -> bool:
    """Whether ``proc`` exits within ``within_s`` seconds: returns as soon as it does (a job's end is recorded
    without waiting out a poll interval)."""
    try:
        proc.wait(timeout=within_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    loaded = monitor_main("python -m launcher.backends.local.supervisor", "jobs", argv, LocalOptions)
    return 2 if loaded is None else Supervisor(loaded[0], loaded[1]).run()


if __name__ == "__main__":
    sys.exit(main())
