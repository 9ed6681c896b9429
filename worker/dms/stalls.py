"""Sockets that find a dead link in seconds: a connection whose sent data stays unacknowledged for
``DMS_STALL_TIMEOUT_S`` is dropped by the kernel (``TCP_USER_TIMEOUT``, Linux), and an idle pooled one is
checked by TCP keepalive. Without this a request on a link whose packets vanish (no RST, no ICMP) hangs
until ``DMS_TIMEOUT_S``, and after the link is back it still waits for TCP's retransmission backoff (tens of
seconds). An answer DMS takes long to compute is unaffected: the request's bytes were acknowledged."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

SocketFactory = Callable[[tuple[Any, ...]], socket.socket]


def stall_detecting(stall_timeout_s: float) -> SocketFactory:
    """For ``aiohttp.TCPConnector(socket_factory=...)``."""

    def make(addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family=family, type=kind, proto=proto)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(stall_timeout_s * 1000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            idle = max(1, int(stall_timeout_s))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle // 3))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        return sock

    return make
