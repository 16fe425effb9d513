"""The Slurm backend: a dry run that is the plan, and ``submit`` that executes it with ``sbatch``.

:meth:`SlurmBackend.dryrun_array` renders the sbatch script once (submitit's own template, through
:func:`~launcher.backends.slurm.script.render_sbatch`) and computes every rank's
:class:`~launcher.backends.slurm.task.SlurmTask` (``DryRun.plan``). ``submit`` executes that dry
run: it writes it to the job folder ``$LAUNCHER_HOME/slurm/<id>/`` (``plan.json``, the script as
``submission.sh``, submitit's pickled tasks) and hands the script to ``sbatch``, so the script
Slurm runs is byte for byte the one the dry run showed. The questions asked of Slurm (status,
logs, cancel) are :class:`~launcher.backends.slurm.queries.SlurmQueries`'.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

from detcore.contract import STOP_SIGNALS_ENV
from launcher.backends.protocol import ArrayBackend, DryRun
from launcher.backends.slurm.gpus import GpuForm
from launcher.backends.slurm.queries import SlurmError, SlurmQueries, SlurmUnreachable, no_cluster_line
from launcher.backends.slurm.script import (SlurmDefaults, SlurmOptions, SlurmRequest, array_name, render_sbatch,
                                            resolve, resource_notes)
from launcher.backends.slurm.state import parse_sbatch
from launcher.errors import LauncherError
from launcher.runtime.command import REPO_ROOT, run_dir, shim_command, thread_env
from launcher.runtime.detached import write_plan
from launcher.runtime.files import follow_file, read_json, write_json_atomic
from launcher.runtime.job_folder import JobFolder
from launcher.spec import JobHandle, JobSpec, Mode, spec_to_dict

SCRIPT_NAME = "submission.sh"
SCRIPT_FILE = f"sbatch script {SCRIPT_NAME}"  # the script's name among the dry run's files
CANCEL_WAIT_S = 30.0
NO_TIME_LIMIT_MIN = 10 ** 6  # no --time: no submitit time-limit budget either; every requeue counts as a preemption


class SlurmBackend(SlurmQueries, ArrayBackend):
    name = "slurm"

    def __init__(self, home: Path, defaults: SlurmDefaults | None = None, python: str | None = None,
                 repo_root: str = REPO_ROOT) -> None:
        super().__init__()
        self.home = Path(home)
        self.defaults = defaults or SlurmDefaults()
        self.python = python or self.defaults.python or sys.executable
        self.repo_root = repo_root

    def job_folder(self, key: str) -> Path:
        return self.home / "slurm" / key

    # ---- the plan -----------------------------------------------------------------------------
    def _request(self, specs: Sequence[JobSpec], form: GpuForm | None) -> SlurmRequest:
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

    @staticmethod
    def _threads(spec: JobSpec, request: SlurmRequest) -> dict[str, str]:
        """Intra-op threads of a task: its CPUs less the DataLoader processes of a GPU worker."""
        if request.cpus_per_task is None:
            return {}
        return thread_env(request.cpus_per_task, 1, spec.loader_workers if request.gpus_per_node else 0)

    def _task_args(self, spec: JobSpec, request: SlurmRequest, command: Sequence[str]) -> dict[str, Any]:
        """The :class:`~launcher.backends.slurm.task.SlurmTask` of ``spec``, as JSON values (its arguments).
        PYTHONPATH is set by the script's setup lines; the rest of the environment is the submitter's
        (--export=ALL)."""
        return dict(experiment_id=spec.id, command=list(command), cwd=spec.cwd, env=self._threads(spec, request),
                    log_dir=os.path.join(spec.work_dir, "logs"), gpus_per_node=request.gpus_per_node,
                    stoppable=spec.mode is Mode.TRAIN, stop_timeout_s=max(10.0, request.signal_delay_s - 20.0),
                    run_dir=run_dir(spec), hang_requeues=spec.max_restarts if spec.hang_timeout_s else 0,
                    signal_delay_s=request.signal_delay_s)

    def dryrun(self, spec: JobSpec) -> DryRun:
        return self.dryrun_array([spec])

    def dryrun_array(self, specs: Sequence[JobSpec]) -> DryRun:
        """One DryRun for a single job or a whole array (``launcher sweep``): the sbatch script as a file, and
        as its ``plan`` what ``submit`` executes (the job folder, every task's arguments)."""
        return self._dryrun(specs, strict=False)

    def _dryrun(self, specs: Sequence[JobSpec], strict: bool) -> DryRun:
        key = specs[0].id if len(specs) == 1 else f"array-{specs[0].id}"
        folder = self.job_folder(key)
        form = self.gpu_form(specs, strict)
        request = self._request(specs, form)
        spec = specs[0]
        text = render_sbatch(request, spec.name if len(specs) == 1 else array_name(specs), str(folder), self.python,
                             self.repo_root, array_size=len(specs) if len(specs) > 1 else 0,
                             array_parallelism=self._array_parallelism(specs))
        commands = tuple(shim_command(s, python=self.python) for s in specs)
        plan = {"folder": str(folder), "experiments": [s.id for s in specs],
                # False: the cluster did not answer, so --gres was assumed; submit asks again
                "gpu_form": form.form if form else None, "gpu_form_checked": form is None or form is self._gpu_form,
                "timeout_min": request.time_min or NO_TIME_LIMIT_MIN, "max_timeouts": request.max_timeouts,
                "tasks": [self._task_args(s, request, c) for s, c in zip(specs, commands)]}
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
        env.update(plan["tasks"][0]["env"])
        return DryRun(backend=self.name, commands=commands, env=tuple(sorted(env.items())), resources=spec.resources,
                      world_size=spec.world_size, scaling=spec.scaling, work_dir=spec.work_dir, cwd=spec.cwd,
                      files=((SCRIPT_FILE, text),), notes=tuple(self._notes(specs, request, folder)), plan=plan)

    def _notes(self, specs: Sequence[JobSpec], request: SlurmRequest, folder: Path) -> list[str]:
        spec = specs[0]
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
        return notes

    def _plan(self, specs: Sequence[JobSpec], dry: DryRun | None) -> DryRun:
        """The dry run ``submit`` executes: ``dry`` (the caller's, for these specs), else one made now. A dry run
        made while the cluster did not answer (``--gres`` assumed) is checked first: no cluster is one line; a
        cluster that takes GPUs another way gets a new plan."""
        if dry is None or not dry.plan or dry.plan.get("experiments") != [s.id for s in specs] \
                or "tasks" not in dry.plan:
            return self._dryrun(specs, strict=True)
        if not dry.plan.get("gpu_form_checked"):
            form = self.gpu_form(specs, strict=True)
            if (form.form if form else None) != dry.plan.get("gpu_form"):
                return self._dryrun(specs, strict=True)
        return dry

    # ---- submit -------------------------------------------------------------------------------
    def submit(self, spec: JobSpec, dry: DryRun | None = None) -> JobHandle:
        """Execute ``dry`` (the dry run of ``spec``; made here when None): sbatch receives its script (Slurm
        keeps it: ``scontrol write batch_script``)."""
        return self._submit([spec], dry)[0]

    def submit_array(self, specs: Sequence[JobSpec], dry: DryRun | None = None) -> list[JobHandle]:
        """Submit ``specs`` as ONE Slurm job array (task i runs ``specs[i]``), executing ``dry`` (their
        ``dryrun_array``; made here when None); one handle per experiment."""
        if not specs:
            raise LauncherError("an array needs at least one experiment")
        return self._submit(list(specs), dry)

    def _submit(self, specs: list[JobSpec], dry: DryRun | None) -> list[JobHandle]:
        from submitit.core.utils import DelayedSubmission, JobPaths

        from launcher.backends.slurm.task import SlurmTask

        dry = self._plan(specs, dry)
        plan = dry.plan or {}
        folder = Path(plan["folder"])
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._retire(folder)
        folder.mkdir()
        job_id = None
        try:
            pickles = []
            for task in plan["tasks"]:
                delayed = DelayedSubmission(SlurmTask(**task))
                delayed.set_timeout(plan["timeout_min"], plan["max_timeouts"])
                path = folder / f".{uuid.uuid4().hex}.pkl"
                delayed.dump(path)
                pickles.append(path)
            # the specs too: a rebuilt experiment store reads them back (launcher.store.repair)
            write_json_atomic(JobFolder(folder).manifest, {"experiments": [s.id for s in specs],
                                                           "array": len(specs) > 1,
                                                           "work_dirs": [s.work_dir for s in specs],
                                                           "specs": [spec_to_dict(s) for s in specs]})
            write_plan(folder, dry)
            (folder / SCRIPT_NAME).write_text(dict(dry.files)[SCRIPT_FILE])
            try:
                job_id = parse_sbatch(self._run(["sbatch", "--parsable", str(folder / SCRIPT_NAME)]))
            except SlurmUnreachable as exc:
                raise LauncherError(no_cluster_line(str(exc))) from None
            except SlurmError as exc:
                raise LauncherError(f"sbatch refused the job: {str(exc).removeprefix('sbatch failed: ')}") from None
            ids = [f"{job_id}_{i}" for i in range(len(specs))] if len(specs) > 1 else [job_id]
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
                                                   ("run_dir", task["run_dir"])))
                for spec, jid, task in zip(specs, ids, plan["tasks"])]

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

    # ---- logs / cancel ------------------------------------------------------------------------
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

    def cancel(self, handle: JobHandle) -> None:
        """scancel the job (idempotent) and wait until Slurm reports it ended (at most 30 s)."""
        self._scancel(handle.job_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while True:
            self._status_cache.pop(handle.job_id, None)
            if self.status(handle).state.is_terminal() or time.monotonic() > deadline:
                return
            time.sleep(0.5)
