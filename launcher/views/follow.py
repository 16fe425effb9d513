"""Watching a job from the terminal: rank 0's log lines plus one progress line.

The log comes from ``Backend.logs(handle, rank, follow=True)`` on a helper thread; the
progress line (tqdm on stderr, only when it is a terminal) shows the state, iteration,
loss, AP and restarts from the reconciled store row once a second.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from typing import TextIO

from launcher.store.reconcile import handle_of, refresh
from launcher.store import Experiment, ExperimentStore

_END = object()
ENDING_POLL_S = 0.2  # once the log has ended, the row is looked at this often until the job is recorded as ended


def progress_text(exp: Experiment) -> str:
    parts = [exp.state.value]
    if exp.last_loss is not None:
        parts.append(f"loss {exp.last_loss:.4f}")
    if exp.last_ap is not None:
        parts.append(f"AP {exp.last_ap:.3f}")
    if exp.restarts:
        parts.append(f"restarts {exp.restarts}")
    return " ".join(parts)


def follow_experiment(store: ExperimentStore, backend, exp_id: str, rank: int = 0, out: TextIO = sys.stdout,
                      err: TextIO = sys.stderr, skip_lines: int = 0) -> Experiment:
    """Stream ``rank``'s log to ``out`` until the job ends; the final (reconciled) row. ``skip_lines``: the
    log's first lines not to show (an earlier launch's, which a resume's log continues)."""
    from tqdm import tqdm

    exp = store.get(exp_id)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        try:
            for n, line in enumerate(backend.logs(handle_of(exp), rank, follow=True)):
                if n >= skip_lines:
                    lines.put(line)
        except Exception as exc:  # shown, then the job is still watched through its status
            lines.put(f"(log unavailable: {exc})")
        finally:
            lines.put(_END)

    threading.Thread(target=pump, daemon=True).start()
    bar = tqdm(total=None, desc=exp_id, unit="it", file=err, disable=not err.isatty(), dynamic_ncols=True)
    log_done, next_check = False, 0.0
    try:
        while True:
            try:
                item = lines.get(timeout=ENDING_POLL_S if log_done else 0.5)
            except queue.Empty:
                item = None
            if item is _END:
                log_done = True
            elif item is not None:
                bar.write(item, file=out)
            if time.monotonic() >= next_check:
                exp = refresh(store, [store.get(exp_id)])[0]
                if bar.total is None and exp.max_iter is not None:  # this launch's schedule (reconcile reads it
                    bar.total = exp.max_iter                       # once this launch's trainer has written it)
                if exp.last_iter is not None:
                    bar.n = exp.last_iter
                bar.set_postfix_str(progress_text(exp))
                next_check = time.monotonic() + (ENDING_POLL_S if log_done else 1.0)
            if log_done and exp.state.is_terminal():
                return exp
    finally:
        bar.close()
