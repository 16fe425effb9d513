"""The Slurm backend: detcore jobs as Slurm jobs through submitit, one task per GPU (or CPU worker).

``submit`` is the dry run executed: the script :func:`~launcher.backends.slurm.script.render_sbatch`
renders (submitit's own template) is written to the job folder ``$LAUNCHER_HOME/slurm/<id>/``
next to submitit's pickled :class:`~launcher.backends.slurm.task.SlurmTask`, and handed to
``sbatch``. submitit then does what it does best inside the job: its runner unpickles the
task on every rank, installs the USR2 handler, and on preemption or an approaching time limit
checkpoints (through ``SlurmTask.checkpoint``) and requeues the job, which resumes from the
newest checkpoint. The launcher calls ``sbatch`` itself (instead of ``SlurmExecutor.submit``)
so that the submitted script is byte for byte the dry run and sbatch's refusal reaches the
user as one line.

Every call to Slurm (``sbatch``, ``squeue``, ``sacct``, ``scancel``) goes through
:meth:`SlurmBackend._run`, the one subprocess seam; unit tests replace it with recorded
output. Queries are time-boxed (``QUERY_TIMEOUT_S``): a daemon that does not answer (slurmctld
for ``squeue``, slurmdbd for ``sacct``) is asked once per command, not once per job; ``status``
then raises :class:`SlurmUnreachable` and the experiment keeps its last known state, marked
stale, unless ``sacct`` still knows that the job completed or was cancelled. State lives in
Slurm and the job folder, never in this process, so a job submitted by a launcher that has
exited is fully manageable. Clients need ``SLURM_CONF`` where the
cluster requires it (for the test cluster: ``source /tmp/detlaunch-slurm/env.sh``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence

from detcore.contract import STOP_SIGNALS_ENV, rank_log
from detcore.facts import read_facts
from launcher.backends.protocol import ArrayBackend, DryRun
from launcher.backends.slurm.gpus import GRES, Gres, GpuForm, choose_gpu_form, parse_gres, parse_scontrol_config
from launcher.backends.slurm.mmdet_env import mmdet_env_line
from launcher.backends.slurm.script import (MANAGED_OPTIONS, SlurmOptions, SlurmDefaults, SlurmRequest, array_name,
                                            defaults_paths, load_defaults, parse_slurm_option, render_sbatch,
                                            resolve, resource_notes)
from launcher.backends.slurm.state import (job_status, parse_sacct, parse_sbatch, parse_squeue, requeue_recorded,
                                           sacct_command, sbatch_error_line, scancel_error_is_harmless,
                                           squeue_command)
from launcher.errors import LauncherError
from launcher.runtime.command import REPO_ROOT, run_dir, shim_command, thread_env
from launcher.runtime.files import follow_file, read_json, write_json_atomic
from launcher.runtime.job_folder import JobFolder
from launcher.spec import JobHandle, JobSpec, JobState, JobStatus, Mode, Resources, spec_to_dict

__all__ = ["Options", "SlurmOptions", "SlurmBackend", "add_arguments", "options_from_args", "resources_from_args", "create",
           "MANAGED_OPTIONS", "SlurmNotConfigured", "no_cluster_line"]

COMMAND_TIMEOUT_S = 120.0  # sbatch: a busy controller may take a while to accept a job
QUERY_TIMEOUT_S = 5.0      # squeue, sacct, scontrol: a controller that is up answers in well under a second
CANCEL_TIMEOUT_S = 30.0
UNREACHABLE_RETRY_S = 30.0  # a daemon that did not answer is asked again after this long (a command that follows)
# which daemon answers each command, and what its clients print when that daemon is down
DAEMON = {"squeue": "slurmctld", "scontrol": "slurmctld", "scancel": "slurmctld", "sbatch": "slurmctld",
          "sacct": "slurmdbd"}
# what the clients print when there is no slurm.conf (configless lookup through DNS SRV records fails)
NOT_CONFIGURED_TEXT = ("resolve_ctls_from_dns_srv", "could not establish a configuration source",
                       "unable to process configuration file", "fetch_config")
UNREACHABLE_TEXT = ("unable to contact slurm controller", "socket timed out", "connection refused",
                    "problem talking to the database", "persistent connection", "connection timed out")
STATUS_TTL_S = 2.0
CANCEL_WAIT_S = 30.0
SCRIPT_NAME = "submission.sh"


Options = SlurmOptions  # the name the backend protocol looks up (launcher.backends.protocol)


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("-p", "--partition", "--slurm-partition", dest="slurm_partition", metavar="P",
                       help="slurm: partition (default: slurm.partition in launcher.yaml, else the cluster's)")
    group.add_argument("-A", "--account", "--slurm-account", dest="slurm_account", metavar="A",
                       help="slurm: account")
    group.add_argument("-q", "--qos", "--slurm-qos", dest="slurm_qos", metavar="Q", help="slurm: quality of service")
    group.add_argument("--gres", dest="slurm_gres", metavar="gpu:[TYPE:]N",
                       help="slurm: GPUs per node (one task each) as sbatch writes them, e.g. gpu:4 or gpu:a100:4; "
                            "other entries (gpu:4,nvme:1) are passed on")
    group.add_argument("--constraint", "--slurm-constraint", dest="slurm_constraint", metavar="C",
                       help="slurm: node features, e.g. 'a100|h100'")
    group.add_argument("--exclude", "--slurm-exclude", dest="slurm_exclude", metavar="NODES",
                       help="slurm: nodes not to use, e.g. gpu[01-03]")
    group.add_argument("--gpus-per-node", dest="slurm_gpus_per_node", type=int, metavar="G",
                       help="slurm: GPUs per node, one task each (same as --gpus)")
    group.add_argument("--tasks-per-node", dest="slurm_tasks_per_node", type=int, metavar="T",
                       help="slurm: CPU worker tasks per node (same as --nproc)")
    group.add_argument("--signal-delay", dest="slurm_signal_delay", type=int, metavar="S",
                       help="slurm: USR2 comes S seconds before the time limit; the job checkpoints and requeues "
                            "(default 120)")
    group.add_argument("--max-timeouts", dest="slurm_max_timeouts", type=int, metavar="N",
                       help="slurm: requeue after reaching the time limit at most N times (default 20; "
                            "preemptions are not counted)")
    group.add_argument("--array-parallelism", dest="slurm_array_parallelism", type=int, metavar="P",
                       help="slurm sweep: at most P array tasks run at once (default: --max-parallel, else all)")
    group.add_argument("--slurm-option", dest="slurm_options", action="append", default=[], metavar="KEY=VALUE",
                       help="slurm: any other sbatch option, e.g. mail-user=me@example.org, or a flag: exclusive")


def options_from_args(args: argparse.Namespace) -> SlurmOptions:
    gres = parse_gres(args.slurm_gres) if getattr(args, "slurm_gres", None) else Gres()
    line = mmdet_env_line(os.environ, _given(args))
    if line:
        print(line, file=sys.stderr)
    return SlurmOptions(gpu_type=gres.gpu_type, gres_other=gres.other,
                   partition=getattr(args, "slurm_partition", None), account=getattr(args, "slurm_account", None),
                   qos=getattr(args, "slurm_qos", None), constraint=getattr(args, "slurm_constraint", None),
                   exclude=getattr(args, "slurm_exclude", None),
                   signal_delay_s=getattr(args, "slurm_signal_delay", None),
                   max_timeouts=getattr(args, "slurm_max_timeouts", None),
                   array_parallelism=getattr(args, "slurm_array_parallelism", None),
                   extra=tuple(parse_slurm_option(o) for o in getattr(args, "slurm_options", None) or ()))


def _given(args: argparse.Namespace) -> set[str]:
    """Which of the flags that replace slurm_train.sh's variables the command line set."""
    flags = {"gpus": ("gpus", "nproc", "slurm_gres", "slurm_gpus_per_node", "slurm_tasks_per_node"),
             "cpus": ("cpus_per_task",), "partition": ("slurm_partition",), "slurm_options": ("slurm_options",)}
    return {key for key, dests in flags.items() if any(getattr(args, d, None) for d in dests)}


