"""Everything about a resolved config that can be checked before a run starts, as one list of problems.

:func:`load_config` checks types as it loads; this module checks what needs the outside world:
registry names (after ``custom_imports``), checkpoints named by ``load_from``/``resume_from``,
evaluation metrics against the model and dataset, and the data paths the run will read.
``detcore config show``, ``detcore train``/``test`` and ``launcher submit`` all call
:func:`check_config`, so a bad config fails in one place with the same lines, before any work dir,
experiment or job exists. Paths are checked on the machine that runs the check.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Sequence

from detcore.config import import_custom_modules
from detcore.errors import ConfigError, DetcoreError, RegistryError


class ConfigProblems(ConfigError):
    """Several problems found at once; ``problems`` holds one line each (the CLIs print one per line)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def _registered(cfg: Mapping[str, Any], splits: Sequence[str]) -> Iterator[tuple[str, Any, Any]]:
    """``(key, registry, name)`` for every type name the run will look up."""
    from detcore import registry as R

    model = cfg.get("model") or {}
    if isinstance(model, Mapping):
        yield "model.type", R.DETECTORS, model.get("type")
        for part, reg in (("backbone", R.BACKBONES), ("neck", R.NECKS)):
            sub = model.get(part)
            if isinstance(sub, Mapping) and "type" in sub:
                yield f"model.{part}.type", reg, sub["type"]
    data = cfg.get("data") or {}
    for split in splits:
        split_cfg = data.get(split) if isinstance(data, Mapping) else None
        if not isinstance(split_cfg, Mapping):
            continue
        if "type" in split_cfg:
            yield f"data.{split}.type", R.DATASETS, split_cfg["type"]
        for i, step in enumerate(split_cfg.get("pipeline") or []):
            if isinstance(step, Mapping) and "type" in step:
                yield f"data.{split}.pipeline.{i}.type", R.TRANSFORMS, step["type"]
    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, Mapping) and "type" in optimizer:
        yield "optimizer.type", R.OPTIMIZERS, optimizer["type"]
    lr_config = cfg.get("lr_config")
    if isinstance(lr_config, Mapping) and "policy" in lr_config:
        yield "lr_config.policy", R.LR_SCHEDULES, lr_config["policy"]
    for i, hook in enumerate(cfg.get("custom_hooks") or []):
        if isinstance(hook, Mapping) and "type" in hook:
            yield f"custom_hooks.{i}.type", R.HOOKS, hook["type"]


def _hook_key_problems(cfg: Mapping[str, Any]) -> Iterator[str]:
    """Keys of ``log_config``/``evaluation``/``checkpoint_config`` that their hook does not take (the
    trainer passes each section to its hook as keyword arguments; the table is kept equal to the
    hooks' signatures by a test)."""
    from detcore.builtin_names import HOOK_KEYS

    for section, (_hook, accepted) in HOOK_KEYS.items():
        values = cfg.get(section)
        if not isinstance(values, Mapping):
            continue
        unknown = [str(k) for k in values if k not in accepted]
        if unknown:
            yield (f"{section}: unknown key(s) {', '.join(unknown)}; {section} takes {', '.join(accepted)} "
                   f"(remove the key, or add a hook under custom_hooks)")


def _only_builtin_names(cfg: Mapping[str, Any], splits: Sequence[str]) -> bool:
    """True when ``cfg`` imports no module of its own and names only types detcore registers itself
    (then the registries, and torch with them, need not be imported to check it)."""
    from detcore.builtin_names import BUILTIN

    return not cfg.get("custom_imports") and all(isinstance(name, str) and name in BUILTIN.get(registry.name, ())
                                                 for _, registry, name in _registered(cfg, splits))


def _register_builtin_types() -> None:
    import detcore.engine.hooks  # noqa: F401
    import detcore.engine.optim  # noqa: F401
    import detcore.models  # noqa: F401
    from detcore.data import register_builtin_types

    register_builtin_types()


