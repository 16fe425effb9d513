"""The facts of one launch as typed records, and the one way to append and read them (torch-free).

A launch's facts are the JSON lines of ``WORK_DIR/runs/<run id>/events.jsonl``
(:attr:`detcore.contract.RunDir.events`), one object per line with an ``event`` key naming its kind:

:class:`Start` (``start``)
    a rank's attempt began: written by the worker shim (local, Slurm) or by Ray's train loop;
:class:`End` (``end``)
    a rank's worker returned, raised or was killed (the shim outlives its worker, so a SIGKILL is
    recorded exactly); a rank whose shim died too, or a Ray worker whose process was killed, writes none;
:class:`Hang` (``hang``)
    each rank's hang watchdog, before it ends the attempt;
:class:`Lost` (``lost``)
    the scheduler's word on a rank that ended: Ray's controller callback and driver write it; the
    Slurm backend derives one from a ``NODE_FAIL`` in ``sacct`` (no rank) and never writes it;
:class:`Requeue` (``requeue``)
    rank 0 of a Slurm job just before it requeues the job itself (on USR2, or after a hang);
:class:`Stage` (``stage``)
    Ray's controller callback when it places and starts a worker group;
:class:`Scaling` and :class:`Weights` (``scaling``, ``weights``)
    rank 0 of ``detcore train``: the schedule it scaled and the weights it loaded, for the experiment
    store; they say nothing about how a launch ends.

What the facts mean together (restarts, the rank that failed first) is ``launcher.runtime.facts``.

Every writer goes through :func:`append_fact` and every reader through :func:`read_facts`; the JSON
keys are the records' field names (sorted), so files written before these classes existed read the same.

Forward compatibility: a reader never fails on what a newer writer adds. A key a record does not
know is kept in its ``extra`` (and written back unchanged if the record is appended again); an event
kind it does not know becomes an :class:`UnknownFact` holding the whole object; a missing key takes
the field's default; a value of the wrong type that cannot be converted takes the default too. Only a
line that is not a JSON object with a string ``event`` (a torn last line, garbage) is skipped.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from detcore.contract import RunDir, read_jsonl


@dataclass(frozen=True)
class _Record:
    """What every known record shares: its kind (``EVENT``) and the keys a newer writer added."""

    EVENT: ClassVar[str] = ""
    OPTIONAL: ClassVar[tuple[str, ...]] = ()   # fields left out of the JSON while they are None

    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False, kw_only=True)

    def _omitted(self) -> set[str]:
        return {name for name in self.OPTIONAL if getattr(self, name) is None}

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this fact (``event`` plus its fields; unknown keys it was read with kept)."""
        omitted = self._omitted()
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if f.name != "extra" and f.name not in omitted})
        out["event"] = self.EVENT
        return out


@dataclass(frozen=True)
class Start(_Record):
    """A rank's attempt began: the process ``pid`` runs detcore (``shim_pid``: who wrote this)."""

    EVENT: ClassVar[str] = "start"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("node", "node_id")

    rank: int = 0
    attempt: int = 0
    pid: int = 0
    shim_pid: int = 0
    host: str = ""
    time: float | None = None
    master_addr: str | None = None
    master_port: int = 0
    world_size: int = 1
    local_rank: int = 0
    cuda_visible_devices: str | None = None
    node: str | None = None                 # the Slurm node name (SLURMD_NODENAME), under Slurm only
    node_id: str | None = None              # the Ray node id, under Ray only
    restored: Mapping[str, Any] | None = None   # Ray: the checkpoint pointer the worker was handed

    def _omitted(self) -> set[str]:
        return super()._omitted() | ({"restored"} if self.node_id is None else set())


@dataclass(frozen=True)
class End(_Record):
    """A rank's worker ended with ``exit_code`` (negative: killed by that signal); ``detail``: the last
    line of its log when it failed by itself."""

    EVENT: ClassVar[str] = "end"

    rank: int = 0
    attempt: int = 0
    pid: int = 0
    exit_code: int = 0
    detail: str = ""
    time: float | None = None


@dataclass(frozen=True)
class Hang(_Record):
    """The hang watchdog's verdict (``detail``) and the ``state`` of this rank's process (``running``...)."""

    EVENT: ClassVar[str] = "hang"

    attempt: int = 0
    rank: int = 0
    pid: int = 0
    state: str | None = None
    detail: str = ""
    time: float | None = None


@dataclass(frozen=True)
class Lost(_Record):
    """A scheduler reported ``rank`` (None: every rank of the attempt without an end) failed: ``kind`` is
    ``node``, ``process``, ``unreachable``, ``unresponsive`` or ``error``; ``source`` who said so."""

    EVENT: ClassVar[str] = "lost"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("node", "time")

    attempt: int = 0
    rank: int | None = None
    kind: str = ""
    detail: str = ""
    node: str | None = None
    source: str = ""
    time: float | None = None


