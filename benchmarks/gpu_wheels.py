"""``python -m benchmarks.gpu_wheels [--dest .whl] [--python-version 3.12]``: wheels for a bare GPU machine.

A GPU machine's image often has PyTorch, torchvision and the common packages but not
pycocotools, and may reach no package index. This downloads, here (where pip reaches PyPI),
the wheels of the packages the GPU check needs beyond such an image, at the versions installed
here (what CI tests), built for that machine's Python (x86-64 Linux, manylinux). Bring the
folder along and run ``bash benchmarks/gpu_node.sh`` there: it installs them into a temporary
folder on ``PYTHONPATH`` (nothing is installed into the machine's Python) and runs the check.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks.harness import REPO_ROOT

# beyond a CUDA image with PyTorch (the GPU check's ``missing_modules`` names any other gap);
# each needs only numpy, which such an image has
PACKAGES = ("pycocotools",)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
DEFAULT_DEST = REPO_ROOT / ".whl"


def pinned(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """``NAME==VERSION`` of each package as installed here; NAME alone where it is not installed."""
    out = []
    for name in packages:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


def download_command(dest: Path, python_version: str, requirements: list[str]) -> list[str]:
    """``pip download`` of binary wheels (no dependencies) of ``requirements`` for CPython
    ``python_version`` on x86-64 manylinux into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", "--dest", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    return cmd + requirements


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_wheels", description=__doc__.splitlines()[0])
    p.add_argument("--dest", default=str(DEFAULT_DEST), help="where the wheels go (default .whl, git-ignored)")
    p.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                   help="the GPU machine's Python, e.g. 3.12 (default: this one's)")
    args = p.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = download_command(dest, args.python_version, pinned())
    print(" ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        print("gpu_wheels: pip download failed (see above); it needs PyPI", file=sys.stderr)
        return 1
    wheels = sorted(dest.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2 ** 20
    print(f"{len(wheels)} wheel(s), {size:.1f} MiB, in {dest}; on the GPU machine: bash benchmarks/gpu_node.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
