"""What runs inside a Slurm job: one rank of a detcore job, checkpointed and requeued on USR2.

Every task of the job step (``srun``, one per GPU or CPU worker) runs submitit's job runner,
which unpickles a :class:`SlurmTask` and calls it. The task

1. derives its rank environment from Slurm's variables (:func:`task_env`: ``RANK`` =
   ``SLURM_PROCID``, ``WORLD_SIZE`` = ``SLURM_NTASKS``, ``LOCAL_RANK`` = ``SLURM_LOCALID``,
   ``MASTER_ADDR`` = the first node of ``SLURM_JOB_NODELIST`` (127.0.0.1 when the job's nodes are
   all this machine), ``MASTER_PORT`` =
   :func:`master_port` of the numeric ``SLURM_JOB_ID``, one GPU per task);
2. runs the worker shim as a *child process* (``python -m launcher.runtime.shim --run-dir R --
   detcore.tools.cli train ... --resume auto``, output appended to ``WORK_DIR/logs/rank{R}.log``,
   start and end facts in the launch's run directory) with ``DETCORE_STOP_SIGNALS=USR2`` and
   waits for it.

Preemption and time limits. The job is submitted with ``--signal=USR2@DELAY`` and
``--requeue``; Slurm sends USR2 to every process of the step DELAY seconds before the time
limit, on preemption (``preempt_send_user_signal``) or on ``scancel --signal=USR2``. Then:

- the worker on every rank finishes its iteration; the ranks agree through the per-iteration
  all-reduce, rank 0 saves a checkpoint and every worker exits with 3 (``EXIT_STOPPED``);
- submitit's USR2 handler calls :meth:`SlurmTask.checkpoint` on rank 0 only. It sends USR2
  to its worker once more if the worker catches it (a worker still starting up ignores USR2,
  so an early signal does not kill it; having trained nothing yet, it is killed at once),
  waits until the worker has exited, and returns a fresh :class:`SlurmTask`; submitit pickles it and runs
  ``scontrol requeue``. Before that it appends a ``requeue`` fact saying how long the job had
  left when the signal came, which tells a time limit from a preemption. Slurm kills the other
  ranks (they wait for that) and starts the job again later with the same job id (so the same
  port) and ``SLURM_RESTART_COUNT`` + 1; the worker resumes from the newest checkpoint
  (``--resume auto``).
- If the worker had already finished (exit 0) when the signal came, ``checkpoint`` raises
  :class:`WorkerFinished`, which ends the wait in ``__call__`` and the job completes normally
  instead of being requeued for nothing.

When the worker ends, the task decides from the launch's facts (:class:`~launcher.runtime.facts.RunFacts`,
the policy every backend shares): exit 0 finishes; a rank's user error in this attempt fails the
job in ``stop_reason``'s words and is never requeued; a hang requeues the job (rank 0, at most
``--max-restarts`` times: preemptions and time limits are not counted) and past that budget fails
it with ``failure_reason``'s words; any other failure fails the job naming the rank that failed
first (Slurm requeues only on USR2, a hang or a node failure).

Why a child process rather than calling detcore in this process: the signal handler that
must wait for the checkpoint runs in this process's main thread, which would otherwise be
busy inside the training step; a child also keeps torch's state (process groups, CUDA) out
of the process that submitit pickles and requeues. The wait uses ``os.waitid(WNOWAIT)``,
which holds no lock, so the handler can poll the same child (``Popen.wait`` holds a lock
the handler would deadlock on).

Known limit: a USR2 that arrives in the first fraction of a second of a task, before
submitit installs its handler, kills that task (the job then fails instead of requeueing).
"""
from __future__ import annotations

import os
from pathlib import Path
import signal
import socket
import subprocess
import time
from typing import Callable, Mapping, Sequence

from submitit.helpers import Checkpointable, DelayedSubmission

from detcore import net
from detcore.contract import (BACKEND_ENV, EXIT_HUNG, EXIT_STOPPED, EXIT_USER_ERROR, EXPERIMENT_ENV as MARKER_ENV,
                              STOP_SIGNALS_ENV, describe_exit, rank_log_in)
