"""The trainer: a small iteration loop with typed hooks, exact resume and DDP.

Epoch-based runners are iteration loops underneath (``max_iters = max_epochs *
iters_per_epoch``); the sampler position is ``(epoch, batch within epoch)`` and is saved with
every RNG state, so a resumed run continues with the same next batch and the same losses.
"""
from __future__ import annotations

import logging
import math
import os
import resource
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.nn.parallel import DistributedDataParallel

from detcore.checkpoint import load_checkpoint, load_weights, make_meta, unwrap
from detcore.checkpoint_dir import CheckpointDir
from detcore.config import dump_config
from detcore.config_check import ConfigProblems, training_problems
from detcore.contract import EXIT_STOPPED, WorkDir
from detcore.engine import hooks as H
from detcore.engine.compile_backbone import compile_backbone
from detcore.engine.dist import DistInfo, all_reduce_max, all_reduce_mean_async, barrier, ddp_options, init_distributed
from detcore.engine.heartbeat import Heartbeat, beating
from detcore.engine.malloc import keep_freed_memory
from detcore.engine.metrics_log import MetricsLog
from detcore.engine.optim import build_optimizer, build_scheduler, lr_factor_fn
from detcore.engine.resume import keep_base_lrs, restore_scaler
from detcore.engine.rng import configure_determinism, gather_rng_states, restore_rank_state
from detcore.engine.rng import rng_state, set_rng_state  # noqa: F401 - their former home
from detcore.engine.scaling import SCALING_KEY, scale_config, split_batch_size
from detcore.engine.setup import build_loaders, seed_everything
from detcore.engine.stop import TrainingInterrupted, install_stop_signals, request_stop, stop_is_requested
from detcore.errors import CheckpointError, ConfigError, TrainingError
from detcore.evaluation.coco_eval import DEFAULT_BACKEND
from detcore.loggers.hook import experiment_logger_hook
from detcore.models import build_detector
from detcore.registry import HOOKS

logger = logging.getLogger(__name__)


