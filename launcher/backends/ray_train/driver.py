"""``python -m launcher.backends.ray_train.driver --home H ID``: the detached Ray Train driver of one job.

Where it runs: with a dashboard address (``--address http://HEAD:8265``) it is the entrypoint of a
Ray job (:mod:`.jobs_api`), run by Ray on the head, and connects to the GCS address Ray's job
supervisor puts in ``RAY_ADDRESS``. A head without the dashboard (the job API needs it and
``ray[default]``; ``cluster/ray/start.sh`` starts it only with ``--dashboard``) gets the same driver
started by :meth:`RayTrainBackend.submit` in its own session on the submitting machine (stdin
closed, output to ``$LAUNCHER_HOME/ray/<id>/driver.log``): it outlives the terminal and the
submitting process, like the local backend's supervisor. It

1. resolves ``--address`` and checks within seconds that something listens there (an
   unreachable head would otherwise keep ``ray.init`` retrying for minutes), then bounds
   ``ray.init`` itself with a watchdog;
2. runs ``TorchTrainer(...).fit()`` built from the dry run's :class:`TrainerPlan`, with the
   experiment id in the job's runtime environment (``DETLAUNCH_EXPERIMENT_ID``) so every Ray
   process of the job can be found on this node;
3. follows the launch through the same :class:`~launcher.runtime.monitor.RunMonitor` as the
   local supervisor (stage, restarts, rendezvous ports and failure reasons from the facts the
   workers and Ray Train's controller append, see :mod:`.reports`; ``ray/<id>/status.json`` best
   effort), and adds Ray's verdict on the node of a worker Ray reported lost; after a worker's
   user error (exit code 2) the workers end the run instead of letting Ray retry it;
4. on SIGINT or SIGTERM (``launcher cancel``) lets Ray Train abort the run gracefully (its
   controller stops the worker group and frees the placement group);
5. records the ending (``status.json`` and the launch's ``outcome.json``).

It never writes the experiment store (see :mod:`launcher.store.reconcile`).
The loopback rule (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before ``import ray`` for a head on
127.0.0.1) is in this process's environment, set by ``submit`` from :func:`driver_env`.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Mapping

from detcore.facts import append_fact, read_facts
from detcore.errors import WorkDirError
from launcher.backends.ray_train.plan import (Address, RayOptions, TrainerPlan, address_file_problem, parse_address,
                                              ray_address_file, resolve_address)
from launcher.backends.ray_train.reports import NODE_VERDICT_WAIT_S, awaiting_node_verdict, node_losses
from launcher.errors import LauncherError
from launcher.runtime.job_folder import JobFolder
from launcher.runtime.detached import read_plan
from launcher.runtime.monitor import RunMonitor, monitor_main
from launcher.spec import JobSpec, JobState
from launcher.resources.work_dirs import adopt

logger = logging.getLogger("launcher.ray_driver")
CONNECT_CHECK_S = 5.0
INIT_TIMEOUT_S = 90.0
POLL_S = 1.0


def current_cluster(environ: Mapping[str, str] = os.environ) -> str | None:
    """What Ray's ``ray_current_cluster`` file names (the head last started on this machine), None without
    one; a LauncherError when the file could be someone else's (:func:`~.plan.address_file_problem`)."""
    path = ray_address_file(environ)
    try:
        file, folder = os.lstat(path), os.lstat(os.path.dirname(path))
    except FileNotFoundError:
        return None
    problem = address_file_problem(file, folder, os.geteuid())
    if problem:
        raise LauncherError(f"--address auto: Ray's address file {path} {problem}, so another user could choose "
                            f"the cluster your job connects to; pass --address HOST:PORT (e.g. 127.0.0.1:6379) "
                            f"or set RAY_ADDRESS")
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def check_reachable(address: Address, timeout_s: float = CONNECT_CHECK_S) -> None:
    """A LauncherError in at most ``timeout_s`` when nothing accepts TCP connections at ``address``."""
    try:
        socket.create_connection((address.host, address.port), timeout=timeout_s).close()
    except OSError as exc:
        what = ("Ray Client server" if address.client else "Ray job API (the dashboard)" if address.jobs
                else "Ray head (GCS)")
        start = "cluster/ray/start.sh --dashboard" if address.jobs else "cluster/ray/start.sh"
        raise LauncherError(f"cannot reach a {what} at {address.text}: {exc.strerror or exc} (checked for "
                            f"{timeout_s:.0f} s); start one with {start} or pass --address") from None