def _path_problems(cfg: Mapping[str, Any], splits: Sequence[str], cwd: str) -> Iterator[str]:
    data = cfg.get("data") or {}
    for split in splits:
        split_cfg = data.get(split) if isinstance(data, Mapping) else None
        if not isinstance(split_cfg, Mapping):
            continue
        root = split_cfg.get("data_root") or cfg.get("data_root") or ""
        missing = []
        for key in ("ann_file",):  # a missing image folder is named by the dataset, with the image it looked for
            value = split_cfg.get(key)
            if not isinstance(value, str) or not value:
                continue
            if not (os.path.exists(os.path.join(cwd, value))
                    or (root and os.path.exists(os.path.join(cwd, str(root), value)))):
                missing.append((key, value))
        if missing:  # one line per split
            what = " and ".join(f"data.{split}.{key} {value}" for key, value in missing)
            fix = " ".join(f"data.{split}.{key}=PATH" for key, _ in missing)
            yield f"{what} does not exist (looked from {cwd}); fix the path or pass --cfg-options {fix}"


def config_problems(cfg: Mapping[str, Any], *, test: bool = False, validate: bool = True,
                    load_from: str | None = None, eval_metrics: Sequence[str] | None = None,
                    cwd: str | None = None, registries: bool = True) -> list[str]:
    """One line per problem found in ``cfg`` for a training run (``test=False``) or a test run.

    ``validate``: the run evaluates on ``data.val`` (its metrics are checked too). ``load_from``:
    a checkpoint given on the command line (checked instead of the config's). ``eval_metrics``:
    the metrics a test run was asked for (default: the config's ``evaluation.metric``).
    Relative paths are looked up from ``cwd`` (default: the working directory). Imports
    ``custom_imports``, as the run will, and checks registry names unless ``registries`` is False
    (``config show`` stays torch-free). A config that names only built-in types and imports no
    module is checked against :mod:`detcore.builtin_names` without importing torch; anything else
    imports the registries (and torch).
    """
    from detcore.evaluation.metrics import metric_problem

    cwd = cwd or os.getcwd()
    problems: list[str] = []
    splits = ["test"] if test else (["train", "val"] if validate else ["train"])
    full = registries and not _only_builtin_names(cfg, splits)
    if full:
        try:
            import_custom_modules(cfg)
        except DetcoreError as exc:
            problems.append(str(exc))
        _register_builtin_types()
    for key, registry, name in _registered(cfg, splits) if full else ():
        try:
            registry.get(name)
        except RegistryError as exc:
            problems.append(f"{key}: {exc}")
        except TypeError:  # an unhashable name (a list, a mapping)
            problems.append(f"{key}: expected a type name, got {name!r:.100}")
    if registries:
        problems += _hook_key_problems(cfg)
    checkpoints = [("--load-from", load_from)] if load_from else [("load_from", cfg.get("load_from"))]
    if not test:
        checkpoints.append(("resume_from", cfg.get("resume_from")))
    for key, path in checkpoints:
        if path and not os.path.isfile(os.path.join(cwd, str(path))):
            problems.append(f"{key}: checkpoint {path} does not exist; pass an existing .pth file (a work dir's "
                            f"latest.pth is one)")
    evaluation = cfg.get("evaluation") or {}
    if test or validate:
        asked = eval_metrics if eval_metrics is not None else evaluation.get("metric", ["bbox"])
        asked = [asked] if isinstance(asked, str) else list(asked or [])
        where = "--eval" if eval_metrics is not None else "evaluation.metric"
        split = "test" if test else "val"
        split_cfg = (cfg.get("data") or {}).get(split)
        for metric in asked:
            problem = metric_problem(metric, cfg.get("model"), split_cfg if isinstance(split_cfg, Mapping) else None)
            if problem:
                problems.append(f"{where}: {problem}")
    method = evaluation.get("voc_method", "area")
    if method not in ("area", "11points"):
        problems.append(f"evaluation.voc_method: got {method!r}; expected area (VOC2010+) or 11points (VOC2007)")
    problems += _path_problems(cfg, splits, cwd)
    return problems


def check_config(cfg: Mapping[str, Any], **kwargs: Any) -> None:
    """Raise :class:`ConfigProblems` (one line per problem) when :func:`config_problems` finds any."""
    problems = config_problems(cfg, **kwargs)
    if problems:
        where = cfg.get("filename")
        raise ConfigProblems([f"{where}: {p}" if where else p for p in problems])
