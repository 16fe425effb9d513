"""The Slurm backend's policy, as pure functions: options, cluster defaults, the sbatch script.

``resolve(spec, defaults)`` merges a job's resources and ``--partition``-style options over
the user's cluster defaults (``slurm:`` in ``launcher.yaml``) into one :class:`SlurmRequest`;
``render_sbatch`` turns requests into the exact script ``sbatch`` receives, through
submitit's own template (``submitit.slurm.slurm._make_sbatch_string``), so ``--dry-run``
prints byte for byte what ``submit`` hands to Slurm. Nothing here calls Slurm or reads
files, except :func:`load_defaults`, which reads the defaults file.

Every value in ``#SBATCH`` lines is shell-quoted by submitit; values containing a newline
are refused (they would end the directive and start a shell command), and so are ``%`` in
the job folder (Slurm expands ``%`` patterns in ``--output`` file names).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from launcher.backends.slurm.gpus import GPU_FORMS, GPUS_PER_NODE, GRES, GpuForm, gpu_value, parse_gres
from launcher.errors import LauncherError
from launcher.spec import JobSpec

DEFAULT_SIGNAL_DELAY_S = 120
DEFAULT_MAX_TIMEOUTS = 20
SIGNAL = "USR2"
OPTION_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
# sbatch options the launcher sets itself, and the launcher option to use instead
MANAGED_OPTIONS = {
    "array": "launcher sweep", "chdir": "the directory you submit from", "comment": "nothing (the launcher's marker)",
    "error": "nothing (the job folder)", "output": "nothing (the job folder)", "open-mode": "nothing",
    "job-name": "--name", "nodes": "--nodes", "ntasks": "--nodes and --tasks-per-node",
    "ntasks-per-node": "--tasks-per-node (or --nproc)", "gpus-per-node": "--gres gpu:[TYPE:]N (or --gpus N)",
    "gpus": "--gres gpu:[TYPE:]N (or --gpus N)", "gpus-per-task": "--gres gpu:[TYPE:]N (one task per GPU)",
    "cpus-per-task": "--cpus-per-task", "cpus-per-gpu": "--cpus-per-task (one task per GPU)",
    "mem": "--mem-gb", "mem-per-gpu": "--mem-gb (per node) or slurm.mem_per_gpu_gb in launcher.yaml",
    "mem-per-cpu": "--mem-gb (per node) or slurm.mem_per_gpu_gb in launcher.yaml", "time": "--time (-t)",
    "partition": "--partition (-p)", "account": "--account (-A)", "qos": "--qos (-q)", "constraint": "--constraint",
    "exclude": "--exclude", "signal": "--signal-delay", "requeue": "nothing (always requeueable)",
    "no-requeue": "nothing (preemption needs requeue)", "wrap": "nothing",
}


def _no_newline(what: str, value: Any) -> None:
    if isinstance(value, str) and ("\n" in value or "\r" in value or "\0" in value):
        raise LauncherError(f"{what} {value!r} contains a line break or NUL, which an sbatch script cannot carry; "
                            f"rename it")


def parse_slurm_option(item: str) -> tuple[str, str]:
    """``KEY=VALUE`` (or ``KEY`` for a flag) from ``--slurm-option``, checked against the managed options."""
    key, sep, value = item.partition("=")
    key = key.strip().lstrip("-").lower()
    if not OPTION_KEY.match(key):
        raise LauncherError(f"--slurm-option {item!r}: expected KEY=VALUE with an sbatch long option name as KEY, "
                            f"e.g. mail-user=me@example.org or exclusive (a flag)")
    if key in MANAGED_OPTIONS:
        raise LauncherError(f"--slurm-option {key}: the launcher sets --{key} itself; use "
                            f"{MANAGED_OPTIONS[key]} instead")
    _no_newline(f"--slurm-option {key}", value)
    if key == "gres" and value and parse_gres(value, "--slurm-option gres").gpus:
        raise LauncherError(f"--slurm-option gres={value}: GPUs are asked once, with --gres {value} (or --gpus N): "
                            f"the launcher starts one task per GPU and writes the one GPU request itself")
    return key, value if sep else ""


def _check_min(what: str, value: Any, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise LauncherError(f"{what} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class SlurmOptions:
    """What ``launcher submit --backend slurm`` was told on the command line (None: use the defaults)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    signal_delay_s: int | None = None
    max_timeouts: int | None = None
    array_parallelism: int | None = None
    extra: tuple[tuple[str, str], ...] = ()
    gpu_type: str | None = None
    gres_other: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", tuple((str(k), str(v)) for k, v in self.extra))  # JSON gives lists
        object.__setattr__(self, "gres_other", tuple(str(g) for g in self.gres_other))
        _no_newline("--gres", self.gpu_type)
        for item in self.gres_other:
            _no_newline("--gres", item)
        for name in ("partition", "account", "qos", "constraint", "exclude"):
            _no_newline(f"--{name}", getattr(self, name))
        _check_min("--signal-delay", self.signal_delay_s, 1)
        _check_min("--max-timeouts", self.max_timeouts, 0)
        _check_min("--array-parallelism", self.array_parallelism, 1)
        for key, value in self.extra:
            parse_slurm_option(f"{key}={value}" if value else key)


