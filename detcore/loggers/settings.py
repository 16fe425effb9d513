"""Which experiment loggers (MLflow, Weights & Biases) a run switches on, and with what settings (pure, torch-free).

A logger is on when the config names it, when its tool's own variables say where to send runs,
or when ``DETCORE_LOGGERS`` names it:

- ``log_config.hooks`` (MMDetection 2.x): ``{type: MlflowLoggerHook, exp_name, run_name, tracking_uri,
  tags, params, log_model, interval, tracked_config_keys, artifact_location}`` and ``{type:
  WandbLoggerHook, init_kwargs, interval, log_model}``. MMDetection 3.x's ``MLflowVisBackend`` and
  ``WandbVisBackend`` (in ``log_config.hooks`` or ``visualizer.vis_backends``) and MMDetection's
  ``MMDetWandbHook`` are read as these (:func:`normalize_hooks`); ``TextLoggerHook``,
  ``TensorboardLoggerHook``, ``LocalVisBackend`` and ``TensorboardVisBackend`` are what detcore
  always writes, so they are dropped.
- The tools' own variables, as MLflow and W&B users set them: ``MLFLOW_TRACKING_URI`` switches MLflow
  on (and says where), ``WANDB_PROJECT`` or ``WANDB_MODE`` (``online``/``offline``) switches W&B on;
  ``MLFLOW_EXPERIMENT_NAME``, ``WANDB_ENTITY``, ``WANDB_DIR``, ... configure them.
- ``DETCORE_LOGGERS=mlflow,wandb`` switches loggers on with their default settings (the config's
  entry, if any, still gives them); ``DETCORE_LOGGERS=none`` switches every logger off, whatever the
  config and the tools' variables say.
"""
from __future__ import annotations

import difflib
import importlib.util
import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from detcore.contract import LOGGERS_ENV

MLFLOW, WANDB = "MlflowLoggerHook", "WandbLoggerHook"
KINDS = {"mlflow": MLFLOW, "wandb": WANDB}  # DETCORE_LOGGERS word -> the config's type
EXTRA = {MLFLOW: ("mlflow", "mlflow"), WANDB: ("wandb", "wandb")}  # type -> (module, pip extra)
KEYS = {
    MLFLOW: ("exp_name", "run_name", "tracking_uri", "tags", "params", "log_model", "interval", "tracked_config_keys",
             "artifact_location"),
    WANDB: ("init_kwargs", "interval", "log_model"),
}
# wandb.init's parameters (a typo in init_kwargs is refused up front, not found when the run starts)
WANDB_INIT_KEYS = ("entity", "project", "dir", "id", "name", "notes", "tags", "config", "config_exclude_keys",
                   "config_include_keys", "allow_val_change", "group", "job_type", "mode", "force", "reinit", "resume",
                   "resume_from", "fork_from", "save_code", "tensorboard", "sync_tensorboard", "monitor_gym",
                   "settings", "anonymous")
ALWAYS_WRITTEN = ("TextLoggerHook", "TensorboardLoggerHook", "LocalVisBackend", "TensorboardVisBackend")


@dataclass(frozen=True)
class Spelling:
    """An MMDetection name of a logger: detcore's type, keys renamed, and keys not read here (and why)."""

    type: str
    renamed: Mapping[str, str] = field(default_factory=dict)
    unread: Mapping[str, str] = field(default_factory=dict)


