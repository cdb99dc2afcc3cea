"""The TCP request plane, byte-compatible with Dynamo's.

Addresses are ``host:port/path`` or ``tcp://host:port/path`` (IPv6 as
``[::1]:port/path``); the path goes into the frame verbatim. One pool of
persistent, pipelined connections per ``host:port``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypedDict

import trio

from trioplane._checks import check_count
from trioplane._errors import BadArgument, ConnectError, ConnectionLost
from trioplane._network import Connector, open_stream, open_tcp_stream
from trioplane._sockets import ByteLink
from trioplane._types import Instance
from trioplane._util import check_options, reason, running
from trioplane.addresses import format_host_port, parse_tcp_address
from trioplane.tls import DEFAULT_HANDSHAKE_TIMEOUT, TcpTls
from trioplane.transports._base import PipelinedClient
from trioplane.transports._pipeline import FrameChannel, PoolOptions
from trioplane.wire.tcp import DEFAULT_MAX_FRAME_SIZE, AckDecoder, encode_request_frame

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "TcpClient",
    "TcpClientOptions",
    "parse_tcp_address",
    "open_tcp_client",
    "start_tcp_client",
]


class TcpClientOptions(TypedDict, total=False):
    """Options of :func:`open_tcp_client` (defaults are Dynamo's).

    * ``max_connections_per_host`` (100): pooled connections per ``host:port``;
      a new one opens only when every open one has ``max_in_flight_per_connection``
      requests in flight.
    * ``max_in_flight_per_connection`` (1024): pipelined requests per connection.
    * ``connect_timeout`` (5 s) -> :class:`~trioplane.ConnectError`.
    * ``ack_timeout`` (5 s) -> :class:`~trioplane.AckTimeout`.
    * ``close_grace_period`` (5 s): how long closing waits for in-flight requests.
    * ``max_frame_size`` (32 MiB): cap on request and ack frames.
    * ``connector``: ``async (host, port) -> trio.abc.Stream``; default
      ``trio.open_tcp_stream`` (which sets ``TCP_NODELAY``).
    * ``ssl_context``: speak TLS to every worker (Dynamo's TCP TLS); ``None``: plain
      text. Absent: from ``DYN_TCP_TLS_*``, as a Dynamo caller
      (:meth:`~trioplane.TcpTls.from_env`).
    * ``server_hostname``: the name each worker's certificate must carry (default:
      the host dialled; ``DYN_TCP_TLS_SERVER_NAME`` when ``ssl_context`` is absent).
    * ``tls_handshake_timeout`` (3 s, or ``DYN_TCP_TLS_HANDSHAKE_TIMEOUT_SECS``).
    """

    max_connections_per_host: int
    max_in_flight_per_connection: int
    connect_timeout: float
    ack_timeout: float
    close_grace_period: float
    max_frame_size: int
    connector: Connector
    ssl_context: ssl.SSLContext | None
    server_hostname: str
    tls_handshake_timeout: float


#: A frame this large is written on its own, not joined with the others of a batch.
JOIN_LIMIT = 64 * 1024


class StreamFrameChannel:
    """Request frames out and ack frames in over a byte stream (see :class:`ByteLink`)."""

    def __init__(self, stream: trio.abc.Stream, *, max_frame_size: int, peer: str = "") -> None:
        self._link = ByteLink(stream)
        # It also tells an HTTP, TLS or NATS peer (a wrong port) from a worker's acks.
        self._decoder = AckDecoder(max_frame_size=max_frame_size, peer=peer or "the peer")
        self._peer = peer
        self._first = True

    def send_nowait(self, data: bytes) -> int:
        try:
            return self._link.send_nowait(data)
        except trio.BrokenResourceError as exc:
            raise ConnectionLost(str(exc)) from exc

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        """Write ``frames`` in order: small ones joined into one write, a large one
        (``JOIN_LIMIT``) as it is: joining would copy it once more (with 1 MiB requests
        at 8 calls in flight that was about an eighth of the client's CPU per call)."""
        small: list[bytes] = []
        for frame in frames:
            if len(frame) < JOIN_LIMIT:
                small.append(frame)
                continue
            if small:
                await self._link.send_all(small[0] if len(small) == 1 else b"".join(small))
                small = []
            await self._link.send_all(frame)
        if small:
            await self._link.send_all(small[0] if len(small) == 1 else b"".join(small))

    async def receive_acks(self) -> list[bytes]:
        decoder = self._decoder
        while True:
            acks = list(decoder.acks())
            if acks:
                return acks
            try:
                data = await self._link.receive()
            except trio.BrokenResourceError as exc:
                if isinstance(exc.__cause__, ssl.SSLError):  # e.g. a client certificate refused
                    why = reason(exc)
                    if self._first and "eof" in why.lower():
                        why += (
                            " (the server closed it at once: does it require a client certificate?)"
                        )
                    raise ConnectError(f"TLS with {self._peer} failed: {why}") from exc
                raise
            if not data:
                decoder.check_eof()
                raise ConnectionLost("peer closed the connection")
            self._first = False
            decoder.feed(data)

    async def aclose(self) -> None:
        await self._link.aclose()


_POOL_KEYS = (
    "max_connections_per_host",
    "max_in_flight_per_connection",
    "connect_timeout",
    "ack_timeout",
    "close_grace_period",
)


class TcpClient(PipelinedClient[tuple[str, int]]):
    """A :class:`~trioplane.RequestPlaneClient` for Dynamo's TCP request plane.

    Made by :func:`open_tcp_client` (or :func:`start_tcp_client` in your nursery).
    """

    transport_name = "tcp"

    def __init__(self, **options: Unpack[TcpClientOptions]) -> None:
        check_options(options, TcpClientOptions, "TCP client")
        pool = {k: v for k, v in options.items() if k in _POOL_KEYS}
        super().__init__(PoolOptions(**pool))  # type: ignore[arg-type]
        self.max_frame_size = check_count(
            options.get("max_frame_size", DEFAULT_MAX_FRAME_SIZE), "max_frame_size"
        )
        if self.max_frame_size < 12:
            raise BadArgument("max_frame_size is too small for any frame")
        self._connector: Connector = options.get("connector", open_tcp_stream)
        if "ssl_context" in options:
            self.ssl_context = options["ssl_context"]
            self.server_hostname = options.get("server_hostname")
            timeout = options.get("tls_handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT)
        else:  # as a Dynamo caller: from DYN_TCP_TLS_*
            tls = TcpTls.from_env()
            self.ssl_context = tls.client_context
            self.server_hostname = options.get("server_hostname", tls.server_name)
            timeout = options.get("tls_handshake_timeout", tls.handshake_timeout)
        self.tls_handshake_timeout = timeout

    def _route(
        self, address: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> tuple[tuple[str, int], bytes]:
        host, port, path = parse_tcp_address(address)
        frame = encode_request_frame(path, headers, payload, max_frame_size=self.max_frame_size)
        return (host, port), frame

    async def _open_channel(self, key: tuple[str, int]) -> FrameChannel:
        stream = await open_stream(
            *key,
            ssl_context=self.ssl_context,
            server_hostname=self.server_hostname,
            handshake_timeout=self.tls_handshake_timeout,
            connector=self._connector,
        )
        return StreamFrameChannel(
            stream, max_frame_size=self.max_frame_size, peer=format_host_port(*key)
        )

    def _peer_name(self, key: tuple[str, int]) -> str:
        return format_host_port(*key)

    def _warmup_key(self, instance: Instance) -> tuple[str, int] | None:
        if instance.transport_kind != "tcp":
            return None
        try:
            host, port, _ = parse_tcp_address(instance.address)
        except ValueError:
            return None
        return host, port


async def start_tcp_client(nursery: trio.Nursery, **options: Unpack[TcpClientOptions]) -> TcpClient:
    """Start a :class:`TcpClient` whose tasks run in ``nursery``; ``aclose`` it yourself."""
    client = TcpClient(**options)
    await nursery.start(client.run)
    return client


@asynccontextmanager
async def open_tcp_client(**options: Unpack[TcpClientOptions]) -> AsyncIterator[TcpClient]:
    """Open a TCP request-plane client that owns its connections and tasks.

    Leaving the block closes it: new requests get :class:`~trioplane.ClientClosed`,
    in-flight ones get ``close_grace_period`` to finish, then are cancelled.
    """
    async with running(TcpClient(**options)) as client:
        yield client
