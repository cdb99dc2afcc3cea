"""The TCP request plane, byte-compatible with Dynamo's.

Addresses are ``host:port/path`` or ``tcp://host:port/path`` (IPv6 as
``[::1]:port/path``); the path goes into the frame verbatim. One pool of
persistent, pipelined connections per ``host:port``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypedDict

import trio

from trioplane._errors import ConnectionLost
from trioplane._sockets import ByteLink
from trioplane._types import Instance
from trioplane._util import check_options, running
from trioplane.addresses import format_host_port, parse_tcp_address
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

#: How a TCP client opens a byte stream to ``(host, port)``: the seam for tests.
Connector = Callable[[str, int], Awaitable[trio.abc.Stream]]


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
    """

    max_connections_per_host: int
    max_in_flight_per_connection: int
    connect_timeout: float
    ack_timeout: float
    close_grace_period: float
    max_frame_size: int
    connector: Connector


class StreamFrameChannel:
    """Request frames out and ack frames in over a byte stream (see :class:`ByteLink`)."""

    def __init__(self, stream: trio.abc.Stream, *, max_frame_size: int) -> None:
        self._link = ByteLink(stream)
        self._decoder = AckDecoder(max_frame_size=max_frame_size)

    def send_nowait(self, data: bytes) -> int:
        try:
            return self._link.send_nowait(data)
        except trio.BrokenResourceError as exc:
            raise ConnectionLost(str(exc)) from exc

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        await self._link.send_all(frames[0] if len(frames) == 1 else b"".join(frames))

    async def receive_acks(self) -> list[bytes]:
        decoder = self._decoder
        while True:
            acks = list(decoder.acks())
            if acks:
                return acks
            data = await self._link.receive()
            if not data:
                decoder.check_eof()
                raise ConnectionLost("peer closed the connection")
            decoder.feed(data)

    async def aclose(self) -> None:
        await self._link.aclose()


async def _open_tcp_stream(host: str, port: int) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


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
        self.max_frame_size = options.get("max_frame_size", DEFAULT_MAX_FRAME_SIZE)
        if self.max_frame_size < 12:
            raise ValueError("max_frame_size is too small for any frame")
        self._connector: Connector = options.get("connector", _open_tcp_stream)

    def _route(
        self, address: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> tuple[tuple[str, int], bytes]:
        host, port, path = parse_tcp_address(address)
        frame = encode_request_frame(path, headers, payload, max_frame_size=self.max_frame_size)
        return (host, port), frame

    async def _open_channel(self, key: tuple[str, int]) -> FrameChannel:
        stream = await self._connector(*key)
        return StreamFrameChannel(stream, max_frame_size=self.max_frame_size)

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
