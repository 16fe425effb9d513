"""Self-describing checkpoints, written atomically and read with ``weights_only=True``.

A checkpoint is one file holding ``meta`` (resolved config text, class names, epoch,
iteration, total batch, world size, versions, git commit, creation time, architecture) and
``state_dict``; resume checkpoints add ``optimizer``, ``scheduler``, ``scaler``, ``rng`` and
``loop`` (sampler position). Everything is plain types and tensors.
"""
from __future__ import annotations

import datetime as _dt
import contextlib
import errno
import functools
import logging
import os
import pickle
import re
import shutil
import subprocess
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from detcore.atomic import replacing, temp_sibling
from detcore.contract import PERIODIC_CHECKPOINT as _PERIODIC
from detcore.errors import CheckpointError

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
# The temporary names of the checkpoint writers (checkpoint_temp_file, detcore.atomic.temp_sibling): ``.iter_4.pth.k3j9x_2a.tmp``,
# ``.last_checkpoint.1234.tmp``, ``.best_bbox_AP.pth.1234.tmp`` (``.best.1234.tmp`` in earlier versions).
_TEMP_NAME = re.compile(r"^\.(?:.+\.pth|last_checkpoint|best)\.[A-Za-z0-9_]+\.tmp$")


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the detcore source tree, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    import torchvision

    import detcore

    return {"detlaunch": str(detcore.__version__), "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


def make_meta(*, config_text: str, classes: list[str] | tuple[str, ...], arch: str | None, epoch: int = 0,
              iteration: int = 0, total_batch: int | None = None, world_size: int = 1, **extra: Any) -> dict:
    return {
        "format": FORMAT_VERSION, "config": config_text, "classes": list(classes), "arch": arch, "epoch": int(epoch),
        "iter": int(iteration), "total_batch": total_batch, "world_size": int(world_size), "versions": versions(),
        "git_commit": git_commit(), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def checkpoint_temp_file(path: Path) -> tuple[int, str]:
    """``(fd, name)`` of a new temporary file next to ``path`` (``.NAME.RANDOM.tmp``), for atomic_torch_save."""
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)




def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that checkpoint writes killed mid-write left in ``directory``.

    Only names made by :func:`checkpoint_temp_file` and :func:`detcore.atomic.temp_sibling` for checkpoints,
    the ``last_checkpoint`` pointer and ``best_*.pth`` match. Call it on the one writing rank before
    it saves: a second trainer writing into the same directory at the same time would lose its file
    (not supported). Errors are ignored (best effort); returns what was removed.
    """
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if _TEMP_NAME.match(entry.name) and (entry.is_file(follow_symlinks=False) or entry.is_symlink()):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


LATEST = "latest.pth"


def point_latest(work_dir: str | os.PathLike, name: str) -> Path:
    """Make ``work_dir/latest.pth`` name the checkpoint ``work_dir/name``, atomically (MMDetection's habit).

    A relative symlink where the file system has them, else a hard link, else a copy; each is made
    under a temporary name and renamed over ``latest.pth``, so a reader sees the old or the new one.
    It always names the newest save, which the ``max_keep`` clean-up never removes (a hard link or
    copy would survive it anyway).
    """
    work_dir = Path(work_dir)
    latest = work_dir / LATEST
    with contextlib.suppress(FileNotFoundError):
        temp_sibling(latest).unlink()  # left by a writer of this pid that was killed: symlink() needs the name free
    with replacing(latest) as tmp:
        try:
            os.symlink(name, tmp)
        except OSError:
            try:
                os.link(work_dir / name, tmp)
            except OSError:
                shutil.copyfile(work_dir / name, tmp)
    return latest


def periodic_checkpoints_to_remove(work_dir: str | os.PathLike, max_keep: int, protect: set[str]) -> list[Path]:
    """The periodic checkpoints (``iter_N.pth``, ``epoch_N.pth``) of ``work_dir`` beyond the newest ``max_keep``.

    Counts every such file on disk, so the files this run saved before a resume (and the one it
    resumed from) rotate out like the others; a work dir holds one run, so none is another run's. Newest means most recently written (mtime, then N). Names in ``protect``
    (the file ``last_checkpoint`` names, the one just saved) are never returned; ``best_*.pth``
    never matches. ``max_keep <= 0`` keeps everything.
    """
    if max_keep <= 0:
        return []
    found = []
    for path in Path(work_dir).iterdir():
        m = _PERIODIC.match(path.name)
        if m:
            try:
                found.append((path.stat().st_mtime_ns, int(m.group(2)), path))
            except OSError:
                continue  # removed meanwhile
    found.sort(reverse=True)
    return [path for _, _, path in found[max_keep:] if path.name not in protect]


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """Save to a temporary file in the same folder, fsync it, rename over ``path``, fsync the folder.

    A crash at any point leaves either the old file or the new one, never a torn file.
    Raises CheckpointError (e.g. disk full) after removing the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = checkpoint_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        # torch's zip writer reports a short write on a full disk as a RuntimeError, not ENOSPC
        full = isinstance(exc, (OSError, RuntimeError)) and (
            getattr(exc, "errno", None) == errno.ENOSPC or shutil.disk_usage(path.parent).free < 2 ** 20)
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)) and (full or isinstance(exc, OSError)):
            reason = "No space left on device" if full else (exc.strerror or str(exc))
            raise CheckpointError(f"cannot write checkpoint {path}: {reason}; free space or choose another "
                                  f"--work-dir (the previous checkpoint is untouched)") from exc
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (or the module itself)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor (inside dicts, lists and tuples) copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        out = OrderedDict((k, to_cpu(v)) for k, v in obj.items()) if isinstance(obj, OrderedDict) else \
            {k: to_cpu(v) for k, v in obj.items()}
        if getattr(obj, "_metadata", None) is not None:  # a module state dict's versions
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: Mapping[str, Any], **state: Any) -> Path:
    """Write ``{meta, state_dict, **state}`` atomically; ``state`` holds optimizer, scheduler, rng, ...

    Tensors are stored on the CPU, so a GPU run's checkpoint loads anywhere without a map_location.
    """
    payload = {"meta": dict(meta), "state_dict": unwrap(model).state_dict(),
               **{k: v for k, v in state.items() if v is not None}}
    return atomic_torch_save(to_cpu(payload), path)


