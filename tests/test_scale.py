"""The endpoint client at scale (``benchmarks/scale.py``): what a call in flight holds,
and large requests.

``benchmarks/scale.py`` holds 10,000 calls in flight from one endpoint client; each
holds a call-home connection, so what one connection holds is multiplied by that.
"""

from __future__ import annotations

import socket
import tracemalloc

import trio

from trioplane.addresses import split_host_port
from trioplane.response_plane import CallHome, ResponsePlane, receive_into
from trioplane.transports.tcp import JOIN_LIMIT, StreamFrameChannel
from trioplane.wire.codecs import MSGPACK
from trioplane.wire.control import encode_handshake
from trioplane.wire.response import End, Item, encode_end, encode_item, encode_prologue

CONNECTIONS = 200


class RecordingStream(trio.abc.Stream):
    """Keeps what each ``send_all`` was given."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        assert isinstance(data, bytes)
        self.writes.append(data)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def connected(plane: ResponsePlane, count: int) -> tuple[list[CallHome], list[socket.socket]]:
    """``count`` calls whose worker called home (handshake and prologue sent)."""
    host, port = split_host_port(plane.address)
    calls = [plane.register() for _ in range(count)]
    socks = []
    for call_home in calls:
        sock = socket.create_connection((host, port))
        sock.sendall(encode_handshake(call_home.subject) + encode_prologue())
        socks.append(sock)
    with trio.fail_after(10):
        for call_home in calls:
            call_home.decoder.codec = MSGPACK
            await call_home.wait_connected()
    return calls, socks


async def test_a_call_home_connection_waiting_for_its_items_holds_no_receive_buffer() -> None:
    """It held a 64 KiB buffer of its own: about 72 KB per call in flight in all."""
    plane = ResponsePlane()
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        await connected(plane, 5)  # the plane's own first allocations
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            calls, socks = await connected(plane, CONNECTIONS)
            for call_home in calls:  # each has read what came and waits for more
                assert call_home.connection is not None
                assert call_home.connection.receive_nowait() is None
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert held / CONNECTIONS < 8 * 1024, f"{held / CONNECTIONS:,.0f} B per connection"
        for sock in socks:
            sock.close()
        nursery.cancel_scope.cancel()


async def test_an_item_larger_than_a_read_arrives_whole() -> None:
    plane = ResponsePlane()
    blob = bytes(range(256)) * 8192  # 2 MiB: many reads
    async with trio.open_nursery() as nursery:
        await nursery.start(plane.run)
        (call_home,), (sock,) = await connected(plane, 1)
        data = encode_item(MSGPACK, {"blob": blob}) + encode_end(MSGPACK)

        async def send() -> None:
            await trio.to_thread.run_sync(sock.sendall, data)

        nursery.start_soon(send)
        connection = call_home.connection
        assert connection is not None
        events: list[object] = []
        with trio.fail_after(10):
            while not events or not isinstance(events[-1], End):
                event = call_home.decoder.next_event()
                if event is None:
                    assert await receive_into(connection, call_home.decoder)
                else:
                    events.append(event)
        assert [event.data for event in events if isinstance(event, Item)] == [{"blob": blob}]
        sock.close()
        nursery.cancel_scope.cancel()


async def test_a_large_request_frame_of_a_batch_is_written_as_it_is() -> None:
    """Small frames of a batch are joined into one write; a large one was joined too,
    copying a 1 MiB request once more."""
    stream = RecordingStream()
    channel = StreamFrameChannel(stream, max_frame_size=64 * 1024 * 1024)
    small, other, large = b"s" * 100, b"o" * 200, b"L" * JOIN_LIMIT
    await channel.send_frames([small, other, large, small, large, other])
    assert stream.writes == [small + other, large, small, large, other]
    assert stream.writes[1] is large
    assert stream.writes[3] is large
    await channel.send_frames([small])
    assert stream.writes[-1] is small
