"""A local-only install (no `ray`, no `submitit`): the local backend and the experiment manager work and never
import them; asking for the Ray or Slurm backend is one line naming the extra to install."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SHAPES = str(ROOT / "configs/shapes/faster_rcnn_tiny_shapes.yaml")

# Run the launcher as if ray and submitit were not installed: a None entry in sys.modules makes `import ray`
# fail and importlib.util.find_spec("ray") return None, as an environment without the package does. At exit
# the script names any of them that something still managed to import.
WITHOUT_EXTRAS = """
import sys
BLOCKED = ("ray", "submitit")
for name in BLOCKED:
    sys.modules[name] = None
import atexit
atexit.register(lambda: [print(f"IMPORTED {m}", file=sys.stderr) for m in list(sys.modules)
                         if m.split(".")[0] in BLOCKED and sys.modules[m] is not None])
sys.argv = ["launcher", *sys.argv[1:]]
from launcher.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _launcher(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAUNCHER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("LAUNCHER_FAKE_GPUS", None)
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [["--help"], ["submit", "--help"], ["list"],
                                  ["submit", SHAPES, "--dry-run"], ["submit", SHAPES, "--dry-run", "--json"]],
                         ids=lambda a: " ".join(a[:1] + a[2:]))
def test_local_use_needs_neither_ray_nor_submitit(tmp_path, argv):
    proc = _launcher(tmp_path, *argv)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED" not in proc.stderr, proc.stderr


def test_submit_help_still_lists_every_backends_options(tmp_path):
    proc = _launcher(tmp_path, "submit", "--help")
    assert "slurm backend options" in proc.stdout and "ray backend options" in proc.stdout, proc.stdout


@pytest.mark.parametrize("command", ["submit", "sweep"])
@pytest.mark.parametrize("backend,package", [("ray", "ray"), ("slurm", "submitit")])
def test_missing_backend_extra_is_one_line_naming_it(tmp_path, command, backend, package):
    grid = ["--grid", "optimizer.lr=0.01,0.02"] if command == "sweep" else []
    proc = _launcher(tmp_path, command, SHAPES, "--backend", backend, *grid)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"the {backend} backend needs {package}" in lines[0]
    assert f"pip install 'detlaunch[{backend}]'" in lines[0]
    assert not (tmp_path / "work_dirs").exists()
    jobs = tmp_path / "home" / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir())
