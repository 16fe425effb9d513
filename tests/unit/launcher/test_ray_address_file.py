"""``--address auto`` reads Ray's address file only when no one else could have written it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher.backends.ray_train.driver import current_cluster
from launcher.backends.ray_train.plan import ray_address_file
from launcher.errors import LauncherError

OTHER_UID = 65534  # nobody


def address_file(root: Path, text: str = "127.0.0.1:6399", folder_mode: int = 0o755, file_mode: int = 0o644) -> Path:
    folder = root / "ray"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, folder_mode)
    path = folder / "ray_current_cluster"
    path.write_text(text)
    os.chmod(path, file_mode)
    return path


def test_the_address_file_follows_rays_temp_dir_rule():
    assert ray_address_file({}) == "/tmp/ray/ray_current_cluster"
    assert ray_address_file({"TMPDIR": "/scratch"}) == "/scratch/ray/ray_current_cluster"
    assert ray_address_file({"TMPDIR": "/scratch", "RAY_TMPDIR": "/r"}) == "/r/ray/ray_current_cluster"


def test_an_own_file_in_a_private_or_sticky_folder_is_read(tmp_path):
    env = {"RAY_TMPDIR": str(tmp_path)}
    assert current_cluster(env) is None  # no file: nothing found (the caller says to pass --address)
    address_file(tmp_path)
    assert current_cluster(env) == "127.0.0.1:6399"
    address_file(tmp_path, folder_mode=0o1777)  # shared, but no one can replace another's file
    assert current_cluster(env) == "127.0.0.1:6399"


@pytest.mark.parametrize("case", ["foreign file", "group-writable file", "world-writable folder", "foreign folder",
                                  "symlink"])
def test_a_file_someone_else_could_write_is_refused(tmp_path, case):
    if os.geteuid() != 0 and case.startswith("foreign"):
        pytest.fail("this test chowns files to another user: run it as root (the CI box does)")
    env = {"RAY_TMPDIR": str(tmp_path)}
    path = address_file(tmp_path)
    if case == "foreign file":
        os.chown(path, OTHER_UID, -1)
    elif case == "group-writable file":
        os.chmod(path, 0o664)
    elif case == "world-writable folder":
        os.chmod(path.parent, 0o777)  # what Ray makes of /tmp/ray: anyone can swap the file
    elif case == "foreign folder":
        os.chown(path.parent, OTHER_UID, -1)
    else:
        real = tmp_path / "elsewhere"
        real.write_text("10.9.9.9:6379")
        path.unlink()
        path.symlink_to(real)
    with pytest.raises(LauncherError) as err:
        current_cluster(env)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"--address auto: Ray's address file {path} ")
    assert "pass --address HOST:PORT" in line and "RAY_ADDRESS" in line
