"""What Ray says about a job's workers, appended to the launch's facts (see :mod:`launcher.runtime.facts`).

A Ray Train worker runs detcore in-process, so a worker that is SIGKILLed, OOM-killed or lost with
its node writes no ``end`` fact, and Ray then tears down the rest of the group, which writes none
either. Who failed first is Ray Train's own knowledge, so its controller records it:

* :class:`~launcher.backends.ray_train.callbacks.RecordFailures` (a ``ray.train.UserCallback``, run
  in the controller process) appends a ``lost`` fact for every worker in the first failing
  health-check poll, with the kind of failure Ray reported (:func:`loss_kind`). The ranks Ray
  kills afterwards are not reported, so they are not blamed.
* Ray reports a lost node's workers as unreachable seconds before it declares the node dead (its
  health checks take ~15 s). The driver asks ``ray.nodes()`` while such a loss is fresh and appends
  the ``node`` verdict (:func:`node_losses`).
* :class:`~launcher.backends.ray_train.callbacks.RecordStages` appends ``stage`` facts when the
  controller places a worker group and when its workers have started, so the job's reason says
  when it waits for resources. It uses Ray Train's developer callback interface for worker
  groups; on a Ray without it the stage comes from the workers' own facts only.

Everything here is pure: the callbacks and the driver do the appending.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from detcore.facts import Fact, Lost, Stage, Start

NODE_VERDICT_WAIT_S = 60.0  # how long after a worker was reported unreachable its node is watched


def loss_kind(error: BaseException) -> str:
    """``process`` (the worker's process died), ``unreachable``, ``unresponsive`` (missed health checks)
    or ``error`` (an exception the worker raised), from the type of the error Ray Train reported."""
    inner = getattr(error, "health_check_failure", None) or error
    names = {cls.__name__ for cls in type(inner).__mro__}
    if "WorkerHealthCheckTimeoutError" in names:
        return "unresponsive"
    if "ActorUnavailableError" in names:
        return "unreachable"
    if "RayActorError" in names:
        return "process"
    return "error"


def _first_line(error: BaseException) -> str:
    inner = getattr(error, "health_check_failure", None) or error
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    return (lines[0] if lines else type(inner).__name__)[:300]


def current_attempt(events: Sequence[Fact]) -> int:
    """The attempt the worker group Ray Train runs now belongs to: the newest any rank started, or the next
    one when the controller placed a new group since (its workers have not recorded their start yet)."""
    newest, new_group = -1, False
    for e in events:
        if isinstance(e, Start):
            newest, new_group = max(newest, e.attempt), False
        elif isinstance(e, Stage):
            new_group = True
    return 0 if newest < 0 else newest + new_group


def failure_facts(worker_exceptions: Mapping[int, BaseException], events: Sequence[Fact],
                  now: float) -> list[Lost]:
    """One ``lost`` fact per rank Ray Train reported failed in this poll (pure)."""
    attempt = current_attempt(events)
    return [Lost(attempt=attempt, rank=int(rank), kind=loss_kind(error), detail=_first_line(error), source="ray",
                 time=now)
            for rank, error in sorted(worker_exceptions.items())]


def _node_verdicts(events: Sequence[Fact]) -> set[tuple[int | None, int]]:
    return {(e.rank, e.attempt) for e in events if isinstance(e, Lost) and e.kind == "node"}


def node_losses(events: Sequence[Fact], nodes: Sequence[Mapping], now: float) -> list[Lost]:
    """``lost`` facts of kind ``node`` for reported ranks whose Ray node ``ray.nodes()`` now lists as dead
    and that have no node verdict yet (pure)."""
    starts = {(e.rank, e.attempt): e for e in events if isinstance(e, Start)}
    dead = {n.get("NodeID"): n for n in nodes if not n.get("Alive", True)}
    judged = _node_verdicts(events)
    out = []
    for e in events:
        if not isinstance(e, Lost) or e.source != "ray" or (e.rank, e.attempt) in judged:
            continue
        start = starts.get((e.rank or 0, e.attempt))
        node = dead.get(start.node_id if start is not None else None)
        if node is None:
            continue
        judged.add((e.rank, e.attempt))
        out.append(Lost(attempt=e.attempt, rank=e.rank, kind="node",
                        node=f"{str(node.get('NodeID'))[:12]} ({node.get('NodeManagerAddress', '?')})",
                        detail=f"Ray: {node.get('DeathReasonMessage') or 'the node died'}", source="ray", time=now))
    return out


def awaiting_node_verdict(events: Sequence[Fact], now: float,
                          kinds: tuple[str, ...] = ("process", "unreachable", "unresponsive")) -> bool:
    """A rank was reported failed (one of ``kinds``) within ``NODE_VERDICT_WAIT_S`` and has no node verdict
    yet (pure). Only an ``unreachable`` worker is worth waiting for: Ray says a dead process at once."""
    judged = _node_verdicts(events)
    return any(isinstance(e, Lost) and e.source == "ray" and e.kind in kinds and (e.rank, e.attempt) not in judged
               and now - (e.time or 0) < NODE_VERDICT_WAIT_S for e in events)
