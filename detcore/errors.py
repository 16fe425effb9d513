"""Error types for mistakes a user can fix.

Every user-facing error says what was received, what was expected and how to fix it.
The CLIs print these as one line on stderr and exit non-zero; anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

from typing import Sequence


class DetcoreError(Exception):
    """Base class of errors caused by user input (configs, data, checkpoints, options)."""


class ConfigError(DetcoreError):
    """A config file, a `_base_` chain or a `--cfg-options` override is wrong."""


class ConfigProblems(ConfigError):
    """Several problems found at once; ``problems`` holds one line each (the CLIs print one per line)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class RegistryError(DetcoreError):
    """A registry name is unknown or registered twice."""


class DataError(DetcoreError):
    """A dataset, an annotation file or an image is missing or malformed."""


class CheckpointError(DetcoreError):
    """A checkpoint is missing, not a checkpoint, truncated or of another architecture."""


class TrainingError(DetcoreError):
    """Training cannot go on (for example a non-finite loss)."""


class WorkDirError(DetcoreError):
    """A work dir cannot take this run: another run holds it, or it holds an earlier run not asked to continue."""
