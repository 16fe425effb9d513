"""``python -m launcher.backends.ray_driver --home H ID``: the detached Ray Train driver of one job.

Why a detached driver and not Ray's job-submission API: the job API needs the Ray dashboard
(an HTTP server and ``ray[default]``), which the project's heads do not run by default
(``cluster/ray/start.sh`` starts it only with ``--dashboard``). A driver is just a process
that called ``ray.init``; started by :meth:`RayTrainBackend.submit` in its own session
(stdin closed, output to ``$LAUNCHER_HOME/ray/<id>/driver.log``) it outlives the terminal and
the submitting process, exactly like the local backend's supervisor. It

1. resolves ``--address`` and checks within seconds that something listens there (an
   unreachable head would otherwise keep ``ray.init`` retrying for minutes), then bounds
   ``ray.init`` itself with a watchdog;
2. runs ``TorchTrainer(...).fit()`` built from the dry run's :class:`TrainerPlan`, with the
   experiment id in the job's runtime environment (``DETLAUNCH_EXPERIMENT_ID``) so every Ray
   process of the job can be found on this node;
3. follows the workers' attempt records (restarts, rendezvous ports) and ``metrics.jsonl``
   and keeps ``ray/<id>/status.json`` (atomic) and the store row up to date; after a worker's
   user error (exit code 2) it aborts the run instead of letting Ray retry it;
4. on SIGINT or SIGTERM (``launcher cancel``) lets Ray Train abort the run gracefully (its
   controller stops the worker group and frees the placement group);
5. writes the final ``status.json``, then the store row.

``status.json`` is the truth for :meth:`RayTrainBackend.status`; store writes are best effort.
The loopback rule (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before ``import ray`` for a head on
127.0.0.1) is in this process's environment, set by ``submit`` from :func:`driver_env`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from launcher.backends.base import mirror_to_store, read_json, write_json_atomic
from launcher.backends.ray_plan import (Address, Options, TrainerPlan, failure_reason, follow_attempts,
                                        resolve_address, trainer_plan)
from launcher.errors import LauncherError
from launcher.procinfo import current_process
from launcher.spec import JobSpec, JobState, spec_from_dict
from launcher.store import ExperimentStore

logger = logging.getLogger("launcher.ray_driver")
CONNECT_CHECK_S = 5.0
INIT_TIMEOUT_S = 90.0
POLL_S = 1.0
METRICS_EVERY_S = 3.0
CURRENT_CLUSTER_FILE = "/tmp/ray/ray_current_cluster"


def current_cluster() -> str | None:
    """What Ray's ``ray_current_cluster`` file names (the head last started on this machine)."""
    try:
        return Path(CURRENT_CLUSTER_FILE).read_text().strip() or None
    except OSError:
        return None


def check_reachable(address: Address, timeout_s: float = CONNECT_CHECK_S) -> None:
    """A LauncherError in at most ``timeout_s`` when nothing accepts TCP connections at ``address``."""
    try:
        socket.create_connection((address.host, address.port), timeout=timeout_s).close()
    except OSError as exc:
        what = "Ray Client server" if address.client else "Ray head (GCS)"
        raise LauncherError(f"cannot reach a {what} at {address.text}: {exc.strerror or exc} (checked for "
                            f"{timeout_s:.0f} s); start one with cluster/ray/start.sh or pass --address") from None


