"""Everything about a resolved config that can be checked before a run starts, as one list of problems.

:func:`load_config` checks values as it loads (:mod:`detcore.config_values`); this module checks
what needs the outside world: registry names (after ``custom_imports``), weights and checkpoints
named by ``model.backbone.weights``, ``load_from`` and ``resume_from`` (torchvision names are checked
by name, never downloaded here), what training refuses (:func:`training_problems`), evaluation metrics against the model and dataset, and the data paths
the run will read. ``detcore train``/``test`` and ``launcher submit`` all call :func:`check_config`,
so a bad config fails in one place with the same lines, before any work dir, experiment or job
exists; ``detcore config show`` refuses the same problems except missing files, which it prints as
warnings (:func:`missing_file_problems`). Paths are checked on the machine that runs the check.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Sequence

from detcore.config import import_custom_modules
from detcore.contract import WorkerArgs
from detcore.errors import ConfigError, ConfigProblems, DetcoreError, RegistryError

__all__ = ["ConfigProblems", "check_config", "config_problems", "missing_file_problems", "with_file"]


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
        yield from _pipeline_names(f"data.{split}.pipeline", split_cfg.get("pipeline"))
    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, Mapping) and "type" in optimizer:
        yield "optimizer.type", R.OPTIMIZERS, optimizer["type"]
    lr_config = cfg.get("lr_config")
    if isinstance(lr_config, Mapping) and "policy" in lr_config:
        yield "lr_config.policy", R.LR_SCHEDULES, lr_config["policy"]
    for i, hook in enumerate(cfg.get("custom_hooks") or []):
        if isinstance(hook, Mapping) and "type" in hook:
            yield f"custom_hooks.{i}.type", R.HOOKS, hook["type"]


def _pipeline_names(key: str, steps: Any) -> Iterator[tuple[str, Any, Any]]:
    """Every transform name of a pipeline, with those inside ``AutoAugment``'s policies."""
    from detcore import registry as R

    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, Mapping) and "type" in step:
            yield f"{key}.{i}.type", R.TRANSFORMS, step["type"]
            policies = step.get("policies") if step["type"] == "AutoAugment" else None
            for j, policy in enumerate(policies if isinstance(policies, list) else []):
                yield from _pipeline_names(f"{key}.{i}.policies.{j}", policy)


READ_ELSEWHERE = {("log_config", "hooks")}  # the experiment loggers' list (detcore.loggers.settings)


def _hook_key_problems(cfg: Mapping[str, Any]) -> Iterator[str]:
    """Keys of ``log_config``/``evaluation``/``checkpoint_config`` that their hook does not take (the
    trainer passes each section to its hook as keyword arguments; the table is kept equal to the
    hooks' signatures by a test)."""
    from detcore.builtin_names import HOOK_KEYS

    for section, (_hook, accepted) in HOOK_KEYS.items():
        values = cfg.get(section)
        if not isinstance(values, Mapping):
            continue
        unknown = [str(k) for k in values if k not in accepted and (section, k) not in READ_ELSEWHERE]
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


def missing_file_problems(cfg: Mapping[str, Any], *, test: bool = False, validate: bool = True,
                          load_from: str | None = None, cwd: str | None = None) -> list[str]:
    """One line per file a run would read that is not on this machine: checkpoints named by
    ``load_from`` (or the ``load_from`` argument) and ``resume_from``, and the splits' ``ann_file``.

    ``detcore config show`` prints these as warnings (a config can be read before its data is
    downloaded); ``detcore train``/``test`` and ``launcher submit`` refuse them (see
    :func:`config_problems`)."""
    from detcore.pretrained.names import parse_weights

    cwd = cwd or os.getcwd()
    problems = []
    for key, path in _checkpoints(cfg, test, load_from):
        try:
            named = parse_weights(path, key) if key != "resume_from" else None
        except ConfigError:
            continue  # a bad name: config_problems says so
        if named is None and not os.path.isfile(os.path.join(cwd, str(path))):
            problems.append(f"{key}: checkpoint {path} does not exist; pass an existing .pth file (a work dir's "
                            f"latest.pth is one)" + ("" if key == "resume_from" else " or a torchvision detector "
                                                     "such as torchvision://fasterrcnn_resnet50_fpn"))
    weights = _backbone_weights(cfg)
    if isinstance(weights, str) and not test:
        try:
            named = parse_weights(weights, "model.backbone.weights")
        except ConfigError:
            named = True  # a bad name: config_problems says so
        if named is None and not os.path.isfile(os.path.join(cwd, os.path.expanduser(weights))):
            problems.append(f"model.backbone.weights: weights file {weights} does not exist (looked from {cwd}); "
                            f"give an existing file or a torchvision name such as torchvision://resnet50 "
                            f"(`detcore model list`)")
    problems += _path_problems(cfg, _splits(test, validate), cwd)
    return problems


