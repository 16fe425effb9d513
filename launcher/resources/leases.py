"""Leases on countable local resources: GPUs, CPU cores, and a sweep's parallel slots.

The policy (:func:`choose_units`, :func:`live_leases`) is pure. :class:`LeaseBook` keeps the
leases in ``$LAUNCHER_HOME/leases.json`` and changes it only under a file lock, writing a new
file and renaming it over the old one. A lease names its holder (an experiment id), the host
and the process that keeps it (pid and start tick).

``$LAUNCHER_HOME`` defaults to the home directory, which cluster nodes share, so:

* GPUs and CPU cores are keyed by host (pools ``gpu@HOST``, ``cpu@HOST``): GPU 0 of one node is
  not GPU 0 of another;
* only the host that holds a lease judges whether it is dead (a pid means nothing in another
  node's ``/proc``); other hosts' leases are left alone;
* a lease whose keeper died is reclaimed only when no process of its experiment (one carrying
  ``DETLAUNCH_EXPERIMENT_ID=<holder>`` in its environment) is left on the host: the workers of
  a supervisor killed with SIGKILL may still be on their GPUs for a while after it.

GPU ids are the values of ``CUDA_VISIBLE_DEVICES`` (or nvidia-smi's indices, which follow PCI
bus order, as CUDA does with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``). Known limit: a lease whose
keeper and marked processes outlive its job stays held until they exit.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from detcore.atomic import write_text_atomic
from detcore.contract import EXPERIMENT_ENV
from launcher.resources.locking import blocking_flock
from launcher.resources.procinfo import is_alive

GPU_POOL = "gpu"
CPU_POOL = "cpu"
HOST_POOLS = (GPU_POOL, CPU_POOL)  # pools whose units belong to one host
LOCK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Lease:
    holder: str
    pid: int
    start: int
    host: str = ""  # empty: written by a release that did not record hosts (this host's)


def live_leases(leases: Mapping[str, Lease], alive: Callable[[Lease], bool]) -> dict[str, Lease]:
    """The leases whose keeper process still runs."""
    return {unit: lease for unit, lease in leases.items() if alive(lease)}


def choose_units(inventory: Sequence[str], leases: Mapping[str, Lease], want: int, holder: str) -> tuple[str, ...] | None:
    """``want`` units of ``inventory`` for ``holder``, or None when not enough are free.

    Units ``holder`` already leases come first (asking again is idempotent); then the free
    units in inventory order. Leases on units that left the inventory are ignored.
    """
    mine = [u for u in inventory if u in leases and leases[u].holder == holder]
    free = [u for u in inventory if u not in leases]
    if want <= len(mine):
        return tuple(mine[:want])
    extra = want - len(mine)
    if extra > len(free):
        return None
    return tuple(mine + free[:extra])


def _keeper_alive(lease: Lease) -> bool:
    return is_alive(lease.pid, lease.start or None)


def marked_experiments() -> set[str]:
    """The experiment ids in ``DETLAUNCH_EXPERIMENT_ID`` of this host's live processes (other
    users' processes, whose environment cannot be read, are not seen)."""
    import psutil

    found = set()
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            value = proc.environ().get(EXPERIMENT_ENV)
        except (psutil.Error, OSError):
            continue
        if value:
            found.add(value)
    return found


def host_pool(pool: str, host: str) -> str:
    """The key of ``pool`` in the lease file: ``gpu@HOST`` for host-bound pools, else ``pool``."""
    return f"{pool}@{host}" if pool in HOST_POOLS else pool


