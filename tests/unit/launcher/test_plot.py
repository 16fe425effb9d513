"""``launcher plot`` of a 16-point sweep: every curve told apart, the legend off the data, single
evaluations as marked, labelled points."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from launcher.views.plot import curve_styles, draw_figure, plot_curves

LABELS = [f"lr={lr}, wd={wd}" for lr in (0.005, 0.01, 0.02, 0.04) for wd in (0.0, 0.0001, 0.0005, 0.001)]


def sweep_curves(points: int) -> list[tuple[list[int], list[float]]]:
    return [([20 * (k + 1) for k in range(points)], [1.0 / (1 + i) + math.exp(-k / 5) for k in range(points)])
            for i in range(len(LABELS))]


def rendered(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


@pytest.mark.parametrize("n", [16, 40])
def test_every_curve_has_its_own_colour_and_line_style(n: int) -> None:
    styles = curve_styles(n)
    assert len({(s.color, s.linestyle) for s in styles}) == n
    assert len({(s.color, s.marker) for s in curve_styles(80)}) == 80
    assert len({s.color for s in styles[:10]}) == 10 and {s.linestyle for s in styles[:10]} == {"-"}


def test_a_16_point_sweep_is_told_apart_and_its_legend_sits_outside_the_data() -> None:
    fig = draw_figure(LABELS, sweep_curves(15), "loss")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 16
    assert len({(line.get_color(), line.get_linestyle()) for line in lines}) == 16
    renderer = rendered(fig)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == LABELS
    box, data = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert not box.overlaps(data)  # nothing of the legend covers the plotted area
    assert box.x0 >= data.x1 and box.x1 <= fig.bbox.x1 and box.y0 >= fig.bbox.y0  # right of it, not clipped


def test_a_long_legend_gets_more_columns_and_a_taller_figure() -> None:
    labels = [f"run {i} with a rather long name" for i in range(70)]
    curves = [([1, 2, 3], [i, i + 1.0, i + 2.0]) for i in range(70)]
    fig = draw_figure(labels, curves, "loss")
    renderer = rendered(fig)
    box, data = fig.legends[0].get_window_extent(renderer), fig.axes[0].get_window_extent(renderer)
    assert not box.overlaps(data) and box.x1 <= fig.bbox.x1 and box.y0 >= fig.bbox.y0 and box.y1 <= fig.bbox.y1
    assert data.width > 400  # the data keeps a usable width


def test_one_evaluation_per_run_is_a_dot_plot_with_the_values_written() -> None:
    curves = [([300], [0.40 + 0.01 * i]) for i in range(16)]
    fig = draw_figure(LABELS, curves, "bbox_AP")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == [f"{0.40 + 0.01 * i:#.3g}" for i in range(16)]
    assert [t.get_text() for t in ax.get_yticklabels()] == LABELS
    markers = [(line.get_color(), line.get_marker()) for line in ax.get_lines()]
    assert len(markers) == 16 and len(set(markers)) == 16 and all(m not in ("None", "", None) for _, m in markers)
    assert "at iteration 300" in ax.get_title()


def test_a_single_point_among_curves_is_marked_and_written() -> None:
    curves = sweep_curves(10)
    curves[3] = ([200], [0.7321])
    fig = draw_figure(LABELS, curves, "loss")
    ax = fig.axes[0]
    lone = [line for line in ax.get_lines() if len(line.get_xdata()) == 1]
    assert len(lone) == 1 and lone[0].get_marker() not in ("None", "", None) and lone[0].get_linestyle() == "None"
    assert [t.get_text() for t in ax.texts] == ["0.732"]


def test_plot_curves_writes_the_png_of_a_sweep(tmp_path: Path) -> None:
    dirs = []
    for i, (xs, ys) in enumerate(sweep_curves(15)):
        d = tmp_path / f"w{i}"
        d.mkdir()
        records = [{"mode": "train", "iter": x, "loss": y} for x, y in zip(xs, ys)]
        records.append({"mode": "val", "iter": xs[-1], "bbox_AP": 0.3 + 0.01 * i})
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        dirs.append(str(d))
    assert plot_curves(LABELS, dirs, "loss", tmp_path / "loss.png") == [15] * 16
    assert plot_curves(LABELS, dirs, "bbox_AP", tmp_path / "ap.png") == [1] * 16
    for name in ("loss.png", "ap.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.width >= 600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