def job_cluster(api: Address, environ: Mapping[str, str]) -> Address:
    """The cluster a driver submitted through the job API at ``api`` connects to: the GCS address Ray's job
    supervisor puts in ``RAY_ADDRESS``; a LauncherError when this driver was not started as a Ray job."""
    gcs = (environ.get("RAY_ADDRESS") or "").strip()
    if not gcs or gcs.startswith(("http://", "https://")):
        raise LauncherError(f"--address {api.text} is Ray's job API: this driver runs only as a Ray job submitted "
                            f"there (launcher submit does that); RAY_ADDRESS does not name the cluster's GCS")
    return parse_address(gcs)


class Driver:
    def __init__(self, spec: JobSpec, home: Path, job_dir: Path) -> None:
        self.spec, self.home, self.job_dir = spec, home, job_dir
        self.plan = TrainerPlan.from_json(read_plan(job_dir)["plan"])  # what submit computed and --dry-run prints
        self.monitor = RunMonitor(JobFolder(job_dir).status, Path(self.plan.worker.run_dir), self.plan.max_failures)
        self.cancelled = False
        self.stop_reason = ""

    def monitor_loop(self, stop: threading.Event) -> None:
        while not stop.wait(POLL_S):
            try:
                self.record_node_losses()
                facts = self.monitor.observe()
                if facts.stop_reason and not self.stop_reason:  # the workers end the run themselves, no retry
                    self.stop_reason = facts.stop_reason
                    logger.info("the workers stop the run: %s", self.stop_reason)
            except Exception:
                logger.exception("monitor error (ignored)")

    def record_node_losses(self, wait_s: float = 0.0) -> None:
        """Append Ray's node verdict for workers it reported failed (see :mod:`.reports`); with ``wait_s``, keep
        asking that long while a fresh loss has none (Ray declares a node dead ~15 s after it stopped)."""
        import ray

        deadline = time.monotonic() + wait_s
        while True:
            events = read_facts(self.monitor.run_dir)
            if not awaiting_node_verdict(events, time.time()):
                return
            for fact in node_losses(events, ray.nodes(), time.time()):
                append_fact(self.monitor.run_dir, fact)
                events.append(fact)
            if time.monotonic() >= deadline or not awaiting_node_verdict(events, time.time(), ("unreachable",)):
                return
            time.sleep(POLL_S)

    # ---- signals ------------------------------------------------------------------------------
    def on_cancel(self, signum, frame) -> None:
        """SIGINT before ``fit`` (connecting): stop at once. Inside ``fit`` Ray Train's own SIGINT handler
        aborts the run gracefully; ``launcher cancel`` touches the ``cancel`` file first so the end is
        recorded as cancelled."""
        self.cancelled = not self.stop_reason
        raise KeyboardInterrupt

    def on_sigterm(self, signum, frame) -> None:
        """SIGTERM (someone's ``kill``) is a cancel too: hand it to whichever SIGINT handler is installed."""
        self.cancelled = not self.stop_reason
        os.kill(os.getpid(), signal.SIGINT)

    # ---- the run ------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGINT, self.on_cancel)
        signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.monitor.set(JobState.PENDING, reason="connecting to Ray")
        try:
            claim = adopt(self.spec, "Ray driver")  # the work dir is this experiment's until the end
        except WorkDirError as exc:
            return self.finish(JobState.FAILED, 2, str(exc))
        try:
            return self.drive()
        finally:
            claim.release()

    def drive(self) -> int:
        try:
            address = resolve_address(self.plan.address, os.environ, current_cluster)
            if address.jobs:  # this driver is a Ray job: Ray's job supervisor names the cluster in RAY_ADDRESS
                address = job_cluster(address, os.environ)
            check_reachable(address)
            return self.fit(address)
        except LauncherError as exc:
            return self.finish(JobState.FAILED, 2, str(exc))
        except KeyboardInterrupt:
            return self.finish(JobState.CANCELLED if self.cancelled else JobState.FAILED, None,
                               "cancelled" if self.cancelled else (self.stop_reason or "interrupted"))
        except Exception as exc:
            logger.exception("driver failed")
            return self.finish(JobState.FAILED, 1, f"driver error: {type(exc).__name__}: {exc}"[:400])

    def connect(self, address: Address) -> None:
        import ray

        def give_up() -> None:
            self.finish(JobState.FAILED, 2, f"ray.init(address={address.text!r}) did not connect within "
                                            f"{INIT_TIMEOUT_S:.0f} s; is that a Ray head? (a head on 127.0.0.1 needs "
                                            f"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, see cluster/ray/start.sh)")
            os._exit(2)

        watchdog = threading.Timer(INIT_TIMEOUT_S, give_up)
        watchdog.daemon = True
        watchdog.start()
        try:
            ray.init(address=address.text, runtime_env={"env_vars": dict(self.plan.env_vars)}, log_to_driver=False,
                     configure_logging=True, logging_level=logging.INFO)
        finally:
            watchdog.cancel()
        signal.signal(signal.SIGTERM, self.on_sigterm)  # ray.init replaced it with sys.exit: keep SIGTERM a cancel

    def fit(self, address: Address) -> int:
        import ray
        from ray.train import TrainingFailedError
        from ray.train.torch import TorchTrainer

        from launcher.backends.ray_train.train_loop import train_loop_per_worker

        self.connect(address)
        logger.info("connected to Ray at %s; starting %d Ray Train workers", address.text, self.plan.num_workers)
        trainer = TorchTrainer(train_loop_per_worker, train_loop_config=self.plan.worker.to_config(),
                               **ray_configs(self.plan))
        self.monitor.set(JobState.PENDING, reason=f"Ray Train on {address.text}: starting workers", started=time.time())
        stop = threading.Event()
        watcher = threading.Thread(target=self.monitor_loop, args=(stop,), name="monitor", daemon=True)
        watcher.start()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # replaced by Ray's graceful abort inside fit()
        error: BaseException | None = None
        try:
            result = trainer.fit()
            error = result.error
        except TrainingFailedError as exc:
            error = exc
        except (KeyboardInterrupt, SystemExit) as exc:  # Ray's SIGINT handler exits after aborting
            error = exc
        finally:
            stop.set()
            watcher.join(5)
        if error is not None:
            try:
                self.record_node_losses(wait_s=NODE_VERDICT_WAIT_S / 2)
            except Exception:  # Ray gone with the failure: the reason names the rank without its node
                logger.exception("could not ask Ray about its nodes")
        facts = self.monitor.observe()
        if facts.stop_reason and not self.stop_reason:  # the ranks returned before the monitor loop saw it
            self.stop_reason = facts.stop_reason
        try:
            ray.shutdown()
        except Exception:
            pass
        self.cancelled = self.cancelled or JobFolder(self.job_dir).cancel.exists()
        if self.stop_reason:
            return self.finish(JobState.FAILED, 2, self.stop_reason)
        if self.cancelled:
            return self.finish(JobState.CANCELLED, None, "cancelled")
        if error is not None:
            text = str(error)
            logger.error("Ray Train failed:\n%s", text)
            first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "Ray Train failed without a message")
            return self.finish(JobState.FAILED, 1, facts.failure_reason(f"Ray Train: {first[:300]}",
                                                                        self.plan.max_failures, "--max-failures"))
        return self.finish(JobState.SUCCEEDED, 0, facts.success_note() or f"finished on Ray at {address.text}")

    def finish(self, state: JobState, rc: int | None, reason: str) -> int:
        self.monitor.finish(state, rc, reason)
        return 0


def ray_configs(plan: TrainerPlan) -> dict:
    """``TorchTrainer`` keyword arguments (Ray's config objects) for ``plan``; no cluster calls."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    from launcher.backends.ray_train.process_group import BoundTorchConfig

    from launcher.backends.ray_train.callbacks import train_callbacks

    return {
        "scaling_config": ScalingConfig(num_workers=plan.num_workers, use_gpu=plan.use_gpu,
                                        resources_per_worker=dict(plan.resources_per_worker),
                                        placement_strategy=plan.placement_strategy),
        "run_config": RunConfig(name=plan.run_name, storage_path=plan.storage_path,
                                failure_config=FailureConfig(max_failures=plan.max_failures),
                                checkpoint_config=CheckpointConfig(num_to_keep=plan.checkpoints_to_keep),
                                callbacks=train_callbacks(plan.worker.run_dir)),
        "torch_config": BoundTorchConfig(backend=plan.torch_backend, timeout_s=plan.timeout_s),
    }


def main(argv: list[str] | None = None) -> int:
    loaded = monitor_main("python -m launcher.backends.ray_train.driver", "ray", argv, RayOptions)
    return 2 if loaded is None else Driver(*loaded).run()


if __name__ == "__main__":
    sys.exit(main())
