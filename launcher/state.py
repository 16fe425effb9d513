"""The job lifecycle shared by every backend (its own module so reading the store stays import-light)."""
from __future__ import annotations

from enum import Enum

from launcher.errors import LauncherError


class JobState(str, Enum):
    """Lifecycle of an experiment, shared by every backend."""

    QUEUED = "queued"          # waiting for local resources (GPU leases, sweep slots)
    PENDING = "pending"        # handed to the backend, not started yet (supervisor starting, Slurm queue)
    RUNNING = "running"
    RESTARTING = "restarting"  # a worker died; the group is being restarted from the newest checkpoint
    PREEMPTED = "preempted"    # stopped by the cluster; will be requeued and resume
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    @classmethod
    def parse(cls, text: str) -> JobState:
        try:
            return cls(text)
        except ValueError:
            raise LauncherError(f"unknown state {text!r}; choose one of {', '.join(s.value for s in cls)}") from None