def _checkpoints(cfg: Mapping[str, Any], test: bool, load_from: str | None) -> list[tuple[str, Any]]:
    """The checkpoints a run reads, as (key, value). A test run loads the checkpoint it is given
    (MMDetection's tools/test.py ignores load_from too)."""
    if load_from:
        checkpoints = [(WorkerArgs.option("load_from"), load_from)]
    else:
        checkpoints = [] if test else [("load_from", cfg.get("load_from"))]
    if not test:
        checkpoints.append(("resume_from", cfg.get("resume_from")))
    return [(key, value) for key, value in checkpoints if value]


def _backbone_weights(cfg: Mapping[str, Any]) -> Any:
    model = cfg.get("model")
    backbone = model.get("backbone") if isinstance(model, Mapping) else None
    return backbone.get("weights") if isinstance(backbone, Mapping) else None


def _splits(test: bool, validate: bool) -> list[str]:
    return ["test"] if test else (["train", "val"] if validate else ["train"])


def config_problems(cfg: Mapping[str, Any], *, test: bool = False, validate: bool = True,
                    load_from: str | None = None, eval_metrics: Sequence[str] | None = None,
                    cwd: str | None = None, registries: bool = True, files: bool = True,
                    resume: str | None = None) -> list[str]:
    """One line per problem found in ``cfg`` for a training run (``test=False``) or a test run.

    ``validate``: the run evaluates on ``data.val`` (its metrics are checked too). ``load_from``:
    a checkpoint given on the command line (checked instead of the config's). ``eval_metrics``:
    the metrics a test run was asked for (default: the config's ``evaluation.metric``). ``resume``: a
    checkpoint the run continues from (``--resume PATH``; ``auto`` counts as none).
    Relative paths are looked up from ``cwd`` (default: the working directory). Imports
    ``custom_imports``, as the run will, and checks registry names unless ``registries`` is False
    (``config show`` stays torch-free). A config that names only built-in types and imports no
    module is checked against :mod:`detcore.builtin_names` without importing torch; anything else
    imports the registries (and torch). ``files``: include :func:`missing_file_problems`.
    """
    from detcore.evaluation.metrics import metric_problem

    cwd = cwd or os.getcwd()
    problems: list[str] = []
    splits = _splits(test, validate)
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
    for key, path in _checkpoints(cfg, test, load_from):
        problem = _checkpoint_name_problem(cfg, key, path)
        if problem:
            problems.append(problem)
    problems += _backbone_weights_problems(cfg)
    problems += _label_ids_problems(cfg)
    if not test:
        from detcore.loggers.settings import logger_problems

        problems += logger_problems(cfg, os.environ, packages=files)
        resume = resume if resume not in (None, "auto", "never") else cfg.get("resume_from")
        problems += training_problems(cfg, load_from=load_from or cfg.get("load_from"), resume=resume)
    evaluation = cfg.get("evaluation") or {}
    if test or validate:
        asked = eval_metrics if eval_metrics is not None else evaluation.get("metric", ["bbox"])
        asked = [asked] if isinstance(asked, str) else list(asked or [])
        where = WorkerArgs.option("eval") if eval_metrics is not None else "evaluation.metric"
        split = "test" if test else "val"
        split_cfg = (cfg.get("data") or {}).get(split)
        for metric in asked:
            problem = metric_problem(metric, cfg.get("model"), split_cfg if isinstance(split_cfg, Mapping) else None)
            if problem:
                problems.append(f"{where}: {problem}")
    method = evaluation.get("voc_method", "area")
    if method not in ("area", "11points"):
        problems.append(f"evaluation.voc_method: got {method!r}; expected area (VOC2010+) or 11points (VOC2007)")
    if files:
        problems += missing_file_problems(cfg, test=test, validate=validate, load_from=load_from, cwd=cwd)
    return problems


def _checkpoint_name_problem(cfg: Mapping[str, Any], key: str, value: Any) -> str | None:
    """A ``load_from``/``--load-from`` naming weights that do not exist or do not fit the model (a path is
    :func:`missing_file_problems`' business)."""
    from detcore.pretrained.names import DETECTOR_OF, parse_weights

    try:
        named = parse_weights(value, key) if key != "resume_from" else None
    except ConfigError as exc:
        return str(exc)
    if named is None:
        return None
    if not named.is_detector:
        return (f"{key}: {value} holds ImageNet weights of a backbone, not a detector; set model.backbone.weights: "
                f"{value} instead (load_from takes a whole detector, e.g. torchvision://fasterrcnn_resnet50_fpn)")
    model_type = (cfg.get("model") or {}).get("type") if isinstance(cfg.get("model"), Mapping) else None
    if model_type in DETECTOR_OF.values() and DETECTOR_OF[named.builder] != model_type:
        return (f"{key}: {value} holds a {DETECTOR_OF[named.builder]} but the config builds a {model_type}; use "
                f"weights of a {model_type} (`detcore model list`) or change model.type")
    return None