def resources_from_args(args: argparse.Namespace, resources: Resources) -> Resources:
    """``--gres gpu:N`` / ``--gpus-per-node`` / ``--tasks-per-node``: Slurm's names for ``--gpus`` / ``--nproc``."""
    gpn, tpn = getattr(args, "slurm_gpus_per_node", None), getattr(args, "slurm_tasks_per_node", None)
    gres = parse_gres(args.slurm_gres) if getattr(args, "slurm_gres", None) else Gres()
    if gres.gpus:
        for flag, value in (("--gpus", getattr(args, "gpus", None)), ("--gpus-per-node", gpn)):
            if value is not None and value != gres.gpus:
                raise LauncherError(f"--gres {args.slurm_gres} asks {gres.gpus} GPUs per node but {flag} {value}; "
                                    f"pass the GPU count once")
        if getattr(args, "nproc", None) is not None or tpn not in (None, gres.gpus):
            raise LauncherError(f"--gres {args.slurm_gres} runs one task per GPU; drop --nproc/--tasks-per-node")
        return dataclasses.replace(resources, gpus=gres.gpus, nproc=gres.gpus)
    if gpn is not None:
        if getattr(args, "gpus", None) not in (None, gpn) or getattr(args, "nproc", None) is not None:
            raise LauncherError("--gpus-per-node is --gpus under another name; pass only one of --gpus-per-node, "
                                "--gpus and --nproc")
        return dataclasses.replace(resources, gpus=gpn, nproc=tpn if tpn is not None else gpn)
    if tpn is not None:
        if getattr(args, "nproc", None) not in (None, tpn):
            raise LauncherError("--tasks-per-node is --nproc under another name; pass only one of them")
        return dataclasses.replace(resources, nproc=tpn)
    return resources


