"""`launcher tensorboard` never leaves its server behind: a stop signal or a SIGKILL of the launcher ends it."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher.spec import JobSpec, JobState
from launcher.store import ExperimentStore, experiment_from_spec
from tests.integration.helpers import free_port
from tests.integration.launcher_cli import ROOT, env_for


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL],
                         ids=lambda s: s.name)
def test_signal_to_launcher_tensorboard_ends_its_server(home: Path, tmp_path: Path, sig: signal.Signals) -> None:
    spec = JobSpec(id="00007b01", name="tb", config="/c.yaml", work_dir=str(tmp_path / "work"), cwd=str(tmp_path))
    ExperimentStore(home).insert(experiment_from_spec(spec, JobState.SUCCEEDED))
    port, log = free_port(), tmp_path / "launcher.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "launcher", "tensorboard", "--port", str(port)], cwd=ROOT,
                                env=env_for(home), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not listening(port) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert listening(port), log.read_text()[-3000:]
        server = psutil.Process(proc.pid).children(recursive=True)
        assert any("tensorboard" in " ".join(p.cmdline()) for p in server), [p.cmdline() for p in server]
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
        _, alive = psutil.wait_procs(server, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        assert not listening(port)
        assert code == (-sig if sig == signal.SIGKILL else 128 + sig), log.read_text()[-3000:]
    finally:
        proc.kill()
