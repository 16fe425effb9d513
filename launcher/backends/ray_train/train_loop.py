"""What each Ray Train worker runs: detcore's trainer in-process, and its checkpoints reported to Ray.

:func:`train_loop_per_worker` is the ``TorchTrainer``'s per-worker function. Ray Train has
already started this process, set ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``LOCAL_RANK``/
``WORLD_SIZE`` and initialised the default process group (gloo, or NCCL on GPUs) before it
runs; detcore's ``init_distributed`` finds that group initialised and uses it as it is. So
detcore runs in this process (``MODULE.main(ARGS)``, the in-process form of
``python -m detcore.tools.cli train ...``), not as a child.

Checkpoints stay detcore's own: ``WORK_DIR/iter_N.pth`` and the ``last_checkpoint`` pointer it
replaces atomically after each save. detcore knows nothing about Ray (it must not import it),
so this function wraps the run instead of hooking into it:

* detcore trains in a helper thread;
* Ray's training thread (this function) polls every ``report_poll_s`` seconds. Rank 0 reads
  ``last_checkpoint`` and the newest metrics and every rank receives that view through
  ``ray.train.collective.broadcast_from_rank_zero``; when the checkpoint changed, every rank
  calls ``ray.train.report(metrics, checkpoint=...)`` (rank 0 with a tiny directory holding
  ``detcore_checkpoint.json``, the pointer; the others without). ``report`` is collective in
  Ray Train, so all ranks must call it equally often: deciding on rank 0's broadcast view,
  not on what each rank happens to see on disk, guarantees that.
* On a restart Ray hands the newest reported pointer back (``ray.train.get_checkpoint()``);
  the worker then runs detcore with ``--resume auto``, which loads that checkpoint (or a newer
  one the pointer did not reach Ray in time for) from the work dir.

Each worker appends its stdout/stderr (detcore's log included) to ``LOG_DIR/rank{R}.log`` and
the same start and end facts as the worker shim of the other backends to the launch's run
directory, and runs the same hang watchdog in-process, through the same
:class:`~launcher.runtime.rank.RankAttempt`. A worker whose detcore run fails records its end and raises
:class:`WorkerExit`, and Ray Train restarts the group. A user error (detcore's exit code 2:
bad data, bad config value) cannot be fixed by restarting, so that worker does not raise:
rank 0 sees the end fact (the run directory is in the shared work dir) and tells every rank
to return, Ray ends the run without a retry, and the driver records it as failed.
"""
from __future__ import annotations

import faulthandler
import importlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from detcore import contract
from detcore.facts import Start, read_facts
from launcher.backends.ray_train.plan import WorkerPlan
from launcher.runtime.facts import summarize
from launcher.runtime.scratch import make_scratch
from launcher.runtime.rank import RankAttempt

logger = logging.getLogger(__name__)
POINTER_FILE = "detcore_checkpoint.json"
_ITER = re.compile(r"(?:iter|epoch)_(\d+)\.pth$")  # a checkpoint's file name, not a log


class WorkerExit(RuntimeError):
    """detcore's run on this worker ended with a non-zero exit code (the message is one line)."""


@dataclass(frozen=True)
class CheckpointView:
    """Rank 0's view, broadcast to every rank: the newest checkpoint, whether training ended, and
    ``stop``: a rank's user error (every rank returns without a retry)."""

    checkpoint: str | None
    iteration: int | None
    metrics: tuple[tuple[str, float], ...]
    done: bool
    stop: str = ""


def checkpoint_iteration(name: str | None) -> int | None:
    m = _ITER.search(name or "")
    return int(m.group(1)) if m else None


def read_pointer(work_dir: str | os.PathLike) -> str | None:
    """The checkpoint file name in ``work_dir/last_checkpoint`` (replaced atomically by detcore)."""
    newest = contract.WorkDir(work_dir).newest_checkpoint()
    return newest.name if newest is not None else None


def current_view(work_dir: str, done: bool, stop: str) -> CheckpointView:
    from launcher.views.metrics import read_last_metrics

    name = read_pointer(work_dir)
    m = read_last_metrics(work_dir)
    metrics = {k: float(v) for k, v in m.values.items() if isinstance(v, (int, float)) and k in ("loss", "lr")}
    return CheckpointView(name, checkpoint_iteration(name), tuple(sorted(metrics.items())), done, stop)


