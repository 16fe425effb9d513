"""``python -m launcher.backends.local.agent [torchrun options] ...``: torchrun whose stores listen only where asked.

torchrun's c10d rendezvous hosts two TCPStores in the agent: the rendezvous store at
``--rdzv-endpoint`` and the store it shares with the workers (``MASTER_ADDR``/``MASTER_PORT``,
``TORCHELASTIC_USE_AGENT_STORE``). A TCPStore server binds every interface whatever host it is
given (``*:PORT``), so anyone who can reach the machine can write the rendezvous keys of a
"local" job. TCPStore can serve on a socket its caller bound (``master_listen_fd``); this module
registers the rendezvous backend :data:`BACKEND`, torch's c10d rendezvous whose two stores serve
on sockets bound here to the rendezvous host, and then runs torchrun's own ``main``. With
``--rdzv-endpoint 127.0.0.1:0 --local-addr 127.0.0.1`` (what the local backend passes) both
stores listen on 127.0.0.1 only, on ports the kernel picks at bind time (no port is chosen by
binding, closing and hoping), and the workers' ``MASTER_ADDR`` is 127.0.0.1.

Registering a handler is torch's documented extension point
(``torch.distributed.elastic.rendezvous.rendezvous_handler_registry``); the handler is torch's
``DynamicRendezvousHandler`` with one method replaced, the one that makes the shared store.
"""
from __future__ import annotations

import sys
from datetime import timedelta

from detcore.net import listening_socket, socket_port

BACKEND = "detlaunch-c10d"


def serving_store(host: str, port: int, timeout: timedelta | None = None):
    """A TCPStore server on ``host:port`` whose listening socket is bound to ``host`` only."""
    from torch.distributed import TCPStore

    fd = listening_socket(host, port)
    port = socket_port(fd)
    kwargs = {"timeout": timeout} if timeout is not None else {}
    return TCPStore(host, port, is_master=True, multi_tenant=True, master_listen_fd=fd, **kwargs)


def create_handler(params):
    """torch's c10d rendezvous (``create_handler`` of ``dynamic_rendezvous``) with both stores bound to the
    endpoint's host."""
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import DynamicRendezvousHandler, RendezvousTimeout
    from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint

    class BoundRendezvousHandler(DynamicRendezvousHandler):
        def _create_tcp_store_server(self, master_addr, master_port):
            return serving_store(master_addr, master_port)

        def get_backend(self) -> str:
            return BACKEND

    host, port = parse_rendezvous_endpoint(params.endpoint, default_port=0)
    read_timeout = params.get_as_int("read_timeout", 60)
    store = serving_store(host, port, timedelta(seconds=read_timeout))
    backend = C10dRendezvousBackend(store, params.run_id)

    def seconds(key: str) -> timedelta | None:
        value = params.get_as_int(f"{key}_timeout")
        return None if value is None else timedelta(seconds=value)

    timeout = RendezvousTimeout(seconds("join"), seconds("last_call"), seconds("close"), seconds("heartbeat"))
    return BoundRendezvousHandler.from_backend(
        params.run_id, store, backend, params.min_nodes, params.max_nodes, params.local_addr, timeout,
        keep_alive_interval=params.get_as_int("keep_alive_interval", 5),
        keep_alive_max_attempt=params.get_as_int("keep_alive_max_attempt", 3))


def main(argv: list[str] | None = None) -> None:
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry
    from torch.distributed.run import main as torchrun_main

    from detcore.shutdown import skip_exit_collection

    rendezvous_handler_registry.register(BACKEND, create_handler)
    try:
        torchrun_main(sys.argv[1:] if argv is None else argv)
    finally:  # the agent exits next, whatever torchrun's outcome
        skip_exit_collection()


if __name__ == "__main__":
    main()
