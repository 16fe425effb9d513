"""Sweep grids expand to one override set per combination; malformed grids are refused."""
from __future__ import annotations

import pytest

from launcher.errors import LauncherError
from launcher.sweep import combination_name, expand_grid, parse_grid


def test_expand_grid_every_combination_first_axis_slowest():
    axes = parse_grid(["optimizer.lr=0.01,0.02", "data.samples_per_gpu=2,4,8"])
    combos = expand_grid(axes)
    assert len(combos) == 6
    assert combos[0] == ("optimizer.lr=0.01", "data.samples_per_gpu=2")
    assert combos[-1] == ("optimizer.lr=0.02", "data.samples_per_gpu=8")
    assert combination_name("shapes", combos[0]) == "shapes-lr=0.01-samples_per_gpu=2"
    assert combination_name("s", ("+model.x=a/b c",)) == "s-x=a_b_c"


@pytest.mark.parametrize("grid,match", [
    ([], "at least one"),
    (["lr"], "must look like"),
    (["lr=1,,2"], "none empty"),
    (["lr=1", "lr=2"], "twice"),
    (["lr=1,1"], "repeats"),
])
def test_bad_grids(grid, match):
    with pytest.raises(LauncherError, match=match):
        parse_grid(grid)
