"""Pictures people can read: one colour per class, labels that neither overlap nor clip nor vanish
on their fill, small images drawn scaled up."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from detcore.apis.label_layout import place_labels
from detcore.apis.palette import BLACK, OUTLINE, WHITE, class_color, contrast_ratio, text_color_on
from detcore.apis.visualize import draw_ground_truth, draw_result, drawing_scale


def test_twenty_classes_get_well_separated_colours_and_eighty_get_distinct_ones() -> None:
    first = [class_color(c) for c in range(1, 21)]
    assert min(math.dist(a, b) for a, b in itertools.combinations(first, 2)) >= 40
    many = [class_color(c) for c in range(1, 81)]
    assert len(set(many)) == 80 and min(math.dist(a, b) for a, b in itertools.combinations(many, 2)) >= 20
    assert [class_color(c) for c in range(1, 81)] == many  # the same class, the same colour, every time


def test_label_text_contrasts_with_its_fill() -> None:
    for label in range(1, 500):
        fill = class_color(label)
        assert text_color_on(fill) in (BLACK, WHITE)
        assert contrast_ratio(text_color_on(fill), fill) >= 4.5, label  # WCAG AA for normal text
    assert contrast_ratio(BLACK, WHITE) == pytest.approx(21.0)


def _inside_and_apart(rects: list, width: int, height: int) -> None:
    for x0, y0, x1, y1 in rects:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    for a, b in itertools.combinations(rects, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_labels_of_boxes_on_top_of_each_other_are_stacked_not_overlapped() -> None:
    boxes = [[200, 200, 300, 300]] * 6
    spots = place_labels(boxes, [(90, 18)] * 6, 512, 512)
    assert None not in spots
    _inside_and_apart(spots, 512, 512)
    for x0, y0, x1, y1 in spots:  # each next to the box: within 4 label heights above or below, a label's width aside
        assert 200 - 4 * 19 <= y0 and y1 <= 300 + 4 * 19 and 200 - 90 <= x0 and x1 <= 300 + 90


def test_labels_at_the_image_edges_stay_inside_the_image() -> None:
    boxes = [[0, 0, 50, 40], [480, 0, 512, 30], [0, 490, 40, 512], [470, 480, 512, 512]]
    spots = place_labels(boxes, [(120, 18)] * 4, 512, 512)
    assert None not in spots
    _inside_and_apart(spots, 512, 512)


def test_a_crowded_random_scene_never_overlaps_or_clips_and_labels_most_boxes() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 450, (40, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 60, (40, 2))], axis=1).tolist()
    sizes = [(int(w), 18) for w in rng.integers(50, 130, 40)]
    spots = place_labels(boxes, sizes, 512, 512)
    placed = [s for s in spots if s is not None]
    _inside_and_apart(placed, 512, 512)
    assert len(placed) >= 36
    for spot, (w, h) in zip(spots, sizes):
        assert spot is None or (spot[2] - spot[0], spot[3] - spot[1]) == (w, h)


def test_a_label_larger_than_the_image_is_left_out() -> None:
    assert place_labels([[0, 0, 10, 10]], [(300, 18)], 100, 100) == [None]


@pytest.mark.parametrize("size, kwargs, expected", [
    ((128, 128), {}, 4.0),                                  # the demo's images: drawn at 512x512
    ((80, 120), {}, 6.4),
    ((800, 1333), {}, 1.0),                                 # large enough: left alone
    ((100, 2000), {}, 2.048),                               # the long side stops at 4096
    ((128, 128), {"min_side": 0}, 1.0),                     # the input's own size
    ((800, 1333), {"max_side": 1024, "shrink": True}, 1024 / 1333),  # TensorBoard panels shrink large images
])
def test_drawing_scale(size: tuple[int, int], kwargs: dict, expected: float) -> None:
    assert drawing_scale(*size, **kwargs) == pytest.approx(expected)


def test_a_small_image_is_drawn_at_a_readable_size_with_the_class_colour_and_a_readable_label() -> None:
    green = class_color(2)
    image = torch.tensor(green, dtype=torch.uint8).view(3, 1, 1).expand(3, 64, 64).clone()  # green on green
    result = {"boxes": torch.tensor([[8.0, 2.0, 40.0, 30.0]]), "scores": torch.tensor([0.9]),
              "labels": torch.tensor([2])}
    drawn = draw_result(image, result, ["ellipse", "ellipse"], score_thr=0.3)
    assert drawn.shape == (3, 512, 512)
    pixels = drawn.permute(1, 2, 0).reshape(-1, 3)
    colours = {tuple(p) for p in pixels.unique(dim=0).tolist()}
    assert OUTLINE in colours  # the box and the label box are outlined: they show on their own colour
    text = text_color_on(green)
    assert sum(1 for p in pixels.tolist() if tuple(p) == text) > 30  # the label's text is there, in black


def test_the_same_class_has_the_same_colour_in_every_image_and_panel() -> None:
    image = torch.zeros(3, 100, 100)
    a = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0], [50.0, 50.0, 90.0, 90.0]]),
         "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([3, 7])}
    b = {"boxes": torch.tensor([[60.0, 10.0, 90.0, 40.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([7])}
    for drawing in (draw_result(image, a), draw_result(image, b), draw_ground_truth(image, b)):
        hwc = drawing.permute(1, 2, 0)
        assert (hwc == torch.tensor(class_color(7), dtype=torch.uint8)).all(-1).sum() > 200


def test_masks_are_blended_with_the_class_colour() -> None:
    image = torch.zeros(3, 64, 64)
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 20:40, 20:40] = True
    target = {"boxes": torch.tensor([[20.0, 20.0, 40.0, 40.0]]), "labels": torch.tensor([1]), "masks": mask}
    drawn = draw_ground_truth(image, target, ["cat"], min_side=0).permute(1, 2, 0).int()
    red = torch.tensor(class_color(1))
    assert torch.allclose(drawn[30, 30].float(), red * 0.5, atol=2)  # half the class colour over black
    assert drawn[5, 60].sum() == 0  # outside the mask, box and label: untouched
