"""The Slurm test cluster's folder (cluster/slurm/dir_check.sh): the caller's own, or refused."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "cluster" / "slurm" / "dir_check.sh"


def make(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f'source "{CHECK}"; make_private_dir "$1"', "start.sh", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_a_new_folder_is_made_the_callers_and_0755(tmp_path):
    proc = make(tmp_path / "slurm")
    assert proc.returncode == 0, proc.stderr
    st = (tmp_path / "slurm").stat()
    assert st.st_uid == os.geteuid() and oct(st.st_mode & 0o7777) == "0o755"
    assert make(tmp_path / "slurm").returncode == 0  # an existing own folder is fine (restart)


@pytest.mark.parametrize("case", ["another owner", "world-writable", "symlink", "parent writable by all"])
def test_an_unsafe_folder_is_refused_in_one_line(tmp_path, case):
    if case == "another owner" and os.geteuid() != 0:
        pytest.fail("chowning to another user needs root (the CI box runs as root)")
    target = tmp_path / "slurm"
    if case == "symlink":
        (tmp_path / "real").mkdir()
        target.symlink_to(tmp_path / "real")
    elif case == "parent writable by all":
        parent = tmp_path / "open"
        parent.mkdir()
        os.chmod(parent, 0o777)
        target = parent / "slurm"
    else:
        target.mkdir(mode=0o755)
        if case == "another owner":
            os.chown(target, 65534, -1)
        else:
            os.chmod(target, 0o777)
    proc = make(target)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"start.sh: refusing cluster folder {target}: it ") and "--dir" in lines[0]