class LeaseBook:
    """The lease file. Every method takes the lock, reclaims this host's dead leases and saves.

    ``alive(lease)``: is the keeper process running (this host); ``marked()``: the experiments
    that still have a process on this host (asked only when some keeper is dead).
    """

    def __init__(self, home: str | os.PathLike, alive: Callable[[Lease], bool] = _keeper_alive,
                 host: str | None = None, marked: Callable[[], set[str]] = marked_experiments) -> None:
        self.home = Path(home)
        self.path = self.home / "leases.json"
        self.host = host or socket.gethostname()
        self._alive = alive
        self._marked = marked

    def _lock(self):
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return blocking_flock(self.home / "leases.lock", LOCK_TIMEOUT_S)

    def _load(self) -> dict[str, dict[str, Lease]]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        pools: dict[str, dict[str, Lease]] = {}
        for pool, units in raw.items():
            if pool in HOST_POOLS:  # a file of an earlier release: its GPU leases are this host's
                pool = host_pool(pool, self.host)
            pools.setdefault(pool, {}).update({unit: Lease(**lease) for unit, lease in units.items()})
        return pools

    def _save(self, pools: Mapping[str, Mapping[str, Lease]]) -> None:
        data = {pool: {unit: asdict(lease) for unit, lease in units.items()} for pool, units in pools.items() if units}
        write_text_atomic(self.path, json.dumps(data, sort_keys=True))

    def _mine(self, lease: Lease) -> bool:
        return lease.host in ("", self.host)

    def _live(self) -> dict[str, dict[str, Lease]]:
        marked: set[str] | None = None

        def alive(lease: Lease) -> bool:
            nonlocal marked
            if not self._mine(lease) or self._alive(lease):
                return True
            if marked is None:
                marked = self._marked()
            return lease.holder in marked

        return {pool: live_leases(units, alive) for pool, units in self._load().items()}

    def acquire(self, pool: str, inventory: Sequence[str], want: int, holder: str, pid: int,
                start: int) -> tuple[str, ...] | None:
        """Lease ``want`` units of ``pool`` (this host's, for GPUs and cores) to ``holder`` kept by
        ``(pid, start)``; None when busy."""
        got = self.acquire_all([(pool, inventory, want)], holder, pid, start)
        return None if got is None else got[pool]

    def acquire_all(self, wants: Sequence[tuple[str, Sequence[str], int]], holder: str, pid: int,
                    start: int) -> dict[str, tuple[str, ...]] | None:
        """Lease every ``(pool, inventory, want)`` at once, or none of them (None when one is busy).

        All or nothing, under one lock: a job never holds its GPUs while it waits for cores that
        another job, holding those cores, waits for GPUs to give back.
        """
        with self._lock():
            pools = self._live()
            chosen: dict[str, tuple[str, ...]] = {}
            for pool, inventory, want in wants:
                got = choose_units(inventory, pools.get(host_pool(pool, self.host), {}), want, holder)
                if got is None:
                    self._save(pools)
                    return None
                chosen[pool] = got
            for pool, got in chosen.items():
                key = host_pool(pool, self.host)
                units = {u: lease for u, lease in pools.get(key, {}).items()
                         if lease.holder != holder or not self._mine(lease)}
                units.update({unit: Lease(holder, pid, start, self.host) for unit in got})
                pools[key] = units
            self._save(pools)
            return chosen

    def transfer(self, holder: str, pid: int, start: int) -> None:
        """Hand every lease of ``holder`` on this host to a new keeper process."""
        with self._lock():
            pools = self._live()
            for units in pools.values():
                for unit, lease in list(units.items()):
                    if lease.holder == holder and self._mine(lease):
                        units[unit] = Lease(holder, pid, start, self.host)
            self._save(pools)

    def release(self, holder: str) -> None:
        """Free every lease of ``holder`` on this host."""
        with self._lock():
            pools = self._live()
            for pool in pools:
                pools[pool] = {u: lease for u, lease in pools[pool].items()
                               if lease.holder != holder or not self._mine(lease)}
            self._save(pools)

    def held(self) -> dict[str, dict[str, Lease]]:
        """The live leases (dead ones reclaimed), by pool then unit; this host's GPUs and cores under
        ``gpu`` and ``cpu``, other hosts' under ``gpu@HOST`` and ``cpu@HOST``."""
        with self._lock():
            pools = self._live()
            self._save(pools)
        mine = {host_pool(pool, self.host): pool for pool in HOST_POOLS}
        return {mine.get(pool, pool): units for pool, units in pools.items()}

    def held_by(self, holder: str) -> dict[str, tuple[str, ...]]:
        """This host's units leased to ``holder``, by pool (``gpu``, ``cpu``, ``slots:NAME``)."""
        out = {pool: tuple(u for u, lease in units.items() if lease.holder == holder and self._mine(lease))
               for pool, units in self.held().items()}
        return {pool: units for pool, units in out.items() if units}