def _backbone_weights_problems(cfg: Mapping[str, Any]) -> list[str]:
    """``model.backbone.weights``: a file path, or a known name that fits the backbone (whether the file
    exists is :func:`missing_file_problems`' business; a test run never reads it)."""
    from detcore.pretrained.names import backbone_fit_problem, parse_weights

    value = _backbone_weights(cfg)
    if not value:
        return []
    key = "model.backbone.weights"
    if not isinstance(value, str):
        return [f"{key}: expected a file path or a torchvision name such as torchvision://resnet50, got {value!r:.100}"]
    try:
        named = parse_weights(value, key)
    except ConfigError as exc:
        return [str(exc)]
    backbone = cfg["model"]["backbone"]
    if named is not None:
        problem = backbone_fit_problem(named, str(backbone.get("type")), backbone.get("depth", 50))
        return [f"{key}: {problem}"] if problem and backbone.get("type") in ("ResNet", "MobileNetV3", "TinyNet") else []
    return []


def _label_ids_problems(cfg: Mapping[str, Any]) -> list[str]:
    from detcore.evaluation.label_ids import LABEL_IDS

    value = cfg.get("label_ids")
    if value is not None and value not in LABEL_IDS:
        return [f"label_ids: got {value!r:.100}; expected classes (label k is the k-th of classes, the default) or "
                f"coco (label k is COCO category id k, torchvision's COCO models)"]
    return []


# Built-in backbones whose ``norm`` defaults to frozen BatchNorm.
_FROZEN_BN_DEFAULT = {"ResNet": "frozen_bn", "MobileNetV3": "frozen_bn", "TinyNet": "gn"}
RANDOM_FROZEN_BN_KEY = "model.backbone.allow_random_frozen_bn"


def training_problems(cfg: Mapping[str, Any], *, load_from: str | None = None, resume: str | None = None) -> list[str]:
    """What training refuses in ``cfg`` (pure: no files read). ``load_from``/``resume``: the checkpoint the
    run starts from, if any (then the backbone's initial weights come from it).

    - A built-in backbone with frozen BatchNorm (``norm: frozen_bn``, ResNet's and MobileNetV3's default)
      and no weights: its normalisation stays at identity statistics for the whole run, so the network
      trains badly or not at all. Give ``model.backbone.weights`` (``torchvision://resnet50``), start from a
      checkpoint, train with ``norm: bn``/``gn``, or opt in with ``model.backbone.allow_random_frozen_bn: true``.
    - ``label_ids: coco`` (a torchvision COCO detector's config): for testing and inference only.
    """
    problems = []
    model = cfg.get("model")
    backbone = model.get("backbone") if isinstance(model, Mapping) else None
    if isinstance(backbone, Mapping) and backbone.get("type") in _FROZEN_BN_DEFAULT:
        norm = backbone.get("norm", _FROZEN_BN_DEFAULT[backbone["type"]])
        if norm == "frozen_bn" and not backbone.get("weights") and not load_from and not resume \
                and backbone.get("allow_random_frozen_bn") is not True:
            problems.append(
                f"model.backbone: {backbone['type']} with norm: frozen_bn and no weights would train from random "
                f"initialisation with BatchNorm frozen at identity statistics, which never learns them; set "
                f"model.backbone.weights (e.g. torchvision://resnet50), start from a checkpoint (load_from), use "
                f"norm: bn or gn to train from scratch, or set {RANDOM_FROZEN_BN_KEY}: true to train it anyway")
    if cfg.get("label_ids") == "coco":
        problems.append("label_ids: coco is for testing and inference with torchvision's COCO detectors (their labels "
                        "are COCO category ids); to train or fine-tune, use a training config with classes and "
                        "num_classes (e.g. configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.yaml) and load_from: "
                        "torchvision://NAME")
    return problems


def weights_notes(cfg: Mapping[str, Any], load_from: str | None = None) -> list[str]:
    """One line per torchvision name the run will load whose file is not in this machine's cache (a
    notice, not a problem: the run downloads it; a node without internet needs it in its own cache)."""
    from detcore.pretrained.names import cached_file, hub_checkpoints_dir, parse_weights

    model = cfg.get("model")
    backbone = model.get("backbone") if isinstance(model, Mapping) else None
    values = [("model.backbone.weights", backbone.get("weights") if isinstance(backbone, Mapping) else None),
              (WorkerArgs.option("load_from"), load_from) if load_from else ("load_from", cfg.get("load_from"))]
    notes = []
    for key, value in values:
        try:
            named = parse_weights(value, key)
        except ConfigError:
            continue  # reported as a problem
        if named is not None and cached_file(named) is None:
            notes.append(f"{key}: {named.file} ({named.given}) is not in this node's cache {hub_checkpoints_dir()}; "
                         f"the job downloads it, or fill the cache first: detcore model download {named.name}")
    return notes


def check_config(cfg: Mapping[str, Any], **kwargs: Any) -> None:
    """Raise :class:`ConfigProblems` (one line per problem) when :func:`config_problems` finds any."""
    problems = config_problems(cfg, **kwargs)
    if problems:
        raise ConfigProblems(with_file(cfg, problems))


def with_file(cfg: Mapping[str, Any], problems: Sequence[str]) -> list[str]:
    """``problems`` prefixed with the config's path (when it has one)."""
    where = cfg.get("filename")
    return [f"{where}: {p}" if where else p for p in problems]