from detcore.facts import Requeue, Start, append_fact, read_facts
from launcher.backends.slurm.state import end_time_command, parse_end_time
from launcher.runtime.facts import RunFacts, summarize

from launcher.resources.ports import SLURM_MASTER_PORT_BASE as PORT_BASE, SLURM_MASTER_PORT_SPAN as PORT_SPAN
REQUEUE_WAIT_S = 120.0


def master_port(job_id: int) -> int:
    """The rendezvous port of the Slurm job whose numeric ``SLURM_JOB_ID`` is ``job_id``.

    ``20000 + job_id % 12000``: ports 20000-31999, below Linux's ephemeral range (32768+)
    and above Ray's worker ports (all ranges: launcher/resources/ports.py). Slurm numbers jobs in submission order and
    gives each array task its own job id, so two jobs share a port only when their ids differ
    by a multiple of 12,000, that is when one of them is still running after 12,000 more jobs
    were submitted to the cluster (and then only if both have the same first node). A
    requeued job keeps its id, hence its port. A port held by some other program on the first
    node is not detected: the rendezvous then fails with "address already in use" in the log.
    """
    if job_id < 0:
        raise ValueError(f"a Slurm job id is a non-negative integer, got {job_id}")
    return PORT_BASE + job_id % PORT_SPAN


def node_names(nodelist: str) -> list[str]:
    """The hosts of a Slurm node list such as ``gpu[03-05,07],cpu1``."""
    from submitit.slurm.slurm import _parse_node_list

    return list(_parse_node_list(nodelist))


def first_node(nodelist: str) -> str:
    """The first host of a Slurm node list."""
    nodes = node_names(nodelist)
    if not nodes:
        raise ValueError(f"empty SLURM_JOB_NODELIST {nodelist!r}")
    return nodes[0]


def task_gpu(visible: str | None, local_rank: int) -> str:
    """The one GPU (a ``CUDA_VISIBLE_DEVICES`` value) for the task with ``local_rank``.

    Slurm shows every task of a node all of the node's GPUs (``--gpus-per-node``); task i
    takes the i-th. A task that was given exactly one GPU keeps it.
    """
    ids = [v.strip() for v in (visible or "").split(",") if v.strip()]
    if not ids:
        return str(local_rank)
    if len(ids) == 1:
        return ids[0]
    return ids[local_rank % len(ids)]