@dataclass(frozen=True)
class Requeue(_Record):
    """Rank 0 requeues the Slurm job in ``attempt``: on a ``signal`` (USR2, with ``time_left_s`` before the
    time limit and the ``signal_delay_s`` it was sent ahead) or for a ``cause`` (``hang``)."""

    EVENT: ClassVar[str] = "requeue"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("cause",)

    attempt: int = 0
    rank: int = 0
    time: float | None = None
    signal: str | None = None
    time_left_s: float | None = None
    signal_delay_s: float | None = None
    cause: str | None = None

    def _omitted(self) -> set[str]:
        unsignalled = {"signal", "time_left_s", "signal_delay_s"} if self.signal is None else set()
        return super()._omitted() | unsignalled


@dataclass(frozen=True)
class Stage(_Record):
    """Ray's controller is ``placing`` a group of ``workers`` (``resources`` each) or ``starting`` it."""

    EVENT: ClassVar[str] = "stage"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("resources",)

    stage: str = ""
    workers: int | None = None
    resources: Mapping[str, Any] | None = None
    time: float | None = None


@dataclass(frozen=True)
class Scaling(_Record):
    """The schedule rank 0 of ``detcore train`` scaled (world size, batch, lr, ...)."""

    EVENT: ClassVar[str] = "scaling"

    rank: int = 0
    scaling: Mapping[str, Any] | None = None    # None: missing or garbled


@dataclass(frozen=True)
class Weights(_Record):
    """The weights rank 0 of ``detcore train`` loaded: one record (key, given, file, sha256...) each."""

    EVENT: ClassVar[str] = "weights"

    rank: int = 0
    weights: tuple[Mapping[str, Any], ...] | None = None   # None: missing or garbled

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.weights is not None:
            out["weights"] = [dict(w) for w in self.weights]
        return out


@dataclass(frozen=True)
class UnknownFact:
    """A fact of a kind this reader does not know (a newer writer's): kept whole, never interpreted."""

    event: str
    fields: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**self.fields, "event": self.event}


KnownFact = Start | End | Hang | Lost | Requeue | Stage | Scaling | Weights
Fact = KnownFact | UnknownFact
KINDS: dict[str, type[_Record]] = {cls.EVENT: cls for cls in (Start, End, Hang, Lost, Requeue, Stage, Scaling,
                                                             Weights)}


def _convert(value: Any, hint: Any) -> Any:
    """``value`` as the field type ``hint`` says; raises TypeError/ValueError when it cannot be."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
    origin = typing.get_origin(hint) or hint
    if origin is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(value)
        return int(value)
    if origin is float:  # an int stays an int (a float field takes one, and it is written back the same)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(value)
        return value if isinstance(value, (int, float)) else float(value)
    if origin is str:
        if isinstance(value, (dict, list)):
            raise TypeError(value)
        return str(value)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise TypeError(value)
        return tuple(value)
    if isinstance(value, dict):   # a Mapping field
        return value
    raise TypeError(value)


_HINTS: dict[type, dict[str, Any]] = {}


def parse_fact(obj: Mapping[str, Any]) -> Fact | None:
    """The record of one JSON object (None without a string ``event``); see the module's docstring for what
    an unknown kind, an unknown key, a missing key or a value of the wrong type become."""
    event = obj.get("event")
    if not isinstance(event, str):
        return None
    cls = KINDS.get(event)
    if cls is None:
        return UnknownFact(event, {k: v for k, v in obj.items() if k != "event"})
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    values: dict[str, Any] = {}
    for name in names & obj.keys():
        try:
            values[name] = _convert(obj[name], hints[name])
        except (TypeError, ValueError, OverflowError):
            continue  # the field's default
    extra = {k: v for k, v in obj.items() if k not in names and k != "event"}
    return typing.cast(KnownFact, cls(**values, extra=extra))


def fact_line(record: Fact) -> bytes:
    """The line :func:`append_fact` writes for ``record`` (sorted keys; a value JSON cannot hold as text)."""
    return (json.dumps(record.to_json(), sort_keys=True, default=str) + "\n").encode()


def append_fact(run: str | os.PathLike[str], record: Fact) -> bool:
    """Append ``record`` to ``run/events.jsonl`` in a single ``write`` on an ``O_APPEND`` descriptor (atomic
    for lines below PIPE_BUF on a local file system, so ranks and monitors may append at once). False when
    it could not be written (a full disk): facts are best effort, a failure to record one never stops a job."""
    line = fact_line(record)
    try:
        os.makedirs(run, exist_ok=True)
        fd = os.open(RunDir(run).events, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


def read_facts(run: str | os.PathLike[str]) -> list[Fact]:
    """Every fact of ``run`` in the order written (none when the file cannot be read). A torn or garbled
    line (a writer killed mid-line, a full disk) is skipped; what a newer writer added is kept readable."""
    out: list[Fact] = []
    for obj in read_jsonl(RunDir(run).events):
        record = parse_fact(obj)
        if record is not None:
            out.append(record)
    return out
