"""One TensorBoard over several experiments: the rendered command binds 127.0.0.1 and names each run;
a taken port gives the next free one; the run folder follows the store and the filters."""
from __future__ import annotations

import os
import socket
import sys

import pytest

from launcher.cli.manage import select_experiments
from launcher.errors import LauncherError
from launcher.spec import JobSpec, JobState
from launcher.store import ExperimentStore, experiment_from_spec
from launcher.views.tensorboard import choose_port, port_is_free, run_links, sync_links, tensorboard_command, url


def _add(store: ExperimentStore, exp_id: str, name: str, work: str, state: JobState = JobState.SUCCEEDED,
         sweep: str | None = None) -> None:
    spec = JobSpec(id=exp_id, name=name, config="/c.yaml", work_dir=work, cwd="/")
    store.insert(experiment_from_spec(spec, state, sweep=sweep))


def test_runs_are_named_by_symlinks_and_the_server_binds_localhost(tmp_path):
    store = ExperimentStore(tmp_path / "home")
    for i, (name, work) in enumerate([("a", "/w/a"), ("b=1", "/w/b:c,d e")]):  # logdir_spec could not hold ,
        _add(store, f"0000000{i}", name, work)
    logdir = tmp_path / "runs"
    logdir.mkdir()
    links = run_links(store.list())
    assert links == {"a-00000000": "/w/a/tb", "b=1-00000001": "/w/b:c,d e/tb"}
    assert sync_links(links, logdir) == (["a-00000000", "b=1-00000001"], [])
    assert {p.name: os.readlink(p) for p in logdir.iterdir()} == links
    cmd = tensorboard_command(logdir)
    assert cmd[:3] == (sys.executable, "-m", "tensorboard.main")
    assert cmd[cmd.index("--logdir") + 1] == str(logdir) and cmd[cmd.index("--load_fast") + 1] == "false"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "6006"


def test_the_run_folder_follows_the_selection(tmp_path):
    """New experiments are linked, dropped ones unlinked, a changed work dir relinked, other files kept."""
    logdir = tmp_path / "runs"
    logdir.mkdir()
    (logdir / "notes.txt").write_text("not a link")
    assert sync_links({"a-1": "/w/a/tb"}, logdir) == (["a-1"], [])
    assert sync_links({"a-1": "/w/a/tb"}, logdir) == ([], [])
    assert sync_links({"a-1": "/w/a2/tb", "b-2": "/w/b/tb"}, logdir) == (["a-1", "b-2"], ["a-1"])
    assert sync_links({"b-2": "/w/b/tb"}, logdir) == ([], ["a-1"])
    assert sorted(p.name for p in logdir.iterdir()) == ["b-2", "notes.txt"]
    assert os.readlink(logdir / "b-2") == "/w/b/tb"


def test_a_taken_port_gives_the_next_free_one():
    taken = {6006, 6007}
    assert choose_port(6006, lambda p: p not in taken) == 6008
    assert choose_port(6010, lambda p: p not in taken) == 6010
    assert choose_port(0, lambda p: False) == 0  # the OS picks; TensorBoard reports which
    assert choose_port(65535, lambda p: p == 65535) == 65535
    with pytest.raises(LauncherError, match="--port 6006: it and the 99 ports after it are all taken"):
        choose_port(6006, lambda p: False)
    with pytest.raises(LauncherError, match="--port 70000: expected a TCP port from 1 to 65535"):
        choose_port(70000, lambda p: True)


def test_a_bound_port_is_not_free():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        assert choose_port(port, lambda p: port_is_free("127.0.0.1", p)) != port
    assert port_is_free("127.0.0.1", port)


def test_url_names_a_host_a_browser_can_open():
    assert url("127.0.0.1", 6007) == "http://127.0.0.1:6007/"
    assert url("::1", 6007) == "http://[::1]:6007/"
    assert url("0.0.0.0", 6007) == f"http://{socket.getfqdn()}:6007/"


