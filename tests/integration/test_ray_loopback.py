"""A Ray job on a loopback head listens on loopback only: Ray Train's rank-0 store too (checked with `ss`)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from detcore.contract import run_dir
from detcore.facts import read_facts
from launcher.runtime.detached import marked_processes
from tests.integration.launcher_cli import DATA, SHAPES, launcher, record
from tests.integration.ray_cluster import ray_head  # noqa: F401  (a fixture)
from tests.integration.test_loopback_sockets import off_loopback, watch

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_ray_job_on_a_loopback_head_listens_on_loopback_only(home: Path, ray_head) -> None:  # noqa: F811
    exp = launcher(home, "submit", SHAPES, "--backend", "ray", "--address", ray_head.address, "--workers", "2",
                   "--detach", "--cfg-options", *DATA, "runner.max_iters=40", "checkpoint_config.interval=20").stdout
    exp = exp.strip()
    deadline = time.monotonic() + 900
    seen = watch(lambda: (p.pid for p in marked_processes(exp)),
                 lambda: time.monotonic() < deadline and record(home, exp)["state"] in ("pending", "running"))
    rec = record(home, exp)
    assert rec["state"] == "succeeded", rec["reason"]
    starts = [e for e in [f.to_json() for f in read_facts(run_dir(rec["work_dir"], rec["run_id"]))] if e.get("event") == "start"]
    master = {f"{e['master_addr']}:{e['master_port']}" for e in starts}
    assert master == {f"127.0.0.1:{rec['ports'][0]}"}, starts
    listened = {a for addrs in seen.values() for a in addrs}
    assert master <= listened, seen  # rank 0's store was seen, bound to 127.0.0.1 (Ray's own binds every interface)
    assert not off_loopback(seen), seen
