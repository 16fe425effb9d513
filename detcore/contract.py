"""The contract between a detcore worker and whatever starts it (torch-free, stdlib only).

The launcher imports these names instead of copying them; detcore uses them itself. Nothing
here imports torch, so a launcher process that only renders or reads stays light.

Exit codes of ``python -m detcore.tools.cli``:

``EXIT_OK`` (0)
    Finished.
``EXIT_FAILED`` (1)
    A bug or a crash; a restart from the newest checkpoint may help.
``EXIT_USER_ERROR`` (2)
    A user mistake (bad config, data, weights or argument); restarting cannot help.
``EXIT_STOPPED`` (3)
    A requested stop (one of ``DETCORE_STOP_SIGNALS``): a checkpoint was saved first.
``EXIT_HUNG`` (4)
    The hang watchdog ended this rank because no rank finished an iteration in time;
    retryable from the newest checkpoint.

The run directory of one launch (a submit or a resume) lives in the work dir:
``WORK_DIR/runs/<run id>/`` holds ``events.jsonl`` (one JSON line per fact: an attempt of a
rank started or ended, a hang seen, a rank lost, a requeue, a Ray placement stage, the schedule
scaled and the weights loaded; the records and their one append/read pair are :mod:`detcore.facts`,
what they mean together is ``launcher.runtime.facts``),
``heartbeat/a{ATTEMPT}/rank{R}`` (the newest finished iteration of rank R, when, and whether it is
training or evaluating: :func:`write_heartbeat`) and, once the launch has ended, the monitor's
``outcome.json`` (local and Ray). Each launch gets a fresh run id, so it never reads an earlier ending.
Rank logs stay in ``WORK_DIR/logs/rank{R}.log`` across launches (appended).

``WORK_DIR/owner.json`` is the claim of the run that holds the work dir (:mod:`detcore.ownership`).
A work dir holds one run: its checkpoints (``iter_N.pth``/``epoch_N.pth``, ``best_*.pth``,
``latest.pth``, the ``last_checkpoint`` pointer) and its ``metrics.jsonl`` are what
:func:`run_evidence` finds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from detcore.atomic import write_text_atomic

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_STOPPED = 3
EXIT_HUNG = 4
# The process-group timeout (minutes) when the config's dist_params.timeout_min is unset. Rank 0 alone runs
# COCOeval or writes a checkpoint to slow storage while the others wait in the next collective; torch's
# 10-minute default kills such healthy runs. Ray Train uses 30 minutes.
DIST_TIMEOUT_MIN = 30.0

# Environment variables a starter sets for the worker.
STOP_SIGNALS_ENV = "DETCORE_STOP_SIGNALS"      # e.g. "USR2": checkpoint, then exit EXIT_STOPPED
HEARTBEAT_DIR_ENV = "DETCORE_HEARTBEAT_DIR"    # the trainer writes heartbeat_path(dir, rank) per iteration
EXPERIMENT_ENV = "DETLAUNCH_EXPERIMENT_ID"     # marks every process of an experiment (for cleanup)
RUN_DIR_ENV = "DETLAUNCH_RUN_DIR"              # WORK_DIR/runs/<run id> of this launch
RESTART_ENV = "DETCORE_RESTART"                # N > 0: this rank runs the launch's Nth restart (resume auto)
BACKEND_ENV = "DETLAUNCH_BACKEND"              # local, slurm or ray: tags the run in MLflow / W&B
LOGGERS_ENV = "DETCORE_LOGGERS"                # mlflow,wandb: switch experiment loggers on (none: off)
# Settings of the experiment loggers that a backend hands to workers which do not inherit the submitting
# shell (Ray's runtime environment). Credentials (MLFLOW_TRACKING_TOKEN, WANDB_API_KEY, ...) are left out:
# they belong in the cluster's own environment, not in a job description others can read.
LOGGER_SETTINGS_ENV = (LOGGERS_ENV, "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_MODE", "WANDB_PROJECT",
                       "WANDB_ENTITY", "WANDB_DIR", "WANDB_BASE_URL", "WANDB_RUN_GROUP")

# The names of the on-disk protocol. Code reaches these files through WorkDir and RunDir below;
# tests/unit/test_layout_names.py fails when a detcore or launcher module spells a name again.
LOGS_DIR = "logs"
RUNS_DIR = "runs"
EVENTS_FILE = "events.jsonl"
HEARTBEAT_DIR = "heartbeat"
OUTCOME_FILE = "outcome.json"
OWNER_FILE = "owner.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
TEST_METRICS_FILE = "test_metrics.json"
TRAIN_LOG_FILE = "train.log"
LAST_CHECKPOINT_FILE = "last_checkpoint"
PERIODIC_CHECKPOINT = re.compile(r"^(iter|epoch)_(\d+)\.pth$")  # what the checkpoint hook saves every interval
_RUN_FILE = re.compile(r"^(?:(?:iter|epoch)_\d+\.pth|best_.+\.pth|latest\.pth|last_checkpoint|metrics\.jsonl)$")


def run_evidence(work_dir: str | os.PathLike[str]) -> list[str]:
    """The files showing that ``work_dir`` holds a run (checkpoints, ``last_checkpoint``, a non-empty
    ``metrics.jsonl``), sorted newest first; empty for a new or missing folder. Logs (``logs/``,
    ``train.log``), the launcher's ``runs/`` and ``config.yaml`` alone are not a run: a run that never
    logged an iteration has nothing to lose."""
    found = []
    try:
        entries = list(os.scandir(work_dir))
    except OSError:
        return []
    for entry in entries:
        if not _RUN_FILE.match(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if entry.name == METRICS_FILE and st.st_size == 0:
            continue
        found.append((st.st_mtime, entry.name))
    return [name for _, name in sorted(found, reverse=True)]


def restart_env(attempt: int) -> dict[str, str]:
    """What a starter sets for a rank's ``attempt`` of a launch: nothing on the first, ``DETCORE_RESTART=N``
    on a restart, which makes ``detcore train`` continue from the newest checkpoint (``--resume auto``)."""
    return {RESTART_ENV: str(attempt)} if attempt > 0 else {}


def resume_on_restart(resume: str | None, environ: Mapping[str, str]) -> str | None:
    """``--resume`` as a train worker must use it: ``auto`` on a restart (:func:`restart_env`), else as given."""
    value = (environ.get(RESTART_ENV) or "").strip()
    return "auto" if value.isdigit() and int(value) > 0 else resume


def logger_settings_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The :data:`LOGGER_SETTINGS_ENV` variables set in ``environ`` (for a backend to pass on)."""
    return {name: environ[name] for name in LOGGER_SETTINGS_ENV if environ.get(name)}


