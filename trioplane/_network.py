"""Opening connections: TCP, with TLS on top when asked, and errors that say why.

Every place that dials a peer on Dynamo's TCP planes (the TCP client, the
call-home sender) goes through :func:`open_stream`, so TLS is added once and
its failures read the same everywhere: a :class:`~trioplane.ConnectError` that
names the peer, says "TLS" and gives the reason, with a hint when the peer
looks like it does not speak TLS at all.

It is also the one seam between trioplane and the network: every connection is
opened by :func:`open_tcp_stream` and every listener made by
:func:`open_tcp_listeners`. Both consult a context variable that
:class:`trioplane.testing.VirtualNetwork` sets (:func:`current_network`); unset, as
always outside such tests, they use real sockets. The response plane's raw-socket
listener asks :func:`current_network` before making its socket.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Protocol

import trio

from trioplane._errors import ConnectError
from trioplane._util import reason
from trioplane.addresses import format_host_port

__all__ = [
    "Connector",
    "Network",
    "current_network",
    "open_stream",
    "open_tcp_listeners",
    "open_tcp_stream",
    "peek",
]

#: How a client opens a byte stream to ``(host, port)``: the seam for tests.
Connector = Callable[[str, int], Awaitable[trio.abc.Stream]]

#: OpenSSL's words for a peer that answered a ClientHello with something else.
_NOT_TLS_HINTS = ("wrong version number", "record layer failure", "decode error", "eof")


class Network(Protocol):
    """A network other than the real one (:class:`trioplane.testing.VirtualNetwork`)."""

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """A stream to the listener at ``host:port``; ``OSError`` if refused."""
        ...

    async def listen(self, host: str, port: int) -> tuple[trio.abc.Listener[trio.abc.Stream], int]:
        """A listener on ``host:port`` (port 0: a free one), and its port."""
        ...


_NETWORK: ContextVar[Network | None] = ContextVar("trioplane_network", default=None)


def current_network() -> Network | None:
    """The network this task's connections and listeners are on (``None``: the real one)."""
    return _NETWORK.get()


async def open_tcp_stream(host: str, port: int, *, numeric: bool = False) -> trio.abc.Stream:
    """The default connector: ``trio.open_tcp_stream`` (``TCP_NODELAY`` on), or a
    virtual network's stream.

    ``numeric`` (the call home, a hot path: one connection per call): a numeric
    address is dialled with one socket, no resolver and no happy-eyeballs nursery.
    """
    network = _NETWORK.get()
    if network is not None:
        return await network.connect(host, port)
    if numeric:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            socket.inet_pton(family, host)
        except OSError:
            pass
        else:
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
            try:
                await sock.connect((host, port))
            except BaseException:
                sock.close()
                raise
            return trio.SocketStream(sock)  # TCP_NODELAY, as open_tcp_stream's
    return await trio.open_tcp_stream(host, port)


async def open_tcp_listeners(
    host: str, port: int
) -> tuple[list[trio.abc.Listener[trio.abc.Stream]], int]:
    """Listeners on ``host:port`` (port 0: a free one), and the port: real or virtual."""
    network = _NETWORK.get()
    if network is not None:
        listener, port = await network.listen(host, port)
        return [listener], port
    listeners = await trio.open_tcp_listeners(port, host=host)
    return list(listeners), listeners[0].socket.getsockname()[1]


async def peek(stream: trio.abc.Stream, size: int) -> bytes:
    """Up to ``size`` bytes that have arrived on ``stream``, left to be read again
    (a socket's ``MSG_PEEK``; a virtual stream's ``peek``)."""
    if isinstance(stream, trio.SocketStream):
        return await stream.socket.recv(size, socket.MSG_PEEK)
    peek_some: Callable[[int], Awaitable[bytes]] = getattr(stream, "peek")  # noqa: B009
    return await peek_some(size)


async def open_stream(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    handshake_timeout: float = 3.0,
    connector: Connector = open_tcp_stream,
) -> trio.abc.Stream:
    """A stream to ``host:port``; over TLS when given ``ssl_context``.

    The TLS handshake has ``handshake_timeout``; it checks ``server_hostname``
    (default: ``host``; an IP address is checked against the certificate's IP
    SANs, with no SNI). The caller's cancel scope bounds the whole. Failures
    raise :class:`~trioplane.ConnectError`; a custom ``connector``'s own
    ``OSError`` passes through.
    """
    peer = format_host_port(host, port)
    try:
        stream = await connector(host, port)
    except OSError as exc:
        if connector is not open_tcp_stream:
            raise
        raise ConnectError(f"cannot connect to {peer}: {reason(exc)}") from exc
    if ssl_context is None:
        return stream
    tls = trio.SSLStream(stream, ssl_context, server_hostname=server_hostname or host)
    try:
        with trio.fail_after(handshake_timeout):
            await tls.do_handshake()
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise ConnectError(
            f"TLS handshake with {peer} timed out after {handshake_timeout:g} s"
            " (is it serving TLS?)"
        ) from None
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        await trio.aclose_forcefully(stream)
        why = reason(exc)
        hint = " (does it serve TLS?)" if any(h in why.lower() for h in _NOT_TLS_HINTS) else ""
        raise ConnectError(f"TLS with {peer} failed: {why}{hint}") from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls
