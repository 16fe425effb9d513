"""``detcore train CONFIG``: the worker every launcher backend runs (also under plain torchrun)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

from detcore import contract
from detcore.config import load_config
from detcore.facts import Scaling, Weights, append_fact
from detcore.errors import ConfigError, DetcoreError, WorkDirError
from detcore.tools.log_format import FILE_FORMAT
from detcore.tools.old_flags import TRAIN_HINTS, add_hints

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    contract.WorkerArgs.add_arguments(p, contract.TRAIN)
    add_hints(p, TRAIN_HINTS)


def default_work_dir(config: str) -> Path:
    return Path("work_dirs") / Path(config).stem


def check_work_dir(work_dir: Path) -> Path:
    """``work_dir`` if it can hold a run: not the filesystem root, not an existing file."""
    resolved = work_dir.resolve()
    if resolved == Path(resolved.anchor):
        raise ConfigError(f"--work-dir {work_dir} is the filesystem root; give a folder of its own, "
                          f"e.g. work_dirs/<name>")
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(f"work dir {work_dir} exists and is not a folder; pass another --work-dir")
    return work_dir


def setup_logging(work_dir: Path, filename: str) -> None:
    """Rank 0 logs INFO to the console and to ``work_dir/filename``; other ranks only warnings."""
    from detcore.engine.dist import MainRankFilter

    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(MainRankFilter())
    if int(os.environ.get("RANK", 0)) == 0:
        work_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(work_dir / filename)
        fh.setFormatter(logging.Formatter(FILE_FORMAT))
        fh.addFilter(MainRankFilter())
        root.addHandler(fh)


def remove_new_work_dir(work_dir: Path) -> None:
    """Undo a work dir this run created when set-up failed, so no half-made state is left."""
    for handler in list(logging.getLogger().handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == work_dir.resolve():
            handler.close()
            logging.getLogger().removeHandler(handler)
    shutil.rmtree(work_dir, ignore_errors=True)


def record_scaling(scaling: dict) -> None:
    """Rank 0 appends the scaling decision as a fact of this launch (``DETLAUNCH_RUN_DIR``), for the
    experiment row; nothing without a launcher."""
    run_dir = os.environ.get(contract.RUN_DIR_ENV)
    if run_dir and int(os.environ.get("RANK", 0)) == 0:
        append_fact(run_dir, Scaling(rank=0, scaling=scaling))


def record_weights(records: list[dict]) -> None:
    """Rank 0 logs the weights the run started from and appends them as a fact of this launch (the
    experiment record shows them: ``launcher status``); the checkpoints' meta holds them too."""
    if int(os.environ.get("RANK", 0)) != 0:
        return
    for record in records:
        logger.info("weights: %s: %s (%s, sha256 %s)", record["key"], record.get("weights") or record["given"],
                    record["file"], record["sha256"])
    run_dir = os.environ.get(contract.RUN_DIR_ENV)
    if run_dir:
        append_fact(run_dir, Weights(rank=0, weights=tuple(records)))


def run(ns: argparse.Namespace) -> int:
    from detcore.config_check import check_config

    args = contract.WorkerArgs.from_namespace(ns, contract.TRAIN)
    restart = contract.resume_on_restart(args.resume, os.environ)
    if restart != args.resume:
        logger.info("restart %s of this launch: continuing from the newest checkpoint (--resume auto)",
                    os.environ.get(contract.RESTART_ENV))
        args = dataclasses.replace(args, resume=restart)
    cfg = load_config(args.config, list(args.cfg_options))
    # before any work dir exists
    check_config(cfg, validate=args.validate, load_from=args.load_from, resume=args.resume)
    work_dir = check_work_dir(Path(args.work_dir or cfg.get("work_dir") or default_work_dir(args.config)))
    cfg["work_dir"] = str(work_dir)
    created = not work_dir.exists()
    claim = claim_work_dir(work_dir) if int(os.environ.get("RANK", 0)) == 0 else None
    try:
        resume = resume_choice(work_dir, args.resume or cfg.get("resume_from"), claim)
        code = train(args, cfg, work_dir, resume, created, claim)
    except (DetcoreError, KeyboardInterrupt, SystemExit):
        end_claim(claim, stopped=False)
        raise
    except BaseException:
        if claim is not None:  # a crash: the claim stays (its process is gone, so it is stale); a restart continues it
            claim.abandon()
        raise
    end_claim(claim, stopped=code == contract.EXIT_STOPPED)
    return code


def claim_work_dir(work_dir: Path):
    """Rank 0's claim on ``work_dir`` (:mod:`detcore.ownership`): one line and exit 2 when another run holds it."""
    from detcore.ownership import claim, run_holder

    held = claim(work_dir, run_holder())
    return held.start_heartbeat()


def end_claim(claim, stopped: bool) -> None:
    """Release the claim; a launched run stopped for a requeue keeps it as a placeholder for its experiment."""
    if claim is None:
        return
    if stopped and claim.owned and claim.holder.launcher:
        from detcore.ownership import placeholder

        claim.hand_over(placeholder(claim.holder, "stopped for a requeue"))
    else:
        claim.release()


