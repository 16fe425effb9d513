"""Pure parts of ``detcore train``'s output: the hparams of a run, evaluations left for the ETA,
evaluation progress lines, and the ground-truth panel next to the predictions."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from detcore.apis.palette import class_color
from detcore.apis.visualize import GAP_PX, draw_comparison
from detcore.engine.evaluator import progress_logger
from detcore.engine.hooks import EvalHook
from detcore.engine.hparams import hparams_from_options, metric_tags


def test_hparams_are_the_cfg_options_keys_with_their_resolved_values() -> None:
    cfg = {"optimizer": {"lr": 0.02}, "runner": {"max_iters": 8}, "lr_config": {"step": [6, 7]}, "seed": None}
    options = ["optimizer.lr=0.01", "optimizer.lr=0.02", "+runner.max_iters=8", "lr_config.step=[6,7]", "seed=null",
               "missing.key=3"]
    assert hparams_from_options(cfg, options) == {"optimizer.lr": 0.02, "runner.max_iters": 8,
                                                  "lr_config.step": "[6, 7]", "seed": "null", "missing.key": "3"}
    assert metric_tags({"bbox_AP": 0.5, "bbox_AP_cat": 0.4, "bbox_APl": -1.0}) == ["train/loss", "val/bbox_AP"]


def trainer(it: int, max_iters: int, by_epoch: bool = False, per_epoch: int = 10) -> SimpleNamespace:
    return SimpleNamespace(iter=it, max_iters=max_iters, by_epoch=by_epoch, iters_per_epoch=per_epoch,
                           val_loader=object())


@pytest.mark.parametrize("it, done_at, by_epoch, expected", [
    (0, None, False, 4),    # every 25 of 100 iterations: 25, 50, 75, 100
    (25, None, False, 4),   # the logger runs before the evaluation of iteration 25
    (25, 25, False, 3),
    (99, None, False, 1),
    (100, None, False, 1),  # the final evaluation is still to come
    (100, 100, False, 0),
    (0, None, True, 2),     # every 3 epochs of 10 iterations, 40 iterations: at 30 and at the end
    (30, 30, True, 1),
])
def test_evaluations_left(it: int, done_at: int | None, by_epoch: bool, expected: int) -> None:
    hook = EvalHook(interval=25 if not by_epoch else 3)
    hook.trainer = trainer(it, 100 if not by_epoch else 40, by_epoch)
    hook._done_at = done_at
    assert hook.evaluations_left() == expected


def test_progress_lines_when_no_terminal_shows_a_bar(caplog: pytest.LogCaptureFixture) -> None:
    log = progress_logger("evaluation", range(10))
    with caplog.at_level(logging.INFO, logger="detcore.engine.evaluator"):
        for done in range(1, 11):
            log(done)
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "evaluation 3/10 batches", "evaluation 6/10 batches", "evaluation 9/10 batches", "evaluation 10/10 batches"]
    assert progress_logger("evaluation", iter([])) is None  # no length, no lines


def test_ground_truth_next_to_predictions_at_a_readable_size_and_a_note_when_none_passes() -> None:
    image = torch.zeros(3, 40, 60)
    target = {"boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0]]), "labels": torch.tensor([1])}
    weak = {"boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0]]), "scores": torch.tensor([0.1]), "labels": torch.tensor([1])}
    drawn = draw_comparison(image, target, weak, ["cat"], score_thr=0.3)
    w = (drawn.shape[2] - GAP_PX) // 2
    assert w == 768 and drawn.dtype == torch.uint8  # each half drawn with a 512-pixel short side (40x60 -> 512x768)
    header = drawn.shape[1] - 512
    assert 16 <= header <= 48  # one line of readable text above the halves
    left, right = drawn[:, header:, :w], drawn[:, header:, w + GAP_PX:]
    cat = torch.tensor(class_color(1), dtype=torch.uint8).view(3, 1, 1)
    assert (left == cat).all(0).sum() > 500 and not (right == cat).all(0).any()  # the box in its class colour
    assert int(right.sum()) == 0  # the weak prediction is not drawn
    red_note = (drawn[0, :header, w + GAP_PX:] > 150) & (drawn[1, :header, w + GAP_PX:] < 80)
    assert red_note.any()  # "no prediction scores >= 0.3" in red
    strong = {**weak, "scores": torch.tensor([0.9])}
    drawn = draw_comparison(image, target, strong, ["cat"], score_thr=0.3)
    assert (drawn[:, header:, w + GAP_PX:] == cat).all(0).sum() > 500  # the same class, the same colour
    assert not ((drawn[0, :header, w + GAP_PX:] > 150) & (drawn[1, :header, w + GAP_PX:] < 80)).any()
