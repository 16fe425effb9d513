"""What a running launch is doing now, in one line: its stage from the facts and heartbeats (pure).

The stages, in order: the scheduler places the workers (a Ray ``stage`` fact), starts them, the
ranks build the model and load the data (``start`` facts, no heartbeat yet), train (heartbeats:
the newest iteration), evaluate (a heartbeat whose phase is ``evaluating``). The ending
(finished, failed, cancelled) is the monitor's own. After a restart the line says which restart
and what caused it, so the cause stays visible while the job runs on.
"""
from __future__ import annotations

from typing import Mapping

from detcore.contract import Beat
from detcore.facts import Stage
from launcher.runtime.facts import RunFacts


def restart_note(restarts: int, limit: int, failure: str) -> str:
    """``restart 1 of at most 2, after rank 1 killed by SIGKILL`` (a negative limit: no limit)."""
    bound = f" of at most {limit}" if limit >= 0 else ""
    return f"restart {restarts}{bound}, after {failure or 'a worker failure'}"


def _resources(stage: Stage) -> str:
    each = stage.resources or {}
    parts = [f"{v:g} {k}" for k, v in sorted(each.items()) if isinstance(v, (int, float)) and v]
    return f" ({', '.join(parts)} each)" if parts else ""


def stage_line(facts: RunFacts, beats: Mapping[int, Beat | None], world_size: int) -> str:
    """The stage of the newest attempt (``""`` before any fact of one)."""
    if facts.stage is not None:
        n = facts.stage.workers or world_size
        if facts.stage.stage == "placing":
            return f"waiting for Ray to place {n} worker(s){_resources(facts.stage)}"
        return f"starting {n} worker(s)"
    if facts.attempt < 0:
        return ""
    seen = [b for b in beats.values() if b is not None]
    if not seen:
        up = len(facts.current)
        ranks = f"{up} of {world_size} ranks started" if up < world_size else f"{up} rank(s) started"
        return f"{ranks}: building the model and loading data"
    iteration = max(b.iteration for b in seen)
    if any(b.phase == "evaluating" for b in seen):
        return f"evaluating at iteration {iteration}"
    return f"training at iteration {iteration}"


def running_reason(facts: RunFacts, beats: Mapping[int, Beat | None], world_size: int, max_restarts: int) -> str:
    """The reason shown while the launch runs: its stage, and the newest restart with its cause."""
    line = stage_line(facts, beats, world_size)
    if facts.restarts and facts.failures:
        note = restart_note(facts.restarts, max_restarts, facts.failure_before(facts.attempt))
        line = f"{line} ({note})" if line else note
    return line
