"""The one job runtime every backend uses.

A job is a set of ranks; every rank runs the same worker shim (:mod:`launcher.worker`), which
appends facts to the launch's run directory in the work dir (``WORK_DIR/runs/<run id>/``,
layout in :mod:`detcore.contract`): an attempt started (rank, attempt, pid, host, port), an
attempt ended (exit code, one-line detail). Besides them only the hang watchdog, rank 0 of a
Slurm job (why it requeues), Ray Train's controller and the Ray driver (what Ray saw) append
facts, and the monitor writes its final ``outcome.json``.

* :mod:`launcher.runtime.facts` turns those facts into restarts, ports and failure reasons
  (pure): one decision of which rank failed first, for every backend. No log is ever scraped
  to decide a job's state.
* :mod:`launcher.runtime.phase` turns them, with the heartbeats, into the reason a running job
  shows: its stage (placing, starting, training at iteration N, evaluating) and its newest restart.
* :mod:`launcher.runtime.monitor` is the monitor the local supervisor and the Ray driver
  share: it owns the job's ``status.json`` (writes are best effort: a full disk never kills
  or misreports a job), watches heartbeats for hangs, and writes ``outcome.json``.
* :mod:`launcher.runtime.files` holds the small file helpers (atomic JSON, following a file).

The store is derived from what the monitors and backends report, by one writer:
:func:`launcher.reconcile.refresh`.
"""
