"""A training run as a Weights & Biases run: the resolved config, tags, metrics by iteration, checkpoints.

``wandb.log`` hands data to W&B's own service process, so it never waits on the network. The
run id is detcore's (kept in the work dir and the checkpoints), so a resume or a restart opens
the same run with ``resume="allow"``; offline (``WANDB_MODE=offline``) each start writes its own
folder under ``WORK_DIR/wandb`` with that id, and ``wandb sync`` uploads them to one run in order.
"""
from __future__ import annotations

import logging
import os
import secrets
import string
from pathlib import Path
from typing import Mapping

from detcore.loggers.settings import WandbSettings
from detcore.loggers.writer import RunContext, RunWriter, one_line

logger = logging.getLogger(__name__)

TAG_LIMIT = 64  # W&B refuses longer tags


class WandbWriter(RunWriter):
    kind, label = "wandb", "W&B"

    @staticmethod
    def where(settings: WandbSettings) -> str:
        init = settings.init_kwargs
        entity = init.get("entity") or os.environ.get("WANDB_ENTITY") or ""
        project = init.get("project") or os.environ.get("WANDB_PROJECT") or "(W&B's default project)"
        return f"{entity}/{project}" if entity else str(project)

    def __init__(self, settings: WandbSettings, ctx: RunContext) -> None:
        import wandb

        self.settings, self.ctx = settings, ctx
        kwargs = dict(settings.init_kwargs)
        run_id = kwargs.pop("id", None) or ctx.choice.run_id or os.environ.get("WANDB_RUN_ID") or new_run_id()
        if "dir" not in kwargs and not os.environ.get("WANDB_DIR"):
            kwargs["dir"] = str(ctx.work_dir)
        kwargs.setdefault("name", ctx.name)
        marks = [f"experiment:{ctx.experiment}" if ctx.experiment else "", f"backend:{ctx.backend}" if ctx.backend else ""]
        tags = list(kwargs.pop("tags", None) or []) + [m[:TAG_LIMIT] for m in marks if m]
        user_config = dict(kwargs.pop("config", None) or {})
        if "settings" not in kwargs and not {"WANDB_QUIET", "WANDB_SILENT"} & set(os.environ):
            kwargs["settings"] = wandb.Settings(quiet=True)  # no 30-line history and summary at the end
        self.run = wandb.init(id=str(run_id), resume=kwargs.pop("resume", "allow"), tags=tags, **kwargs)
        self.run_id = self.run.id
        config = {**self.ctx.config, "detlaunch": ctx.tags(), **user_config}
        self.run.config.update(config, allow_val_change=True)  # a resume may change a value (runner.max_iters)
        self._failed = False

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        try:
            self.run.log(dict(values), step=step)
        except Exception as exc:  # a dashboard never stops training
            if not self._failed:
                logger.warning("W&B: could not log iteration %d (%s); training goes on", step, one_line(exc))
            self._failed = True
            return
        self.ctx.ledger.sent(step)

    def upload(self, paths: list[Path]) -> None:
        import wandb

        try:
            artifact = wandb.Artifact(f"model-{self.run_id}", type="model")
            for path in paths:
                artifact.add_file(str(path), name=path.name)
            self.run.log_artifact(artifact, aliases=["latest"])
        except Exception as exc:
            logger.warning("W&B: could not upload %s (%s)", ", ".join(p.name for p in paths), one_line(exc))

    def finish(self, finished: bool) -> None:
        offline, folder = self.run.offline, Path(self.run.settings.sync_dir).parent
        try:
            self.run.finish(exit_code=0 if finished else 1)
        except Exception as exc:
            logger.warning("W&B: could not close run %s (%s)", self.run_id, one_line(exc))
            return
        if offline:  # every start of the run wrote a folder of its own: sync them all, oldest first
            logger.info("W&B: run %s is offline; upload it with: wandb sync %s", self.run_id,
                        folder / f"offline-run-*-{self.run_id}")


def new_run_id() -> str:
    """Eight lowercase letters and digits, like the ids W&B makes itself (its generator is not public)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
