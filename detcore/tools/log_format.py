"""How ``detcore`` log lines look: short on the console, complete in the work dir's log file.

The console shows ``HH:MM:SS message`` for INFO, so a progress line fits a terminal, and
``HH:MM:SS LEVEL logger: message`` for everything else, so a warning or a DEBUG line says where
it comes from. The log file (``train.log``, ``test.log``) keeps the date, level and logger on
every line, for grep and for tools that read it.
"""
from __future__ import annotations

import logging
import sys

FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS message`` at INFO, ``HH:MM:SS LEVEL logger: message`` at any other level."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")
        self._named = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record) if record.levelno == logging.INFO else self._named.format(record)


def configure_console(level: str | int) -> None:
    """Root logging at ``level`` to stderr with :class:`ConsoleFormatter` (as ``logging.basicConfig``:
    nothing changes when the root logger has handlers already)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleFormatter())
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler])
