"""The launcher's user-error type.

It subclasses detcore's :class:`~detcore.errors.DetcoreError` so the CLI turns both (a bad
config found while loading it, a bad launcher option) into one line on stderr.
"""
from __future__ import annotations

from detcore.errors import DetcoreError


class LauncherError(DetcoreError):
    """A launcher request is wrong (resources, ids, options) or cannot be met right now."""
