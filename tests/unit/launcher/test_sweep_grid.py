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


def test_a_grid_knows_its_size_without_expanding_it():
    from launcher.sweep import SWEEP_LIMIT, grid_shape, grid_size, iter_grid, size_error

    axes = parse_grid([f"a={','.join(map(str, range(1000)))}", f"b={','.join(map(str, range(1000)))}",
                       f"c={','.join(map(str, range(1000)))}"])
    assert grid_size(axes) == 10 ** 9 and grid_shape(axes) == "1000 a x 1000 b x 1000 c"
    assert next(iter_grid(axes)) == ("a=0", "b=0", "c=0")
    assert size_error(SWEEP_LIMIT, "x") is None
    assert size_error(10 ** 9, "1000 a x 1000 b x 1000 c") == (
        "the grid makes 1,000,000,000 experiments (1000 a x 1000 b x 1000 c), more than 256 at once; pass --yes "
        "to submit them all, or --dry-run to see the first ones")


def _sweep(tmp_path, *argv):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "LAUNCHER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(root)}
    env.pop("LAUNCHER_FAKE_GPUS", None)
    shapes = str(root / "configs/shapes/faster_rcnn_tiny_shapes.yaml")
    return subprocess.run([sys.executable, "-m", "launcher", "sweep", shapes, *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


HUNDRED_LR = "optimizer.lr=" + ",".join(f"0.{i:03d}" for i in range(1, 101))
HUNDRED_ITERS = "runner.max_iters=" + ",".join(str(i) for i in range(1, 101))


def test_a_sweep_past_the_limit_is_refused_in_one_line_and_leaves_nothing(tmp_path):
    proc = _sweep(tmp_path, "--grid", HUNDRED_LR, "--grid", HUNDRED_ITERS, "--detach")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "launcher sweep: error: the grid makes 10,000 experiments (100 optimizer.lr x 100 runner.max_iters), more "
        "than 256 at once; pass --yes to submit them all, or --dry-run to see the first ones"]
    assert not (tmp_path / "work_dirs").exists() and not (tmp_path / "home" / "jobs").exists()


def test_the_dry_run_of_a_big_grid_states_its_size_and_renders_the_first_points(tmp_path):
    proc = _sweep(tmp_path, "--grid", HUNDRED_LR, "--grid", HUNDRED_ITERS, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[0] == "launcher: sweep of 10,000 experiment(s) (100 optimizer.lr x 100 " \
                                          "runner.max_iters)"
    assert "the first 3 of 10,000 experiments are shown; submitting more than 256 needs --yes" in proc.stderr
    commands = [line for line in proc.stdout.splitlines() if line.startswith("  ") and "launcher.runtime.shim" in line]
    assert len(commands) == 3 and "optimizer.lr=0.001 runner.max_iters=3" in commands[2]
    assert not (tmp_path / "work_dirs").exists() and not (tmp_path / "home" / "jobs").exists()
