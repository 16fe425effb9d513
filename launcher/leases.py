"""Leases on countable local resources: GPUs, and a sweep's parallel slots.

The policy (:func:`choose_units`, :func:`live_leases`) is pure. :class:`LeaseBook` keeps the
leases in ``$LAUNCHER_HOME/leases.json`` and changes it only under a file lock, writing a new
file and renaming it over the old one. A lease names its holder (an experiment id) and the
process that keeps it (pid and start tick); when that process is gone, the lease is
reclaimed by the next caller. Known limit: a lease whose keeper process outlives its job
(it never does for the local supervisor) would stay held.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from launcher.locking import blocking_flock
from launcher.procinfo import is_alive

GPU_POOL = "gpu"
LOCK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Lease:
    holder: str
    pid: int
    start: int


Pools = Mapping[str, Mapping[str, Lease]]


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


def _lease_alive(lease: Lease) -> bool:
    return is_alive(lease.pid, lease.start or None)


class LeaseBook:
    """The lease file. Every method takes the lock, reclaims dead leases and saves."""

    def __init__(self, home: str | os.PathLike, alive: Callable[[Lease], bool] = _lease_alive) -> None:
        self.home = Path(home)
        self.path = self.home / "leases.json"
        self._alive = alive

    def _lock(self):
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        return blocking_flock(self.home / "leases.lock", LOCK_TIMEOUT_S)

    def _load(self) -> dict[str, dict[str, Lease]]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {pool: {unit: Lease(**lease) for unit, lease in units.items()} for pool, units in raw.items()}

    def _save(self, pools: Mapping[str, Mapping[str, Lease]]) -> None:
        data = {pool: {unit: asdict(lease) for unit, lease in units.items()} for pool, units in pools.items() if units}
        tmp = self.path.with_name(f".leases.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, self.path)

    def _live(self) -> dict[str, dict[str, Lease]]:
        return {pool: live_leases(units, self._alive) for pool, units in self._load().items()}

    def acquire(self, pool: str, inventory: Sequence[str], want: int, holder: str, pid: int,
                start: int) -> tuple[str, ...] | None:
        """Lease ``want`` units of ``pool`` to ``holder`` kept by ``(pid, start)``; None when busy."""
        with self._lock():
            pools = self._live()
            units = dict(pools.get(pool, {}))
            chosen = choose_units(inventory, units, want, holder)
            if chosen is not None:
                for unit in [u for u, lease in units.items() if lease.holder == holder]:
                    del units[unit]
                units.update({unit: Lease(holder, pid, start) for unit in chosen})
                pools[pool] = units
            self._save(pools)
            return chosen

    def transfer(self, holder: str, pid: int, start: int) -> None:
        """Hand every lease of ``holder`` to a new keeper process."""
        with self._lock():
            pools = self._live()
            for units in pools.values():
                for unit, lease in list(units.items()):
                    if lease.holder == holder:
                        units[unit] = Lease(holder, pid, start)
            self._save(pools)

    def release(self, holder: str) -> None:
        with self._lock():
            pools = self._live()
            for pool in pools:
                pools[pool] = {u: lease for u, lease in pools[pool].items() if lease.holder != holder}
            self._save(pools)

    def held(self) -> dict[str, dict[str, Lease]]:
        """The live leases (dead ones reclaimed), by pool then unit."""
        with self._lock():
            pools = self._live()
            self._save(pools)
            return pools
