"""Single-machine jobs listen on loopback only (checked with `ss` on the live job), and `--address auto`
never takes a Ray address from a file another user could have written."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from detcore.net import is_loopback
from tests.integration.helpers import env, free_port
from tests.integration.launcher_cli import SHAPES, env_for, job_processes, launcher, record, tiny

SS_LINE = re.compile(r"^LISTEN\s+\d+\s+\d+\s+(?P<addr>\S+):(?P<port>\d+)\s+\S+\s+(?P<users>.*)$")


def ss_listeners() -> dict[int, set[str]]:
    """``ss -ltnp``: the local ``ADDR:PORT`` of every listening TCP socket, by the pid holding it."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30, check=True).stdout
    found: dict[int, set[str]] = {}
    for line in out.splitlines():
        m = SS_LINE.match(line.strip())
        if not m:
            continue
        for pid in re.findall(r"pid=(\d+)", m["users"]):
            found.setdefault(int(pid), set()).add(f"{m['addr']}:{m['port']}")
    return found


def watch(pids_now, running) -> dict[str, set[str]]:
    """Every listening socket of the processes ``pids_now()`` names, polled with `ss` while ``running()``;
    keyed by ``pid module`` (the process's ``-m`` module)."""
    seen: dict[str, set[str]] = {}
    while running():
        pids = set(pids_now())
        for pid, addrs in ss_listeners().items():
            if pid in pids:
                try:
                    argv = psutil.Process(pid).cmdline()
                except psutil.Error:
                    continue
                module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else " ".join(argv[:2])
                seen.setdefault(f"{pid} {module}", set()).update(addrs)
        time.sleep(0.3)
    return seen


def off_loopback(seen: dict[str, set[str]]) -> list[str]:
    """The addresses in ``seen`` that are not loopback (``*``, ``0.0.0.0``, ``[::]`` or a routable address)."""
    return sorted(a for addrs in seen.values() for a in addrs if not is_loopback(a.rsplit(":", 1)[0]))


@pytest.mark.parametrize("nproc", [1, 2])
def test_a_local_job_listens_on_loopback_only(home: Path, tmp_path: Path, nproc: int) -> None:
    # 8 iterations: the sockets live from the start to the end of the run; `ss` looks every ~0.3 s
    exp = launcher(home, "submit", SHAPES, "--nproc", str(nproc), "--detach", "--work-dir", str(tmp_path / "w"),
                   *tiny(8, 10)).stdout.strip()
    deadline = time.monotonic() + 600
    seen = watch(lambda: (p.pid for p in job_processes({exp})),
                 lambda: time.monotonic() < deadline and record(home, exp)["state"] in ("pending", "running"))
    rec = record(home, exp)
    assert rec["state"] == "succeeded", rec["reason"]
    agent = [addrs for who, addrs in seen.items() if who.endswith(" launcher.backends.local.agent")]
    assert agent and len(agent[0]) == 2, seen  # torchrun's rendezvous store and the store it shares, both seen
    if nproc == 2:  # and each rank's gloo listener: the trainer's own sockets were looked at too
        assert sum(who.endswith(" detcore.tools.cli") for who in seen) == 2, seen
    assert not off_loopback(seen), seen


def test_hand_started_ranks_listen_on_loopback_only(tmp_path: Path) -> None:
    """Ranks started without an agent (as Slurm tasks are): rank 0's store and gloo stay on 127.0.0.1."""
    port = free_port()
    cfg = ["--cfg-options", *tiny(8, 10)[1:]]
    ranks = [subprocess.Popen([sys.executable, "-m", "detcore.tools.cli", "train", SHAPES, "--work-dir",
                               str(tmp_path / "w"), "--device", "cpu", *cfg],
                              env=env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        seen = watch(lambda: (p.pid for p in ranks), lambda: any(p.poll() is None for p in ranks))
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    assert [p.wait() for p in ranks] == [0, 0], ranks[0].stderr.read()[-2000:]
    assert f"127.0.0.1:{port}" in seen.get(f"{ranks[0].pid} detcore.tools.cli", set()), seen  # rank 0's store
    assert f"{ranks[1].pid} detcore.tools.cli" in seen, seen  # rank 1's gloo listener was looked at too
    assert not off_loopback(seen), seen


def ray_submit(home: Path, tmp_path: Path, ray_tmp: Path) -> subprocess.CompletedProcess:
    e = {k: v for k, v in env_for(home).items() if k != "RAY_ADDRESS"}
    e["RAY_TMPDIR"] = str(ray_tmp)
    return subprocess.run([sys.executable, "-m", "launcher", "submit", SHAPES, "--backend", "ray", "--nproc", "1",
                           "--work-dir", str(tmp_path / "ray-w"), *tiny(2)], cwd=tmp_path, env=e,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["another user's file", "a folder anyone can write"])
def test_a_ray_address_file_someone_else_could_write_is_not_used(home: Path, tmp_path: Path, case: str) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test chowns a file to another user: run it as root (the CI box does)")
    ray_tmp = tmp_path / "raytmp"
    (ray_tmp / "ray").mkdir(parents=True)
    address = ray_tmp / "ray" / "ray_current_cluster"
    address.write_text("127.0.0.1:1\n")  # where the other user's cluster would be
    if case == "another user's file":
        os.chmod(ray_tmp / "ray", 0o755)
        os.chown(address, 65534, 65534)
    else:
        os.chmod(ray_tmp / "ray", 0o777)  # Ray's own default for its temp folder, no sticky bit
    proc = ray_submit(home, tmp_path, ray_tmp)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"launcher submit: error: --address auto: Ray's address file {address} ")
    assert "pass --address HOST:PORT" in lines[0] and "127.0.0.1:1" not in lines[0]
    assert not (tmp_path / "ray-w").exists() and json.loads(launcher(home, "list", "--json").stdout) == []

    os.chown(address, 0, 0)  # the same file, the user's own in a folder only they can write: it is used
    os.chmod(ray_tmp / "ray", 0o755)
    used = ray_submit(home, tmp_path, ray_tmp)
    assert used.returncode == 2 and "cannot reach a Ray head (GCS) at 127.0.0.1:1" in used.stderr, used.stderr