def rank_log_in(log_dir: str | os.PathLike, rank: int) -> Path:
    """``LOG_DIR/rank{R}.log``: rank R's stdout and stderr, every attempt appended (``LOG_DIR`` is
    ``WORK_DIR/logs``; the starters are handed the folder)."""
    return Path(log_dir) / f"rank{rank}.log"


class RunDir:
    """``WORK_DIR/runs/<run id>``: the facts of one launch (paths only; nothing is read or created)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __fspath__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @property
    def events(self) -> Path:
        """One JSON line per fact (:func:`detcore.facts.append_fact`, :func:`detcore.facts.read_facts`)."""
        return self.root / EVENTS_FILE

    @property
    def outcome(self) -> Path:
        """The monitor's record of how the launch ended (local and Ray)."""
        return self.root / OUTCOME_FILE

    def heartbeats(self, attempt: int) -> Path:
        """The heartbeat folder of one attempt (a fresh one per attempt, so a restart never reads old beats)."""
        return self.root / HEARTBEAT_DIR / f"a{attempt}"


class WorkDir:
    """The files of the run a work dir holds (paths only; nothing is read or created but the pointer)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __fspath__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"WorkDir({str(self.root)!r})"

    @property
    def logs(self) -> Path:
        return self.root / LOGS_DIR

    def rank_log(self, rank: int) -> Path:
        return rank_log_in(self.logs, rank)

    @property
    def agent_log(self) -> Path:
        """The output of the local backend's torchrun agent."""
        return self.logs / "agent.log"

    @property
    def train_log(self) -> Path:
        return self.root / TRAIN_LOG_FILE

    @property
    def config(self) -> Path:
        """The config the run trained with, as rank 0 dumped it."""
        return self.root / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def test_metrics(self) -> Path:
        """``detcore test``'s flat metrics of the last test run in this work dir."""
        return self.root / TEST_METRICS_FILE

    @property
    def owner(self) -> Path:
        return self.root / OWNER_FILE

    @property
    def last_checkpoint(self) -> Path:
        """The pointer file: the name of the newest checkpoint, replaced atomically after each save."""
        return self.root / LAST_CHECKPOINT_FILE

    def newest_checkpoint(self) -> Path | None:
        """The checkpoint the pointer names (None without a pointer or with an empty one; not checked to exist)."""
        try:
            name = self.last_checkpoint.read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return self.root / name if name else None

    def point_to(self, checkpoint: str) -> None:
        """Make ``checkpoint`` (a file name in this work dir) the newest, atomically."""
        write_text_atomic(self.last_checkpoint, checkpoint + "\n")

    def run(self, run_id: str) -> RunDir:
        """``WORK_DIR/runs/<run id>``: the facts of one launch."""
        return RunDir(self.root / RUNS_DIR / run_id)