def load_checkpoint(path: str | os.PathLike, key: str = "checkpoint") -> dict:
    """Read a checkpoint with ``weights_only=True``: ``{"meta": {...}, "state_dict": {...}, ...}``.

    ``path`` is a file written by ``detcore train``, a plain model state dict file (``meta`` is then
    empty), or a torchvision COCO detector by name (``torchvision://fasterrcnn_resnet50_fpn``,
    ``FasterRCNN_ResNet50_FPN_Weights.COCO_V1``: fetched through torch hub's cache; ``meta`` says its
    architecture, ``label_ids: coco`` and the weights used). CheckpointError (one line, naming
    ``key``) for a missing, unsafe, torn or foreign file.
    """
    from detcore.pretrained.names import parse_weights

    named = parse_weights(path, key) if isinstance(path, str) else None
    if named is not None:
        return _torchvision_checkpoint(named, key)
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{key}: checkpoint {path} not found; pass an existing .pth file (a work dir's "
                              f"last_checkpoint names the newest) or a torchvision detector such as "
                              f"torchvision://fasterrcnn_resnet50_fpn")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a torn or foreign file
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        unsafe = next((line for line in lines if "GLOBAL" in line), None)
        if isinstance(exc, pickle.UnpicklingError) and unsafe:
            raise CheckpointError(f"checkpoint {path} was refused by weights_only loading (it holds objects that "
                                  f"could run code: {unsafe[:200]}); only load checkpoints you trust, re-saved as "
                                  f"plain tensors") from None
        detail = next((line for line in lines if line.startswith("Unsupported")), lines[0])
        raise CheckpointError(f"checkpoint {path} is not a readable torch file (truncated or not a checkpoint: "
                              f"{detail[:160]})") from None
    if _is_state_dict(data):
        return {"state_dict": data, "meta": {}}
    if not isinstance(data, dict) or not _is_state_dict(data.get("state_dict")):
        what = f"a dict with keys {sorted(map(str, data))[:5]}" if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path} holds {what}; expected a detcore checkpoint (meta and state_dict, as detcore "
                              f"train writes) or a plain state dict (parameter name -> tensor, as "
                              f"torch.save(model.state_dict(), path) writes)")
    data.setdefault("meta", {})
    return data


