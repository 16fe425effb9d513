"""The training progress line: an ETA right from the first line, a line that fits a terminal, and a
console that shows no internal lines at INFO."""
from __future__ import annotations

import logging
from itertools import accumulate
from types import SimpleNamespace

import pytest

from detcore.engine import hooks as H
from detcore.engine.progress import Eta, estimate_eta, iteration_line, short_name, step_seconds
from detcore.tools.log_format import ConsoleFormatter

CONSOLE_PREFIX = len("09:51:19 ")


def ends_of(durations: list[float], start: float = 100.0) -> list[float]:
    return [start + t for t in accumulate(durations)]


def test_a_warm_up_heavy_start_gives_the_steady_eta_at_the_first_line() -> None:
    # the README's run: the first iterations of a process take many times a steady one
    durations = [30.0, 6.0, 2.0, 0.8] + [0.36] * 16
    ends = ends_of(durations)
    eta = estimate_eta(ends, iters_left=280)
    assert eta.seconds == pytest.approx(280 * 0.36, rel=0.02)
    naive = 280 * sum(durations) / len(durations)  # the window's mean: about six times too long
    assert naive > 5 * eta.seconds
    assert eta.text() == "0:01:41"


def test_a_short_first_window_still_leaves_the_warm_up_out() -> None:
    assert step_seconds(ends_of([20.0, 3.0, 1.0, 1.0, 1.0, 1.0])) == pytest.approx(1.0)  # skips 3 of 6
    assert step_seconds(ends_of([20.0, 1.0])) == pytest.approx(1.0)
    assert step_seconds(ends_of([20.0])) is None


def test_estimating_until_an_iteration_after_warm_up_and_nothing_left_is_zero() -> None:
    assert estimate_eta(ends_of([20.0]), iters_left=99).text() == "estimating"
    assert estimate_eta(ends_of([20.0]), iters_left=0).text() == "0:00:00"
    assert estimate_eta([], iters_left=0, evaluations_left=1, evaluation_seconds=42.0).text() == "0:00:42"


def test_evaluations_to_come_are_added_once_one_was_timed() -> None:
    ends = ends_of([10.0] + [1.0] * 19)
    assert estimate_eta(ends, 100, evaluations_left=2).text() == "0:01:40 + eval"
    assert estimate_eta(ends, 100, evaluations_left=2, evaluation_seconds=30.0).seconds == pytest.approx(160.0)
    assert Eta(None, True).text() == "estimating"


