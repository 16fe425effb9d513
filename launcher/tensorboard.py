"""One TensorBoard over several experiments' ``tb/`` folders (a folder of symlinks named after the
experiments), bound to 127.0.0.1 by default."""
from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from typing import Callable, Iterable, Sequence

from launcher.errors import LauncherError
from launcher.store import Experiment


def run_name(exp: Experiment) -> str:
    """``name-id``, one path component (no ``/``), as the run's name in TensorBoard."""
    return re.sub(r"[/\s]", "_", f"{exp.name}-{exp.id}")


def link_runs(experiments: Iterable[Experiment], folder: str | os.PathLike) -> list[tuple[str, str]]:
    """In ``folder``, one symlink per experiment: ``run_name -> WORK_DIR/tb``; returns the pairs.

    TensorBoard names a run by its folder's path under ``--logdir``, so each run shows as
    ``name-id``. (``--logdir_spec name:WORK_DIR/tb`` showed ``name-id/.``: TensorBoard joins the
    name with the events folder's path relative to the given one, which is ``.``.)
    """
    pairs = [(run_name(e), os.path.join(e.work_dir, "tb")) for e in experiments]
    if not pairs:
        raise LauncherError("no experiments to show; pass experiment ids or submit one first")
    for name, target in pairs:
        os.symlink(target, os.path.join(folder, name), target_is_directory=True)
    return pairs


def tensorboard_command(logdir: str | os.PathLike, host: str = "127.0.0.1", port: int = 6006,
                        python: str = sys.executable) -> tuple[str, ...]:
    """``python -m tensorboard.main --logdir D --load_fast false --host H --port P`` (pure).

    ``--load_fast false``: the Python loader, which follows :func:`link_runs`' symlinks.
    """
    return (python, "-m", "tensorboard.main", "--logdir", str(logdir), "--load_fast", "false", "--host", host,
            "--port", str(port))


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
    return setup


def serve(cmd: Sequence[str], stop_timeout_s: float = 10.0) -> int:
    """Run ``cmd`` (a TensorBoard) in the foreground and never leave it behind.

    SIGTERM, SIGINT or SIGHUP to this process end the child (SIGTERM, then SIGKILL after
    ``stop_timeout_s``) and return ``128 + signal``; a SIGKILL of this process ends it through
    ``PR_SET_PDEATHSIG`` (Linux). Otherwise returns the child's exit status. Main thread only.
    """
    def stop(signum: int, _frame: object) -> None:
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    proc: subprocess.Popen | None = None
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # no stop between fork and `proc` being set
        try:
            proc = subprocess.Popen(list(cmd), preexec_fn=_child_setup(os.getpid()))
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a pending stop is raised here
        return proc.wait()
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
