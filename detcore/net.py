"""Where a job's sockets listen: loopback for one machine, the named address for several (torch-free).

A ``torch.distributed.TCPStore`` server binds every interface (``*:PORT``) whatever host it is
given, and anyone who reaches that port can read and write the job's rendezvous keys (the
protocol has no authentication). TCPStore can serve on a socket its caller bound instead
(``master_listen_fd``): :func:`listening_socket` makes that socket, :func:`store_bind_address`
decides where it listens. gloo's and NCCL's own sockets follow ``GLOO_SOCKET_IFNAME`` and
``NCCL_SOCKET_IFNAME``; :func:`loopback_interface` names the interface for a one-machine job.
"""
from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP (``127.0.0.0/8``, ``::1``, ``::ffff:127.0.0.1``); a name is not resolved."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1, as a dual-stack socket shows 127.0.0.1
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def resolve(host: str) -> str | None:
    """The first address ``host`` resolves to here (IPv4 first), or None."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0]) if infos else None


def store_bind_address(master_addr: str, resolved: str | None, multi_host: bool) -> str | None:
    """The address rank 0's store listens on; None: every interface (torch's default) (pure).

    A loopback ``MASTER_ADDR`` (``127.0.0.1``, ``localhost``) binds loopback: every rank runs on
    this machine. A name or address binds what it resolves to here: the interface the user or the
    scheduler named. Except a name that resolves to a loopback address while ranks run on other
    machines too (Debian maps a machine's own name to 127.0.1.1, the other nodes reach it by its
    real address): there, as before, every interface.
    """
    if resolved is None:
        return None
    if is_loopback(master_addr):
        return resolved
    if is_loopback(resolved) and multi_host:
        return None
    return resolved


def listening_socket(host: str, port: int) -> int:
    """The file descriptor of a TCP socket listening on ``host:port`` (``port`` 0: the kernel picks one),
    owned by the caller (a TCPStore given it as ``master_listen_fd`` closes it when it ends)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host.strip("[]"), port), family=family, backlog=socket.SOMAXCONN)
    return sock.detach()


def socket_port(fd: int) -> int:
    """The port the socket ``fd`` is bound to."""
    probe = socket.socket(fileno=socket.dup(fd))
    try:
        return int(probe.getsockname()[1])
    finally:
        probe.close()


def loopback_interface() -> str:
    """The name of this machine's loopback interface (``lo`` on Linux, ``lo0`` on macOS)."""
    names = [name for _, name in socket.if_nameindex()] if hasattr(socket, "if_nameindex") else []
    return next((n for n in names if n == "lo"), next((n for n in names if n.startswith("lo")), "lo"))


def loopback_env(environ) -> dict[str, str]:
    """gloo's and NCCL's sockets (their pair listeners, NCCL's bootstrap) on the loopback interface for a
    one-machine job; a choice already in ``environ`` is kept."""
    name = loopback_interface()
    return {k: environ.get(k) or name for k in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")}