def test_the_step_time_follows_the_newest_iterations() -> None:
    ends = ends_of([5.0] * 5 + [1.0] * 400 + [2.0] * 200)  # the machine got busier
    assert step_seconds(ends) == pytest.approx(2.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_logger_hook_stops_its_clock_while_evaluating(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Ten 1-second iterations after a 20-second first one, a 50-second evaluation after iteration 5:
    the line at 10 says 90 iterations of 1 s plus the evaluations left at 50 s each."""
    clock = Clock()
    monkeypatch.setattr(H.time, "perf_counter", clock)
    evaluation = H.EvalHook(interval=5)
    logger_hook = H.LoggerHook(interval=10)
    trainer = SimpleNamespace(iter=0, max_iters=100, epoch=0, by_epoch=False, iters_per_epoch=100,
                              val_loader=object(), hooks=[logger_hook, evaluation], step_stats={},
                              optimizer=SimpleNamespace(param_groups=[{"lr": 0.02}]), memory_mb=lambda: 812.0,
                              metrics=SimpleNamespace(log_training=lambda values, epoch, step: None))
    logger_hook.trainer = evaluation.trainer = trainer
    with caplog.at_level(logging.INFO, logger="detcore.engine.hooks"):
        for it in range(1, 11):
            clock.now += 20.0 if it == 1 else 1.0
            trainer.iter = it
            trainer.step_stats = {"loss_classifier": 0.5, "loss_box_reg": 0.25, "loss": 0.75, "data_time": 0.01,
                                  "iter_time": 1.0, "batch_images": 4.0}
            logger_hook.after_step()
            if it == 5:  # EvalHook.after_step's bookkeeping, without a model
                clock.now += 50.0
                evaluation.last_seconds, evaluation._done_at = 50.0, it
                evaluation.total_seconds += 50.0
    line = caplog.records[-1].getMessage()
    assert line.startswith("iter 10/100 ep 0 lr 0.02 loss 0.750 cls 0.500 box 0.250 ")
    # 90 iterations at 1 s + evaluations at 10, 15, ..., 100 (19) at 50 s
    assert line.endswith(f"eta {Eta(90 + 19 * 50.0, False).text()}")


def test_a_mask_rcnn_line_fits_under_120_characters_with_the_key_terms() -> None:
    terms = {"loss_classifier": 0.3876, "loss_box_reg": 0.2824, "loss_mask": 0.3974, "loss_objectness": 0.0805,
             "loss_rpn_box_reg": 0.0100}
    line = iteration_line(60, 300, 0, 0.02, 1.158, terms, 0.982, 0.04, 812.0, "0:04:37")
    assert line == ("iter 60/300 ep 0 lr 0.02 loss 1.158 cls 0.388 box 0.282 mask 0.397 0.98s/it data 0.04s "
                    "mem 812M eta 0:04:37")
    assert CONSOLE_PREFIX + len(line) < 120


@pytest.mark.parametrize("it, max_iters, lr, eta", [
    (12000, 90000, 0.00416, "11:05:38"), (1, 2, 1.6e-5, "estimating"),
    (1234567, 9000000, 1.23456e-7, "123 days, 3:04:05 + eval"),
])
def test_long_numbers_drop_low_priority_terms_never_the_rest(it: int, max_iters: int, lr: float, eta: str) -> None:
    terms = {"loss_rpn_cls": 0.08, "loss_rpn_bbox": 0.01, "loss_cls": 12.3456, "acc": 97.5, "loss_bbox": 0.28,
             "loss_mask": 0.39, "loss_extra_long_custom_term_name": 1.0}
    line = iteration_line(it, max_iters, 7, lr, 14.123, terms, 123.4, 56.7, 81234.0, eta)
    assert CONSOLE_PREFIX + len(line) < 120, line
    assert line.startswith(f"iter {it}/{max_iters} ep 7 lr {lr:.3g} loss 14.123") and line.endswith(f"eta {eta}")
    assert "s/it data 56.7s mem 79.3G" in line
    shown = line.split(" loss 14.123")[1].split(" 123.4s/it")[0].split()[::2]
    assert shown == ["cls", "box", "mask", "rpn_cls", "rpn_box", "acc", "extra_long_custom_term_name"][:len(shown)]


def test_a_cascade_line_keeps_each_stage_apart_and_fits() -> None:
    terms = {"loss_objectness": 0.05, "loss_rpn_box_reg": 0.01}
    for k, w in enumerate((1.0, 0.5, 0.25)):
        terms.update({f"s{k}.loss_classifier": 0.4 * w, f"s{k}.loss_box_reg": 0.3 * w})
    terms["loss_mask"] = 0.35
    line = iteration_line(60, 300, 0, 0.02, 1.8, terms, 0.5, 0.01, 900.0, "0:02:00")
    assert CONSOLE_PREFIX + len(line) < 120
    shown = line.split(" loss 1.800 ")[1].split(" 0.50s/it")[0].split()
    assert shown[::2] == ["s0.cls", "s1.cls", "s2.cls", "s0.box", "s1.box", "s2.box", "mask"][:len(shown) // 2]
    assert shown[1::2][:2] == ["0.400", "0.200"]  # each stage's classification first, stage by stage


def test_loss_names_are_shortened_for_torchvision_and_mmdetection_detectors() -> None:
    assert [short_name(n) for n in ("loss_classifier", "loss_cls", "classification", "loss_box_reg", "loss_bbox",
                                    "bbox_regression", "bbox_ctrness", "loss_objectness", "loss_rpn_bbox",
                                    "loss_custom", "acc", "s2.loss_box_reg", "s1.loss_cls", "sx.loss_cls")] == [
        "cls", "cls", "cls", "box", "box", "box", "ctr", "rpn_cls", "rpn_box", "custom", "acc", "s2.box", "s1.cls",
        "sx.loss_cls"]


def test_the_console_shows_info_plainly_and_says_where_warnings_come_from() -> None:
    fmt = ConsoleFormatter()
    info = logging.LogRecord("detcore.engine.hooks", logging.INFO, __file__, 1, "iter 1/2", None, None)
    warning = logging.LogRecord("detcore.engine.trainer", logging.WARNING, __file__, 1, "careful", None, None)
    assert fmt.format(info)[8:] == " iter 1/2" and fmt.format(info)[2] == ":"
    assert fmt.format(warning)[8:] == " WARNING detcore.engine.trainer: careful"