def test_filters_are_launcher_lists(tmp_path):
    store = ExperimentStore(tmp_path / "home")
    _add(store, "00000001", "a", "/w/a", sweep="lr")
    _add(store, "00000002", "b", "/w/b", sweep="lr", state=JobState.FAILED)
    _add(store, "00000003", "c", "/w/c")
    store.update_tags("00000003", add=["keep"])
    names = lambda **kw: [e.name for e in select_experiments(store, **kw)]  # noqa: E731
    assert names() == ["a", "b", "c"]
    assert names(sweep="lr") == ["a", "b"]
    assert names(sweep="lr", state=JobState.FAILED) == ["b"]
    assert names(tags=["keep"]) == ["c"]
    assert names(ids=["00000001", "00000003"], state=JobState.SUCCEEDED) == ["a", "c"]


def test_dry_run_prints_the_free_port_it_would_serve_on(tmp_path, monkeypatch, capsys):
    from launcher.cli import main

    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    _add(ExperimentStore(tmp_path / "home"), "00000001", "a", "/w/a")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["tensorboard", "--port", str(port), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    served = int(out[0].rsplit(":", 1)[1].rstrip("/"))
    assert out[0].startswith("TensorBoard for 1 experiment(s) would serve at http://127.0.0.1:") and served > port
    assert out[1].endswith("/a-00000001 -> /w/a/tb") and out[2].endswith(f"--port {served}")


def test_tensorboard_reads_each_run_under_its_own_name(tmp_path):
    """TensorBoard's own loader (the one ``--load_fast false`` uses) lists the linked runs without ``/.``."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from torch.utils.tensorboard import SummaryWriter

    store = ExperimentStore(tmp_path / "home")
    for i in range(2):
        work = tmp_path / f"work{i}"
        with SummaryWriter(str(work / "tb")) as writer:
            writer.add_scalar("train/loss", 1.0, 1)
        _add(store, f"0000000{i}", f"sweep-lr=0.0{i + 1}", str(work))
    logdir = tmp_path / "runs"
    logdir.mkdir()
    sync_links(run_links(store.list()), logdir)
    mux = EventMultiplexer().AddRunsFromDirectory(str(logdir))
    mux.Reload()
    assert sorted(mux.Runs()) == ["sweep-lr=0.01-00000000", "sweep-lr=0.02-00000001"]


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "--port 70000: expected a TCP port from 1 to 65535"),
    (["--refresh", "0"], "--refresh 0.0: expected the seconds between looks for new experiments, above 0"),
    (["--state", "done"], "unknown state 'done'"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    from launcher.cli import main

    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    assert main(["tensorboard", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_serve_retries_a_port_taken_in_the_race_and_refreshes_until_stopped(tmp_path, monkeypatch, caplog):
    """Another process binds the chosen port before TensorBoard does: TensorBoard exits, the next port is
    tried; the port reported is passed on; refreshes run (a failing one is a warning) until a stop signal."""
    import signal

    import psutil

    from launcher.views import tensorboard

    started, taken_after_test = [], {6006}
    monkeypatch.setattr(tensorboard, "port_is_free", lambda host, port: port not in taken_after_test or not started)
    monkeypatch.setattr(tensorboard, "tensorboard_command", lambda logdir, host, port: started.append(port) or (
        sys.executable, "-c", "import sys, time; sys.exit(1) if %d == 6006 else time.sleep(60)" % port))
    monkeypatch.setattr(tensorboard, "served_port", lambda pid, logdir: started[-1] if started[-1] != 6006 else None)
    served, refreshes, children = [], [], []
    earlier = {c.pid for c in psutil.Process().children()}  # e.g. a resource tracker an earlier test left

    def refresh() -> None:
        refreshes.append(1)
        children.extend(c for c in psutil.Process().children() if c.pid not in earlier)
        if len(refreshes) == 1:
            raise LauncherError("the store is busy")
        if len(refreshes) == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    code = tensorboard.serve(tmp_path, "127.0.0.1", 6006, served.append, refresh, refresh_s=0.05)
    assert code == 128 + signal.SIGTERM
    assert started == [6006, 6007] and served == [6007] and len(refreshes) == 3
    assert "port 6006 was taken before TensorBoard could bind it" in caplog.text
    assert "the run list was not refreshed this time: the store is busy" in caplog.text
    assert children and not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back
