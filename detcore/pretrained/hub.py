"""Weights files through torch hub's cache: downloaded once with their hash checked, then read from disk.

:func:`resolve_weights` turns a config value (a torchvision name or a local path) into a file
and a :class:`WeightsRecord` saying what was used (the name, the file, its sha256), which
training keeps in checkpoint meta and in the run's facts. Files go to torch hub's folder
(``$TORCH_HOME/hub/checkpoints``, what ``torchvision.models`` use), so weights torchvision
downloaded are found and the other way round. Files are read with ``weights_only=True``.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from detcore.errors import CheckpointError
from detcore.pretrained.names import TorchvisionWeights, parse_weights

logger = logging.getLogger(__name__)

# Seconds a download may wait to connect, or between two reads: a node without a route to the
# internet fails fast (refused, unreachable), one whose firewall drops packets fails after this.
NETWORK_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class WeightsRecord:
    """What a run loaded: the config key, the value it had, torchvision's name (None for a local
    file), the file read and its sha256."""

    key: str
    given: str
    weights: str | None
    file: str
    sha256: str
    url: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """``model.backbone.weights: ResNet50_Weights.IMAGENET1K_V1 (resnet50-0676ba61.pth, sha256 0676ba61...)``"""
        name = self.weights or self.given
        return f"{self.key}: {name} ({Path(self.file).name}, sha256 {self.sha256[:16]})"


def checkpoints_dir() -> Path:
    """torch hub's weights folder: ``torch.hub.get_dir()/checkpoints``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _network_timeout(seconds: float) -> Iterator[None]:
    """torch hub's downloader has no timeout; bound its connect and each read through the socket
    default (process-wide, restored after; name resolution is the system resolver's own limit)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def offline_message(weights: TorchvisionWeights, folder: Path, reason: str, key: str) -> str:
    """One line: which file is missing, where it comes from, where to put it."""
    what = weights.name if weights.given == weights.name else f"{weights.given} = {weights.name}"
    return (f"{key + ': ' if key else ''}{what} needs {weights.file}, which is not in {folder} and could not be "
            f"downloaded from {weights.url} ({reason}); put that file in {folder} (on a machine with internet: "
            f"`detcore model download {weights.name}`, then copy {weights.file}), or point TORCH_HOME at a folder "
            f"whose hub/checkpoints holds it")


def fetch(weights: TorchvisionWeights, *, key: str = "", progress: bool | None = None) -> Path:
    """The cached file of ``weights``, downloaded first when missing (torch hub, hash prefix checked).

    Concurrent callers (the ranks of one job, jobs sharing a cache) download once: the download
    holds a file lock beside the file. ``progress``: a bar on stderr (default: when it is a terminal;
    a log gets a line before and after). CheckpointError (one line, starting with ``key:`` when given) when
    offline or the hash differs.
    """
    import torch.hub
    from filelock import FileLock

    folder = checkpoints_dir()
    path = folder / weights.file
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f".{weights.file}.lock"))
        lock.acquire()
    except OSError as exc:
        raise CheckpointError(offline_message(weights, folder, f"cannot write there: {exc.strerror or exc}",
                                              key)) from None
    try:
        if path.is_file():  # another process finished it while this one waited
            return path
        show = sys.stderr.isatty() if progress is None else progress
        logger.info("downloading %s (%s) from %s to %s", weights.name, weights.file, weights.url, folder)
        with _network_timeout(NETWORK_TIMEOUT_S):
            try:
                torch.hub.download_url_to_file(weights.url, str(path), weights.sha256_prefix, progress=show)
            except RuntimeError as exc:
                if "invalid hash value" not in str(exc):
                    raise
                raise CheckpointError(f"{key + ': ' if key else ''}the download of {weights.url} does not match the "
                                      f"sha256 prefix {weights.sha256_prefix} in its name (a proxy or a broken "
                                      f"transfer changed it); nothing was kept in {folder}, retry") from None
            except (OSError, ValueError) as exc:  # URLError, timeouts, refused, unreachable, HTTP errors
                reason = getattr(exc, "reason", None) or exc
                raise CheckpointError(offline_message(weights, folder, " ".join(str(reason).split())[:200],
                                                      key)) from None
        logger.info("downloaded %s (%.1f MB)", path, path.stat().st_size / 1e6)
        return path
    finally:
        lock.release()


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    record: WeightsRecord
    torchvision: TorchvisionWeights | None


def resolve_weights(value: str | os.PathLike, key: str, *, progress: bool | None = None) -> ResolvedWeights:
    """The file ``value`` names (a torchvision name, fetched into the hub cache, or a local path) and
    the record of it. CheckpointError/ConfigError (one line) for a bad name, a missing file, no network."""
    named = parse_weights(str(value), key) if isinstance(value, str) else None
    if named is not None:
        path = fetch(named, key=key, progress=progress)
        digest = sha256_of(path)
        if not digest.startswith(named.sha256_prefix):
            logger.warning("%s: %s in the cache has sha256 %s..., not the %s... its name promises: not the file "
                           "torchvision published (replaced or damaged); delete it to download it again",
                           key, path, digest[:16], named.sha256_prefix)
        return ResolvedWeights(path, WeightsRecord(key, named.given, named.name, str(path), digest, named.url), named)
    path = Path(value).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{key}: weights file {path} not found; give an existing file or a torchvision name "
                              f"such as torchvision://resnet50 (`detcore model list`)")
    return ResolvedWeights(path, WeightsRecord(key, str(value), None, str(path.resolve()), sha256_of(path)), None)