_MMCV_WINDOW = "detcore logs every log_config.interval iterations in the runner's unit, the last one included"
SPELLINGS = {
    MLFLOW: Spelling(MLFLOW, unread={"ignore_last": _MMCV_WINDOW, "reset_flag": _MMCV_WINDOW, "by_epoch": _MMCV_WINDOW}),
    "MLflowVisBackend": Spelling(MLFLOW, unread={
        "save_dir": "the tracking URI says where (tracking_uri or MLFLOW_TRACKING_URI)",
        "artifact_suffix": "log files are not uploaded; log_model: true uploads the checkpoints"}),
    WANDB: Spelling(WANDB, unread={
        "ignore_last": _MMCV_WINDOW, "reset_flag": _MMCV_WINDOW, "by_epoch": _MMCV_WINDOW,
        "commit": "each logged iteration is one W&B step", "with_step": "each logged iteration is one W&B step",
        "log_artifact": "log files are not uploaded; log_model: true uploads the checkpoints",
        "out_suffix": "log files are not uploaded; log_model: true uploads the checkpoints"}),
    "MMDetWandbHook": Spelling(WANDB, renamed={"log_checkpoint": "log_model"}, unread={
        "log_checkpoint_metadata": "checkpoints are uploaded without metadata",
        "num_eval_images": "validation images go to TensorBoard (evaluation.num_images)",
        "bbox_score_thr": "validation images go to TensorBoard (evaluation.num_images)"}),
    "WandbVisBackend": Spelling(WANDB, unread={
        "save_dir": "W&B writes under the work dir (init_kwargs.dir or WANDB_DIR to change it)",
        "commit": "each logged iteration is one W&B step", "define_metric_cfg": "every metric is keyed by iteration",
        "log_code_name": "code is not uploaded", "watch_kwargs": "gradients and weights are not watched"}),
}


@dataclass(frozen=True)
class MlflowSettings:
    interval: int
    exp_name: str | None = None
    run_name: str | None = None
    tracking_uri: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    log_model: bool = False
    tracked_config_keys: tuple[str, ...] | None = None
    artifact_location: str | None = None
    kind: str = "mlflow"


@dataclass(frozen=True)
class WandbSettings:
    interval: int
    init_kwargs: Mapping[str, Any] = field(default_factory=dict)
    log_model: bool = False
    kind: str = "wandb"


LoggerSettings = MlflowSettings | WandbSettings


def normalize_hooks(hooks: Any, where: str) -> tuple[Any, list[str]]:
    """``log_config.hooks`` with MMDetection's spellings read as detcore's, and a warning per entry with keys
    that are not read. Entries that are not understood are kept as they are, for
    :func:`logger_problems` to name."""
    if not isinstance(hooks, list):
        return hooks, []
    out, warnings = [], []
    for i, entry in enumerate(hooks):
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        if kind in ALWAYS_WRITTEN:
            continue  # detcore writes the text log, metrics.jsonl and TensorBoard anyway
        spelling = SPELLINGS.get(kind) if isinstance(kind, str) else None
        if spelling is None:
            out.append(entry)
            continue
        mapped: dict = {"type": spelling.type}
        dropped = []
        for key, value in entry.items():
            if key == "type":
                continue
            if key in spelling.unread:
                dropped.append(f"{key} ({spelling.unread[key]})")
            else:
                mapped[spelling.renamed.get(key, key)] = value
        if dropped:
            warnings.append(f"{where}: log_config.hooks.{i} ({kind}): not read: {'; '.join(dropped)}")
        out.append(mapped)
    return out, warnings


def vis_backends(cfg: Mapping[str, Any]) -> tuple[str, list] | None:
    """``(key, list)`` of MMDetection 3.x's visualizer backends in ``cfg``: ``visualizer.vis_backends`` (what
    MMEngine reads), else the top-level ``vis_backends``; None when neither is a list."""
    visualizer = cfg.get("visualizer")
    if isinstance(visualizer, Mapping) and isinstance(visualizer.get("vis_backends"), list):
        return "visualizer.vis_backends", list(visualizer["vis_backends"])
    if isinstance(cfg.get("vis_backends"), list):
        return "vis_backends", list(cfg["vis_backends"])
    return None


