"""Each rank's own temporary folder (its ``TMPDIR``), removed when the rank ends, however it ends.

Python's ``multiprocessing`` (under torch's DataLoader workers) makes a ``pymp-*`` folder in the
temporary folder of every process that passes file descriptors, and removes it only on a clean
exit: a worker or loader killed by a signal (a cancel, a requeue, the OOM killer) leaves it
behind. So every rank runs with ``TMPDIR`` set to a folder of its own,
``<tmp>/detlaunch-tmp-<experiment>-<pid>-<start tick>`` (short, so the AF_UNIX socket paths
that go inside stay under their 108-byte limit), named after the process that owns it: the
worker shim on the local and Slurm backends, the Ray Train worker on Ray. The owner removes it
when its worker has ended; one that was itself killed is removed by the next rank that starts
on the node, by ``launcher cancel`` and by the local supervisor when its launch ends, since a
folder whose owner process is gone (pid and start tick, so a reused pid does not count) can
belong to nobody.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from launcher.procinfo import current_process, process_start

PREFIX = "detlaunch-tmp-"
_NAME = re.compile(rf"{PREFIX}(?P<exp>[0-9A-Za-z]+)-(?P<pid>\d+)-(?P<start>\d+)")


def make_scratch(exp_id: str | None, base: str | os.PathLike | None = None) -> Path:
    """A new private (0700) scratch folder owned by this process, after removing the dead ones in ``base``
    (default: the temporary folder this process would use)."""
    base = Path(base or tempfile.gettempdir())
    remove_dead_scratch(base=base)
    pid, start = current_process()
    path = base / f"{PREFIX}{exp_id if exp_id and exp_id.isalnum() else 'run'}-{pid}-{start}"
    shutil.rmtree(path, ignore_errors=True)  # only a process with this very pid and start tick could have made it
    path.mkdir(mode=0o700)
    return path


def remove_dead_scratch(exp_id: str | None = None, base: str | os.PathLike | None = None) -> list[Path]:
    """Remove this user's scratch folders in ``base`` whose owner process is gone (only ``exp_id``'s when
    given); the folders removed."""
    base = Path(base or tempfile.gettempdir())
    removed = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.fullmatch(entry.name)
        if match is None or (exp_id is not None and match["exp"] != exp_id):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.getuid():
            continue
        if process_start(int(match["pid"])) == int(match["start"]):
            continue  # its owner still runs
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed
