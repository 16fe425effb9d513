"""One TensorBoard over several experiments: the rendered command binds 127.0.0.1 and names each run."""
from __future__ import annotations

import os
import sys

import pytest

from launcher.errors import LauncherError
from launcher.spec import JobSpec, JobState
from launcher.store import ExperimentStore, experiment_from_spec
from launcher.tensorboard import link_runs, tensorboard_command


def test_runs_are_named_by_symlinks_and_the_server_binds_localhost(tmp_path):
    store = ExperimentStore(tmp_path / "home")
    for i, (name, work) in enumerate([("a", "/w/a"), ("b=1", "/w/b:c,d e")]):  # logdir_spec could not hold ,
        spec = JobSpec(id=f"0000000{i}", name=name, config="/c.yaml", work_dir=work, cwd="/")
        store.insert(experiment_from_spec(spec, JobState.SUCCEEDED))
    logdir = tmp_path / "runs"
    logdir.mkdir()
    assert link_runs(store.list(), logdir) == [("a-00000000", "/w/a/tb"), ("b=1-00000001", "/w/b:c,d e/tb")]
    assert {p.name: os.readlink(p) for p in logdir.iterdir()} == {"a-00000000": "/w/a/tb",
                                                                    "b=1-00000001": "/w/b:c,d e/tb"}
    cmd = tensorboard_command(logdir)
    assert cmd[:3] == (sys.executable, "-m", "tensorboard.main")
    assert cmd[cmd.index("--logdir") + 1] == str(logdir) and cmd[cmd.index("--load_fast") + 1] == "false"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "6006"
    with pytest.raises(LauncherError, match="no experiments"):
        link_runs([], logdir)


def test_tensorboard_reads_each_run_under_its_own_name(tmp_path):
    """TensorBoard's own loader (the one ``--load_fast false`` uses) lists the linked runs without ``/.``."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from torch.utils.tensorboard import SummaryWriter

    store = ExperimentStore(tmp_path / "home")
    for i in range(2):
        work = tmp_path / f"work{i}"
        with SummaryWriter(str(work / "tb")) as writer:
            writer.add_scalar("train/loss", 1.0, 1)
        store.insert(experiment_from_spec(JobSpec(id=f"0000000{i}", name=f"sweep-lr=0.0{i + 1}", config="/c.yaml",
                                                  work_dir=str(work), cwd="/"), JobState.SUCCEEDED))
    logdir = tmp_path / "runs"
    logdir.mkdir()
    link_runs(store.list(), logdir)
    mux = EventMultiplexer().AddRunsFromDirectory(str(logdir))
    mux.Reload()
    assert sorted(mux.Runs()) == ["sweep-lr=0.01-00000000", "sweep-lr=0.02-00000001"]
