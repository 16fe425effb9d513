"""One TensorBoard over several experiments: the rendered command binds 127.0.0.1 and names each run."""
from __future__ import annotations

import sys

import pytest

from launcher.errors import LauncherError
from launcher.spec import JobSpec, JobState
from launcher.store import ExperimentStore, experiment_from_spec
from launcher.tensorboard import tensorboard_command


def test_logdir_spec_for_chosen_experiments(tmp_path):
    store = ExperimentStore(tmp_path / "home")
    for i, name in enumerate(["a", "b:c"]):
        spec = JobSpec(id=f"0000000{i}", name=name.replace(":", "_"), config="/c.yaml", work_dir=f"/w/{name}", cwd="/")
        store.insert(experiment_from_spec(spec, JobState.SUCCEEDED))
    cmd = tensorboard_command(store.list())
    assert cmd[:3] == (sys.executable, "-m", "tensorboard.main")
    assert cmd[cmd.index("--logdir_spec") + 1] == "a-00000000:/w/a/tb,b_c-00000001:/w/b:c/tb"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "6006"
    with pytest.raises(LauncherError, match="no experiments"):
        tensorboard_command([])
