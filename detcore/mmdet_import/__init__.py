"""Import MMDetection 2.x and 3.x ``.py`` configs as detcore YAML, without running them.

``import_config(path)`` reads the file and its bases with :mod:`ast` (:mod:`.reader`; ``_base_``
lists and MMEngine's ``with read_base():`` imports), maps the merged config onto detcore's
schema (:mod:`.model_map`; 2.x's ``data``/``optimizer``/``lr_config``/... in :mod:`.data_map`,
3.x's ``train_dataloader``/``optim_wrapper``/``param_scheduler``/... in :mod:`.v3_data` and
:mod:`.v3_schedule`) and returns the YAML-ready config and the summary of every key that did
not carry over exactly (:mod:`.source`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from detcore.atomic import write_text_atomic
from detcore.config_yaml import dump_yaml
from detcore.errors import ConfigError
from detcore.mmdet_import.data_map import map_data, map_schedule
from detcore.mmdet_import.model_map import map_model
from detcore.mmdet_import.reader import read_mmdet_config
from detcore.mmdet_import.source import Source
from detcore.mmdet_import.v3_data import map_data_v3
from detcore.mmdet_import.v3_schedule import map_schedule_v3

# Keys only MMDetection 3.x (MMEngine) reads, and the 2.x keys it ignores.
V3_KEYS = ("train_dataloader", "val_dataloader", "test_dataloader", "optim_wrapper", "param_scheduler",
           "default_hooks", "val_evaluator", "test_evaluator")
V2_KEYS = ("data", "optimizer", "optimizer_config", "lr_config", "runner", "checkpoint_config", "evaluation",
           "log_config", "total_epochs", "fp16", "workflow", "resume_from", "dist_params")


@dataclass(frozen=True)
class ImportedConfig:
    """A detcore config made from an MMDetection config, and what did not carry over."""

    source: str
    config: dict
    summary: list[str]

    def summary_text(self) -> str:
        """The summary as printed by ``detcore config import`` (one key per line)."""
        if not self.summary:
            return f"{self.source}: every key was mapped onto detcore's config"
        head = f"{self.source}: {len(self.summary)} key(s) did not carry over exactly:"
        return "\n".join([head, *(f"  {line}" for line in self.summary)])

    def to_yaml(self) -> str:
        """The config as YAML, with the summary as a comment block on top."""
        lines = [f"# Imported from the MMDetection config {' '.join(self.source.splitlines())}",
                 "# by `detcore config import` (the file was read, never run)."]
        if self.summary:
            lines.append("# Not carried over exactly (key path: value (why)):")
            lines += [f"#   {' '.join(line.splitlines())}" for line in self.summary]
        return "\n".join(lines) + "\n" + dump_yaml(self.config)


def write_yaml(imported: ImportedConfig, out: str | os.PathLike) -> Path:
    """Write ``imported.to_yaml()`` to ``out`` atomically (a temp file beside it, then a rename)."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the path of the .yaml file to write")
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--out {out}: give a .yaml path (detcore configs are YAML)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, imported.to_yaml())
    except OSError as exc:
        raise ConfigError(f"cannot write {out} ({exc.strerror}); pass a writable --out path") from None
    return out


def import_config(path: str | os.PathLike) -> ImportedConfig:
    """Read the MMDetection config at ``path`` (never executing it) and map it onto detcore's schema."""
    source = os.path.abspath(path)
    src = Source(read_mmdet_config(Path(path)), source)
    model = map_model(src)
    cfg: dict = {"model": model}
    if is_mmdet3(src.cfg):
        cfg.update(map_data_v3(src, model))
        cfg.update(map_schedule_v3(src, cfg["data"]))
        for key in V2_KEYS:
            if src.has(key):
                src.note(key, "an MMDetection 2.x key, which MMDetection 3.x does not read either")
    else:
        cfg.update(map_data(src, model))
        cfg.update(map_schedule(src))
    return ImportedConfig(source, cfg, src.summary())


def is_mmdet3(cfg: dict) -> bool:
    """An MMDetection 3.x (MMEngine) config: one of the keys only 3.x reads, or a data preprocessor."""
    return any(key in cfg for key in V3_KEYS) or "data_preprocessor" in (cfg.get("model") or {})


def is_mmdet_config(path: str | os.PathLike) -> bool:
    """True for a ``.py`` path: MMDetection configs are Python files, detcore's are YAML."""
    return str(path).endswith(".py")


__all__ = ["ImportedConfig", "import_config", "is_mmdet3", "is_mmdet_config", "read_mmdet_config", "write_yaml"]