@dataclass(frozen=True)
class SlurmDefaults:
    """The ``slurm:`` section of ``launcher.yaml``: per-cluster values used when a command leaves them out."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    mem_per_gpu_gb: float | None = None
    gpu_request: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    signal_delay_s: int = DEFAULT_SIGNAL_DELAY_S
    max_timeouts: int = DEFAULT_MAX_TIMEOUTS
    python: str | None = None
    setup: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    source: str = field(default="", compare=False)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "") -> SlurmDefaults:
        keys = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
        unknown = [k for k in data if k not in keys]
        if unknown:
            close = difflib.get_close_matches(unknown[0], keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise LauncherError(f"{source or 'launcher.yaml'}: unknown key slurm.{unknown[0]}{hint}; valid keys: "
                                f"{', '.join(keys)}")
        values = {k: v for k, v in data.items() if v is not None and v != ""}
        try:
            if "setup" in values:
                setup = values["setup"]
                values["setup"] = (setup,) if isinstance(setup, str) else tuple(str(s) for s in setup)
            if "options" in values:
                opts = values["options"]
                if not isinstance(opts, Mapping):
                    raise TypeError("slurm.options must be a mapping of sbatch option: value")
                values["options"] = tuple(parse_slurm_option(f"{k}={'' if v is True else v}") for k, v in opts.items())
            for name in ("time_min", "cpus_per_task", "signal_delay_s", "max_timeouts"):
                if name in values:
                    _check_min(f"slurm.{name}", values[name], 0 if name == "max_timeouts" else 1)
            for name in ("mem_gb", "mem_per_gpu_gb"):
                if name in values and (isinstance(values[name], bool) or
                                       not isinstance(values[name], (int, float)) or values[name] <= 0):
                    raise TypeError(f"slurm.{name} must be a positive number, got {values[name]!r}")
            if "gpu_request" in values and values["gpu_request"] not in GPU_FORMS:
                raise TypeError(f"slurm.gpu_request must be one of {', '.join(GPU_FORMS)} (gpus-per-node needs "
                                f"SelectType=select/cons_tres), got {values['gpu_request']!r}")
        except (TypeError, LauncherError) as exc:
            raise LauncherError(f"{source or 'launcher.yaml'}: {exc}") from None
        for name in ("partition", "account", "qos", "constraint", "exclude", "python"):
            if name in values:
                values[name] = str(values[name])
                _no_newline(f"{source}: slurm.{name}", values[name])
        return cls(**values, source=source)


def defaults_paths(home: Path, environ: Mapping[str, str]) -> list[Path]:
    """Where ``launcher.yaml`` is looked for: ``$LAUNCHER_HOME`` when set (and only there), else
    ``$XDG_CONFIG_HOME/detlaunch`` (``~/.config/detlaunch``) and then the launcher home."""
    if environ.get("LAUNCHER_HOME"):
        return [home / "launcher.yaml"]
    config = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [config / "detlaunch" / "launcher.yaml", home / "launcher.yaml"]


def load_defaults(paths: Sequence[Path]) -> SlurmDefaults:
    """The ``slurm:`` section of the first existing file in ``paths`` (empty defaults when none exists)."""
    for path in paths:
        if not path.is_file():
            continue
        import yaml

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise LauncherError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        section = data.get("slurm") if isinstance(data, Mapping) else None
        if section is None:
            return SlurmDefaults(source=str(path))
        if not isinstance(section, Mapping):
            raise LauncherError(f"{path}: 'slurm:' must be a mapping of option: value, got {type(section).__name__}")
        return SlurmDefaults.from_mapping(section, source=str(path))
    return SlurmDefaults()


@dataclass(frozen=True)
class SlurmRequest:
    """Everything the sbatch script says about one job, after merging options over defaults.

    ``gpu_form`` is the one sbatch option that carries the GPU count (``gpus-per-node`` or ``gres``);
    ``mem_gb`` is per node, ``mem_per_gpu_gb`` the default for GPU jobs when no per-node value was given.
    """

    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    cpus_per_task: int | None
    mem_gb: float | None
    time_min: int | None
    partition: str | None
    account: str | None
    qos: str | None
    constraint: str | None
    exclude: str | None
    signal_delay_s: int
    max_timeouts: int
    extra: tuple[tuple[str, str], ...]
    setup: tuple[str, ...]
    cwd: str
    gpu_type: str | None = None
    gpu_form: GpuForm = GpuForm(GRES, "the cluster was not asked")
    gres_other: tuple[str, ...] = ()
    mem_per_gpu_gb: float | None = None


def resolve(spec: JobSpec, defaults: SlurmDefaults, gpu_form: GpuForm | None = None) -> SlurmRequest:
    """The job's Slurm request: command-line values first, then ``defaults`` (pure).

    ``gpu_form``: how this cluster takes a GPU count (:func:`~launcher.backends.slurm.gpus.choose_gpu_form`);
    ``gres`` when not given, which every select plugin accepts.
    """
    opts = spec.backend_options if isinstance(spec.backend_options, SlurmOptions) else SlurmOptions()
    r = spec.resources

    def pick(name: str) -> Any:
        value = getattr(opts, name)
        return value if value is not None else getattr(defaults, name)

    time_min = r.time_min if r.time_min is not None else defaults.time_min
    delay = pick("signal_delay_s")
    if time_min is not None and delay >= time_min * 60:
        raise LauncherError(f"the preemption signal comes {delay} s before the time limit, but the limit is only "
                            f"{time_min} min; lower --signal-delay or raise --time")
    extra = dict(defaults.options)
    extra.update(dict(opts.extra))
    gres_other = list(opts.gres_other)
    if "gres" in extra:  # non-GPU gres from --slurm-option/launcher.yaml join the one --gres line
        gres_other += [g for g in parse_gres(extra.pop("gres"), "--slurm-option gres").other if g not in gres_other]
    _no_newline("work dir", spec.work_dir)
    _no_newline("working directory", spec.cwd)
    cpus = r.cpus_per_task if r.cpus_per_task is not None else defaults.cpus_per_task
    mem_gb = r.mem_gb if r.mem_gb is not None else defaults.mem_gb
    mem_per_gpu = None
    if r.gpus and mem_gb is None:
        mem_per_gpu = defaults.mem_per_gpu_gb or default_mem_per_gpu_gb(spec)
    if defaults.gpu_request:
        gpu_form = GpuForm(defaults.gpu_request, f"slurm.gpu_request is set in {defaults.source or 'launcher.yaml'}")
    return SlurmRequest(nodes=r.nodes, tasks_per_node=r.nproc, gpus_per_node=r.gpus,
                        cpus_per_task=cpus if cpus is not None else default_cpus_per_task(spec),
                        mem_gb=mem_gb, time_min=time_min,
                        partition=pick("partition"), account=pick("account"), qos=pick("qos"),
                        constraint=pick("constraint"), exclude=pick("exclude"), signal_delay_s=delay,
                        max_timeouts=pick("max_timeouts"), extra=tuple(sorted(extra.items())), setup=defaults.setup,
                        cwd=spec.cwd, gpu_type=opts.gpu_type if r.gpus else None,
                        gpu_form=gpu_form or GpuForm(GRES, "the cluster was not asked; --gres works under every "
                                                           "select plugin"),
                        gres_other=tuple(gres_other), mem_per_gpu_gb=mem_per_gpu)


GPU_CPUS_PER_TASK = 5  # what MMDetection's tools/slurm_train.sh asks per GPU


def default_cpus_per_task(spec: JobSpec) -> int:
    """CPUs per task when neither ``--cpus-per-task`` nor ``launcher.yaml`` gives one: the worker
    itself plus its DataLoader processes (``data.workers_per_gpu``), and for a GPU task at least
    the 5 of MMDetection's ``slurm_train.sh``. Slurm's own default is one CPU, on which the loaders
    of a GPU job would starve it."""
    own = 1 + spec.loader_workers
    return max(own, GPU_CPUS_PER_TASK) if spec.resources.gpus else own


def default_mem_per_gpu_gb(spec: JobSpec) -> float:
    """Memory per GPU task when neither ``--mem-gb`` nor ``launcher.yaml`` gives one: 4 GB for the worker
    and for each of its DataLoader processes (each holds its own copy of a COCO-sized annotation index
    once Python's reference counts touch it), at least 16 GB."""
    return float(max(16, 4 * (1 + spec.loader_workers)))


def array_name(specs: Sequence[JobSpec]) -> str:
    """The Slurm job name of a sweep's array: its experiments' common name up to a ``-`` (the sweep's base name)."""
    names = [s.name for s in specs]
    common = os.path.commonprefix(names)
    if any(len(n) > len(common) and n[len(common)] != "-" for n in names):
        common = common[:common.rfind("-")] if "-" in common else ""
    return common.rstrip("-_=+.") or "sweep"


def _mem(mem_gb: float) -> str:
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def render_sbatch(request: SlurmRequest, job_name: str, folder: str, python: str, repo_root: str,
                  array_size: int = 0, array_parallelism: int | None = None) -> str:
    """The sbatch script for ``request`` (an array of ``array_size`` tasks when > 0), via submitit's template.

    ``folder`` is the job folder (submitit's pickles and logs, shared by all tasks); ``python``
    the interpreter on the nodes; ``repo_root`` goes first on ``PYTHONPATH``.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    if "%" in folder:
        raise LauncherError(f"the job folder {folder} contains '%', which Slurm expands in log file names; "
                            f"set LAUNCHER_HOME to a path without '%'")
    for what, value in (("job folder", folder), ("python", python), ("checkout", repo_root), ("job name", job_name)):
        _no_newline(what, value)
    for line in request.setup:
        _no_newline("setup line", line)
    command = f"{shlex.quote(python)} -u -m submitit.core._submit {shlex.quote(folder)}"
    setup = [*request.setup, f"export SUBMITIT_PREEMPT_SIGNAL={SIGNAL}",
             f"export PYTHONPATH={shlex.quote(repo_root)}${{PYTHONPATH:+:$PYTHONPATH}}"]
    extra: dict[str, Any] = {"chdir": request.cwd, "requeue": True, "signal": f"{SIGNAL}@{request.signal_delay_s}"}
    extra.update({k: (v if v != "" else True) for k, v in request.extra})
    params: dict[str, Any] = dict(
        job_name=job_name, partition=request.partition, time=request.time_min, nodes=request.nodes,
        ntasks_per_node=request.tasks_per_node, cpus_per_task=request.cpus_per_task, qos=request.qos,
        signal_delay_s=request.signal_delay_s, comment=f"detlaunch:{os.path.basename(folder)}",
        constraint=request.constraint, exclude=request.exclude, account=request.account, wckey=None, setup=setup,
        additional_parameters=extra, **_gpu_and_memory(request),
        # Slurm 22.05-23.02 do not pass sbatch's --cpus-per-task on to srun: say it again
        srun_args=["--kill-on-bad-exit=1", *([f"--cpus-per-task={request.cpus_per_task}"]
                                              if request.cpus_per_task else [])])
    if array_size:
        params.update(map_count=array_size, array_parallelism=array_parallelism or array_size)
    return _make_sbatch_string(command=command, folder=folder, **params)


def _gpu_and_memory(request: SlurmRequest) -> dict[str, Any]:
    """submitit's parameters for the GPU count (in exactly one form) and the memory of ``request``."""
    gres = list(request.gres_other)
    out: dict[str, Any] = {}
    gpus = request.gpus_per_node
    if gpus and request.gpu_form.form == GPUS_PER_NODE:
        out["gpus_per_node"] = gpu_value(gpus, request.gpu_type)
    elif gpus:
        gres.insert(0, f"gpu:{gpu_value(gpus, request.gpu_type)}")
    if gres:
        out["gres"] = ",".join(gres)
    if request.mem_gb is not None:
        out["mem"] = _mem(request.mem_gb)
    elif request.mem_per_gpu_gb is not None and gpus:
        if request.gpu_form.form == GPUS_PER_NODE:  # --mem-per-gpu needs select/cons_tres, like --gpus-per-node
            out["mem_per_gpu"] = _mem(request.mem_per_gpu_gb)
        else:
            out["mem"] = _mem(request.mem_per_gpu_gb * gpus)
    return out


def resource_notes(spec: JobSpec, request: SlurmRequest, defaults: SlurmDefaults) -> list[str]:
    """What the dry run says about the GPU request, CPUs, memory and time limit, and where each came from."""
    r, notes = spec.resources, []
    if request.gpus_per_node:
        form = request.gpu_form
        value = gpu_value(request.gpus_per_node, request.gpu_type)
        option = f"--gpus-per-node={value}" if form.form == GPUS_PER_NODE else f"--gres=gpu:{value}"
        notes.append(f"GPUs: {option} (one task per GPU), asked in that form only because {form.why}")
    if r.cpus_per_task is not None:
        cpus_from = "--cpus-per-task"
    elif defaults.cpus_per_task is not None:
        cpus_from = f"slurm.cpus_per_task in {defaults.source or 'launcher.yaml'}"
    else:
        cpus_from = (f"default: the worker and its {spec.loader_workers} DataLoader processes (data.workers_per_gpu)"
                     + (f", at least {GPU_CPUS_PER_TASK} per GPU as MMDetection's slurm_train.sh asks"
                        if r.gpus else "") + "; --cpus-per-task to change")
    notes.append(f"CPUs: {request.cpus_per_task} per task ({cpus_from}); srun is given --cpus-per-task too")
    memory = _gpu_and_memory(request)
    if "mem_per_gpu" in memory or (request.mem_gb is None and "mem" in memory):
        shown = f"--mem-per-gpu={memory['mem_per_gpu']}" if "mem_per_gpu" in memory else \
            f"--mem={memory['mem']} ({_mem(request.mem_per_gpu_gb or 0)} per GPU; --mem-per-gpu needs select/cons_tres)"
        origin = f"slurm.mem_per_gpu_gb in {defaults.source or 'launcher.yaml'}" if defaults.mem_per_gpu_gb else \
            "default: 4 GB for the worker and each DataLoader process, at least 16 GB"
        notes.append(f"memory: {shown} ({origin}; --mem-gb sets memory per node instead)")
    elif request.mem_gb is not None:
        notes.append(f"memory: --mem={_mem(request.mem_gb)} per node")
    else:
        notes.append("memory: not asked (the partition's default; --mem-gb to set memory per node)")
    if request.time_min is not None:
        notes.append(f"time limit: {request.time_min} min (--time={request.time_min})")
    return notes
