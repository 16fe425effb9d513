"""A work dir belongs to one run: the claim file ``WORK_DIR/owner.json`` (torch-free, stdlib only).

Whatever writes a work dir first *claims* it: ``detcore train`` on rank 0, the launcher's run
monitor (the local supervisor, the Ray driver) for a launched experiment. The claim names the
experiment, the process (host, pid and its start tick), and when it began; the holder refreshes
the file's modification time every :data:`HEARTBEAT_S` seconds and removes it when it ends.

Another run that finds a claim is refused with one line naming the holder
(:class:`~detcore.errors.WorkDirError`), unless the claim is stale:

* the holder ran on this host and its process is gone (exited, killed, SIGKILL, OOM; a pid
  reused by another process does not count, the start tick differs), or
* the holder ran elsewhere (or is a placeholder with no process) and its heartbeat is older
  than :data:`STALE_AFTER_S`.

A stale claim is taken over, with a warning line saying whose it was and why it is stale.

The claim belongs to the *experiment*, not to one process: a claim naming the same experiment
is joined (a rank 0 under the launcher's supervisor writes nothing to it) or handed on (the
``launcher submit`` process hands it to the monitor it starts; a restarted or requeued rank 0
takes over the claim its dead predecessor left). See :func:`claim`.

Why a file created with ``link(2)`` and not ``fcntl``/``flock`` (``filelock``): work dirs live on
shared file systems (NFS, Lustre) where those locks are unreliable (Lustre mounts without
``-o flock`` make them node-local or fail; old NFS setups lose them on a server restart), a
kernel lock cannot say *who* holds it for the refusal message, and it dies with the one
process that holds it, while a claim must outlive the hand-over from ``launcher submit`` to
its monitor and a Slurm requeue. ``link`` of a fully written temporary file publishes the
claim atomically, also over NFSv3+, and fails with ``EEXIST`` when a claim exists, so a
reader never sees a half-written one. Replacing a stale claim is a compare-and-swap under a
short-lived mutex file (``owner.json.lock``, created with ``O_EXCL``, held for a few
milliseconds, and removed when older than :data:`MUTEX_STALE_S`).

Known limits: staleness across hosts compares the file's modification time (set by the file
server on NFS) with this host's clock, so clocks must agree to well within
:data:`STALE_AFTER_S`; a holder frozen for longer than that on another host (SIGSTOP, a
swapped-out node) loses its claim and says so in its log when it wakes.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Mapping

from detcore.contract import EXPERIMENT_ENV, METRICS_FILE, OWNER_FILE, PERIODIC_CHECKPOINT, run_evidence
from detcore.errors import WorkDirError
from detcore.procinfo import is_alive, process_start

logger = logging.getLogger(__name__)
HEARTBEAT_S = 10.0        # the holder touches its claim this often
STALE_AFTER_S = 120.0     # a claim from another host (or with no process) this old is stale
MUTEX_STALE_S = 10.0      # the compare-and-swap mutex is held for milliseconds; older means its holder died
_MUTEX_WAIT_S = 15.0


@dataclass(frozen=True)
class Holder:
    """Who claims a work dir. ``experiment``: the identity that makes two processes one run (a
    launcher experiment id, a torchrun agent, one ``detcore train`` process); ``what``: how the
    refusal names it; ``process``: the role of the holding process (``pid`` None: a placeholder
    kept for the experiment while no process of it runs, e.g. a queued Slurm job)."""

    experiment: str
    what: str
    process: str
    host: str
    pid: int | None
    pid_start: int | None
    since: float
    token: str
    launcher: bool = False

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        role = f"{self.process} " if self.process else ""
        who = f"{role}pid {self.pid} on {self.host}" if self.pid else f"{self.process} on {self.host}"
        return f"{self.what}, {who} since {when}"


def new_holder(experiment: str, what: str, process: str, launcher: bool = False,
               pid: int | None = None) -> Holder:
    """A holder for this process (or for ``pid`` on this host)."""
    pid = os.getpid() if pid is None else pid
    return Holder(experiment, what, process, socket.gethostname(), pid, process_start(pid), time.time(),
                  secrets.token_hex(8), launcher)


def run_holder(environ: Mapping[str, str] = os.environ) -> Holder:
    """The holder for a ``detcore train`` rank 0: the launcher's experiment (``DETLAUNCH_EXPERIMENT_ID``),
    else the torchrun agent that started it (its restarts are the same run), else this process."""
    exp = environ.get(EXPERIMENT_ENV)
    if exp:
        return new_holder(exp, f"launcher experiment {exp}", "detcore rank 0", launcher=True)
    host = socket.gethostname()
    if environ.get("TORCHELASTIC_RUN_ID") is not None:
        agent = os.getppid()
        return new_holder(f"torchrun:{host}:{agent}:{process_start(agent)}", f"torchrun (agent pid {agent}) running "
                          f"`detcore train`", "rank 0")
    return new_holder(f"detcore:{host}:{os.getpid()}:{process_start(os.getpid())}", "`detcore train`", "")


def holder_from_json(data: Mapping) -> Holder:
    return Holder(str(data["experiment"]), str(data["what"]), str(data["process"]), str(data["host"]),
                  int(data["pid"]) if data.get("pid") else None,
                  int(data["pid_start"]) if data.get("pid_start") is not None else None, float(data["since"]),
                  str(data["token"]), bool(data.get("launcher", False)))


def stale_reason(holder: Holder | None, heartbeat_age_s: float, host: str,
                 alive: Callable[[int, int | None], bool] = is_alive) -> str | None:
    """Why the claim of ``holder`` no longer holds, or None while it does (pure but for ``alive``).

    ``holder`` None: the file could not be read as a claim.
    """
    if holder is None:
        return "its owner file is unreadable"
    if holder.pid and holder.host == host:
        return None if alive(holder.pid, holder.pid_start) else f"its process (pid {holder.pid}) is gone"
    if heartbeat_age_s > STALE_AFTER_S:
        return f"no heartbeat for {heartbeat_age_s:.0f} s (a claim is stale after {STALE_AFTER_S:.0f} s)"
    return None


def in_use_message(work_dir: str | os.PathLike, holder: Holder) -> str:
    hint = f" (`launcher cancel {holder.experiment}` stops it)" if holder.launcher else ""
    return (f"work dir {work_dir} is in use by {holder.describe()}; wait for it to end{hint} or pass another "
            f"--work-dir")


@dataclass
class Claim:
    """The outcome of :func:`claim`. ``owned``: this process holds the file (and refreshes and removes it);
    False: it joined a live claim of the same experiment. ``previous``: the claim found there (None when
    the work dir was free); ``taken_over``: why a stale claim was replaced."""

    path: Path
    holder: Holder
    owned: bool
    previous: Holder | None = None
    taken_over: str | None = None
    _beat: threading.Thread | None = None
    _stop: threading.Event | None = None
    lost: bool = False

    @property
    def continues(self) -> bool:
        """The work dir was claimed by this same experiment before (a restart, a requeue, a resume)."""
        return self.previous is not None and self.previous.experiment == self.holder.experiment

    def start_heartbeat(self, interval_s: float = HEARTBEAT_S) -> Claim:
        """Refresh the claim every ``interval_s`` in a daemon thread (no-op unless owned)."""
        if self.owned and self._beat is None:
            self._stop = threading.Event()
            self._beat = threading.Thread(target=self._beating, args=(interval_s, self._stop), name="work-dir-claim",
                                          daemon=True)
            self._beat.start()
        return self

    def _beating(self, interval_s: float, stop: threading.Event) -> None:
        # the thread keeps its own event: release() clears ``self._stop`` while a beat may be running
        while not stop.wait(interval_s):
            if not self.refresh():
                return

    def refresh(self) -> bool:
        """Touch the claim; False (and one error line) when it is no longer this process's."""
        current = _read(self.path)
        if current is None or current[0] is None or current[0].token != self.holder.token:
            if not self.lost:
                self.lost = True
                other = current[0].describe() if current and current[0] else "nobody"
                logger.error("work dir %s: this run's claim was taken over by %s while it runs; two runs may now "
                             "write this work dir", self.path.parent, other)
            return False
        try:
            os.utime(self.path)
        except OSError:  # a full or read-only disk: the next beat tries again
            pass
        return True

    def hand_over(self, holder: Holder) -> bool:
        """Replace this process's claim with ``holder`` (same experiment), e.g. a placeholder while no process
        of the experiment runs. False when the claim is no longer this process's (another process of the
        same experiment, its monitor, may have taken it already)."""
        self._halt()
        if not self.owned:
            return False
        self.owned = False
        current = _read(self.path)
        if current is None or current[0] is None or current[0].token != self.holder.token or \
                not _swap(self.path, current[1], holder):
            return False
        self.holder, self.owned = holder, holder.pid == os.getpid()
        return True

    def release(self) -> None:
        """Remove the claim if it is still this process's (idempotent)."""
        self._halt()
        if not self.owned:
            return
        self.owned = False
        try:
            with _mutex(self.path):
                current = _read(self.path)
                if current is not None and current[0] is not None and current[0].token == self.holder.token:
                    self.path.unlink(missing_ok=True)
        except (OSError, WorkDirError) as exc:  # the claim goes stale by itself once this process is gone
            logger.warning("work dir %s: could not remove its claim: %s", self.path.parent, exc)

    def abandon(self) -> None:
        """Stop refreshing but leave the claim (a crash: it goes stale with this process, and a restart of
        the same run continues it)."""
        self._halt()

    def _halt(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self._beat, self._stop = None, None


def claim(work_dir: str | os.PathLike, holder: Holder, *, join: bool = True, attempts: int = 20) -> Claim:
    """Claim ``work_dir`` for ``holder`` (the folder is created when missing); WorkDirError when another
    run holds it.

    A claim of the same experiment whose holding process lives is joined (``join=True``: a rank 0
    under the launcher's monitor) or taken over (``join=False``: the monitor taking it from the
    ``launcher submit`` process); a placeholder or a dead holder of the same experiment is always
    taken over. Call :meth:`Claim.start_heartbeat` on an owned claim, :meth:`Claim.release` at the end.
    """
    work_dir = Path(work_dir)
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkDirError(f"cannot create work dir {work_dir}: {exc.strerror or exc}; pass a --work-dir you "
                           f"can write") from None
    try:
        return _claim(work_dir, work_dir / OWNER_FILE, holder, join, attempts)
    except OSError as exc:  # a full or read-only file system
        raise WorkDirError(f"cannot claim work dir {work_dir} (writing {OWNER_FILE}): {exc.strerror or exc}; free "
                           f"space or pass a --work-dir you can write") from None


def _claim(work_dir: Path, path: Path, holder: Holder, join: bool, attempts: int) -> Claim:
    host = socket.gethostname()
    for _ in range(attempts):
        if _publish(path, holder):
            return Claim(path, holder, owned=True)
        current = _read(path)
        if current is None:  # released in between: try again
            continue
        previous, raw, age = current
        why = stale_reason(previous, age, host)
        if previous is not None and previous.experiment == holder.experiment:
            if why is None and previous.pid and join and previous.token != holder.token:
                return Claim(path, holder, owned=False, previous=previous)
            if _swap(path, raw, holder):
                return Claim(path, holder, owned=True, previous=previous)
            continue
        if why is None:
            raise WorkDirError(in_use_message(work_dir, previous))  # type: ignore[arg-type]
        if _swap(path, raw, holder):
            logger.warning("work dir %s: took over the claim of %s: %s", work_dir,
                           previous.describe() if previous else "an unknown run", why)
            return Claim(path, holder, owned=True, previous=previous, taken_over=why)
    raise WorkDirError(f"work dir {work_dir}: could not claim it, other processes kept changing {OWNER_FILE}; "
                       f"try again")


# ---- the file --------------------------------------------------------------------------------

def _encode(holder: Holder) -> bytes:
    return (json.dumps(asdict(holder), sort_keys=True) + "\n").encode()


def _temp(path: Path, holder: Holder) -> Path:
    tmp = path.with_name(f".{path.name}.{holder.token}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, _encode(holder))
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _publish(path: Path, holder: Holder) -> bool:
    """Create the claim if there is none; False when one exists."""
    tmp = _temp(path, holder)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
        return _publish_exclusive(path, holder)  # a file system without hard links
    finally:
        tmp.unlink(missing_ok=True)


def _publish_exclusive(path: Path, holder: Holder) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, _encode(holder))
    finally:
        os.close(fd)
    return True


def _read(path: Path) -> tuple[Holder | None, bytes, float] | None:
    """``(holder or None if unreadable, raw bytes, seconds since the last heartbeat)``; None when absent."""
    try:
        with open(path, "rb") as f:
            raw = f.read(65536)
            age = time.time() - os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    try:
        return holder_from_json(json.loads(raw)), raw, age
    except (ValueError, KeyError, TypeError):
        if not raw and age < 1.0:  # _publish_exclusive between create and write
            time.sleep(0.05)
            return _read(path)
        return None, raw, age


def _swap(path: Path, expected: bytes, holder: Holder) -> bool:
    """Replace the claim by ``holder`` if it still holds ``expected`` (compare-and-swap under the mutex)."""
    with _mutex(path):
        try:
            if path.read_bytes() != expected:
                return False
        except FileNotFoundError:
            return False
        os.replace(_temp(path, holder), path)
        return True


@contextlib.contextmanager
def _mutex(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    deadline = time.monotonic() + _MUTEX_WAIT_S
    while True:
        try:
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            break
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > MUTEX_STALE_S:  # its holder died within milliseconds
                    lock.unlink(missing_ok=True)
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() > deadline:
                raise WorkDirError(f"{lock} has been held for over {_MUTEX_WAIT_S:.0f} s; remove it if no "
                                   f"detcore or launcher process is starting in {path.parent}") from None
            time.sleep(0.01)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def in_use(work_dir: str | os.PathLike, experiment: str | None = None) -> str | None:
    """The one-line refusal when another run (not ``experiment``) holds ``work_dir`` now; None when it is free
    or its claim is stale. Reads only: a check before anything is written, :func:`claim` decides."""
    current = _read(Path(work_dir) / OWNER_FILE)
    if current is None or current[0] is None or current[0].experiment == experiment:
        return None
    if stale_reason(current[0], current[2], socket.gethostname()) is not None:
        return None
    return in_use_message(work_dir, current[0])


def earlier_run(work_dir: str | os.PathLike, resume: str | None) -> str | None:
    """The one-line refusal when ``work_dir`` holds a run that a new run with ``resume`` (``--resume``: None,
    ``never``, ``auto`` or a checkpoint path) would not continue; None when it may start (pure but for
    reading the folder).

    Continuing is ``auto`` or a checkpoint inside the work dir. Anything else (a fresh start,
    ``--load-from``, another folder's checkpoint) would put two runs' checkpoints, best checkpoint,
    logs and TensorBoard events in one folder.
    """
    evidence = run_evidence(work_dir)
    if not evidence or resume == "auto" or (resume not in (None, "never") and
                                            Path(resume).resolve().parent == Path(work_dir).resolve()):
        return None
    shown = sorted(evidence, key=_evidence_order)
    listed = ", ".join(shown[:4]) + (", ..." if len(shown) > 4 else "")
    n = 2
    while Path(f"{work_dir}-{n}").exists():
        n += 1
    why = f"--resume {resume} is a checkpoint of another folder; " if resume not in (None, "never") else ""
    return (f"work dir {work_dir} holds an earlier run ({listed}); {why}pass --resume auto to continue that run, "
            f"or --work-dir {work_dir}-{n} for a new one (nothing was written)")


def _evidence_order(name: str) -> tuple:
    """best_* first, then periodic checkpoints newest first, then the rest (pointers last)."""
    m = PERIODIC_CHECKPOINT.match(name)
    if name.startswith("best_"):
        return (0, 0, name)
    if m:
        return (1, -int(m.group(2)), name)
    return (2 if name == METRICS_FILE else 3, 0, name)


def placeholder(holder: Holder, process: str) -> Holder:
    """``holder``'s claim kept for its experiment while no process of it runs (``process`` says why)."""
    return replace(holder, process=process, pid=None, pid_start=None, token=secrets.token_hex(8))
