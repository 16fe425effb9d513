"""Which kind of filesystem holds the experiment store (local, or shared between hosts over a network),
and what keeps the store safe on a network one: the cross-host write lock and the switch out of WAL.

SQLite's WAL mode keeps its index in shared memory (``experiments.db-shm``, mmap'ed), which processes on
two hosts cannot share: on NFS, Lustre, GPFS and the like two login nodes (or a login node and a job)
writing one WAL store can corrupt it. :class:`launcher.store.ExperimentStore` therefore asks
:func:`store_filesystem` and, on a network filesystem, keeps a rollback journal and serialises writers
through a cross-host lock.

The type is read from the mount table (``/proc/self/mountinfo``, else ``/proc/mounts``): ``statfs``'s
``f_type`` is not exposed by :func:`os.statvfs`, and the mount table names FUSE filesystems by their
subtype (``fuse.sshfs``), which ``f_type`` does not. ``LAUNCHER_STORE_FS=network|local`` overrides the
detection (``auto``, or unset, detects).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from launcher.errors import LauncherError
from launcher.resources.locking import blocking_flock

logger = logging.getLogger(__name__)

STORE_FS_ENV = "LAUNCHER_STORE_FS"
MOUNTINFO = Path("/proc/self/mountinfo")
MOUNTS = Path("/proc/mounts")
WRITE_LOCK_TIMEOUT_S = 120.0
# a filesystem without working file locks (NFS without lockd, Lustre mounted noflock)
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)

# Filesystems whose files other hosts share (SQLite's shared-memory WAL index cannot work across them).
NETWORK_TYPES = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "ceph", "glusterfs", "afs", "9p",
    "ocfs2", "gfs2", "panfs", "wekafs", "pvfs2", "orangefs", "davfs", "ncpfs", "virtiofs", "cvfs", "quobyte",
})
# fuseblk is a local block device (ntfs-3g, exfat); every other FUSE filesystem (sshfs, gcsfuse, s3fs,
# glusterfs, ...) may be remote, and SQLite's WAL index is unsafe over most of them.
_LOCAL_FUSE = frozenset({"fuseblk", "fuse.lxcfs", "fuse.portal", "fuse.gvfsd-fuse"})


@dataclass(frozen=True)
class Mount:
    """One mount: where it is mounted and its filesystem type (``fuse.sshfs`` for FUSE subtypes)."""

    point: str
    fstype: str
    options: frozenset[str] = frozenset()  # the mount's and the filesystem's options (``vers=4.2``, ``nolock``)


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in mount points as octal escapes (``\\040``)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``/proc/self/mountinfo`` text (``ID PARENT MAJ:MIN ROOT POINT OPTS [TAGS...] - TYPE
    SOURCE SUPEROPTS``); lines that do not parse are skipped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)
            options = fields[5].split(",") + (fields[dash + 3].split(",") if len(fields) > dash + 3 else [])
            mounts.append(Mount(point=_unescape(fields[4]), fstype=fields[dash + 1], options=frozenset(options)))
        except (ValueError, IndexError):
            continue
    return mounts


def parse_mounts(text: str) -> list[Mount]:
    """The mounts of a ``/proc/mounts`` text (``SOURCE POINT TYPE OPTS DUMP PASS``)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) >= 3:
            options = frozenset(fields[3].split(",")) if len(fields) > 3 else frozenset()
            mounts.append(Mount(point=_unescape(fields[1]), fstype=fields[2], options=options))
    return mounts


def mount_of(path: str | os.PathLike, mounts: list[Mount]) -> Mount | None:
    """The mount holding ``path`` (an absolute, resolved path): the longest mount point that is ``path``
    or one of its parents; the last one mounted wins when several share a point (a mount over a mount)."""
    target = os.path.normpath(os.fspath(path))
    best: Mount | None = None
    for mount in mounts:
        point = mount.point.rstrip("/") or "/"
        inside = target == point or target.startswith(point + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best.point.rstrip("/") or "/")):
            best = mount
    return best


def is_network_type(fstype: str) -> bool:
    """Whether a mount-table filesystem type is shared between hosts (``nfs4``, ``lustre``, ``fuse.sshfs``...)."""
    if fstype in NETWORK_TYPES:
        return True
    return (fstype == "fuse" or fstype.startswith("fuse.")) and fstype not in _LOCAL_FUSE


def local_locks(mount: Mount) -> str:
    """The mount option under which file locks stay on this host (NFS ``nolock`` or ``local_lock=...``,
    Lustre ``localflock``) or do not work (Lustre ``noflock``); "" when they reach the other hosts."""
    for option in sorted(mount.options):
        if option in ("nolock", "localflock", "noflock") or option in ("local_lock=all", "local_lock=flock",
                                                                        "local_lock=posix"):
            return option
    return ""


def read_mount_table() -> list[Mount]:
    """This process's mounts; empty where the kernel exposes no mount table (not Linux)."""
    for path, parse in ((MOUNTINFO, parse_mountinfo), (MOUNTS, parse_mounts)):
        try:
            return parse(path.read_text(encoding="utf-8", errors="surrogateescape"))
        except OSError:
            continue
    return []


@dataclass(frozen=True)
class StoreFilesystem:
    """What the store needs to know of the filesystem holding it."""

    network: bool   # shared between hosts: a rollback journal and the cross-host write lock
    why: str        # for the logs: ``/home/me/... is on nfs4`` or ``LAUNCHER_STORE_FS=network``
    local_locks: str = ""  # a network mount whose locks stay on one host (``nolock``): unsafe from two hosts


def store_filesystem(home: str | os.PathLike) -> StoreFilesystem:
    """How to keep the store in ``home``: ``LAUNCHER_STORE_FS`` when set to ``network`` or ``local``, else
    from the mount table."""
    forced = os.environ.get(STORE_FS_ENV, "").strip().lower()
    if forced in ("network", "local"):
        return StoreFilesystem(forced == "network", f"{STORE_FS_ENV}={forced}")
    if forced not in ("", "auto"):
        raise LauncherError(f"{STORE_FS_ENV}={os.environ[STORE_FS_ENV]!r} is not a store filesystem kind; "
                            f"expected network, local or auto (detect from the mount table)")
    mount = mount_of(os.path.realpath(home), read_mount_table())
    if mount is None:
        return StoreFilesystem(False, f"{home} is on an unknown filesystem")
    network = is_network_type(mount.fstype)
    return StoreFilesystem(network, f"{home} is on {mount.fstype}", local_locks(mount) if network else "")


@contextlib.contextmanager
def write_lock(home: Path) -> Iterator[None]:
    """The exclusive cross-host lock every write transaction to the store in ``home`` holds on a network
    filesystem (``experiments.db.write-lock``); one error line where the filesystem cannot lock.

    A kernel ``flock`` (:func:`launcher.resources.locking.blocking_flock`), not a lock file created with
    ``O_EXCL`` (filelock's ``SoftFileLock``). Linux (since 2.6.12) carries ``flock`` over NFS as a
    POSIX lock through lockd (NFSv3) or the server's own locks (NFSv4); GPFS, CephFS and BeeGFS lock
    across nodes, and Lustre does with its ``flock`` mount option. Those are the locks SQLite's
    rollback journal itself relies on to keep readers off a half-written file, so where they do not
    work no lock of ours makes SQLite safe. Where they do, the lock is dropped when its holder dies
    (for a dead host: on NFSv4 when the server's lease ends, on NFSv3 when the host's statd reports
    its restart), whereas an ``O_EXCL`` file left by a killed command would block every later write
    until someone deletes it by hand. Holding it around each write also queues writers in the kernel
    instead of in SQLite's busy-wait polling, each poll of which costs a round trip to the server.
    """
    try:
        lock = blocking_flock(home / "experiments.db.write-lock", WRITE_LOCK_TIMEOUT_S)
        lock.__enter__()
    except OSError as exc:
        if exc.errno in NO_LOCKS:
            raise no_locks_error(home, exc) from None
        raise
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def no_locks_error(home: Path, exc: OSError) -> LauncherError:
    return LauncherError(f"the filesystem of {home} cannot lock files ({exc.strerror}), and the experiment store "
                         f"needs locks to be written safely; mount it with locks (NFS: lockd running, not "
                         f"`nolock`; Lustre: `-o flock`), or set LAUNCHER_HOME to a local folder")


def leave_wal(conn: sqlite3.Connection, path: Path, why: str) -> None:
    """Switch a WAL store to a rollback journal (the caller holds the write lock): every committed page is
    first copied from the WAL into the database (a checkpoint), then SQLite deletes the WAL and its index.
    Another process that still has the store open in WAL keeps it there; that is said, and the next open
    tries again."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        return
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0].lower()
    except sqlite3.OperationalError:  # "database is locked": another connection has it open in WAL
        mode = "wal"
    if mode == "wal":
        logger.warning("%s: the store stays in WAL mode, unsafe across hosts, while another launcher holds it "
                       "open (%s); it switches to a rollback journal when opened after that one ends", path, why)
    else:
        logger.info("%s: switched the store from WAL to a rollback journal (%s)", path, why)
