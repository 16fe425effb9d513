"""One TensorBoard over several experiments' ``tb/`` folders: a folder of symlinks named after the
experiments, kept up to date while it runs; bound to 127.0.0.1 by default, on the asked port or the
next free one."""
from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from typing import Callable, Iterable, Mapping, Sequence

from launcher.errors import LauncherError
from launcher.resources.procinfo import die_with_parent
from launcher.store import Experiment

logger = logging.getLogger(__name__)


def run_name(exp: Experiment) -> str:
    """``name-id``, one path component (no ``/``), as the run's name in TensorBoard."""
    return re.sub(r"[/\s]", "_", f"{exp.name}-{exp.id}")


def run_links(experiments: Iterable[Experiment]) -> dict[str, str]:
    """``{run_name: WORK_DIR/tb}`` for each experiment (pure).

    TensorBoard names a run by its folder's path under ``--logdir``, so each run shows as
    ``name-id``. (``--logdir_spec name:WORK_DIR/tb`` showed ``name-id/.``: TensorBoard joins the
    name with the events folder's path relative to the given one, which is ``.``.)
    """
    return {run_name(e): os.path.join(e.work_dir, "tb") for e in experiments}


def sync_links(links: Mapping[str, str], folder: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Make ``folder`` hold exactly ``links`` as symlinks ``name -> target``; returns (added, removed) names.

    A target that does not exist yet (a job that has not started) is linked anyway: TensorBoard
    shows the run once its events appear. Only symlinks are ever removed from ``folder``.
    """
    added, removed = [], []
    for entry in os.scandir(folder):
        if entry.is_symlink() and links.get(entry.name) != os.readlink(entry.path):
            os.unlink(entry.path)
            removed.append(entry.name)
    for name, target in links.items():
        path = os.path.join(folder, name)
        if not os.path.islink(path):
            os.symlink(target, path, target_is_directory=True)
            added.append(name)
    return added, removed


def choose_port(asked: int, is_free: Callable[[int], bool], tries: int = 100) -> int:
    """``asked`` if ``is_free`` says so, else the next free one of the ``tries`` ports from it (pure).

    0 stays 0 (the OS picks). Raises ``LauncherError`` when all of them are taken.
    """
    check_port(asked)
    if asked == 0:
        return 0
    for port in range(asked, min(asked + tries, 0x10000)):
        if is_free(port):
            return port
    raise LauncherError(f"--port {asked}: it and the {tries - 1} ports after it are all taken; "
                        f"pass another --port, or --port 0 for any free one")


def check_port(asked: int) -> None:
    """Raises ``LauncherError`` unless ``asked`` is a TCP port or 0 (any free one)."""
    if not 0 <= asked <= 0xFFFF:
        raise LauncherError(f"--port {asked}: expected a TCP port from 1 to 65535 (or 0: any free port)")


def port_is_free(host: str, port: int) -> bool:
    """Whether a TCP server could bind ``host:port`` now (bound and released at once, as TensorBoard's
    server binds: with ``SO_REUSEADDR``). Another process may take it a moment later; :func:`serve`
    retries then."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(address)
    except OSError:
        return False
    return True


def tensorboard_command(logdir: str | os.PathLike, host: str = "127.0.0.1", port: int = 6006,
                        python: str = sys.executable) -> tuple[str, ...]:
    """``python -m tensorboard.main --logdir D --load_fast false --host H --port P`` (pure).

    ``--load_fast false``: the Python loader, which follows :func:`sync_links`' symlinks and
    finds the runs linked while it runs (every ``--reload_interval``, 5 s by default).
    """
    return (python, "-m", "tensorboard.main", "--logdir", str(logdir), "--load_fast", "false", "--host", host,
            "--port", str(port))


def served_port(pid: int, logdir: str | os.PathLike) -> int | None:
    """The port the TensorBoard process ``pid`` serving ``logdir`` listens on, read from the info file
    TensorBoard writes once it has bound its port (``tensorboard.manager``); None until then."""
    from tensorboard import manager

    return next((i.port for i in manager.get_all() if i.pid == pid and i.logdir == str(logdir)), None)


def url(host: str, port: int) -> str:
    """``http://HOST:PORT/`` as a browser takes it: a wildcard host as this machine's name, IPv6 in brackets."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _child_setup(parent: int) -> Callable[[], None]:
    """Runs in the child before exec: take the stop signals again, and die with ``parent``.

    ``PR_SET_PDEATHSIG`` sends SIGTERM to the child when the parent dies, even by SIGKILL. If the
    parent died before the ``prctl`` (the child was already re-parented), the child ends itself.
    """
    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        die_with_parent(signal.SIGTERM, parent)
    return setup


PORT_RACES = 5  # times another process may take the chosen port between the test and TensorBoard's bind


def serve(logdir: str | os.PathLike, host: str, port: int, on_serving: Callable[[int], None],
          refresh: Callable[[], None] | None = None, refresh_s: float = 15.0,
          stop_timeout_s: float = 10.0) -> int:
    """Run TensorBoard on ``logdir`` in the foreground and never leave it behind.

    Starts it on :func:`choose_port`'s port from ``port``; if another process binds that port
    first, TensorBoard exits and the next free one is tried. Once it serves, ``on_serving`` gets
    the port TensorBoard reports (:func:`served_port`); then ``refresh`` runs every ``refresh_s``
    seconds until TensorBoard exits (a refresh that fails is a warning; the next one tries again).

    SIGTERM, SIGINT or SIGHUP to this process end the child (SIGTERM, then SIGKILL after
    ``stop_timeout_s``) and return ``128 + signal``; a SIGKILL of this process ends it through
    ``PR_SET_PDEATHSIG`` (Linux). Otherwise returns the child's exit status. Main thread only.
    """
    def stop(signum: int, _frame: object) -> None:
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    proc: subprocess.Popen | None = None
    asked = port
    try:
        for _ in range(PORT_RACES):
            chosen = choose_port(port, lambda p: port_is_free(host, p))
            proc = _start(tensorboard_command(logdir, host, chosen))
            served = _wait_serving(proc, logdir)
            if served is not None:
                break
            if chosen == 0 or port_is_free(host, chosen):
                return proc.returncode  # it failed for a reason of its own, which it printed
            logger.warning("port %d was taken before TensorBoard could bind it; trying the next free one", chosen)
            port = chosen + 1
        else:
            raise LauncherError(f"--port {asked}: TensorBoard could not bind it or the next free ports: "
                                f"another process took each first; pass another --port")
        on_serving(served)
        while True:
            try:
                return proc.wait(refresh_s)
            except subprocess.TimeoutExpired:
                if refresh is not None:
                    try:
                        refresh()
                    except (LauncherError, OSError, sqlite3.Error) as e:
                        logger.warning("the run list was not refreshed this time: %s", e)
    except _Stopped as stopped:
        return 128 + stopped.signum
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start(cmd: Sequence[str]) -> subprocess.Popen:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # no stop between fork and the caller holding `proc`
    try:
        return subprocess.Popen(list(cmd), preexec_fn=_child_setup(os.getpid()))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a pending stop is raised here


def _wait_serving(proc: subprocess.Popen, logdir: str | os.PathLike, poll_s: float = 0.25) -> int | None:
    """The port ``proc`` serves on once it reports one, or None when it exits first."""
    while proc.poll() is None:
        served = served_port(proc.pid, logdir)
        if served is not None:
            return served
        time.sleep(poll_s)
    return None
