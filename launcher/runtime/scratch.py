"""Each rank's own temporary folder (its ``TMPDIR``), removed when the rank ends, however it ends.

Python's ``multiprocessing`` (under torch's DataLoader workers) makes a ``pymp-*`` folder in the
temporary folder of every process that passes file descriptors, and removes it only on a clean
exit: a worker or loader killed by a signal (a cancel, a requeue, the OOM killer) leaves it
behind. So every rank runs with ``TMPDIR`` set to a folder of its own, ``<tmp>/detlaunch-<pid>``,
owned by the process that made it (the worker shim on the local and Slurm backends, the Ray
Train worker on Ray; its experiment and start tick are in the folder's ``.owner`` file). The
owner removes it when its worker has ended; one whose owner was itself killed is removed by the
next rank that starts on the node, by ``launcher cancel`` and by the local supervisor when its
launch ends, since a folder whose owner process is gone (pid and start tick, so a reused pid
does not count) belongs to nobody.

The name is short on purpose: ``multiprocessing`` puts AF_UNIX sockets two levels below
``TMPDIR`` and a socket path may hold 107 bytes. Where the temporary folder's own path is too long
for that, the scratch folder goes to ``/tmp``.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from launcher.resources.procinfo import current_process, process_start

PREFIX = "detlaunch-"
OWNER_FILE = ".owner"
_NAME = re.compile(rf"{PREFIX}(\d+)")
SOCKET_PATH_MAX = 107
_BELOW = len("/pymp-xxxxxxxx/listener-xxxxxxxx")  # what multiprocessing adds below TMPDIR


def scratch_base(base: str | os.PathLike | None = None) -> Path:
    """``base`` (default: this process's temporary folder), or ``/tmp`` when socket paths below a scratch folder
    in ``base`` would be too long."""
    chosen = Path(base or tempfile.gettempdir())
    if len(str(chosen)) + len(f"/{PREFIX}4194304") + _BELOW > SOCKET_PATH_MAX and os.access("/tmp", os.W_OK):
        return Path("/tmp")
    return chosen


def make_scratch(exp_id: str | None, base: str | os.PathLike | None = None) -> Path | None:
    """A new private (0700) scratch folder owned by this process, after removing the dead ones there; None when
    none can be made (a full or read-only temporary folder: the rank then runs with the TMPDIR it has)."""
    base = scratch_base(base)
    remove_dead_scratch(base=base)
    pid, start = current_process()
    path = base / f"{PREFIX}{pid}"
    shutil.rmtree(path, ignore_errors=True)  # a folder of an earlier process with this pid: that one is gone
    try:
        path.mkdir(mode=0o700)
        (path / OWNER_FILE).write_text(f"{exp_id or '-'} {start}\n")
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return None
    return path


def remove_dead_scratch(exp_id: str | None = None, base: str | os.PathLike | None = None) -> list[Path]:
    """Remove this user's scratch folders in ``base`` whose owner process is gone (only ``exp_id``'s when
    given); the folders removed. A folder without a readable owner file is left alone."""
    base = scratch_base(base)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            owner_exp, start = (Path(entry.path) / OWNER_FILE).read_text().split()
        except (OSError, ValueError):
            continue
        if exp_id is not None and owner_exp != exp_id:
            continue
        if process_start(int(match[1])) == int(start):
            continue  # its owner still runs
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed
