"""`launcher tensorboard` never leaves its server behind: a stop signal or a SIGKILL of the launcher ends it.
On a taken port it serves on the next free one and prints it; experiments submitted while it runs appear."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from launcher.spec import JobSpec, JobState
from launcher.store import ExperimentStore, experiment_from_spec
from tests.integration.helpers import free_port
from tests.integration.launcher_cli import ROOT, SHAPES, done, env_for, launcher, tiny, wait_until


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# a SIGKILLed `launcher tensorboard` cannot remove its TemporaryDirectory of links to the runs (nothing else
# owns it); every other signal must leave nothing
KILLED = pytest.mark.leaves_tmp("detlaunch-tensorboard-*", reason="SIGKILL: the command cannot remove its own temp dir")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, pytest.param(signal.SIGKILL, marks=KILLED)],
                         ids=lambda s: s.name)
def test_signal_to_launcher_tensorboard_ends_its_server(home: Path, tmp_path: Path, sig: signal.Signals) -> None:
    spec = JobSpec(id="00007b01", name="tb", config="/c.yaml", work_dir=str(tmp_path / "work"), cwd=str(tmp_path))
    store = ExperimentStore(home)
    store.insert(experiment_from_spec(spec, JobState.SUCCEEDED))
    store.close()
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


def runs(port: int) -> list[str]:
    """TensorBoard's run list, as its web page reads it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=30) as reply:
        return json.loads(reply.read())


def test_a_taken_port_gives_the_next_free_one_and_new_experiments_appear(home: Path, tmp_path: Path) -> None:
    """The shared login node: the asked port is taken, so TensorBoard serves on the next free one, which
    the launcher prints; an experiment submitted while it runs joins its run list."""
    first = json.loads(launcher(home, "submit", SHAPES, "--name", "first", "--nproc", "1", "--json",
                                *tiny(1, 1), "evaluation.interval=0").stdout)
    assert first["state"] == "succeeded", first
    log = tmp_path / "launcher.log"
    with socket.socket() as taken:  # someone else's TensorBoard on the asked port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        asked = taken.getsockname()[1]
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "launcher", "tensorboard", "--port", str(asked)],
                                    cwd=ROOT, env=env_for(home), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while not (served := re.search(r"^TensorBoard for 1 experiment\(s\) at http://127\.0\.0\.1:(\d+)/ "
                                           rf"\({asked} is taken\)", log.read_text(), re.M)):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            port = int(served.group(1))
            assert port != asked and listening(port)
            assert f"ssh -N -L 6006:127.0.0.1:{port} " in log.read_text()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as reply:
                assert "<title>TensorBoard</title>" in reply.read().decode()
            assert runs(port) == [f"first-{first['id']}"]

            second = json.loads(launcher(home, "submit", SHAPES, "--name", "second", "--nproc", "1", "--json",
                                         "--detach", *tiny(1, 1), "evaluation.interval=0").stdout)
            wait_until(home, second["id"], lambda rec: any((Path(rec["work_dir"]) / "tb").glob("events.*")))
            # the launcher links new experiments every 15 s, TensorBoard reloads every 5 s
            deadline = time.monotonic() + 60
            while f"second-{second['id']}" not in runs(port):
                assert time.monotonic() < deadline, (runs(port), log.read_text()[-3000:])
                time.sleep(1)
            assert sorted(runs(port)) == sorted([f"first-{first['id']}", f"second-{second['id']}"])
            assert f"TensorBoard: added second-{second['id']}" in log.read_text()
            wait_until(home, second["id"], done)
        finally:
            server = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
    _, alive = psutil.wait_procs(server, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert not listening(port)
    assert code == 128 + signal.SIGINT, log.read_text()[-3000:]