def restored_pointer(checkpoint: Any) -> dict | None:
    """The ``detcore_checkpoint.json`` inside a Ray checkpoint (None without one)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        path = Path(d) / POINTER_FILE
        return json.loads(path.read_text()) if path.is_file() else None


def previous_attempts(run_dir: str, rank: int) -> int:
    """How many times ``rank`` already started in this launch (this start's attempt number)."""
    return sum(1 for r in read_facts(run_dir) if isinstance(r, Start) and r.rank == rank)


class DetcoreRun(threading.Thread):
    """``MODULE.main(ARGV)`` in a daemon thread; ``exit_code`` once it has finished."""

    def __init__(self, module: str, argv: Sequence[str]) -> None:
        super().__init__(name="detcore-train", daemon=True)
        self.module, self.argv = module, list(argv)
        self.exit_code: int | None = None

    def run(self) -> None:
        try:
            code = importlib.import_module(self.module).main(self.argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # a bug: its traceback goes to the rank log
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        self.exit_code = int(code or 0)


def _report(view: CheckpointView, rank: int, work_dir: str) -> None:
    import ray.train

    metrics: dict[str, Any] = {"iter": view.iteration, "checkpoint": view.checkpoint, **dict(view.metrics)}
    if rank != 0:
        ray.train.report(metrics)
        return
    tmp = tempfile.mkdtemp(prefix="detlaunch-pointer-")
    try:
        pointer = {"work_dir": work_dir, "checkpoint": view.checkpoint, "iter": view.iteration,
                   "path": os.path.join(work_dir, view.checkpoint or "")}
        Path(tmp, POINTER_FILE).write_text(json.dumps(pointer, sort_keys=True) + "\n")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's per-worker function (see the module docstring), with ``TMPDIR`` a folder of this worker's
    own (:mod:`launcher.runtime.scratch`), removed when it returns or raises (a killed worker's is removed by
    the next worker that starts on the node, or by ``launcher cancel``)."""
    scratch = make_scratch(os.environ.get(contract.EXPERIMENT_ENV))
    before = os.environ.get("TMPDIR"), tempfile.tempdir
    if scratch is not None:
        os.environ["TMPDIR"] = tempfile.tempdir = str(scratch)  # tempfile caches its folder per process
    try:
        _train_loop(config)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        tempfile.tempdir = before[1]
        if before[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before[0]


def _train_loop(config: dict) -> None:
    import ray
    import ray.train
    from ray.train.collective import broadcast_from_rank_zero

    plan = WorkerPlan.from_config(config)
    rank = ray.train.get_context().get_world_rank()
    world_size = ray.train.get_context().get_world_size()
    os.chdir(plan.cwd)  # Ray starts workers in its session folder; relative data paths mean the submit dir
    restored = restored_pointer(ray.train.get_checkpoint())
    attempt = previous_attempts(plan.run_dir, rank)
    me = RankAttempt(plan.run_dir, plan.log_dir, rank, world_size, attempt, plan.hang_timeout_s)
    me.redirect()
    me.started(os.getpid(), restored=restored, node_id=ray.get_runtime_context().get_node_id())
    # detcore runs in this process: the same environment the shim gives its child (resume auto on a restart)
    os.environ.update(me.worker_env(max(attempt, 1) if (attempt or restored) else 0))
    me.watch(lambda verdict: _hung(me, verdict))
    if restored:
        _say(f"Ray Train restored checkpoint {restored.get('checkpoint')} (iteration {restored.get('iter')}); "
             f"continuing with --resume auto")
    detcore = DetcoreRun(plan.module, plan.args)
    detcore.start()
    known = restored.get("checkpoint") if restored else None
    exit_recorded = False
    while True:
        detcore.join(plan.report_poll_s)
        finished = not detcore.is_alive()
        if finished and detcore.exit_code and not exit_recorded:
            exit_recorded = True
            me.ended(os.getpid(), detcore.exit_code)
            if detcore.exit_code != contract.EXIT_USER_ERROR:
                raise WorkerExit(me.failure_line(plan.module, detcore.exit_code))
        view = None
        if rank == 0:
            stop = summarize(read_facts(plan.run_dir)).user_error
            view = current_view(plan.work_dir, done=finished and detcore.exit_code == 0, stop=stop)
        view = broadcast_from_rank_zero(view)
        if view.checkpoint and view.checkpoint != known:
            _report(view, rank, plan.work_dir)
            known = view.checkpoint
        if view.stop:  # return without raising: Ray ends the run and does not retry it
            _say(f"stopping without a restart after a user error: {view.stop}")
            return
        if view.done:
            break
    detcore.join()  # rank 0 has finished, so the others finish their last step now
    if not exit_recorded:
        me.ended(os.getpid(), detcore.exit_code or 0)
    if detcore.exit_code:
        raise WorkerExit(me.failure_line(plan.module, detcore.exit_code))


def _say(text: str) -> None:
    """One line into this rank's log (straight to the file descriptor: Ray Train tees ``print``)."""
    os.write(1, f"[detlaunch] {text}\n".encode())


def _hung(me: RankAttempt, verdict: str) -> None:
    """The watchdog's action in a Ray worker: record the hang, write this process's stacks, end the worker
    (Ray Train restarts the group within --max-failures)."""
    me.hung(os.getpid(), "running", verdict)
    _say(f"hang watchdog: {verdict}; this worker's Python stacks follow, then it exits")
    faulthandler.dump_traceback(all_threads=True)
    os._exit(contract.EXIT_HUNG)