def rank_log(work_dir: str | os.PathLike, rank: int) -> Path:
    """``WORK_DIR/logs/rank{R}.log``: rank R's stdout and stderr, every attempt appended."""
    return WorkDir(work_dir).rank_log(rank)


def run_dir(work_dir: str | os.PathLike, run_id: str) -> Path:
    """``WORK_DIR/runs/<run id>``: the facts of one launch."""
    return WorkDir(work_dir).run(run_id).root


def heartbeat_path(heartbeat_dir: str | os.PathLike, rank: int) -> Path:
    return Path(heartbeat_dir) / f"rank{rank}"


class Beat(NamedTuple):
    """A rank's newest heartbeat: the iteration it finished, when (unix time), and what it is doing since
    (``training``, or ``evaluating`` while a validation pass runs)."""

    iteration: int
    time: float
    phase: str = "training"


PHASES = ("training", "evaluating")


def write_heartbeat(heartbeat_dir: str | os.PathLike, rank: int, iteration: int, phase: str = "training") -> None:
    """Record that ``rank`` finished ``iteration`` now and is ``phase`` (one of ``PHASES``): a tiny file
    ``ITERATION TIME PHASE`` replaced atomically; errors ignored, a full disk must never stop training."""
    try:
        write_text_atomic(heartbeat_path(heartbeat_dir, rank), f"{iteration} {time.time():.3f} {phase}\n")
    except OSError:
        pass


def read_heartbeat(heartbeat_dir: str | os.PathLike, rank: int) -> Beat | None:
    """``rank``'s newest :class:`Beat` (``(iteration, unix time, phase)``), or None."""
    try:
        fields = heartbeat_path(heartbeat_dir, rank).read_text().split()
        phase = fields[2] if len(fields) > 2 and fields[2] in PHASES else "training"
        return Beat(int(fields[0]), float(fields[1]), phase)
    except (OSError, ValueError, IndexError):
        return None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every JSON object line of ``path`` in order (none when it cannot be read; a half-written or bad line
    is skipped)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return []
    out = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def describe_exit(code: int | None) -> str:
    """``exit code N``, ``signal SIGKILL`` or a word for the codes above."""
    import signal

    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    names = {EXIT_USER_ERROR: "exit code 2 (user error)", EXIT_STOPPED: "exit code 3 (stopped after a checkpoint)",
             EXIT_HUNG: "exit code 4 (hang watchdog)"}
    return names.get(code, f"exit code {code}")


SEED_MAX = 2 ** 32 - 1  # a --seed is 0..SEED_MAX: numpy's legacy seeding takes no more, and none negative


def seed_error(seed: object) -> str | None:
    """Why ``seed`` cannot be a ``--seed`` (None when it can); the launcher checks at submit."""
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX:
        return None
    return f"expected a whole number from 0 to {SEED_MAX}, got {seed!r}"


