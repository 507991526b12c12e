"""`--web.listen-address` as exporter-toolkit reads it: parsed, then bound before anything runs.

`:PORT` and `[::]:PORT` listen on every interface, IPv4 and IPv6, through one dual-stack
socket (as Go's `net.Listen` does); `0.0.0.0:PORT` is IPv4 only; `[::1]:PORT` one IPv6
address; a host name listens on its first address. The flag may be repeated.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

_EVERY_INTERFACE = ("", "::")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One `--web.listen-address` value; `host` is empty for every interface."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def local_host(self) -> str:
        """The host part of a URL that reaches this address from the same machine."""
        if self.host in (*_EVERY_INTERFACE, "0.0.0.0"):
            return "127.0.0.1"
        return f"[{self.host}]" if ":" in self.host else self.host


class ListenError(OSError):
    """An address that cannot be listened on; the message names the address and the cause."""


def parse_listen_address(text: str) -> ListenAddress:
    """`HOST:PORT`, `:PORT` (every interface), `[::1]:PORT`; raise ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    valid = sep and port.isdigit() and int(port) <= 65535 and "[" not in host and "]" not in host
    if not valid:
        raise ValueError(
            f"listen address {text!r} must be HOST:PORT, :PORT or [IPv6]:PORT, e.g. 127.0.0.1:9797"
        )
    if ":" in host and not bracketed:
        raise ValueError(f"listen address {text!r}: put an IPv6 address in brackets, [{host}]:PORT")
    return ListenAddress(host, int(port))


def bind(address: ListenAddress) -> socket.socket:
    """A socket bound to `address` and listening (port 0 picks a free one); raise ListenError.

    Binding happens before the daemon starts, so a busy port stops the start before any
    probe runs or any "started" line is logged.
    """
    try:
        if address.host in _EVERY_INTERFACE:
            return _bind_every_interface(address.port)
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        return socket.create_server(sockaddr, family=family)
    except OSError as exc:
        # socket.create_server appends the address tuple to strerror; the errno says it plainly
        # (a resolver error has a negative errno and its own strerror).
        why = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
        raise ListenError(f"cannot listen on {address}: {why}") from None


def _bind_every_interface(port: int) -> socket.socket:
    """One dual-stack socket for IPv4 and IPv6; IPv4 alone on a host without IPv6."""
    if socket.has_dualstack_ipv6():
        return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
    return socket.create_server(("0.0.0.0", port))


def bind_all(addresses: Iterable[ListenAddress]) -> list[socket.socket]:
    """Bind every address or none: on the first failure the ones bound so far are closed."""
    bound: list[socket.socket] = []
    try:
        for address in addresses:
            bound.append(bind(address))
    except ListenError:
        for sock in bound:
            sock.close()
        raise
    return bound


def url_host(sock: socket.socket) -> str:
    """The host part of a URL that reaches this socket from the same machine."""
    return ListenAddress(str(sock.getsockname()[0]), 0).local_host()


def describe(sock: socket.socket) -> str:
    """The bound address as `HOST:PORT` (IPv6 in brackets), for the log."""
    host, port = sock.getsockname()[:2]
    return str(ListenAddress(str(host), int(port)))
