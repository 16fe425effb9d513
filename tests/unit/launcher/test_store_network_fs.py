"""The store on a network filesystem: the mount table read right, a rollback journal instead of WAL, and
two writers on two "hosts" at once losing no row and corrupting nothing."""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import launcher.store.fs as store_fs
from launcher.errors import LauncherError
from launcher.spec import JobSpec, JobState, Resources
from launcher.store import ExperimentStore, experiment_from_spec
from launcher.store.fs import (StoreFilesystem, is_network_type, local_locks, mount_of, parse_mountinfo,
                               parse_mounts, store_filesystem)

ROOT = Path(__file__).resolve().parents[3]

# Recorded from Linux hosts (a cluster login node, a laptop), trimmed to the fields that matter.
MOUNTINFO = """\
22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
27 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
95 27 0:45 / /home rw,relatime shared:50 - nfs4 fs01:/export/home rw,vers=4.2,rsize=1048576,hard,proto=tcp
120 95 0:52 / /home/me/My\\040Data rw,nosuid,nodev,relatime shared:60 master:3 - fuse.sshfs me@box:/data rw,user_id=1000
130 27 0:60 / /lustre/scratch rw,flock - lustre 10.0.0.1@o2ib:/scratch rw,flock
140 27 0:61 / /gpfs/fs1 rw,relatime - gpfs fs1 rw
150 27 8:17 / /mnt/usb rw,relatime - fuseblk /dev/sdb1 rw,user_id=0
160 95 0:70 / /home/me/back\\134slash\\011tab rw - tmpfs tmpfs rw
170 27 0:71 / /scratch rw - ext4 /dev/vdb rw
171 27 0:72 / /scratch rw - nfs 10.0.0.2:/scratch rw,vers=3
not a mountinfo line
"""


def test_mountinfo_parser_reads_types_and_escaped_mount_points():
    mounts = parse_mountinfo(MOUNTINFO)
    points = {m.point: m for m in mounts}
    assert points["/home/me/My Data"].fstype == "fuse.sshfs"
    assert points["/home/me/back\\slash\ttab"].fstype == "tmpfs"
    assert {"nosuid", "user_id=1000"} <= points["/home/me/My Data"].options  # the mount's and the filesystem's
    assert "vers=4.2" in points["/home"].options
    assert len(mounts) == 10  # the line that does not parse is skipped

    def fstype(path: str) -> str:
        return mount_of(path, mounts).fstype

    assert fstype("/home/me/.local/share/detlaunch") == "nfs4"
    assert fstype("/home/me/My Data/detlaunch") == "fuse.sshfs"
    assert fstype("/home/me/My Data") == "fuse.sshfs"
    assert fstype("/home/me/back\\slash\ttab/x") == "tmpfs"
    assert fstype("/home2/me") == "ext4"  # /home is not a prefix of /home2
    assert fstype("/lustre/scratch/me/runs") == "lustre"
    assert fstype("/gpfs/fs1/me") == "gpfs"
    assert fstype("/scratch/me") == "nfs"  # mounted over the ext4 one: the last mount wins
    assert fstype("/tmp/x") == "ext4"


def test_proc_mounts_parser():
    mounts = parse_mounts("fs01:/export/home /home nfs4 rw,vers=4.2 0 0\n/dev/vda1 / ext4 rw 0 0\n"
                          "me@box:/d /mnt/my\\040box fuse.sshfs rw 0 0\n")
    assert mount_of("/home/me", mounts).fstype == "nfs4"
    assert mount_of("/mnt/my box/d", mounts).fstype == "fuse.sshfs"


@pytest.mark.parametrize("fstype, network", [
    ("nfs", True), ("nfs4", True), ("lustre", True), ("gpfs", True), ("cifs", True), ("smb3", True),
    ("beegfs", True), ("ceph", True), ("fuse.sshfs", True), ("fuse", True), ("fuse.glusterfs", True),
    ("ext4", False), ("xfs", False), ("btrfs", False), ("zfs", False), ("tmpfs", False), ("overlay", False),
    ("fuseblk", False), ("", False)])
def test_network_types(fstype, network):
    assert is_network_type(fstype) is network


def fake_mount_table(path: Path, fstype: str, under: Path) -> Path:
    """A mountinfo file in which ``under`` is a mount of ``fstype`` (the rest of the machine ext4)."""
    escaped = str(under).replace("\\", "\\134").replace(" ", "\\040")
    path.write_text(f"27 1 252:1 / / rw - ext4 /dev/vda1 rw\n"
                    f"95 27 0:45 / {escaped} rw,relatime - {fstype} srv:/export rw,vers=4.2\n")
    return path


def test_the_override_and_the_mount_table_decide(tmp_path, monkeypatch):
    monkeypatch.delenv(store_fs.STORE_FS_ENV, raising=False)
    monkeypatch.setattr(store_fs, "MOUNTINFO", fake_mount_table(tmp_path / "mountinfo", "nfs4", tmp_path / "n fs"))
    assert store_filesystem(tmp_path / "n fs" / "home") == \
        StoreFilesystem(True, f"{tmp_path / 'n fs' / 'home'} is on nfs4")
    assert store_filesystem(tmp_path / "local").network is False
    monkeypatch.setenv(store_fs.STORE_FS_ENV, "local")
    assert store_filesystem(tmp_path / "n fs" / "home") == StoreFilesystem(False, "LAUNCHER_STORE_FS=local")
    monkeypatch.setenv(store_fs.STORE_FS_ENV, "Network")
    assert store_filesystem(tmp_path / "local").network is True
    monkeypatch.setenv(store_fs.STORE_FS_ENV, "nfs")
    with pytest.raises(LauncherError, match="LAUNCHER_STORE_FS='nfs' is not .* expected network, local or auto"):
        store_filesystem(tmp_path)


def test_a_mount_whose_locks_stay_on_one_host_is_named(tmp_path, monkeypatch, caplog):
    mounts = parse_mountinfo("95 27 0:45 / /home rw - nfs fs01:/home rw,vers=3,nolock,local_lock=all\n"
                             "96 27 0:46 / /lus rw - lustre x@o2ib:/l rw,localflock\n"
                             "97 27 0:47 / /ok rw - nfs4 fs01:/ok rw,vers=4.2,local_lock=none\n")
    assert [local_locks(m) for m in mounts] == ["local_lock=all", "localflock", ""]
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"27 1 252:1 / / rw - ext4 /dev/vda1 rw\n"
                         f"95 27 0:45 / {tmp_path} rw - nfs srv:/x rw,vers=3,nolock\n")
    monkeypatch.setattr(store_fs, "MOUNTINFO", mountinfo)
    monkeypatch.delenv(store_fs.STORE_FS_ENV, raising=False)
    store = ExperimentStore(tmp_path / "home")
    store.insert(experiment_from_spec(spec(1), JobState.PENDING))
    assert "mounted with nolock: file locks do not reach other hosts" in caplog.text
    store.close()


def spec(i: int) -> JobSpec:
    return JobSpec(id=f"{i:08x}", name=f"job{i}", config="/c.yaml", work_dir=f"/w/{i}", cwd="/",
                   resources=Resources(nproc=1))


def journal_mode(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()


def test_a_wal_store_moves_to_a_rollback_journal_with_every_row(tmp_path, monkeypatch, caplog):
    home = tmp_path / "home"
    monkeypatch.setenv(store_fs.STORE_FS_ENV, "local")
    local = ExperimentStore(home)
    for i in range(1, 21):
        local.insert(experiment_from_spec(spec(i), JobState.PENDING))
    local.conn.execute("PRAGMA wal_autocheckpoint=0")  # the newest rows stay in the WAL
    for i in range(21, 41):
        local.insert(experiment_from_spec(spec(i), JobState.PENDING))
    assert journal_mode(home / "experiments.db") == "wal"

    monkeypatch.setenv(store_fs.STORE_FS_ENV, "network")
    caplog.set_level(logging.INFO, logger="launcher.store.fs")
    held = ExperimentStore(home)  # the local one still holds it open in WAL: it cannot switch yet
    assert len(held.list()) == 40
    assert "stays in WAL mode" in caplog.text
    held.close()
    local.close()

    store = ExperimentStore(home)
    assert [e.id for e in store.list()] == [f"{i:08x}" for i in range(1, 41)]
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not (home / "experiments.db-wal").exists() and not (home / "experiments.db-shm").exists()
    assert "switched the store from WAL to a rollback journal (LAUNCHER_STORE_FS=network)" in caplog.text
    store.close()


WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import launcher.store.fs as store_fs
    from launcher.spec import JobSpec, JobState, JobStatus, Resources
    from launcher.store import ExperimentStore, experiment_from_spec

    store_fs.MOUNTINFO = Path(sys.argv[1])  # the faked mount table: the home is on nfs4
    home, rows, go = Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    host = int(os.environ["HOSTNAME"].removeprefix("login"))
    store = ExperimentStore(home)
    store.conn
    print("network" if store.on_network else "local", flush=True)
    while not go.exists():
        time.sleep(0.005)
    for i in range(rows):
        exp_id = f"{host:02x}{i:06x}"
        spec = JobSpec(id=exp_id, name=f"h{host}-{i}", config="/c.yaml", work_dir=f"/w/{exp_id}", cwd="/",
                       resources=Resources(nproc=1))
        store.insert(experiment_from_spec(spec, JobState.PENDING))
        store.update_tags(exp_id, add=[os.environ["HOSTNAME"], "mine"])
        store.record_status(exp_id, JobStatus(state=JobState.RUNNING), run_id=spec.run_id)
        store.record_metrics(exp_id, last_iter=i, loss=1.0 / (i + 1), ap=None, metrics={"iter": i})
        if i % 3 == 0:
            store.record_status(exp_id, JobStatus(state=JobState.SUCCEEDED, exit_code=0), run_id=spec.run_id)
    store.close()
""")


def test_two_hosts_writing_a_store_on_a_network_filesystem_lose_nothing(tmp_path, monkeypatch):
    shared = tmp_path / "shared home"
    home = shared / "detlaunch"
    mountinfo = fake_mount_table(tmp_path / "mountinfo", "nfs4", shared)
    go, rows = tmp_path / "go", 80
    monkeypatch.delenv(store_fs.STORE_FS_ENV, raising=False)
    writers = []
    for host in (1, 2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HOSTNAME": f"login{host}"}
        env.pop(store_fs.STORE_FS_ENV, None)
        writers.append(subprocess.Popen([sys.executable, "-c", WRITER, str(mountinfo), str(home), str(rows), str(go)],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    assert [w.stdout.readline().strip() for w in writers] == ["network", "network"]
    go.touch()  # both have the store open: now both write at once
    for w in writers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err

    db = home / "experiments.db"
    assert journal_mode(db) == "delete"
    assert not (home / "experiments.db-wal").exists() and not (home / "experiments.db-shm").exists()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    got = {r[0]: r[1:] for r in conn.execute("SELECT id, tags, last_iter, state FROM experiments")}
    conn.close()
    want = {f"{h:02x}{i:06x}": (json.dumps([f"login{h}", "mine"]), i,
                                 "succeeded" if i % 3 == 0 else "running") for h in (1, 2) for i in range(rows)}
    assert got == want
    assert sorted(p.stem for p in (home / "records").glob("*.json")) == sorted(want)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAUNCHER_HOME": str(home), store_fs.STORE_FS_ENV: "network"}
    check = subprocess.run([sys.executable, "-m", "launcher", "store", "check"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert f"ok (SQLite's integrity_check), {2 * rows} experiment(s); kept for a network filesystem" in check.stdout


def test_a_new_store_on_a_network_filesystem_never_uses_wal(tmp_path, monkeypatch):
    monkeypatch.setattr(store_fs, "MOUNTINFO", fake_mount_table(tmp_path / "mountinfo", "lustre", tmp_path))
    monkeypatch.delenv(store_fs.STORE_FS_ENV, raising=False)
    store = ExperimentStore(tmp_path / "home")
    store.insert(experiment_from_spec(spec(1), JobState.PENDING))
    assert store.on_network
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert (tmp_path / "home" / "experiments.db.write-lock").exists()
    store.close()


def test_a_filesystem_that_cannot_lock_is_one_line(tmp_path, monkeypatch):
    import errno

    import launcher.store as store_module

    def no_locks(path, timeout):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK), str(path))

    monkeypatch.setattr(store_module, "blocking_flock", no_locks)
    with pytest.raises(LauncherError, match=r"cannot lock files \(No locks available\).*Lustre: `-o flock`"):
        ExperimentStore(tmp_path / "home").conn
