"""The one job runtime every backend uses.

A job is a set of ranks. On the local and Slurm backends every rank runs the worker shim
(:mod:`launcher.runtime.shim`); on Ray the rank's Ray Train worker runs detcore in-process with the
shim's pieces (:mod:`launcher.backends.ray_train.train_loop`). Either appends facts to the launch's
run directory in the work dir (``WORK_DIR/runs/<run id>/``, layout in :mod:`detcore.contract`):
an attempt started (rank, attempt, pid, host, port), an attempt ended (exit code, one-line
detail). Besides them only the hang watchdog, rank 0 of a Slurm job (why it requeues), rank 0 of
``detcore train`` (the scaling and the weights it used), Ray Train's controller and the Ray
driver (what Ray saw) append facts (the list is in :mod:`launcher.runtime.facts`), and the
monitor writes its final ``outcome.json``.

* :mod:`launcher.runtime.facts` turns those facts into restarts, ports and failure reasons
  (pure): one decision of which rank failed first, for every backend. No log is ever scraped
  to decide a job's state.
* :mod:`launcher.runtime.phase` turns them, with the heartbeats, into the reason a running job
  shows: its stage (placing, starting, training at iteration N, evaluating) and its newest restart.
* :mod:`launcher.runtime.monitor` is the monitor the local supervisor and the Ray driver
  share: it owns the job's ``status.json`` (writes are best effort: a full disk never kills
  or misreports a job), watches heartbeats for hangs, and writes ``outcome.json``.
* :mod:`launcher.runtime.files` holds the small file helpers (atomic JSON, following a file).
* :mod:`launcher.runtime.command` renders the worker's command line and environment (pure),
  :mod:`launcher.runtime.detached` starts, reads and stops a detached monitor, and
  :mod:`launcher.runtime.scratch` gives each rank its own ``TMPDIR``.

The store is derived from what the monitors and backends report, by one writer:
:func:`launcher.store.reconcile.refresh`.
"""