def task_env(environ: Mapping[str, str], gpus_per_node: int,
             resolve: Callable[[str], str | None] = net.resolve) -> dict[str, str]:
    """The torch.distributed variables of this Slurm task, from Slurm's own (pure but for ``resolve``).

    ``MASTER_ADDR`` is the job's first node, or 127.0.0.1 when every node of the job is this machine
    (one node, or node names that resolve to loopback, as on the local test cluster): then the
    rank-0 store and gloo's and NCCL's sockets stay on the loopback interface.
    """
    ntasks = int(environ.get("SLURM_NTASKS", "1"))
    nnodes = int(environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES") or "1")
    local_rank = int(environ.get("SLURM_LOCALID", "0"))
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or socket.gethostname()
    master = first_node(nodelist)
    one_machine = nnodes == 1 or all(net.is_loopback(resolve(n) or "") for n in node_names(nodelist))
    out = {"RANK": environ.get("SLURM_PROCID", "0"), "WORLD_SIZE": str(ntasks), "LOCAL_RANK": str(local_rank),
           "LOCAL_WORLD_SIZE": str(max(1, ntasks // max(1, nnodes))),
           "MASTER_ADDR": "127.0.0.1" if one_machine else master,
           "MASTER_PORT": str(master_port(int(environ["SLURM_JOB_ID"])))}
    if one_machine:
        out.update(net.loopback_env(environ))
    if gpus_per_node:
        out["CUDA_VISIBLE_DEVICES"] = task_gpu(environ.get("CUDA_VISIBLE_DEVICES"), local_rank)
        out["CUDA_DEVICE_ORDER"] = environ.get("CUDA_DEVICE_ORDER") or "PCI_BUS_ID"
    else:  # a CPU task on a GPU node touches no GPU (detcore also gets --device cpu)
        out["CUDA_VISIBLE_DEVICES"] = ""
    return out


class WorkerFinished(Exception):
    """The worker had exited 0 when the preemption signal came: finish instead of requeueing."""


class WorkerFailed(RuntimeError):
    """The worker of this rank failed (its log says why)."""


def _ignore_usr2() -> None:  # in the child, before exec: USR2 is ignored until detcore installs its handler
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _exit_status(proc: subprocess.Popen) -> int | None:
    """The exit status of ``proc`` if it has exited (``-N`` for signal N), without reaping it."""
    if proc.returncode is not None:
        return proc.returncode
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped this very moment by the waiting frame: treat as stopped (requeue)
        return proc.returncode if proc.returncode is not None else EXIT_STOPPED
    if info is None or info.si_pid == 0:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


class SlurmTask(Checkpointable):
    """One rank of an experiment in a Slurm job; picklable plain data plus the running child."""

    def __init__(self, experiment_id: str, command: Sequence[str], cwd: str, env: Mapping[str, str], log_dir: str,
                 gpus_per_node: int = 0, stoppable: bool = True, stop_timeout_s: float = 100.0,
                 run_dir: str = "", hang_requeues: int = 0, signal_delay_s: int = 0) -> None:
        self.experiment_id = experiment_id
        self.run_dir = run_dir
        self.signal_delay_s = signal_delay_s  # --signal=USR2@DELAY: USR2 this long before the time limit
        self.hang_requeues = hang_requeues  # how often the hang watchdog may requeue the job (--max-restarts)
        self.command = tuple(command)
        self.cwd = cwd
        self.env = dict(env)
        self.log_dir = log_dir
        self.gpus_per_node = gpus_per_node
        self.stoppable = stoppable
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen | None = None
        self._forwarded = False  # USR2 re-sent to the worker (once, also across nested signal handlers)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_proc"], state["_forwarded"] = None, False
        return state

    def fresh(self) -> SlurmTask:
        return SlurmTask(self.experiment_id, self.command, self.cwd, self.env, self.log_dir, self.gpus_per_node,
                         self.stoppable, self.stop_timeout_s, self.run_dir, self.hang_requeues,
                         getattr(self, "signal_delay_s", 0))

    def _note(self, rank: int, text: str) -> None:
        """A ``[launcher]`` line in this rank's log (the worker appends to the same file)."""
        os.makedirs(self.log_dir, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self._log(rank), "a") as f:
            f.write(f"{stamp} [launcher] {text}\n")

    def __call__(self) -> int:
        from submitit.core.utils import UncompletedJobError

        dist = task_env(os.environ, self.gpus_per_node)
        env = {**os.environ, **self.env, **dist, MARKER_ENV: self.experiment_id, BACKEND_ENV: "slurm",
               "PYTHONUNBUFFERED": "1"}
        if os.environ.get("SLURM_CPUS_PER_TASK") and "OMP_NUM_THREADS" not in self.env:  # else: that many threads
            env["OMP_NUM_THREADS"] = os.environ["SLURM_CPUS_PER_TASK"]
        env.setdefault("OMP_NUM_THREADS", "1")
        if self.stoppable:
            env[STOP_SIGNALS_ENV] = "USR2"
        rank = int(dist["RANK"])
        job = os.environ["SLURM_JOB_ID"]
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')} (id {job})"
        attempt = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        self._note(rank, f"slurm job {job} attempt {attempt} on {node}: rank {rank}/{dist['WORLD_SIZE']} "
                         f"MASTER_ADDR={dist['MASTER_ADDR']} MASTER_PORT={dist['MASTER_PORT']}")
        self._proc = subprocess.Popen(list(self.command), cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                                      preexec_fn=_ignore_usr2)
        try:
            try:
                os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                pass
            code = self._proc.wait()
        except WorkerFinished:
            self._note(rank, "worker finished as the preemption signal came; not requeued")
            return 0
        except UncompletedJobError as exc:  # submitit decided not to requeue (e.g. out of time-limit requeues)
            self._note(rank, f"not requeued: {exc}")
            raise
        if code == 0:
            self._note(rank, "worker finished")
            return 0
        facts = self._facts()
        if facts.stop_reason and facts.user_error_attempt == attempt:  # no requeue can mend it: the job fails
            failed = next((r for r, rec in sorted(facts.ended.items())
                           if rec.exit_code == EXIT_USER_ERROR), rank)
            self._note(rank, f"worker ended by {describe_exit(code)}; not requeued: {facts.stop_reason}")
            raise WorkerFailed(f"{facts.stop_reason}; see {self._log(failed)}")
        if code == EXIT_HUNG or attempt in facts.hangs:
            # this rank's watchdog ended it, or another's did and this worker then failed in a collective
            self._after_hang(rank, attempt)
        if rank != 0 and code in (EXIT_STOPPED, -signal.SIGTERM, -signal.SIGKILL):
            # Rank 0 checkpointed and is requeueing the job (or Slurm is ending it): Slurm kills this task.
            self._note(rank, f"worker stopped ({describe_exit(code)}); waiting for rank 0 to requeue the job")
            time.sleep(REQUEUE_WAIT_S)
            raise WorkerFailed(f"rank {rank}: worker stopped on a signal but the job was not requeued within "
                               f"{REQUEUE_WAIT_S:.0f} s")
        first = facts.endings.get(attempt)
        if first is not None and first.rank is not None and first.rank != rank:
            # this worker failed because another rank did first (a collective lost its peer, or srun ended
            # the step): name that rank, as every backend does
            self._note(rank, f"worker ended by {describe_exit(code)} after {first.text}")
            raise WorkerFailed(f"{first.text}; see {self._log(first.rank)} (rank {rank} then ended with "
                               f"{describe_exit(code)})")
        if code in (-signal.SIGTERM, -signal.SIGKILL):
            self._note(rank, f"worker ended by {describe_exit(code)}: Slurm is ending the job (cancel, time limit "
                             f"or node failure)")
        else:
            self._note(rank, f"worker failed with {describe_exit(code)}")
        text = first.text if first is not None and first.rank == rank else \
            f"rank {rank}: worker failed with {describe_exit(code)}"
        raise WorkerFailed(f"{text}; see {self._log(rank)}")

    def _log(self, rank: int) -> Path:
        return rank_log_in(self.log_dir, rank)

    def _facts(self) -> RunFacts:
        """What the facts every rank's shim recorded say so far (each end fact is written when its worker exits,
        before srun ends the other tasks of the step; a watchdog's hang fact before it ends its worker), never
        a log."""
        return summarize(read_facts(self.run_dir)) if self.run_dir else RunFacts()

    def _after_hang(self, rank: int, attempt: int) -> None:
        """The hang watchdog ended this rank's attempt. Rank 0 requeues the job (it resumes from the newest
        checkpoint) while the budget lasts (``--max-restarts``: hang requeues only, preemptions are free); the
        other ranks wait for that. Raises WorkerFailed otherwise (the shared policy's reason)."""
        facts = self._facts()
        ending = facts.endings.get(attempt)
        reason = ending.text if ending is not None and ending.rank is None else "hang watchdog"
        hangs = len(facts.hangs) or 1
        if hangs > self.hang_requeues:
            text = facts.failure_reason(reason, self.hang_requeues, "--max-restarts", restarts=hangs - 1)
            self._note(rank, f"not requeued: {text}")
            raise WorkerFailed(text)
        if rank == 0:
            job = os.environ["SLURM_JOB_ID"]
            self._note(rank, f"{reason}; requeueing job {job} ({hangs} of at most {self.hang_requeues})")
            self._record_requeue(attempt, cause="hang")
            subprocess.run(["scontrol", "requeue", job], check=False, stdin=subprocess.DEVNULL)
        else:
            self._note(rank, "hang watchdog ended this attempt; waiting for rank 0 to requeue the job")
        time.sleep(REQUEUE_WAIT_S)  # Slurm ends this task when it requeues the job
        raise WorkerFailed(f"rank {rank}: {reason}; the job was not requeued within {REQUEUE_WAIT_S:.0f} s")

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """Called by submitit on rank 0 on USR2: stop the worker after a checkpoint, then requeue. The
        ``requeue`` fact says how long the job had left when the signal came (time limit or preemption)."""
        time_left = job_time_left(os.environ.get("SLURM_JOB_ID", ""))
        proc = self._proc
        if proc is not None:
            code = self._stop_worker(proc)
            if code == 0:
                raise WorkerFinished()
            self._note(0, f"preemption/time-limit signal: worker stopped with {describe_exit(code)}; requeueing")
        self._record_requeue(int(os.environ.get("SLURM_RESTART_COUNT") or 0), signal="USR2", time_left_s=time_left,
                             signal_delay_s=getattr(self, "signal_delay_s", 0))
        return DelayedSubmission(self.fresh())

    def _worker_spawned(self, shim_pid: int) -> bool:
        """The shim ``shim_pid`` has started its worker (its ``start`` fact names it)."""
        return bool(self.run_dir) and any(isinstance(e, Start) and e.shim_pid == shim_pid
                                          for e in read_facts(self.run_dir))

    def _record_requeue(self, attempt: int, **why) -> None:
        """The ``requeue`` fact of ``attempt`` (``why``: its signal and time left, or its cause), written by
        rank 0 just before it requeues the job."""
        if self.run_dir:
            append_fact(self.run_dir, Requeue(attempt=attempt, rank=0, time=time.time(), **why))

    def _stop_worker(self, proc: subprocess.Popen) -> int:
        """Make the worker checkpoint and exit (or terminate a test run); its exit status.

        Slurm's USR2 reached the worker too, unless the worker had not yet installed its
        handler. A worker that still ignores USR2 is still starting (detcore installs the handler
        before it builds the trainer), has nothing to save and is killed at once. Otherwise
        USR2 is sent once more while the worker catches it, and never after: a Python process
        that is already exiting has restored the default action, which would kill it mid-exit.
        """
        deadline = time.monotonic() + self.stop_timeout_s
        if not self.stoppable:
            proc.terminate()  # a test run has nothing to checkpoint; it reruns after the requeue
        while True:
            code = _exit_status(proc)
            if code is not None:
                return code
            if self.stoppable:
                worker = worker_pid(proc.pid)
                if worker is None and self._worker_spawned(proc.pid):
                    # USR2 reached the worker first and it has already exited (a loaded node can run the
                    # shim's handler late): the shim is recording its end and exits with its code
                    if time.monotonic() >= deadline:
                        proc.kill()
                    time.sleep(0.1)
                    continue
                disposition = usr2_disposition(worker or proc.pid)  # no child yet: the shim itself (ignores it)
                if disposition == "ignored" or time.monotonic() >= deadline:
                    proc.kill()  # the shim; its worker dies with it (PR_SET_PDEATHSIG)
                elif disposition == "caught" and not self._forwarded:
                    os.kill(worker or proc.pid, signal.SIGUSR2)
                    self._forwarded = True
            elif time.monotonic() >= deadline:
                proc.kill()
            time.sleep(0.1)


def job_time_left(job_id: str) -> float | None:
    """Seconds until Slurm's end time of job ``job_id`` (its time limit), or None when Slurm cannot say (no
    limit, no answer within 10 s)."""
    if not job_id:
        return None
    try:
        out = subprocess.run(end_time_command(job_id), capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    end = parse_end_time(out)
    return None if end is None else round(end - time.time(), 1)


def worker_pid(shim_pid: int) -> int | None:
    """The detcore worker under the shim ``shim_pid`` (its only child), or None while it has none."""
    import psutil

    try:
        children = psutil.Process(shim_pid).children()
    except psutil.Error:
        return None
    return children[0].pid if children else None


def usr2_disposition(pid: int) -> str:
    """``caught``, ``ignored`` or ``default``: what process ``pid`` does with USR2 (Linux /proc)."""
    bit = 1 << (signal.SIGUSR2 - 1)
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return "default"
    if int(fields.get("SigCgt", "0").strip(), 16) & bit:
        return "caught"
    if int(fields.get("SigIgn", "0").strip(), 16) & bit:
        return "ignored"
    return "default"
