"""What a training progress line says: the ETA and the line itself (pure).

The ETA is measured after warm-up: the first iterations of a process (loader workers starting,
the allocator growing, cuDNN autotuning) take many times a steady one, and averaging them in
made the first line's estimate several times too long. So the first ``min(WARMUP_ITERS, n // 2)``
of the ``n`` iterations run so far are left out, the mean of the (at most ``RECENT_ITERS``) newest
of the rest is the step time, and until one iteration is left after warm-up the line says
``eta estimating``. The clock the hook passes in stops during evaluation; evaluations to come
are added at the newest evaluation's wall time once one has run (``+ eval`` until then).

The line keeps what a person scans for (iteration, epoch, LR, total loss, the main loss terms
under short names, step and data time, memory, ETA) within :data:`LINE_WIDTH` characters, so
with the console's ``HH:MM:SS`` prefix it stays under 120: loss terms that do not fit are left
out of the line, lowest priority first. Every term is in ``metrics.jsonl``, TensorBoard and the
DEBUG log.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping, Sequence

WARMUP_ITERS = 5
RECENT_ITERS = 200
LINE_WIDTH = 110

# MMDetection's and torchvision's loss names -> the line's short names, in the order they are kept
SHORT_NAMES = {
    "loss_cls": "cls", "loss_classifier": "cls", "classification": "cls",
    "loss_bbox": "box", "loss_box_reg": "box", "bbox_regression": "box",
    "loss_mask": "mask", "loss_centerness": "ctr", "bbox_ctrness": "ctr", "loss_iou": "iou",
    "loss_rpn_cls": "rpn_cls", "loss_objectness": "rpn_cls", "loss_rpn_bbox": "rpn_box",
    "loss_rpn_box_reg": "rpn_box", "loss_keypoint": "kpt",
}
_PRIORITY = ("cls", "box", "mask", "ctr", "iou", "kpt", "rpn_cls", "rpn_box")


def step_seconds(ends: Sequence[float], warmup: int = WARMUP_ITERS, recent: int = RECENT_ITERS) -> float | None:
    """Seconds per iteration after warm-up, from ``ends`` (a clock read as each iteration of this
    process ended, ascending), or None while estimating (fewer than two iterations)."""
    n = len(ends)
    skip = min(warmup, n // 2)
    if skip < 1:
        return None
    first = max(skip, n - recent)
    return (ends[-1] - ends[first - 1]) / (n - first)


@dataclass(frozen=True)
class Eta:
    seconds: float | None       # None: still estimating
    untimed_evaluations: bool   # evaluations are to come and none has been timed yet

    def text(self) -> str:
        if self.seconds is None:
            return "estimating"
        return str(timedelta(seconds=round(self.seconds))) + (" + eval" if self.untimed_evaluations else "")


def estimate_eta(ends: Sequence[float], iters_left: int, evaluations_left: int = 0,
                 evaluation_seconds: float | None = None) -> Eta:
    """The time left: ``iters_left`` times :func:`step_seconds` of ``ends`` plus ``evaluations_left``
    times ``evaluation_seconds`` (the newest evaluation's wall time; None before the first)."""
    step = step_seconds(ends)
    if step is None and iters_left > 0:
        return Eta(None, False)
    seconds = iters_left * (step or 0.0)
    if evaluations_left and evaluation_seconds is not None:
        seconds += evaluations_left * evaluation_seconds
    return Eta(seconds, bool(evaluations_left) and evaluation_seconds is None)


def short_name(term: str) -> str:
    """A loss term's name in the line: ``loss_classifier`` -> ``cls``, a cascade stage's
    ``s1.loss_box_reg`` -> ``s1.box``; unknown names lose ``loss_``."""
    stage, _, rest = term.partition(".")
    if rest and stage[:1] == "s" and stage[1:].isdigit():
        return f"{stage}.{short_name(rest)}"
    return SHORT_NAMES.get(term, term[5:] if term.startswith("loss_") else term)


def _priority(name: str, position: int) -> tuple[int, int, int]:
    """Sort key of a short name: its kind in :data:`_PRIORITY` (unknown kinds last), then the cascade
    stage, then the order the model returned it."""
    stage, _, rest = name.partition(".")
    if rest and stage[:1] == "s" and stage[1:].isdigit():
        kind, number = rest, int(stage[1:])
    else:
        kind, number = name, 0
    return (_PRIORITY.index(kind) if kind in _PRIORITY else len(_PRIORITY), number, position)


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _memory(mb: float) -> str:
    return f"{mb / 1024:.1f}G" if mb >= 1024 else f"{mb:.0f}M"


def iteration_line(it: int, max_iters: int, epoch: int, lr: float, loss: float, terms: Mapping[str, float],
                   step_s: float, data_s: float, memory_mb: float, eta: str, width: int = LINE_WIDTH) -> str:
    """``iter 60/300 ep 0 lr 0.02 loss 1.158 cls 0.388 box 0.282 mask 0.397 0.98s/it data 0.04s
    mem 812M eta 0:04:37``: ``terms`` (full loss names) under :func:`short_name`, as many as fit in
    ``width`` characters, the main ones first; the rest of the line is always there."""
    head = f"iter {it}/{max_iters} ep {epoch} lr {lr:.3g} loss {loss:.3f}"
    tail = f"{_seconds(step_s)}s/it data {_seconds(data_s)}s mem {_memory(memory_mb)} eta {eta}"
    named = {}
    for term, value in terms.items():
        named.setdefault(short_name(term), value)  # two names for one short name: the first is shown
    positions = {n: i for i, n in enumerate(named)}
    order = sorted(named, key=lambda n: _priority(n, positions[n]))
    shown: list[str] = []
    room = width - len(head) - len(tail) - 1
    for name in order:
        piece = f" {name} {named[name]:.3f}"
        if len(piece) > room:
            break  # a lower-priority term never takes the place of a higher one
        shown.append(name)
        room -= len(piece)
    return head + "".join(f" {n} {named[n]:.3f}" for n in shown) + " " + tail
