"""What a local-backend test may not leave behind: the checks the ``home`` fixture runs after each test.

After a test, every job it started through the launcher must have left nothing: no process (supervisor,
torchrun agent, worker) still running, no GPU/core lease or sweep slot still held, every rendezvous port
its jobs used free again, nothing left in the jobs' ``TMPDIR`` (nor a rank's own scratch folder, which
goes to ``/tmp`` when that path is too long for sockets) and no file descriptor left open in the test
process itself. :func:`leftovers` returns one line per thing left, naming it.

Limit: a port that a process outside the test and its jobs holds is not counted (on a shared machine the
kernel may hand a freed port to anyone); a process of the jobs holding it is named as a process anyway.
"""
from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path

import psutil

from launcher.runtime.scratch import OWNER_FILE, PREFIX, scratch_base
from tests.integration.launcher_cli import MARKER, job_tmp

# a finished job's processes may still be exiting when the test's last check returns: how long they get
EXIT_GRACE_S = 5.0


def open_fds() -> dict[int, str]:
    """The test process's open file descriptors and what each points to."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used, closed again
            continue
    return out


def _experiments(home: Path) -> tuple[set[str], set[int]]:
    """The ids of the experiments recorded in ``home`` and the local ports their launches used."""
    if not (home / "experiments.db").exists():
        return set(), set()
    from launcher.store import ExperimentStore

    store = ExperimentStore(home)
    try:
        rows = store.list()
    finally:
        store.close()
    return {r.id for r in rows}, {p for r in rows if r.backend == "local" for p in r.port_list}


def _processes(home: Path, exp_ids: set[str]) -> list[psutil.Process]:
    """Live processes of this home: started with its LAUNCHER_HOME or carrying one of its experiments' marker
    (whose experiment ids join ``exp_ids``)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
            if (env.get("LAUNCHER_HOME") == str(home) or env.get(MARKER) in exp_ids) \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
                exp_ids.update([env[MARKER]] if env.get(MARKER) else [])
        except (psutil.Error, OSError):
            continue
    return found


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid} ({' '.join(proc.cmdline())[:160]})"
    except psutil.Error:
        return f"pid {proc.pid}"


def _port_holder(port: int, ours: set[int]) -> str | None:
    """Why ``port`` is not free for a new job on this host: None when it is, or when only processes outside
    ``ours`` (the test, its children, its jobs) hold it: the machine is shared and the kernel may hand a
    freed port to anyone."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return None
        except OSError as exc:
            err = exc
    holders = {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port and c.pid}
    if holders and not holders & ours:
        return None
    return f"port {port} is still bound ({err}; held by pid {sorted(holders) or 'unknown'})"


def _scratch_folders(base: Path, exp_ids: set[str]) -> list[Path]:
    """The ranks' own TMPDIRs (launcher.runtime.scratch) in ``base`` whose owner file names one of ``exp_ids``."""
    found = []
    for path in base.glob(f"{PREFIX}*"):
        try:
            owner_exp = (path / OWNER_FILE).read_text().split()[0]
        except (OSError, IndexError):
            continue
        if owner_exp in exp_ids:
            found.append(path)
    return found


def _shared_tmp(path: Path) -> bool:
    """A per-user folder that tools keep in ``TMPDIR`` for every process of the user, not a job's own: torch's
    compile cache, and TensorBoard's registry of running servers while it lists none."""
    if path.name == f"torchinductor_{getpass.getuser()}":
        return True
    return path.name == ".tensorboard-info" and path.is_dir() and not any(path.iterdir())


def leftovers(home: Path, fds_before: dict[int, str], keeps_sockets: bool = False,
              tmp_allowed: tuple[str, ...] = ()) -> list[str]:
    """One line per thing the test's jobs (or the test itself) left behind; empty when nothing was.
    ``keeps_sockets``: the test's own client pools connections (sockets open in the test process do not count);
    ``tmp_allowed``: glob patterns of what may stay in the jobs' TMPDIR (what nothing can remove)."""
    from launcher.resources.leases import LeaseBook

    exp_ids, ports = _experiments(home)
    found = []
    procs = _processes(home, exp_ids)
    ours = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True)), *(p.pid for p in procs)}
    if procs:
        _, alive = psutil.wait_procs(procs, timeout=EXIT_GRACE_S)
        found += [f"process still running {EXIT_GRACE_S:.0f} s after the test: {_describe(p)}" for p in alive]
    if (home / "leases.json").exists():
        held = LeaseBook(home).held()
        found += [f"lease still held: {pool} {unit} by {lease.holder}"
                  for pool, units in held.items() for unit, lease in units.items()]
    found += [line for port in sorted(ports) if (line := _port_holder(port, ours))]
    scratch = job_tmp(home)
    if scratch.is_dir():
        found += [f"left in the jobs' TMPDIR: {p}" for p in sorted(scratch.iterdir())
                  if not _shared_tmp(p) and not any(p.match(pattern) for pattern in tmp_allowed)]
        # a rank's own TMPDIR goes to /tmp where the jobs' TMPDIR is too long a path for its sockets
        if scratch_base(scratch) != scratch:
            found += [f"a rank's TMPDIR left behind: {p}" for p in _scratch_folders(scratch_base(scratch), exp_ids)]
    fds_after = open_fds()
    found += [f"file descriptor {fd} left open in the test process: {target}"
              for fd, target in sorted(fds_after.items()) if fds_before.get(fd) != target
              and not (keeps_sockets and target.startswith("socket:"))]
    return found
