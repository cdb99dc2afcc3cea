"""Opening connections: TCP, with TLS on top when asked, and errors that say why.

Every place that dials a peer on Dynamo's TCP planes (the TCP client, the
call-home sender) goes through :func:`open_stream`, so TLS is added once and
its failures read the same everywhere: a :class:`~trioplane.ConnectError` that
names the peer, says "TLS" and gives the reason, with a hint when the peer
looks like it does not speak TLS at all.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import trio

from trioplane._errors import ConnectError
from trioplane._util import reason
from trioplane.addresses import format_host_port

__all__ = ["Connector", "open_stream", "open_tcp_stream"]

#: How a client opens a byte stream to ``(host, port)``: the seam for tests.
Connector = Callable[[str, int], Awaitable[trio.abc.Stream]]

#: OpenSSL's words for a peer that answered a ClientHello with something else.
_NOT_TLS_HINTS = ("wrong version number", "record layer failure", "decode error", "eof")


async def open_tcp_stream(host: str, port: int) -> trio.abc.Stream:
    """The default connector: ``trio.open_tcp_stream`` (``TCP_NODELAY`` on)."""
    return await trio.open_tcp_stream(host, port)


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