class Trainer:
    def __init__(self, cfg: Mapping[str, Any], work_dir: str | os.PathLike, *, resume: str | None = None,
                 load_from: str | None = None, validate: bool = True, amp: bool = False, seed: int = 0,
                 deterministic: bool = False, device: str | None = None,
                 heartbeat_dir: str | os.PathLike | None = None, hparams: Mapping[str, Any] | None = None) -> None:
        """``heartbeat_dir``: where every rank records its newest finished iteration for a hang watchdog
        (``detcore.contract.write_heartbeat``; ``detcore train`` passes ``$DETCORE_HEARTBEAT_DIR``).
        ``hparams``: the run's varying keys, written to TensorBoard's HParams tab at the end."""
        self.cfg = dict(cfg)
        self.hparams = dict(hparams or {})
        self.work_dir = Path(work_dir)
        configure_determinism(deterministic)  # before the first CUDA call (cuBLAS reads its setting once)
        ddp_kwargs = ddp_options(self.cfg.get("dist_params"))  # checked before any process group exists
        self.dist: DistInfo = init_distributed(device, (self.cfg.get("dist_params") or {}).get("timeout_min"))
        logger.debug(keep_freed_memory())  # before the model and loaders allocate (loader workers inherit it)
        # auto_scale_lr, once, at the world size this run really has (launcher, torchrun or one process alike)
        self.cfg, self.scaling = scale_config(self.cfg, self.dist.world_size)
        logger.info("auto_scale_lr: %s", self.scaling.describe())
        self.seed, self.deterministic = seed, deterministic
        self.heartbeat = Heartbeat(heartbeat_dir, self.dist.rank) if heartbeat_dir else None
        seed_everything(seed, deterministic, rank=self.dist.rank)
        self.checkpoints = CheckpointDir(self.work_dir)
        if self.dist.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            for path in self.checkpoints.remove_stale_temp_files():
                logger.info("removed %s, left by a save that was killed mid-write", path.name)
            WorkDir(self.work_dir).config.write_text(dump_config(self.cfg))
        barrier()
        resume_path = self._resume_path(resume) if resume else None
        load_key = "--load-from" if load_from else "load_from"
        load_from = None if resume_path else load_from or self.cfg.get("load_from")
        problems = training_problems(self.cfg, load_from=load_from, resume=str(resume_path) if resume_path else None)
        if problems:
            raise ConfigProblems(problems)
        self.train_loader, self.val_loader, self.classes = build_loaders(self.cfg, self.dist, seed, validate)
        # a checkpoint loaded next holds the backbone too: its ImageNet weights are not read
        self.model = build_detector(self.cfg["model"], backbone_weights=not (resume_path or load_from))
        self.model.to(self.dist.device)
        self.arch = self.model.arch
        self.weights_used: list[dict] = list(self.model.weights_records)  # what the weights came from: in meta
        if load_from:
            self.weights_used = self._load_from(load_from, load_key)
        runner = dict(self.cfg.get("runner") or {"type": "EpochBasedRunner", "max_epochs": 12})
        self.by_epoch = runner.get("type", "EpochBasedRunner") == "EpochBasedRunner"
        self.iters_per_epoch = len(self.train_loader.batch_sampler)
        if self.iters_per_epoch == 0:
            raise ConfigError("the training split yields no batch; lower data.samples_per_gpu or add images")
        key = "max_epochs" if self.by_epoch else "max_iters"
        if key not in runner:
            raise ConfigError(f"runner.{key} is required for {runner.get('type')}")
        units = int(runner[key])
        self.max_iters = units * self.iters_per_epoch if self.by_epoch else units
        self.optimizer = build_optimizer(self.model, self.cfg.get("optimizer") or {"type": "SGD", "lr": 0.02})
        self.scheduler = build_scheduler(self.optimizer, lr_factor_fn(
            self.cfg.get("lr_config"), iters_per_epoch=self.iters_per_epoch, by_epoch=self.by_epoch, max_units=units))
        amp = amp or self.cfg.get("amp") is True  # --amp, or the config's amp: true (MMDetection's AMP wrapper)
        self.amp = bool(amp and self.dist.device.type == "cuda")
        if amp and not self.amp:
            logger.warning("mixed precision (--amp, amp: true) needs a CUDA device; training on %s in full precision",
                           self.dist.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.grad_clip = (self.cfg.get("optimizer_config") or {}).get("grad_clip")
        # optimizer.foreach: true clips with torch's multi-tensor norm as well (None: torch's choice per device)
        self.clip_foreach = True if (self.cfg.get("optimizer") or {}).get("foreach") else None
        self.compiled = compile_backbone(self.model, self.cfg.get("compile"), self.dist.device)
        if self.dist.distributed:
            self.model = DistributedDataParallel(
                self.model, device_ids=[self.dist.device.index] if self.dist.device.type == "cuda" else None,
                broadcast_buffers=has_running_stats(self.model), **ddp_kwargs)
        self.iter, self._stop_now = 0, False
        self.step_stats: dict[str, float] = {}  # the newest step's mean losses and times (LoggerHook reads them)
        self.metrics = MetricsLog(self.work_dir, writes=self.dist.is_main)  # metrics.jsonl, TensorBoard, loggers
        self.hooks = self._build_hooks(validate)
        self.resumed = False
        if resume_path:
            self.resume(str(resume_path))
        # a resumed run logs from iter + 1 on: TensorBoard hides the events an earlier run logged from there
        self.metrics.open_tensorboard(self.iter + 1 if self.resumed else 0, dump_config(self.cfg))

    # ---- set-up -----------------------------------------------------------------------
    def _build_hooks(self, validate: bool) -> list[H.HookBase]:
        ckpt = dict(self.cfg.get("checkpoint_config") or {})
        evaluation = dict(self.cfg.get("evaluation") or {})
        log = {k: v for k, v in (self.cfg.get("log_config") or {}).items() if k != "hooks"}  # hooks: loggers below
        hooks: list[H.HookBase] = [H.LRSchedulerHook(), H.LoggerHook(**log)]
        if validate and self.val_loader is not None:
            hooks.append(H.EvalHook(**evaluation))
        hooks.append(H.CheckpointHook(**ckpt))
        for hook_cfg in self.cfg.get("custom_hooks") or []:
            hooks.append(HOOKS.build(hook_cfg))
        loggers = experiment_logger_hook(self.cfg)  # MLflow / W&B; last, so older checkpoints' hook states still line up
        if loggers is not None:
            hooks.append(loggers)
        for hook in hooks:
            hook.trainer = self
        return hooks

    # ---- the loop ---------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.iter // self.iters_per_epoch

    def at_boundary(self, interval: int) -> bool:
        """True when ``interval`` runner units (epochs or iterations) have just completed."""
        if interval <= 0:
            return False
        if self.by_epoch:
            return self.iter % self.iters_per_epoch == 0 and self.epoch % interval == 0
        return self.iter % interval == 0

    def stop_requested(self) -> bool:
        """True on every rank once any rank was asked to stop (agreed at the last all-reduce)."""
        return self._stop_now

    def train(self) -> dict:
        logger.info("training %s for %d iterations (%d per epoch) on %s, world size %d, work dir %s", self.arch,
                    self.max_iters, self.iters_per_epoch, self.dist.device, self.dist.world_size, self.work_dir)
        for hook in self.hooks:
            hook.before_train()
        self.model.train()
        while self.iter < self.max_iters:
            epoch, skip = self.epoch, self.iter % self.iters_per_epoch
            self.train_loader.batch_sampler.set_epoch(epoch, skip_batches=skip)
            data = iter(self.train_loader)
            for _ in range(self.iters_per_epoch - skip):
                self._step(data)
                if self.iter >= self.max_iters or self._stop_now:
                    break
            if self._stop_now and self.iter < self.max_iters:
                raise TrainingInterrupted(f"stopped on request at iteration {self.iter}; resume to continue")
        for hook in self.hooks:
            hook.after_train()
        self.metrics.close(self.hparams, self.iter)
        return self.last_metrics

    def _step(self, data) -> None:
        for hook in self.hooks:
            hook.before_step()
        t0 = time.perf_counter()
        images, targets = next(data)
        t1 = time.perf_counter()
        images = [img.to(self.dist.device, non_blocking=True) for img in images]
        targets = [{k: v.to(self.dist.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
                   for t in targets]
        with torch.autocast(self.dist.device.type, enabled=self.amp):
            losses = self.model(images, targets)
        loss = sum(losses.values())
        values: dict = {k: v.detach() for k, v in losses.items()}  # read once, after backward is queued
        values["stop_request"] = 1.0 if stop_is_requested() else 0.0
        pending = all_reduce_mean_async(values, self.dist.device)  # overlaps backward: one meeting per step
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        values = pending.wait()
        self._stop_now = values.pop("stop_request") > 0
        values["loss"] = sum(values.values())
        if not all(math.isfinite(v) for v in values.values()):  # every rank sees the same mean: all stop here
            terms = ", ".join(f"{k}={v}" for k, v in values.items())
            raise TrainingError(f"non-finite loss at iteration {self.iter + 1}: {terms}; lower optimizer.lr or "
                                f"enable optimizer_config.grad_clip (the last good checkpoint is kept)")
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), **{"foreach": self.clip_foreach, **self.grad_clip})
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iter += 1
        if self.heartbeat is not None:
            self.heartbeat.beat(self.iter)
        t2 = time.perf_counter()
        self.step_stats = {**values, "data_time": t1 - t0, "iter_time": t2 - t0,
                           "batch_images": float(len(images) * self.dist.world_size)}
        for hook in self.hooks:
            hook.after_step()

    # ---- evaluation, logging ----------------------------------------------------------
    def evaluate(self, metrics: list[str], num_images: int = 0, backend: str = DEFAULT_BACKEND,
                 voc_method: str = "area") -> dict:
        from detcore.engine.evaluator import evaluate_loader

        if self.heartbeat is not None:
            self.heartbeat.enter("evaluating", self.iter)
        try:
            results, drawn = evaluate_loader(unwrap(self.model), self.val_loader, self.dist.device, metrics,
                                             classes=self.classes,
                                             num_images=num_images if self.metrics.shows_images else 0,
                                             backend=backend, voc_method=voc_method, keepalive=self._keepalive(),
                                             progress=True)
        finally:
            if self.heartbeat is not None:
                self.heartbeat.enter("training", self.iter)
        self.model.train()
        self.metrics.add_images("val/prediction", drawn, self.iter)
        return results

    @property
    def last_metrics(self) -> dict[str, float]:
        """The newest evaluation's metrics (rank 0; empty elsewhere and before the first evaluation)."""
        return self.metrics.latest_validation

    def log_metrics(self, record: dict, prefix: str) -> None:
        """Log ``record`` at the current iteration; hooks call ``trainer.metrics.write(record, prefix, step)``."""
        self.metrics.write(record, prefix, self.iter)

    def _keepalive(self):
        """A callable recording "alive at the current iteration" (rate-limited), or None without heartbeats."""
        heartbeat = self.heartbeat
        return None if heartbeat is None else (lambda: heartbeat.beat(self.iter))

    def memory_mb(self) -> float:
        """Peak memory of the busiest rank (every rank calls this): CUDA memory allocated since the
        previous call, or the CPU process's peak resident size. Collective when distributed."""
        if self.dist.device.type == "cuda":
            mine = torch.cuda.max_memory_allocated(self.dist.device) / 2 ** 20
            torch.cuda.reset_peak_memory_stats(self.dist.device)
        else:
            mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return all_reduce_max(mine, self.dist.device)

    # ---- checkpoints ------------------------------------------------------------------
    def save(self, name: str) -> Path | None:
        """Write checkpoint ``name`` on rank 0 (its path; None elsewhere). Every rank must call it:
        each hands its random state to rank 0."""
        states = gather_rng_states(self.dist.device)
        if not self.dist.is_main:
            return None
        total_batch = self.train_loader.batch_size_total if hasattr(self.train_loader, "batch_size_total") else None
        meta = make_meta(config_text=dump_config(self.cfg), classes=self.classes, arch=self.arch, epoch=self.epoch,
                         iteration=self.iter, world_size=self.dist.world_size,
                         total_batch=total_batch or split_batch_size(self.cfg, "train") * self.dist.world_size,
                         seed=self.seed, scaling=self.cfg.get(SCALING_KEY), weights=self.weights_used)
        with beating(self._keepalive()):  # a slow file system is not a hang
            path = self.checkpoints.save(
                name, self.model, meta, optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(), rng=states[0], rng_per_rank=states,
                loop={"iter": self.iter, "iters_per_epoch": self.iters_per_epoch},
                hooks=[h.state_dict() for h in self.hooks])
        if self.heartbeat is not None:
            self.heartbeat.beat(self.iter, force=True)
        logger.info("saved checkpoint %s", path)
        return path

    def _resume_path(self, resume: str) -> Path | None:
        """The checkpoint ``resume`` names (``auto``: the newest in the work dir; None when there is none)."""
        path = self.checkpoints.latest() if resume == "auto" else Path(resume)
        if path is None:
            logger.info("no checkpoint in %s: starting fresh", self.work_dir)
        return path

    def _load_from(self, source: str, key: str) -> list[dict]:
        """Load ``source`` (a checkpoint file or a torchvision detector by name) into the model; the records
        of what was loaded."""
        from detcore.pretrained.hub import resolve_weights
        from detcore.pretrained.names import parse_weights

        local = None if parse_weights(source, key) else resolve_weights(source, key).record.to_dict()
        ckpt = load_checkpoint(source, key)
        load_weights(self.model, ckpt)
        return [local] if local else list(ckpt["meta"].get("weights") or [])

    def resume(self, resume: str) -> None:
        path = self._resume_path(resume)
        if path is None:
            return
        ckpt = load_checkpoint(path)
        missing = [k for k in ("optimizer", "scheduler", "loop", "rng") if k not in ckpt]
        if missing:
            raise CheckpointError(f"{path} holds weights only (no {', '.join(missing)}); use --load-from to "
                                  f"fine-tune from it instead of --resume")
        load_weights(self.model, ckpt)
        self.weights_used = list(ckpt["meta"].get("weights") or [])  # what the run being continued started from
        base_lrs = list(self.scheduler.base_lrs)  # this run's (scaled for this world size)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        saved_lrs = keep_base_lrs(self.optimizer, self.scheduler, base_lrs)
        if saved_lrs != base_lrs:
            logger.info("base lr %s (world size %s in %s) -> %s for world size %d",
                        ", ".join(f"{x:g}" for x in saved_lrs), (ckpt.get("meta") or {}).get("world_size", "?"),
                        path.name, ", ".join(f"{x:g}" for x in base_lrs), self.dist.world_size)
        if not restore_scaler(self.scaler, ckpt.get("scaler")) and self.amp:
            logger.info("%s holds no AMP loss-scaler state (saved without --amp); starting with a fresh scale", path)
        self.iter = int(ckpt["loop"]["iter"])
        old_ipe = int(ckpt["loop"]["iters_per_epoch"])
        if old_ipe != self.iters_per_epoch:
            self.iter = self.iter * self.iters_per_epoch // old_ipe
            logger.warning("world size or batch changed since %s: %d -> %d iterations per epoch; continuing at "
                           "iteration %d (epoch %d)", path, old_ipe, self.iters_per_epoch, self.iter, self.epoch)
        for hook, state in zip(self.hooks, ckpt.get("hooks", [])):
            hook.load_state_dict(state)
        if not restore_rank_state(ckpt, self.dist.rank, self.dist.world_size, self.dist.device):
            logger.info("world size changed since %s: random generators keep this run's seeds", path)
        self.resumed = True
        logger.info("resumed from %s at iteration %d (epoch %d)", path, self.iter, self.epoch)


def latest_checkpoint(work_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``--resume auto`` continues from (:meth:`CheckpointDir.latest`)."""
    return CheckpointDir(work_dir).latest()


def has_running_stats(model: torch.nn.Module) -> bool:
    """True when a BatchNorm updates running statistics in training, so DDP must broadcast buffers
    each step; frozen BN (torchvision's ``FrozenBatchNorm2d``) has none to keep in sync."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
               for m in model.modules())


__all__ = ["Trainer", "TrainingInterrupted", "request_stop", "install_stop_signals", "latest_checkpoint", "EXIT_STOPPED"]
