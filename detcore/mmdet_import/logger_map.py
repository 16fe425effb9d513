"""Map MMDetection's experiment loggers onto detcore's ``log_config.hooks``.

2.x ``log_config.hooks`` (``MlflowLoggerHook``, ``WandbLoggerHook``, MMDetection's ``MMDetWandbHook``)
and 3.x ``visualizer.vis_backends`` (``MLflowVisBackend``, ``WandbVisBackend``) become
``{type: MlflowLoggerHook, ...}`` / ``{type: WandbLoggerHook, ...}``; the text and TensorBoard
loggers are what detcore always writes. A key detcore does not read goes to the summary with
the reason (:data:`detcore.loggers.settings.SPELLINGS`); MMCV's window switches
(``ignore_last``, ``reset_flag``, ``by_epoch``, ``commit``, ``with_step``) and MMEngine's
``save_dir`` change nothing a user sees and are taken silently.
"""
from __future__ import annotations

from detcore.loggers.settings import ALWAYS_WRITTEN, KEYS, SPELLINGS
from detcore.mmdet_import.source import Source

SILENT = ("ignore_last", "reset_flag", "by_epoch", "commit", "with_step", "save_dir")
MMCV_DEFAULTS = {"MlflowLoggerHook": {"log_model": True}}  # MMCV uploads the model unless told not to


def map_loggers(src: Source, path: str, log_interval: int) -> list[dict]:
    """detcore's entries for the logger list at ``path`` (``log_config.hooks`` or ``visualizer.vis_backends``);
    entries of unknown types are left for the summary's "not mapped" part."""
    out = []
    for i, entry in enumerate(src.items(path)):
        key = f"{path}.{i}"
        kind = entry.get("type") if isinstance(entry, dict) else None
        if not isinstance(kind, str):
            continue
        if kind in ALWAYS_WRITTEN:
            src.use(key)
            continue
        spelling = SPELLINGS.get(kind)
        if spelling is None:
            continue
        src.get(f"{key}.type")
        mapped: dict = {"type": spelling.type, **MMCV_DEFAULTS.get(kind, {})}
        for name in entry:
            ours = spelling.renamed.get(name, name)
            if name == "type" or name in SILENT:
                src.use(f"{key}.{name}")
            elif name in spelling.unread:
                src.note(f"{key}.{name}", spelling.unread[name])
            elif ours == "interval":
                interval = src.get(f"{key}.{name}")
                if isinstance(interval, int) and interval > 0 and interval % log_interval == 0:
                    mapped["interval"] = interval
                else:
                    src.note(f"{key}.{name}", f"not a multiple of log_config.interval ({log_interval}); the logger "
                                              f"gets every {log_interval} iterations")
            elif ours in KEYS[spelling.type]:
                mapped[ours] = src.get(f"{key}.{name}")
        out.append(mapped)
    return out


def map_vis_backends(src: Source, log_interval: int) -> list[dict]:
    """3.x: the loggers of ``visualizer.vis_backends`` (what MMEngine reads), else of a top-level
    ``vis_backends`` (usually the variable the visualizer was given)."""
    if isinstance(src.lookup("visualizer.vis_backends"), list):
        if src.lookup("visualizer.vis_backends") == src.lookup("vis_backends"):
            src.use("vis_backends")
        return map_loggers(src, "visualizer.vis_backends", log_interval)
    return map_loggers(src, "vis_backends", log_interval)

