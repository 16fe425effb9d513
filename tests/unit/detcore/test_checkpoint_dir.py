"""The work dir's checkpoints behind one object: save makes the newest, prune keeps the newest N and what is
protected, the best is the same file, and a resume finds the newest file that loads."""
from __future__ import annotations

import os
import time
from pathlib import Path

from torch import nn

from detcore.checkpoint import make_meta
from detcore.checkpoint_dir import CheckpointDir
from detcore.contract import WorkDir


def _save(dir_: CheckpointDir, n: int) -> Path:
    meta = make_meta(config_text="{}", classes=["a"], arch=None, iteration=n)
    path = dir_.save(f"iter_{n}.pth", nn.Linear(2, 2), meta, loop={"iter": n})
    os.utime(path, (time.time() + n, time.time() + n))  # distinct mtimes: the newest is the highest n
    return path


def test_save_prune_best_and_latest(tmp_path: Path) -> None:
    ckpts = CheckpointDir(tmp_path)
    paths = [_save(ckpts, n) for n in (1, 2, 3, 4)]
    assert WorkDir(tmp_path).newest_checkpoint() == paths[-1]
    assert (tmp_path / "latest.pth").resolve() == paths[-1].resolve()
    best = ckpts.keep_best(paths[1], "bbox_AP")
    assert best.name == "best_bbox_AP.pth" and os.path.samefile(best, paths[1])
    removed = ckpts.prune(2, protect={"iter_1.pth"})
    assert sorted(p.name for p in removed) == ["iter_2.pth"]
    assert sorted(p.name for p in tmp_path.glob("iter_*.pth")) == ["iter_1.pth", "iter_3.pth", "iter_4.pth"]
    assert best.is_file()  # the best survives its periodic twin's removal (a hard link)
    assert ckpts.latest() == paths[-1]
    paths[-1].write_bytes(b"torn")  # the newest is damaged: the next one that loads is taken
    assert ckpts.latest() == paths[2]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_no_checkpoint_is_none(tmp_path: Path) -> None:
    assert CheckpointDir(tmp_path).latest() is None
    assert CheckpointDir(tmp_path).prune(1, protect=set()) == []