def resume_choice(work_dir: Path, asked: str | None, claim) -> str | None:
    """What to resume from (``--resume`` as given, or ``auto``); WorkDirError when ``work_dir`` holds an
    earlier run this one was not asked to continue.

    Continuing means ``--resume auto``, ``--resume PATH`` inside the work dir, or a torchrun restart of
    the same run (``TORCHELASTIC_RESTART_COUNT`` > 0 and the claim left by the same torchrun agent).
    Anything else (no ``--resume``, ``--load-from``, a checkpoint of another work dir) would mix two
    runs' checkpoints, best checkpoint, logs and TensorBoard events in one folder, so it is refused
    before anything is written. Only rank 0 refuses (``claim`` is None on the other ranks).
    """
    from detcore.ownership import earlier_run

    refusal = earlier_run(work_dir, asked)
    if refusal is None:
        return asked
    restarted = not os.environ.get(contract.EXPERIMENT_ENV) and \
        int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0) > 0
    if claim is None:
        return "auto" if restarted and not asked else asked
    if restarted and not asked and claim.continues:
        logger.info("torchrun restarted this run: continuing it from the newest checkpoint in %s", work_dir)
        return "auto"
    raise WorkDirError(refusal)


def train(args: contract.WorkerArgs, cfg: dict, work_dir: Path, resume: str | None, created: bool, claim) -> int:
    from detcore.engine.heartbeat import install_stack_dump_signal
    from detcore.engine.hparams import hparams_from_options
    from detcore.engine.trainer import Trainer, TrainingInterrupted, install_stop_signals

    setup_logging(work_dir, contract.TRAIN_LOG_FILE)
    if args.config.endswith(".py") and int(os.environ.get("RANK", 0)) == 0:
        from detcore.mmdet_import import import_config, write_yaml

        # The MMDetection config as imported, with its summary: `detcore train` on it reruns this job.
        write_yaml(import_config(args.config), work_dir / f"imported_{Path(args.config).stem}.yaml")
    if os.environ.get(contract.STOP_SIGNALS_ENV):
        logger.debug("checkpoint-and-stop on %s", ", ".join(install_stop_signals(os.environ[contract.STOP_SIGNALS_ENV])))
    heartbeat_dir = os.environ.get(contract.HEARTBEAT_DIR_ENV) or None
    if heartbeat_dir:  # a hang watchdog is watching: heartbeats, and Python stacks on SIGUSR1
        install_stack_dump_signal()
        logger.debug("heartbeats to %s; SIGUSR1 prints every thread's Python stack to stderr", heartbeat_dir)
    start = time.monotonic()
    try:
        trainer = Trainer(cfg, work_dir, resume=resume, load_from=args.load_from,
                          validate=args.validate, amp=args.amp, seed=0 if args.seed is None else args.seed,
                          deterministic=args.deterministic, device=args.device, heartbeat_dir=heartbeat_dir,
                          hparams=hparams_from_options(cfg, list(args.cfg_options)))
        record_scaling(trainer.scaling.to_dict())
        record_weights(trainer.weights_used)
        trainer.train()
    except TrainingInterrupted as exc:
        logger.warning("%s", exc)
        return contract.EXIT_STOPPED
    except DetcoreError:
        # A run that fails before its first checkpoint (bad config, data or weights) leaves nothing behind.
        if created and int(os.environ.get("RANK", 0)) == 0 and not any(work_dir.glob("*.pth")):
            if claim is not None:
                claim.release()
            remove_new_work_dir(work_dir)
        raise
    if trainer.dist.is_main:
        logger.info("%s", closing_summary(trainer, time.monotonic() - start))
    return contract.EXIT_OK


def closing_summary(trainer, seconds: float) -> str:
    """What a user looks for when training ends: where everything is, how long it took, how good it got.

    The last evaluation's full metrics were logged just before (``evaluation: ...``); this repeats
    only the best-checkpoint metric, so each number is printed once.
    """
    from detcore.engine.hooks import CheckpointHook

    work_dir = trainer.work_dir
    last = contract.WorkDir(work_dir).newest_checkpoint()
    lines = [f"done: {trainer.iter} iterations in {timedelta(seconds=round(seconds))} (wall time)",
             f"  work dir:        {work_dir}",
             f"  last checkpoint: {last or 'none'}"]
    ckpt = next((h for h in trainer.hooks if isinstance(h, CheckpointHook)), None)
    if ckpt is not None and ckpt.save_best and ckpt.best_iter is not None:
        lines.append(f"  best checkpoint: {work_dir / f'best_{ckpt.save_best}.pth'} "
                     f"({ckpt.save_best}={ckpt.best:.4f} at iter {ckpt.best_iter})")
    elif trainer.last_metrics:
        key = next(iter(trainer.last_metrics))
        lines.append(f"  final {key}={trainer.last_metrics[key]:.4f} (no save_best in checkpoint_config)")
    return "\n".join(lines)