def create(home: Path) -> SlurmBackend:
    return SlurmBackend(home, load_defaults(defaults_paths(home, os.environ)))


class SlurmError(LauncherError):
    """A Slurm command failed; the message is its error output in one line."""


class SlurmUnreachable(SlurmError):
    """A Slurm daemon did not answer (not running, unreachable, or too slow)."""


class SlurmNotConfigured(SlurmUnreachable):
    """No Slurm cluster at all from here: client commands missing, or no slurm.conf to read."""


def no_cluster_line(why: str) -> str:
    """The one line for a submit that finds no Slurm cluster to talk to (``why``: what the client said)."""
    return (f"no Slurm cluster reachable ({why}): point SLURM_CONF at your cluster's slurm.conf and check that "
            f"`sinfo` answers, or start this project's test cluster with cluster/slurm/start.sh and "
            f"`source /tmp/detlaunch-slurm/env.sh`")


class SlurmBackend(ArrayBackend):
    name = "slurm"

    def __init__(self, home: Path, defaults: SlurmDefaults | None = None, python: str | None = None,
                 repo_root: str = REPO_ROOT) -> None:
        self.home = Path(home)
        self.defaults = defaults or SlurmDefaults()
        self.python = python or self.defaults.python or sys.executable
        self.repo_root = repo_root
        self._status_cache: dict[str, tuple[float, JobStatus]] = {}
        self._unreachable: dict[str, tuple[float, str]] = {}  # daemon -> (when, why) it did not answer
        self._gpu_form: GpuForm | None = None

    # ---- the one subprocess seam ----------------------------------------------------------
    def _run(self, cmd: Sequence[str]) -> str:
        """Run a Slurm client command, time-boxed; its stdout, or SlurmError with its stderr in one line
        (SlurmUnreachable when its daemon did not answer, now or within the last ``UNREACHABLE_RETRY_S``)."""
        daemon = DAEMON.get(cmd[0], cmd[0])
        known = self._unreachable.get(daemon)
        if known is not None and time.monotonic() - known[0] < UNREACHABLE_RETRY_S:
            raise SlurmUnreachable(known[1])
        timeout = {"sbatch": COMMAND_TIMEOUT_S, "scancel": CANCEL_TIMEOUT_S}.get(cmd[0], QUERY_TIMEOUT_S)
        try:
            proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise SlurmNotConfigured(f"{cmd[0]} not found on PATH") from None
        except subprocess.TimeoutExpired:
            self._unreachable[daemon] = (time.monotonic(), f"{daemon} unreachable: {cmd[0]} did not answer within "
                                                            f"{timeout:g} s")
            raise SlurmUnreachable(self._unreachable[daemon][1]) from None
        if proc.returncode != 0:
            line = sbatch_error_line(proc.stderr or proc.stdout)
            if any(text in line.lower() for text in NOT_CONFIGURED_TEXT):
                self._unreachable[daemon] = (time.monotonic(), f"{cmd[0]} found no slurm.conf: {line.split('; ')[0]}")
                raise SlurmNotConfigured(self._unreachable[daemon][1])
            if any(text in line.lower() for text in UNREACHABLE_TEXT):
                self._unreachable[daemon] = (time.monotonic(), f"{daemon} unreachable: {cmd[0]}: {line}")
                raise SlurmUnreachable(self._unreachable[daemon][1])
            raise SlurmError(f"{cmd[0]} failed: {line}")
        return proc.stdout

    # ---- rendering ----------------------------------------------------------------------------
    def job_folder(self, key: str) -> Path:
        return self.home / "slurm" / key

    def gpu_form(self, specs: Sequence[JobSpec], strict: bool) -> GpuForm | None:
        """How this cluster takes a GPU count, from ``scontrol show config`` (asked once per backend; None when
        no spec asks GPUs or ``slurm.gpu_request`` decides). ``strict`` (a submit): no reachable cluster raises
        its one line; otherwise (a dry run) ``--gres`` is assumed and the reason says so."""
        if self.defaults.gpu_request or not any(s.resources.gpus for s in specs):
            return None
        if self._gpu_form is None:
            try:
                config = parse_scontrol_config(self._run(["scontrol", "show", "config"]))
            except SlurmUnreachable as exc:
                if strict:
                    raise LauncherError(no_cluster_line(str(exc))) from None
                return GpuForm(GRES, f"`scontrol show config` failed ({exc}); --gres works under every select "
                                     f"plugin")
            self._gpu_form = choose_gpu_form(config)
        return self._gpu_form

    def _requests(self, specs: Sequence[JobSpec], strict: bool = False) -> SlurmRequest:
        form = self.gpu_form(specs, strict)
        requests = [resolve(s, self.defaults, form) for s in specs]
        if any(r != requests[0] for r in requests[1:]):
            raise LauncherError("a Slurm array runs every task with the same resources and Slurm options; these "
                                "experiments differ, so submit them one by one")
        return requests[0]

    def _array_parallelism(self, specs: Sequence[JobSpec]) -> int | None:
        opts = specs[0].backend_options if isinstance(specs[0].backend_options, SlurmOptions) else SlurmOptions()
        if opts.array_parallelism is not None:
            return opts.array_parallelism
        return specs[0].slots.size if specs[0].slots else None

    def script(self, specs: Sequence[JobSpec], folder: Path, strict: bool = False) -> tuple[SlurmRequest, str]:
        request = self._requests(specs, strict)
        name = specs[0].name if len(specs) == 1 else array_name(specs)
        text = render_sbatch(request, name, str(folder), self.python, self.repo_root,
                             array_size=len(specs) if len(specs) > 1 else 0,
                             array_parallelism=self._array_parallelism(specs))
        return request, text

    def _worker(self, spec: JobSpec) -> tuple[str, ...]:
        return shim_command(spec, python=self.python)

    def dryrun(self, spec: JobSpec) -> DryRun:
        return self.dryrun_array([spec])

    def dryrun_array(self, specs: Sequence[JobSpec]) -> DryRun:
        """One DryRun for a single job or a whole array (``launcher sweep``): the sbatch script as a file."""
        key = specs[0].id if len(specs) == 1 else f"array-{specs[0].id}"
        folder = self.job_folder(key)
        request, text = self.script(specs, folder)
        spec = specs[0]
        env = {"RANK": "<SLURM_PROCID>", "WORLD_SIZE": str(spec.world_size), "LOCAL_RANK": "<SLURM_LOCALID>",
               "MASTER_ADDR": "<first node of SLURM_JOB_NODELIST>",
               "MASTER_PORT": "<20000 + SLURM_JOB_ID % 12000>", "PYTHONPATH": f"{self.repo_root}:$PYTHONPATH"}
        if spec.mode is Mode.TRAIN:
            env[STOP_SIGNALS_ENV] = "USR2"
        if spec.resources.gpus:
            env["CUDA_VISIBLE_DEVICES"] = "<GPU number LOCAL_RANK of the node>"
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
        env.update(self._threads(spec, request))
        timeouts = f"at most {request.max_timeouts} time-limit requeues" if request.time_min else \
            "no --time given: every requeue counts as a preemption (unlimited)"
        notes = [f"sbatch {folder / SCRIPT_NAME}; each task runs the command below through submitit "
                 f"(launcher.backends.slurm.task)",
                 f"USR2 {request.signal_delay_s} s before the time limit or on preemption: checkpoint, requeue, "
                 f"resume from the newest checkpoint ({timeouts})",
                 "MASTER_PORT is unique per job and array task while fewer than 12000 jobs are submitted during "
                 "its run"]
        if len(specs) > 1:
            notes.append(f"one job array of {len(specs)} tasks; task i runs experiment {', '.join(s.id for s in specs)}"
                         f" (in that order), each in its own work dir")
        notes += resource_notes(spec, request, self.defaults)
        if spec.hang_timeout_s:
            notes.append(f"hang watchdog ({spec.hang_timeout_s:g} s): rank 0 requeues the job at most "
                         f"{spec.max_restarts} time(s) (--max-restarts); it resumes from the newest checkpoint")
        if spec.max_restarts:
            notes.append("on Slurm a failed worker fails the job (--max-restarts counts only hangs); preemptions "
                         "and time limits requeue it")
        return DryRun(backend=self.name, commands=tuple(self._worker(s) for s in specs), env=tuple(sorted(env.items())),
                      resources=spec.resources, world_size=spec.world_size, scaling=spec.scaling,
                      work_dir=spec.work_dir, cwd=spec.cwd, files=((f"sbatch script {SCRIPT_NAME}", text),),
                      notes=tuple(notes))

    # ---- submit -------------------------------------------------------------------------------
    def submit(self, spec: JobSpec, dry: DryRun | None = None) -> JobHandle:
        """``dry`` is not needed: sbatch receives the script the dry run shows, rendered from the same request
        (Slurm keeps it: ``scontrol write batch_script``)."""
        return self._submit([spec])[0]

    def submit_array(self, specs: Sequence[JobSpec]) -> list[JobHandle]:
        """Submit ``specs`` as ONE Slurm job array (task i runs ``specs[i]``); one handle per experiment."""
        if not specs:
            raise LauncherError("an array needs at least one experiment")
        if len(specs) == 1:
            return [self.submit(specs[0])]
        return self._submit(list(specs))

    def _task(self, spec: JobSpec, request: SlurmRequest):
        from launcher.backends.slurm.task import SlurmTask

        # PYTHONPATH is set by the script's setup lines; the rest of the environment is the submitter's (--export=ALL)
        return SlurmTask(spec.id, self._worker(spec), spec.cwd, self._threads(spec, request),
                         os.path.join(spec.work_dir, "logs"), gpus_per_node=request.gpus_per_node,
                         stoppable=spec.mode is Mode.TRAIN, stop_timeout_s=max(10.0, request.signal_delay_s - 20.0),
                         run_dir=run_dir(spec), hang_requeues=spec.max_restarts if spec.hang_timeout_s else 0,
                         signal_delay_s=request.signal_delay_s)

    @staticmethod
    def _threads(spec: JobSpec, request: SlurmRequest) -> dict[str, str]:
        """Intra-op threads of a task: its CPUs less the DataLoader processes of a GPU worker."""
        if request.cpus_per_task is None:
            return {}
        return thread_env(request.cpus_per_task, 1, spec.loader_workers if request.gpus_per_node else 0)

    def _submit(self, specs: list[JobSpec]) -> list[JobHandle]:
        from submitit.core.utils import DelayedSubmission, JobPaths

        array = len(specs) > 1
        key = f"array-{specs[0].id}" if array else specs[0].id
        folder = self.job_folder(key)
        request, text = self.script(specs, folder, strict=True)
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._retire(folder)
        folder.mkdir()
        job_id = None
        try:
            pickles = []
            for spec in specs:
                delayed = DelayedSubmission(self._task(spec, request))
                # No --time: no submitit time-limit budget either (1e6 min); every requeue counts as a preemption.
                delayed.set_timeout(request.time_min or 10 ** 6, request.max_timeouts)
                path = folder / f".{uuid.uuid4().hex}.pkl"
                delayed.dump(path)
                pickles.append(path)
            # the specs too: a rebuilt experiment store reads them back (launcher.store.repair)
            write_json_atomic(JobFolder(folder).manifest, {"experiments": [s.id for s in specs], "array": array,
                                                         "work_dirs": [s.work_dir for s in specs],
                                                         "specs": [spec_to_dict(s) for s in specs]})
            (folder / SCRIPT_NAME).write_text(text)
            try:
                job_id = parse_sbatch(self._run(["sbatch", "--parsable", str(folder / SCRIPT_NAME)]))
            except SlurmUnreachable as exc:
                raise LauncherError(no_cluster_line(str(exc))) from None
            except SlurmError as exc:
                raise LauncherError(f"sbatch refused the job: {str(exc).removeprefix('sbatch failed: ')}") from None
            ids = [f"{job_id}_{i}" for i in range(len(specs))] if array else [job_id]
            for path, task_job in zip(pickles, ids):
                os.replace(path, JobPaths(folder, job_id=task_job).submitted_pickle)
            manifest = read_json(JobFolder(folder).manifest) or {}
            write_json_atomic(JobFolder(folder).manifest, {**manifest, "job_id": job_id})
        except BaseException:
            if job_id is not None:
                self._scancel(job_id)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return [JobHandle(spec.id, self.name, jid, (("folder", str(folder)), ("work_dir", spec.work_dir),
                                                   ("run_dir", run_dir(spec))))
                for spec, jid in zip(specs, ids)]

    @staticmethod
    def _retire(folder: Path) -> None:
        """Move the folder of an earlier run of the same experiment (``launcher resume``) to ``<id>.<job id>``.

        Its logs stay readable; the new run gets the folder its dry run named. A folder whose
        sbatch never succeeded (no job id) is removed.
        """
        if not folder.exists():
            return
        old_job = (read_json(JobFolder(folder).manifest) or {}).get("job_id")
        if old_job:
            os.replace(folder, folder.with_name(f"{folder.name}.{old_job}"))
        else:
            shutil.rmtree(folder)

    # ---- status -------------------------------------------------------------------------------
    def status(self, handle: JobHandle) -> JobStatus:
        from launcher.backends.slurm.task import master_port

        job_id = handle.job_id
        cached = self._status_cache.get(job_id)
        if cached and time.monotonic() - cached[0] < STATUS_TTL_S:
            return cached[1]
        try:
            queue = parse_squeue(self._run(squeue_command(job_id)))
        except SlurmUnreachable as exc:
            return self._status_from_accounting(job_id, str(exc))
        except SlurmError as exc:
            if "invalid job id" not in str(exc).lower():
                raise
            queue = []
        events = read_facts(handle.get("run_dir")) if handle.get("run_dir") else []
        records = []
        # sacct: the final state, and why a requeued job was requeued when rank 0 did not record it (NODE_FAIL,
        # or someone's scontrol requeue); a running job that was never requeued costs one squeue only
        if not queue or queue[0].state == "COMPLETING" or (queue[0].restarts and (
                queue[0].state == "PENDING" or not requeue_recorded(events, queue[0].restarts - 1))):
            records = parse_sacct(self._run(sacct_command(job_id)))
        st = job_status(job_id, queue, records, master_port, events, lambda: self._failure_detail(handle))
        self._status_cache[job_id] = (time.monotonic(), st)
        return st

    def _status_from_accounting(self, job_id: str, why: str) -> JobStatus:
        """The job's status while squeue does not answer (``why``): its ending when slurmdbd's records say it
        completed or was cancelled (final; a failed job might still be requeued by slurmctld), else
        SlurmUnreachable."""
        from launcher.backends.slurm.task import master_port

        try:
            records = parse_sacct(self._run(sacct_command(job_id)))
        except SlurmUnreachable:
            raise SlurmUnreachable(why) from None
        st = job_status(job_id, [], records, master_port)
        if st.state not in (JobState.SUCCEEDED, JobState.CANCELLED):
            raise SlurmUnreachable(why)
        self._status_cache[job_id] = (time.monotonic(), st)
        return st

    def _failure_detail(self, handle: JobHandle) -> str:
        """The last line of the error submitit recorded for rank 0, for a job whose facts name no failure
        (e.g. a task that failed before its worker started)."""
        folder = handle.get("folder")
        if not folder:
            return ""
        from submitit.core.utils import JobPaths

        path = JobPaths(folder, job_id=handle.job_id, task_id=0).result_pickle
        try:
            with open(path, "rb") as f:
                outcome, payload = pickle.load(f)  # ("error", traceback text) written by submitit's runner
        except (OSError, ValueError, pickle.UnpicklingError, EOFError, TypeError):
            return ""
        if outcome != "error" or not isinstance(payload, str):
            return ""
        lines = [line for line in payload.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    # ---- logs ---------------------------------------------------------------------------------
    def log_path(self, handle: JobHandle, rank: int) -> Path:
        work_dir = handle.get("work_dir")
        if not work_dir:
            raise LauncherError(f"experiment {handle.experiment_id} has no work dir recorded for its Slurm job")
        return rank_log(work_dir, rank)

    def logs(self, handle: JobHandle, rank: int = 0, follow: bool = False) -> Iterator[str]:
        path = self.log_path(handle, rank)
        if not follow and not path.exists():
            fallback = self._submitit_log(handle, rank)
            if fallback is None:
                raise LauncherError(f"no log for rank {rank} yet ({path}); the job has not started that rank "
                                    f"(`launcher status {handle.experiment_id}`)")
            path = fallback
        finished = None
        if follow:
            last = [0.0, False]

            def finished() -> bool:  # ask Slurm at most every 5 s while following; a busy slurmctld is no end
                if time.monotonic() - last[0] >= 5.0:
                    last[0] = time.monotonic()
                    try:
                        last[1] = self.status(handle).state.is_terminal()
                    except LauncherError:
                        pass
                return last[1]
        yield from follow_file(path, finished)

    def _submitit_log(self, handle: JobHandle, rank: int) -> Path | None:
        """submitit's own stderr log of the task, when the worker never started (e.g. a broken environment)."""
        folder = handle.get("folder")
        if not folder:
            return None
        from submitit.core.utils import JobPaths

        path = JobPaths(folder, job_id=handle.job_id, task_id=rank).stderr
        return path if path.exists() and path.stat().st_size else None

    # ---- cancel / list ------------------------------------------------------------------------
    def _scancel(self, job_id: str) -> None:
        try:
            self._run(["scancel", job_id])
        except SlurmError as exc:
            if not scancel_error_is_harmless(str(exc)):
                raise

    def cancel(self, handle: JobHandle) -> None:
        """scancel the job (idempotent) and wait until Slurm reports it ended (at most 30 s)."""
        self._scancel(handle.job_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while True:
            self._status_cache.pop(handle.job_id, None)
            if self.status(handle).state.is_terminal() or time.monotonic() > deadline:
                return
            time.sleep(0.5)