class Driver:
    def __init__(self, spec: JobSpec, home: Path, run_dir: Path) -> None:
        self.spec, self.home, self.run_dir = spec, home, run_dir
        self.plan: TrainerPlan = trainer_plan(spec, spec.backend_options, os.environ)
        self._local = threading.local()  # one SQLite connection per thread (main and monitor)
        self.pid, self.start = current_process()
        self.run_token = f"{self.pid}-{self.start}"
        self.cancelled = False
        self.stop_reason = ""
        self._lock = threading.Lock()
        self.status = {"state": JobState.PENDING.value, "restarts": 0, "ports": [], "reason": "", "exit_code": None,
                       "started": None, "ended": None, "driver_pid": self.pid, "driver_start": self.start,
                       "run": self.run_token, "address": None, "master_addrs": []}

    @property
    def store(self) -> ExperimentStore:
        if not hasattr(self._local, "store"):
            self._local.store = ExperimentStore(self.home)
        return self._local.store

    # ---- state ------------------------------------------------------------------------------
    def set(self, state: JobState | None = None, **fields) -> None:
        with self._lock:
            if state is not None:
                fields["state"] = state.value
            if JobState(self.status["state"]).is_terminal():
                return
            changed = {k: v for k, v in fields.items() if self.status.get(k) != v}
            if not changed:
                return
            self.status.update(changed)
            write_json_atomic(self.run_dir / "status.json", self.status)
            st = dict(self.status)
        mirror_to_store(self.store, self.spec.id, st)

    def record_metrics(self) -> None:
        mirror_to_store(self.store, self.spec.id, work_dir=self.spec.work_dir)

    def read_attempts(self) -> list[dict]:
        try:
            lines = Path(self.plan.worker.attempts_file).read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def poll(self) -> None:
        progress = follow_attempts(self.read_attempts(), self.run_token)
        fields = {"ports": list(progress.ports), "master_addrs": list(progress.master_addrs)}
        if progress.restarts > self.status["restarts"]:
            last = progress.failures[-1] if progress.failures else "a worker died"
            fields.update(restarts=progress.restarts,
                          reason=f"restart {progress.restarts} of at most {self.plan.max_failures} after {last}")
        if progress.master_addrs or progress.restarts:
            self.set(JobState.RUNNING, **fields)
        if progress.user_error and not self.stop_reason:  # the workers end the run themselves, no retry
            self.stop_reason = f"{progress.user_error} (a user error: the run was stopped, not restarted)"
            logger.info("the workers stop the run: %s", self.stop_reason)

    def monitor(self, stop: threading.Event) -> None:
        next_metrics = 0.0
        while not stop.wait(POLL_S):
            try:
                self.poll()
                if time.monotonic() >= next_metrics:
                    self.record_metrics()
                    next_metrics = time.monotonic() + METRICS_EVERY_S
            except Exception:
                logger.exception("monitor error (ignored)")

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
        self.set(JobState.PENDING, reason="connecting to Ray")
        try:
            address = resolve_address(self.plan.address, os.environ, current_cluster())
            check_reachable(address)
            self.set(address=address.text)
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

        from launcher.backends.ray_worker import train_loop_per_worker

        self.connect(address)
        logger.info("connected to Ray at %s; starting %d Ray Train workers", address.text, self.plan.num_workers)
        trainer = TorchTrainer(train_loop_per_worker, train_loop_config=self.plan.worker.to_config(self.run_token),
                               **ray_configs(self.plan))
        self.set(JobState.RUNNING, reason=f"Ray Train on {address.text}", started=time.time())
        stop = threading.Event()
        watcher = threading.Thread(target=self.monitor, args=(stop,), name="monitor", daemon=True)
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
        self.poll()
        self.record_metrics()
        try:
            ray.shutdown()
        except Exception:
            pass
        self.cancelled = self.cancelled or (self.run_dir / "cancel").exists()
        if self.stop_reason:
            return self.finish(JobState.FAILED, 2, self.stop_reason)
        if self.cancelled:
            return self.finish(JobState.CANCELLED, None, "cancelled")
        if error is not None:
            text = str(error)
            logger.error("Ray Train failed:\n%s", text)
            reason = failure_reason(text)
            if self.status["restarts"]:
                reason += f" (after {self.status['restarts']} restart(s); --max-failures {self.plan.max_failures})"
            return self.finish(JobState.FAILED, 1, reason)
        restarts = self.status["restarts"]
        return self.finish(JobState.SUCCEEDED, 0, f"finished after {restarts} restart(s)" if restarts
                           else f"finished on Ray at {address.text}")

    def finish(self, state: JobState, rc: int | None, reason: str) -> int:
        self.set(state, exit_code=rc, reason=reason, ended=time.time())
        logger.info("experiment %s %s%s", self.spec.id, state.value, f": {reason}" if reason else "")
        return 0


def ray_configs(plan: TrainerPlan) -> dict:
    """``TorchTrainer`` keyword arguments (Ray's config objects) for ``plan``; no cluster calls."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    return {
        "scaling_config": ScalingConfig(num_workers=plan.num_workers, use_gpu=plan.use_gpu,
                                        resources_per_worker=dict(plan.resources_per_worker),
                                        placement_strategy=plan.placement_strategy),
        "run_config": RunConfig(name=plan.run_name, storage_path=plan.storage_path,
                                failure_config=FailureConfig(max_failures=plan.max_failures),
                                checkpoint_config=CheckpointConfig(num_to_keep=plan.checkpoints_to_keep)),
        "torch_config": TorchConfig(backend=plan.torch_backend),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.backends.ray_driver")
    parser.add_argument("--home", required=True, help="launcher home (store, ray/)")
    parser.add_argument("id", help="experiment id; its spec is ray/<id>/spec.json")
    args = parser.parse_args(argv)
    os.umask(os.umask(0) | 0o022)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    home = Path(args.home)
    run_dir = home / "ray" / args.id
    data = read_json(run_dir / "spec.json")
    if data is None:
        logger.error("no spec for %s under %s", args.id, home)
        return 2
    return Driver(spec_from_dict(data, Options), home, run_dir).run()


if __name__ == "__main__":
    sys.exit(main())