def parse_seed(text: str) -> int:
    """``argparse`` type for ``--seed``: a bad one is a usage error (exit 2, never retried)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {SEED_MAX}, got {text!r}") from None
    problem = seed_error(seed)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return seed


# ---- the worker's arguments ----------------------------------------------------------------------------------
# What a starter passes after ``python -m detcore.tools.cli``, as one typed value. Each field of WorkerArgs carries
# its flag in its metadata (:func:`_flag`): to_argv, the detcore parsers (add_arguments, from_namespace), the job
# records (to_dict, from_dict) and the launcher's `submit` options all read that one table, so a new worker flag
# is one field here.

TRAIN, TEST = "train", "test"
MODES = (TRAIN, TEST)


def _flag(option: str, help: str, modes: tuple[str, ...] = (TRAIN,), kind: str = "value",
          submit: Mapping[str, Any] | None = None, last: bool = False, **argparse_kwargs: Any) -> dict[str, Any]:
    """A field's flag: ``option`` (``""``: a positional), its ``help``, the ``modes`` it belongs to, its ``kind``
    (``value``, ``values``, ``switch``: store_true, ``negated``: store_false of a field that defaults to True) and
    argparse's other keywords. ``submit``: ``launcher submit`` offers the flag too, with these keywords replaced
    (its help speaks of the job, not the process). ``last``: written after every other flag (it takes every
    following word)."""
    return {"option": option, "help": help, "modes": modes, "kind": kind, "submit": submit, "last": last,
            "argparse": argparse_kwargs}


_CONFIG_HELP = "path to a YAML config (or an MMDetection .py config, imported on the fly)"
_DEVICE_HELP = "cpu, cuda (this rank's GPU) or cuda:N (default: cuda when available)"


@dataclass(frozen=True)
class WorkerArgs:
    """``detcore train|test`` arguments as one value: ``mode``, then one field per argument, in the order
    :meth:`to_argv` writes them (``cfg_options`` always last: it takes every following word). A field of the
    other mode is left out of the argv. ``seed`` None means the worker's default (0); ``resume`` None: start
    fresh unless a restart says otherwise (:func:`resume_on_restart`, ``DETCORE_RESTART``: a restart is an
    environment variable, never an edited argv); ``eval`` None: the config's ``evaluation.metric``.

    A new worker flag is one field here with its :func:`_flag`; give it ``submit={...}`` when ``launcher submit``
    should offer it too (a field :class:`launcher.spec.JobSpec` carries in ``spec.worker`` and stores with the job).
    """

    mode: str = TRAIN
    config: str = field(default="", metadata=_flag("", _CONFIG_HELP, MODES))
    checkpoint: str | None = field(default=None, metadata=_flag(
        "", "checkpoint file (.pth, a detcore checkpoint or a plain state dict), or a torchvision COCO detector by "
            "name, e.g. torchvision://fasterrcnn_resnet50_fpn (`detcore model list`)", (TEST,)))
    work_dir: str | None = field(default=None, metadata=_flag(
        "--work-dir", "where logs, checkpoints and TensorBoard go (default work_dirs/<config name>)", MODES))
    out: str | None = field(default=None, metadata=_flag("--out", "write the COCO results json here", (TEST,)))
    device: str | None = field(default=None, metadata=_flag("--device", _DEVICE_HELP, MODES))
    resume: str | None = field(default=None, metadata=_flag(
        "--resume", "continue from the newest checkpoint in the work dir (auto) or from PATH",
        nargs="?", const="auto", metavar="auto|PATH"))
    seed: int | None = field(default=None, metadata=_flag(
        "--seed", f"random seed, 0..{SEED_MAX} (default 0)", type=parse_seed,
        submit={"help": "random seed passed to the trainer", "type": int}))
    amp: bool = field(default=False, metadata=_flag(
        "--amp", "mixed precision (CUDA only)", kind="switch",
        submit={"help": "mixed precision (GPU jobs; a CPU job says it ignores it)"}))
    deterministic: bool = field(default=False, metadata=_flag(
        "--deterministic", "deterministic algorithms, cuDNN and cuBLAS (see docs/training.md on CUDA)", kind="switch",
        submit={"help": "deterministic algorithms, cuDNN and cuBLAS (slower; see docs/training.md on CUDA)"}))
    load_from: str | None = field(default=None, metadata=_flag(
        "--load-from", "initialise weights from a checkpoint or a torchvision COCO detector such as "
                       "torchvision://fasterrcnn_resnet50_fpn (fine-tuning; optimizer state not loaded)",
        submit={"help": "initialise weights from a checkpoint (fine-tuning; optimizer state not loaded)",
                "metavar": "CHECKPOINT"}))
    validate: bool = field(default=True, metadata=_flag(
        "--no-validate", "skip evaluation during training", kind="negated", submit={}))
    eval: tuple[str, ...] | None = field(default=None, metadata=_flag(
        "--eval", "bbox, segm (COCO) and/or mAP (Pascal VOC at IoU 0.5) (default: the config's evaluation.metric)",
        (TEST,), kind="values", nargs="*", metavar="METRIC"))
    cfg_options: tuple[str, ...] = field(default=(), metadata=_flag(
        "--cfg-options", "override config keys, e.g. optimizer.lr=0.01 data.samples_per_gpu=4 (prefix new keys "
                         "with +)", MODES, kind="values", last=True, nargs="+", metavar="KEY=VALUE"))

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"worker mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("eval", "cfg_options"):  # lists from JSON or argparse: kept as tuples (hashable, frozen)
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def flags(cls, mode: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """``(field name, flag)`` of every argument (of ``mode``'s only, when given), in argv order: the table's,
        with the ``last`` ones moved to the end."""
        found = [(f.name, dict(f.metadata)) for f in fields(cls)
                 if f.metadata and (mode is None or mode in f.metadata["modes"])]
        return sorted(found, key=lambda item: bool(item[1]["last"]))

    @classmethod
    def option(cls, name: str) -> str:
        """The flag of field ``name`` (``load_from`` -> ``--load-from``), for messages that name it."""
        return str(dict(cls.flags())[name]["option"])

    def to_argv(self) -> tuple[str, ...]:
        """What runs after ``python -m detcore.tools.cli``: ``MODE CONFIG [CHECKPOINT] --flag value ...``, a flag
        only where its value differs from the default (``--device`` whenever set: starters always say)."""
        argv: list[str] = [self.mode]
        for name, flag in self.flags(self.mode):
            value, kind, option = getattr(self, name), flag["kind"], flag["option"]
            if not option:
                argv.append(str(value))
            elif kind == "switch" and value:
                argv.append(option)
            elif kind == "negated" and not value:
                argv.append(option)
            elif kind == "values" and value is not None and (value or flag["argparse"].get("nargs") != "+"):
                argv += [option, *map(str, value)]
            elif kind == "value" and value is not None:
                argv += [option, str(value)]
        return tuple(argv)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | Any, mode: str) -> None:
        """Add ``mode``'s arguments to a ``detcore train|test`` parser (:meth:`from_namespace` reads them back)."""
        for name, flag in cls.flags(mode):
            if flag["option"]:
                cls._add_flag(parser, name, flag, {})
            else:
                parser.add_argument(name, help=flag["help"], **flag["argparse"])

    @classmethod
    def add_submit_arguments(cls, parser: argparse.ArgumentParser | Any) -> None:
        """Add the flags ``launcher submit`` passes on to its train workers (those with a ``submit`` entry)."""
        for name, flag in cls.flags(TRAIN):
            if flag["submit"] is not None:
                cls._add_flag(parser, name, flag, flag["submit"])

    @classmethod
    def _add_flag(cls, parser: argparse.ArgumentParser | Any, name: str, flag: Mapping[str, Any],
                  overrides: Mapping[str, Any]) -> None:
        kwargs = {"help": flag["help"], **flag["argparse"], **overrides}
        if flag["kind"] in ("switch", "negated"):
            kwargs["action"] = "store_true" if flag["kind"] == "switch" else "store_false"
        default = next(f.default for f in fields(cls) if f.name == name)
        parser.add_argument(flag["option"], dest=name, default=default, **kwargs)

    def set_outside(self, mode: str) -> tuple[str, ...]:
        """The flags set here (to something other than their default) that ``mode``'s worker does not take, e.g.
        ``("--amp",)`` for a test job asked for mixed precision: a caller refuses them rather than drop them."""
        return tuple(flag["option"] for name, flag in self.flags() if flag["option"] and mode not in flag["modes"]
                     and getattr(self, name) != next(f.default for f in fields(self) if f.name == name))

    @classmethod
    def submit_fields(cls) -> tuple[str, ...]:
        """The fields :meth:`add_submit_arguments` adds (a launcher request carries them on to the worker)."""
        return tuple(name for name, flag in cls.flags(TRAIN) if flag["submit"] is not None)

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace, mode: str | None = None) -> WorkerArgs:
        """The value a parser built by :meth:`add_arguments` (or :meth:`add_submit_arguments`) read; ``mode``
        defaults to the namespace's ``command`` (detcore's subcommand)."""
        mode = mode or getattr(ns, "command", None) or TRAIN
        known = {f.name for f in fields(cls)} - {"mode"}
        return cls(mode=mode, **{k: v for k, v in vars(ns).items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists)."""
        out = asdict(self)
        for name in ("eval", "cfg_options"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerArgs:
        """Inverse of :meth:`to_dict`; keys this version does not know (a newer writer's flags) are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