def parse_loggers_env(value: str | None) -> tuple[list[str] | None, str | None]:
    """``(kinds, problem)`` for ``DETCORE_LOGGERS``: None when unset, ``[]`` for ``none``."""
    if value is None or not value.strip():
        return None, None
    words = [w.strip().lower() for w in value.replace(" ", ",").split(",") if w.strip()]
    if words == ["none"]:
        return [], None
    wrong = [w for w in words if w not in KINDS]
    if wrong:
        close = difflib.get_close_matches(wrong[0], list(KINDS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return None, (f"{LOGGERS_ENV}={value!r}: unknown logger {wrong[0]!r}{hint}; expected a comma list of "
                      f"{', '.join(KINDS)}, or none to switch off the loggers the config names")
    return list(dict.fromkeys(words)), None


def _hooks(cfg: Mapping[str, Any]) -> Any:
    log = cfg.get("log_config")
    return log.get("hooks") if isinstance(log, Mapping) else None


def _log_interval(cfg: Mapping[str, Any]) -> int:
    log = cfg.get("log_config")
    value = log.get("interval", 10) if isinstance(log, Mapping) else 10
    return max(1, int(value)) if isinstance(value, int) and not isinstance(value, bool) else 10


def _entry_problems(entry: Any, key: str, log_interval: int) -> Iterator[str]:
    if not isinstance(entry, Mapping):
        yield f"{key}: expected a mapping such as {{type: {MLFLOW}}}, got {entry!r:.100}"
        return
    kind = entry.get("type")
    if not (isinstance(kind, str) and kind in KEYS):
        names = [MLFLOW, WANDB, *SPELLINGS, *ALWAYS_WRITTEN]
        close = difflib.get_close_matches(str(kind), names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        yield (f"{key}.type: {kind!r:.100} is not a logger detcore has{hint}; use {MLFLOW} (MLflow) or {WANDB} "
               f"(Weights & Biases); the text log, metrics.jsonl and TensorBoard are always written")
        return
    unknown = [str(k) for k in entry if k != "type" and k not in KEYS[kind]]
    if unknown:
        yield f"{key}: unknown key(s) {', '.join(unknown)}; {kind} takes {', '.join(KEYS[kind])}"
    checks = {"exp_name": str, "run_name": str, "tracking_uri": str, "artifact_location": str, "tags": Mapping,
              "params": Mapping, "init_kwargs": Mapping, "log_model": bool}
    for name, kind_of in checks.items():
        value = entry.get(name)
        if value is not None and not isinstance(value, kind_of):
            what = {str: "a string", Mapping: "a mapping", bool: "true or false"}[kind_of]
            yield f"{key}.{name}: expected {what}, got {value!r:.100}"
    keys = entry.get("tracked_config_keys")
    if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        yield f"{key}.tracked_config_keys: expected a list of config keys such as [model, optimizer.lr], got {keys!r:.100}"
    interval = entry.get("interval")
    if interval is not None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            yield f"{key}.interval: expected a whole number >= 1, got {interval!r:.100}"
        elif interval % log_interval:
            yield (f"{key}.interval: {interval} is not a multiple of log_config.interval ({log_interval}); a logger "
                   f"sends the text log's averages, so use a multiple of {log_interval} or leave it out")
    init = entry.get("init_kwargs")
    for name in (init if isinstance(init, Mapping) else ()):
        if name not in WANDB_INIT_KEYS:
            close = difflib.get_close_matches(str(name), WANDB_INIT_KEYS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            yield (f"{key}.init_kwargs.{name}: wandb.init has no such parameter; {hint}it takes "
                   f"{', '.join(WANDB_INIT_KEYS[:8])}, ... (https://docs.wandb.ai/ref/python/init)")
    if isinstance(init, Mapping) and init.get("resume") not in (None, "allow", "must", True):
        yield (f"{key}.init_kwargs.resume: {init['resume']!r:.100} would start a new W&B run at every resume; leave "
               f"it out (detcore resumes the work dir's run)")


def logger_problems(cfg: Mapping[str, Any], environ: Mapping[str, str], *, packages: bool = True) -> list[str]:
    """One line per problem with the loggers of ``cfg`` and ``DETCORE_LOGGERS``: unknown types and keys,
    values of the wrong kind and, with ``packages``, a logger whose package this machine lacks."""
    problems = []
    hooks = _hooks(cfg)
    if hooks is not None and not isinstance(hooks, list):
        problems.append(f"log_config.hooks: expected a list such as [{{type: {MLFLOW}}}], got {hooks!r:.100}")
    log_interval = _log_interval(cfg)
    seen: dict[str, int] = {}
    for i, entry in enumerate(hooks if isinstance(hooks, list) else []):
        problems += _entry_problems(entry, f"log_config.hooks.{i}", log_interval)
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        if not (isinstance(kind, str) and kind in KEYS):
            continue
        if kind in seen:
            problems.append(f"log_config.hooks.{i}: {kind} is already log_config.hooks.{seen[kind]}; name each logger "
                            f"once")
        seen.setdefault(kind, i)
    kinds, problem = parse_loggers_env(environ.get(LOGGERS_ENV))
    if problem:
        problems.append(problem)
    if packages and not problems:
        for settings in enabled_loggers(cfg, environ):
            kind = KINDS[settings.kind]
            module, extra = EXTRA[kind]
            if importlib.util.find_spec(module) is None:
                named = (f"log_config.hooks.{seen[kind]} ({kind})" if kind in seen
                         else f"{LOGGERS_ENV}={environ.get(LOGGERS_ENV)}" if kinds
                         else _switched_by(settings.kind, environ))
                problems.append(f"{named} needs the {module} package, which is not installed; pip install "
                                f"'detlaunch[{extra}]' (or switch the logger off)")
    return problems


def _switched_by(kind: str, environ: Mapping[str, str]) -> str:
    names = ("MLFLOW_TRACKING_URI",) if kind == "mlflow" else ("WANDB_MODE", "WANDB_PROJECT")
    return " and ".join(f"{n}={environ[n]}" for n in names if environ.get(n))


def enabled_loggers(cfg: Mapping[str, Any], environ: Mapping[str, str]) -> list[LoggerSettings]:
    """The loggers this run sends to, in the config's order then ``DETCORE_LOGGERS``'s (``cfg`` already passed
    :func:`logger_problems`)."""
    kinds, _ = parse_loggers_env(environ.get(LOGGERS_ENV))
    hooks = _hooks(cfg)
    entries = {e["type"]: e for e in (hooks if isinstance(hooks, list) else [])
               if isinstance(e, Mapping) and isinstance(e.get("type"), str) and e["type"] in KEYS}
    if kinds == []:
        return []
    for word in kinds if kinds is not None else env_kinds(environ):
        entries.setdefault(KINDS[word], {"type": KINDS[word]})
    interval = _log_interval(cfg)
    out: list[LoggerSettings] = []
    for kind, entry in entries.items():
        options = {k: v for k, v in entry.items() if k != "type" and v is not None}
        options["interval"] = int(options.get("interval", interval))
        if kind == MLFLOW:
            if "tracked_config_keys" in options:
                options["tracked_config_keys"] = tuple(options["tracked_config_keys"])
            out.append(MlflowSettings(**options))
        else:
            out.append(WandbSettings(**options))
    return out


def env_kinds(environ: Mapping[str, str]) -> list[str]:
    """The loggers the tools' own variables switch on: ``MLFLOW_TRACKING_URI`` (MLflow), ``WANDB_PROJECT`` or
    ``WANDB_MODE`` other than ``disabled`` (W&B)."""
    kinds = []
    if environ.get("MLFLOW_TRACKING_URI", "").strip():
        kinds.append("mlflow")
    mode = environ.get("WANDB_MODE", "").strip().lower()
    if mode != "disabled" and (mode or environ.get("WANDB_PROJECT", "").strip()):
        kinds.append("wandb")
    return kinds


# MLflow's limits (mlflow.utils.validation), for when the caller cannot import them.
PARAM_KEY_LIMIT, PARAM_VALUE_LIMIT = 250, 6000


def flatten_params(cfg: Mapping[str, Any], *, only: tuple[str, ...] | None = None,
                   key_limit: int = PARAM_KEY_LIMIT, value_limit: int = PARAM_VALUE_LIMIT) -> dict[str, str]:
    """``cfg`` as MLflow params: ``a.b.c`` -> text (strings as they are, anything else as JSON; a mapping
    inside a list stays JSON). Values longer than ``value_limit`` end in ``...``; a key longer than
    ``key_limit`` is left out. ``only``: keep the keys equal to or under these (MMEngine's
    ``tracked_config_keys``)."""
    flat: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
            return
        text = node if isinstance(node, str) else json.dumps(node, default=str, separators=(", ", ": "))
        if len(prefix) <= key_limit:
            flat[prefix] = text if len(text) <= value_limit else text[:value_limit - 3] + "..."

    walk(cfg, "")
    if only is not None:
        flat = {k: v for k, v in flat.items() if any(k == o or k.startswith(o + ".") for o in only)}
    return flat
