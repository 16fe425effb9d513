"""Sockets stay where they are asked to: torchrun's stores, detcore's rank-0 store and the bind policy."""
from __future__ import annotations

import os
import socket
from datetime import timedelta

import psutil

from detcore.net import is_loopback, listening_socket, socket_port, store_bind_address


def listening() -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections("tcp")
            if c.status == psutil.CONN_LISTEN}


def test_bind_policy():
    assert store_bind_address("127.0.0.1", "127.0.0.1", multi_host=False) == "127.0.0.1"
    assert store_bind_address("localhost", "127.0.0.1", multi_host=True) == "127.0.0.1"  # asked for loopback
    assert store_bind_address("n1", "10.0.0.1", multi_host=True) == "10.0.0.1"  # the address the scheduler names
    assert store_bind_address("10.0.0.1", "10.0.0.1", multi_host=False) == "10.0.0.1"
    assert store_bind_address("n1", "127.0.1.1", multi_host=True) is None  # Debian's own-name line: all interfaces
    assert store_bind_address("n1", "127.0.0.1", multi_host=False) == "127.0.0.1"
    assert store_bind_address("nowhere", None, multi_host=True) is None
    assert is_loopback("::1") and is_loopback("127.0.1.1") and is_loopback("[::ffff:127.0.0.1]")
    assert not any(map(is_loopback, ("n1", "10.0.0.1", "*", "0.0.0.0", "[::]", "::ffff:10.0.0.1")))


def test_listening_socket_binds_only_the_given_host():
    before = listening()
    fd = listening_socket("127.0.0.1", 0)
    try:
        port = socket_port(fd)
        assert listening() - before == {("127.0.0.1", port)}
    finally:
        os.close(fd)


def test_torchrun_agent_stores_listen_on_loopback_only():
    from torch.distributed.elastic.rendezvous import RendezvousParameters

    from launcher.backends.local import AGENT_RENDEZVOUS
    from launcher.backends.local.agent import BACKEND, create_handler

    assert AGENT_RENDEZVOUS == BACKEND  # the dry run names the backend the agent registers
    before = listening()
    params = RendezvousParameters(backend=BACKEND, endpoint="127.0.0.1:0", run_id="unit", min_nodes=1, max_nodes=1,
                                  local_addr="127.0.0.1", join_timeout="60")
    handler = create_handler(params)
    try:
        info = handler.next_rendezvous()
        stores = listening() - before
        assert len(stores) == 2 and {ip for ip, _ in stores} == {"127.0.0.1"}, stores  # rendezvous + shared store
        boot = info.bootstrap_store_info
        assert boot.master_addr == "127.0.0.1" and ("127.0.0.1", boot.master_port) in stores
        info.store.set("k", b"v")
        assert info.store.get("k") == b"v"
    finally:
        handler.shutdown()


def test_detcore_rank0_store_binds_what_master_addr_names(monkeypatch):
    import torch.distributed as dist

    from detcore.engine.dist import bound_store

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    before = listening()
    store = bound_store(timedelta(seconds=30))
    assert listening() - before == {("127.0.0.1", port)}
    assert os.environ["GLOO_SOCKET_IFNAME"] == "lo"  # gloo's pairs follow the store onto loopback
    client = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=30))
    client.set("a", b"1")
    assert store.get("a") == b"1"
