"""TensorBoard hparams: a run's varying keys and its metrics, for the HParams tab of a sweep.

The summaries go through the run's own ``SummaryWriter`` file (not ``add_hparams``, which
writes into a new sub-run folder), so each run shows once, under its own name, and the HParams
tab reads the metric values from the run's own ``val/*`` and ``train/*`` scalars.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from detcore.config import lookup


def hparams_from_options(cfg: Mapping[str, Any], cfg_options: Sequence[str]) -> dict[str, bool | int | float | str]:
    """``{dotted key: value in the resolved cfg}`` for every key set through ``--cfg-options``.

    A launcher sweep passes its grid values (and the user's overrides, and the auto-scaled
    schedule) that way, so these are the keys that vary between the runs of a sweep. Values
    that are not a bool, number or string are shown as JSON text.
    """
    out: dict[str, bool | int | float | str] = {}
    for item in cfg_options:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("+")
        if not sep or not key:
            continue
        found, value = lookup(cfg, key)
        value = value if found else raw
        out[key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value, sort_keys=True)
    return out


def metric_tags(last_val: Mapping[str, float]) -> list[str]:
    """The scalar tags the HParams tab shows: the training loss and the overall validation metrics that
    were written as scalars (not pycocotools' -1 for "nothing to measure")."""
    from detcore.engine.metrics_log import scalar_values

    return ["train/loss", *(tag for tag in scalar_values(dict(last_val), "val") if "_AP_" not in tag)]


def write_hparams(writer: Any, hparams: Mapping[str, Any], metrics: Sequence[str], step: int) -> None:
    """Write the hparams plugin's experiment, session-start and session-end summaries to ``writer``'s run."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    file_writer = writer._get_file_writer()  # the run's own events file (add_hparams would open a sub-run)
    for summary in hparams_summaries(dict(hparams), {tag: 0.0 for tag in metrics}):
        file_writer.add_summary(summary, step)
    writer.flush()
