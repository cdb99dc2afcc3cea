"""SocketIO: the non-blocking socket I/O under the TCP client and the response plane."""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio
import trio.testing

from trioplane._sockets import READS_PER_CHECKPOINT, SocketIO


@pytest.fixture
def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    return a, b


async def test_send_and_receive(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = SocketIO(pair[0]), SocketIO(pair[1])
    await a.send_all(b"hello")
    assert bytes(await b.receive()) == b"hello"
    assert b.receive_nowait() is None
    a.close()
    assert bytes(await b.receive()) == b""  # EOF
    b.close()


async def test_big_write_waits_for_the_reader(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = SocketIO(pair[0]), SocketIO(pair[1])
    blob = os.urandom(4 * 1024 * 1024)  # far more than the socket buffers hold
    got = bytearray()

    async def reader() -> None:
        while len(got) < len(blob):
            got.extend(await b.receive())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await a.send_all(blob)
    assert got == blob
    a.close()
    b.close()


async def test_close_wakes_a_blocked_reader(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = SocketIO(pair[0]), SocketIO(pair[1])
    async with trio.open_nursery() as nursery:

        async def close_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()
            b.close()

        nursery.start_soon(close_soon)
        with pytest.raises(trio.ClosedResourceError):
            await b.receive()
    with pytest.raises(trio.ClosedResourceError):
        b.send_nowait(b"x")
    a.close()


async def test_reset_is_broken_resource(pair: tuple[socket.socket, socket.socket]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    io = SocketIO(client)
    # SO_LINGER 0: closing sends RST instead of FIN.
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()

    async def read_to_end() -> None:
        while await io.receive():
            pass

    with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
        await read_to_end()
    io.close()
    for s in pair:
        s.close()


async def test_flooded_socket_still_yields(pair: tuple[socket.socket, socket.socket]) -> None:
    """Reads that find data waiting still checkpoint every few reads (fairness)."""
    a, b = pair
    b_io = SocketIO(b)
    other_ran = 0

    async def other() -> None:
        nonlocal other_ran
        while True:
            other_ran += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()
        before = other_ran
        for _ in range(READS_PER_CHECKPOINT * 3):
            a.send(b"x")
            assert bytes(await b_io.receive()) == b"x"
        assert other_ran - before >= 2
        nursery.cancel_scope.cancel()
    b_io.close()
    a.close()


async def test_cancelled_receive_raises_before_reading(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    io = SocketIO(b)
    a.send(b"data")
    with trio.CancelScope() as scope:
        scope.cancel()
        await io.receive()
    assert scope.cancelled_caught
    assert bytes(await io.receive()) == b"data"  # nothing was lost
    io.close()
    a.close()


async def test_sharing_detaches_and_leaves_the_descriptor_to_its_owner() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    stream = await trio.open_tcp_stream(*listener.getsockname())
    io = SocketIO.sharing(stream)
    fd = stream.socket.fileno()
    io.close()
    assert os.fstat(fd)  # still open: the stream owns it
    await stream.send_all(b"still usable")
    await stream.aclose()
    listener.close()