def _is_state_dict(data: Any) -> bool:
    return isinstance(data, dict) and bool(data) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                         for k, v in data.items())


def _torchvision_checkpoint(named: Any, key: str) -> dict:
    """A torchvision COCO detector's weights as a checkpoint (its labels are COCO category ids)."""
    from detcore.pretrained.hub import resolve_weights
    from detcore.pretrained.names import BACKBONE_OF, DETECTOR_OF

    if not named.is_detector:
        kind = BACKBONE_OF[named.builder][0]
        raise CheckpointError(f"{key}: {named.given} holds ImageNet weights of a {kind} backbone, not a detector; set "
                              f"model.backbone.weights: {named.given} instead (a checkpoint is a whole detector, "
                              f"e.g. torchvision://fasterrcnn_resnet50_fpn; `detcore model list` shows them)")
    resolved = resolve_weights(named.given, key)
    meta = {"arch": DETECTOR_OF[named.builder], "label_ids": "coco", "torchvision": named.builder,
            "weights": [resolved.record.to_dict()]}
    return {"state_dict": read_state_dict(resolved.path), "meta": meta}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A model state dict from a detcore checkpoint or a plain ``state_dict`` file (torchvision's)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} not found; give an existing file or a torchvision name such as "
                              f"torchvision://resnet50 (`detcore model list`)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure here means "not a weights file"
        raise CheckpointError(f"{path} is not a loadable weights file ({str(exc).splitlines()[0][:160]})") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return data


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    missing: list[str] = field(default_factory=list)


def load_weights(model: nn.Module, source: str | os.PathLike | Mapping[str, Any], *, strict_arch: bool = True,
                 min_match: float = 0.5) -> LoadReport:
    """Load every compatible tensor of ``source`` into ``model`` and report the rest by name.

    Tensors whose shape differs (e.g. a classifier for another number of classes) are
    skipped and named. A checkpoint of another architecture (its ``meta.arch`` differs, or
    fewer than ``min_match`` of the model's tensors are found) is a CheckpointError.
    """
    model = unwrap(model)
    if isinstance(source, Mapping):
        ckpt, where = dict(source), "checkpoint"
    else:
        where = str(source)
        ckpt = load_checkpoint(source)
    arch, theirs = ckpt.get("meta", {}).get("arch"), ckpt["state_dict"]
    ours_arch = getattr(model, "arch", None)
    if strict_arch and arch and ours_arch and arch != ours_arch:
        raise CheckpointError(f"{where} holds a {arch} but the config builds a {ours_arch}; use a checkpoint of "
                              f"the same architecture or change model.type")
    own = model.state_dict()
    report = LoadReport()
    compatible = {}
    for key, tensor in theirs.items():
        if key not in own:
            if not key.endswith("num_batches_tracked"):  # a BatchNorm counter frozen BN has no slot for
                report.skipped.append((key, "not in model"))
        elif own[key].shape != tensor.shape:
            report.skipped.append((key, f"shape {tuple(tensor.shape)} != {tuple(own[key].shape)}"))
        else:
            compatible[key] = tensor
    matched = sum(1 for k in own if k in compatible or k.endswith("num_batches_tracked"))
    foreign = [k for k, why in report.skipped if why == "not in model"]
    if (own and matched / len(own) < min_match) or len(foreign) > 0.1 * max(1, len(theirs)):
        raise CheckpointError(f"{where} matches only {len(compatible)} of the model's {len(own)} tensors and has "
                              f"{len(foreign)} the model lacks (e.g. {', '.join(foreign[:2]) or '-'}): it is a "
                              f"checkpoint of another architecture or backbone; check model.backbone and model.type")
    model.load_state_dict(compatible, strict=False)
    report.loaded = sorted(compatible)
    report.missing = sorted(k for k in own if k not in compatible and not k.endswith("num_batches_tracked"))
    if report.skipped:
        logger.warning("load_from %s: skipped %d tensor(s): %s", where, len(report.skipped),
                       ", ".join(f"{k} ({why})" for k, why in report.skipped[:10]) +
                       (" ..." if len(report.skipped) > 10 else ""))
    return report
