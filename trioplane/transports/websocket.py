"""The WebSocket request plane (trio-websocket).

Addresses are ``ws://host[:port]/path`` or ``wss://...``. The wire is the TCP
request plane's, message by message: each request is one binary message holding
one TCP request frame (the path field is the URL's path, without its leading
``/``), each ack one binary message holding one TCP ack frame, in request order.
So a worker serves both planes with one codec.

One persistent connection per ``ws://host:port/path`` by default
(``max_connections_per_host`` makes a small pool), pipelined like TCP, kept alive
by pings; a dropped connection is replaced on the next request.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, TypedDict

import trio

from trioplane._checks import check_count, check_seconds
from trioplane._errors import BadArgument, ConnectError, ConnectionLost, MissingExtra, ProtocolError
from trioplane._network import open_tcp_stream
from trioplane._types import Instance
from trioplane._util import check_options, reason, running
from trioplane.addresses import format_host_port, split_url
from trioplane.transports._base import PipelinedClient
from trioplane.transports._pipeline import FrameChannel, PoolOptions
from trioplane.wire.tcp import DEFAULT_MAX_FRAME_SIZE, decode_ack, encode_request_frame

if TYPE_CHECKING:
    from typing_extensions import Unpack

try:
    import trio_websocket
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtra("the WebSocket transport", "trio-websocket", "websocket") from exc

__all__ = [
    "WebSocketClient",
    "WebSocketClientOptions",
    "open_websocket_client",
    "parse_websocket_address",
    "start_websocket_client",
]

ADDRESS_FORMS = "'ws://host:port/path', 'wss://host:port/path'"

#: (secure, host, port, path): one pool per WebSocket endpoint.
WsKey = tuple[bool, str, int, str]


class WebSocketClientOptions(TypedDict, total=False):
    """Options of :func:`open_websocket_client`.

    * ``max_connections_per_host`` (1): connections per ``ws://host:port/path``.
    * ``max_in_flight_per_connection`` (1024), ``connect_timeout`` (5 s),
      ``ack_timeout`` (5 s), ``close_grace_period`` (5 s): as for TCP.
    * ``max_message_size`` (32 MiB): cap on a request or ack message.
    * ``ping_interval`` (20 s), ``ping_timeout`` (10 s): keep-alive; a connection
      whose ping goes unanswered is closed (and replaced on the next request).
    * ``ssl_context``: for ``wss://`` (default: the system's trust store).
    """

    max_connections_per_host: int
    max_in_flight_per_connection: int
    connect_timeout: float
    ack_timeout: float
    close_grace_period: float
    max_message_size: int
    ping_interval: float
    ping_timeout: float
    ssl_context: ssl.SSLContext


@functools.lru_cache(maxsize=4096)
def parse_websocket_address(address: str) -> WsKey:
    """``ws://host[:port]/path`` -> (secure, host, port, path); ``ValueError`` if malformed."""
    parts, port = split_url(address, ("ws", "wss"), ADDRESS_FORMS, "a WebSocket")
    if parts.query or parts.fragment or parts.username:
        raise BadArgument(f"WebSocket address {address!r} has a query, fragment or user")
    assert parts.hostname is not None
    return parts.scheme == "wss", parts.hostname, port, parts.path or "/"


def _url(key: WsKey) -> str:
    secure, host, port, path = key
    return f"{'wss' if secure else 'ws'}://{format_host_port(host, port)}{path}"


class WebSocketFrameChannel:
    """Request frames out and ack frames in, one per binary message."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, *, max_frame_size: int) -> None:
        self._ws = ws
        self._max_frame_size = max_frame_size
        self._keepalive_scope = trio.CancelScope()

    def send_nowait(self, data: bytes) -> int:
        return 0

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        try:
            for frame in frames:
                await self._ws.send_message(frame)
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionLost(f"WebSocket closed: {exc.reason}") from None

    async def receive_acks(self) -> list[bytes]:
        try:
            message = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise ConnectionLost(f"WebSocket closed: {exc.reason}") from None
        if isinstance(message, str):
            raise ProtocolError("WebSocket ack is a text message, not binary")
        return [decode_ack(message, max_frame_size=self._max_frame_size)]

    async def keepalive(self, interval: float, pong_wait: float) -> None:
        """Ping every ``interval``; no pong within ``pong_wait`` closes the connection."""
        with (
            self._keepalive_scope,
            suppress(trio_websocket.ConnectionClosed, trio.BrokenResourceError),
        ):
            while not self._ws.closed:
                await trio.sleep(interval)
                with trio.move_on_after(pong_wait) as scope:
                    await self._ws.ping()
                if scope.cancelled_caught:
                    await self._ws.aclose(code=1011, reason="ping timeout")
                    return

    async def aclose(self) -> None:
        self._keepalive_scope.cancel()
        await self._ws.aclose()


class WebSocketClient(PipelinedClient[WsKey]):
    """A :class:`~trioplane.RequestPlaneClient` for the WebSocket request plane."""

    transport_name = "websocket"

    def __init__(self, **options: Unpack[WebSocketClientOptions]) -> None:
        check_options(options, WebSocketClientOptions, "WebSocket client")
        pool = {k: v for k, v in options.items() if k in PoolOptions.__dataclass_fields__}
        pool.setdefault("max_connections_per_host", 1)
        super().__init__(PoolOptions(**pool))  # type: ignore[arg-type]
        self.max_message_size = check_count(
            options.get("max_message_size", DEFAULT_MAX_FRAME_SIZE), "max_message_size", minimum=12
        )
        self.ping_interval = check_seconds(
            options.get("ping_interval", 20.0), "ping_interval", zero=False
        )
        self.ping_timeout = check_seconds(
            options.get("ping_timeout", 10.0), "ping_timeout", zero=False
        )
        self._ssl_context = options.get("ssl_context")

    def _route(
        self, address: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> tuple[WsKey, bytes]:
        key = parse_websocket_address(address)
        frame = encode_request_frame(
            key[3].lstrip("/"), headers, payload, max_frame_size=self.max_message_size
        )
        return key, frame

    async def _open_channel(self, key: WsKey) -> FrameChannel:
        """TCP, then TLS (``wss``), then the WebSocket handshake, each failure named.

        The TLS handshake is done here, not by trio-websocket, which waits
        forever for a WebSocket handshake once TLS has failed (e.g. an untrusted
        certificate): this way the caller learns why at once.
        """
        assert self._nursery is not None
        secure, host, port, path = key
        stream: trio.abc.Stream = await open_tcp_stream(host, port)
        try:
            if secure:
                context = self._ssl_context or ssl.create_default_context()
                stream = trio.SSLStream(
                    stream, context, server_hostname=host, https_compatible=True
                )
                try:
                    await stream.do_handshake()
                except trio.BrokenResourceError as exc:
                    raise ConnectError(f"TLS with {_url(key)} failed: {reason(exc)}") from exc
            try:
                ws = await trio_websocket.wrap_client_stream(
                    self._nursery,
                    stream,  # type: ignore[arg-type]  # any trio stream works (a virtual one)
                    format_host_port(host, port),
                    path,
                    message_queue_size=64,
                    max_message_size=self.max_message_size,
                )
            except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
                raise ConnectError(f"WebSocket handshake with {_url(key)} failed: {exc!r}") from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        channel = WebSocketFrameChannel(ws, max_frame_size=self.max_message_size)
        self._nursery.start_soon(channel.keepalive, self.ping_interval, self.ping_timeout)
        return channel

    def _peer_name(self, key: WsKey) -> str:
        return _url(key)

    def _warmup_key(self, instance: Instance) -> WsKey | None:
        if instance.transport_kind != "websocket":
            return None
        try:
            return parse_websocket_address(instance.address)
        except ValueError:
            return None


async def start_websocket_client(
    nursery: trio.Nursery, **options: Unpack[WebSocketClientOptions]
) -> WebSocketClient:
    """Start a :class:`WebSocketClient` whose tasks run in ``nursery``; ``aclose`` it yourself."""
    client = WebSocketClient(**options)
    await nursery.start(client.run)
    return client


@asynccontextmanager
async def open_websocket_client(
    **options: Unpack[WebSocketClientOptions],
) -> AsyncIterator[WebSocketClient]:
    """Open a WebSocket request-plane client that owns its connections and tasks."""
    async with running(WebSocketClient(**options)) as client:
        yield client
