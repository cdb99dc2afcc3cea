"""The call-home watch: one task hears every call home's caller, and keeps a finished
stream's connection until the caller closes it (or ``sentinel_wait`` passes).

The "caller" here is a plain listener on 127.0.0.1 that reads what the worker sends.
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio

from trioplane._sockets import SocketIO
from trioplane.servers import CallHomeLimits, CallHomeWatch, open_call_home
from trioplane.servers.callhome import GONE, KILL, STOP
from trioplane.wire import MSGPACK
from trioplane.wire.control import CallHomeInfo
from trioplane.wire.response import encode_cancel, encode_prologue, encode_sentinel

from .conftest import wait_until

SENTINEL = encode_sentinel()
Connections = trio.MemoryReceiveChannel[trio.SocketStream]


@asynccontextmanager
async def caller() -> AsyncIterator[tuple[CallHomeInfo, Connections]]:
    """A listener the worker calls home to; each connection arrives on the channel
    (and stays open until the test closes it)."""
    send, receive = trio.open_memory_channel[trio.SocketStream](math.inf)
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]

    async def accept() -> None:
        while True:
            send.send_nowait(await listener.accept())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        port = listener.socket.getsockname()[1]
        yield CallHomeInfo(f"127.0.0.1:{port}", "subject", "id"), receive
        nursery.cancel_scope.cancel()
    await listener.aclose()


@asynccontextmanager
async def running_watch() -> AsyncIterator[CallHomeWatch]:
    watch = CallHomeWatch()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch.run)
        yield watch
        nursery.cancel_scope.cancel()


async def read_until(stream: trio.SocketStream, tail: bytes) -> bytes:
    data = b""
    while not data.endswith(tail):
        chunk = await stream.receive_some()
        assert chunk, f"EOF before {tail!r}; got {data!r}"
        data += chunk
    return data


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def test_finish_hands_the_connection_to_the_watch_until_the_caller_closes() -> None:
    async with caller() as (info, connections), running_watch() as watch:
        with trio.fail_after(5):
            async with open_call_home(info, watch=watch) as home:
                await home.send(encode_prologue())
                await home.finish(MSGPACK)  # returns at once: the watch waits
            stream = await connections.receive()
            assert (await read_until(stream, SENTINEL)).endswith(SENTINEL)
            assert watch.watching == 1  # still open: the caller has not closed
            await trio.sleep(0.05)
            assert watch.watching == 1
            await stream.aclose()
            await wait_until(lambda: not watch.watching)


async def test_a_caller_that_never_closes_is_closed_after_sentinel_wait() -> None:
    limits = CallHomeLimits(sentinel_wait=0.2)
    async with caller() as (info, connections), running_watch() as watch:
        with trio.fail_after(5):
            async with open_call_home(info, limits=limits, watch=watch) as home:
                await home.finish(MSGPACK)
            stream = await connections.receive()
            start = trio.current_time()
            data = await read_to_eof(stream)  # the worker's side closes: EOF here
            assert data.endswith(SENTINEL)
            assert trio.current_time() - start >= 0.15
            assert watch.watching == 0


@pytest.mark.parametrize(("kind", "why"), [("stop", STOP), ("kill", KILL)])
async def test_the_watch_hears_stop_and_kill_while_the_stream_runs(kind: str, why: str) -> None:
    heard: list[str] = []
    async with caller() as (info, connections), running_watch() as watch:
        with trio.fail_after(5):
            async with open_call_home(info, on_cancel=heard.append, watch=watch) as home:
                stream = await connections.receive()
                await stream.send_all(encode_cancel(kind))
                await wait_until(lambda: home.stopped)
                assert heard == [why]
                await stream.aclose()
                await wait_until(lambda: len(heard) == 2)
                assert heard == [why, GONE]
            assert watch.watching == 0


async def test_garbage_from_the_caller_counts_as_the_caller_gone() -> None:
    heard: list[str] = []
    async with caller() as (info, connections), running_watch() as watch:
        with trio.fail_after(5):
            async with open_call_home(info, on_cancel=heard.append, watch=watch) as home:
                stream = await connections.receive()
                await stream.send_all(b"\xff" * 64)  # no TwoPart message
                await wait_until(lambda: home.stopped)
                assert heard == [GONE]
                assert watch.watching == 0  # no longer heard: no busy loop on its data


async def test_a_tls_caller_is_reported_through_on_failure_after_the_block() -> None:
    failures: list[str] = []
    async with caller() as (info, connections), running_watch() as watch:
        with trio.fail_after(5):
            async with open_call_home(info, on_failure=failures.append, watch=watch) as home:
                await home.finish(MSGPACK)
            assert failures == []
            stream = await connections.receive()
            await stream.send_all(b"\x15\x03\x03\x00\x02\x02\x46")  # a TLS alert record
            await wait_until(lambda: bool(failures))
            assert "serves TLS" in failures[0]
            assert await read_to_eof(stream)  # and the connection is closed


async def test_cancelling_the_watch_closes_every_connection_it_holds() -> None:
    async with caller() as (info, connections):
        streams = []
        with trio.fail_after(5):
            async with running_watch() as watch:
                for _ in range(3):
                    async with open_call_home(info, watch=watch) as home:
                        await home.finish(MSGPACK)
                    streams.append(await connections.receive())
                assert watch.watching == 3
            for stream in streams:
                assert (await read_to_eof(stream)).endswith(SENTINEL)


async def test_many_callers_at_once_each_heard_and_closed() -> None:
    async with caller() as (info, connections), running_watch() as watch:
        with trio.fail_after(10):
            for _ in range(200):
                async with open_call_home(info, watch=watch) as home:
                    await home.finish(MSGPACK)
            assert watch.watching == 200
            for _ in range(200):
                stream = await connections.receive()
                await read_until(stream, SENTINEL)
                await stream.aclose()
            await wait_until(lambda: not watch.watching)


async def test_a_watch_that_is_not_running_refuses() -> None:
    async with caller() as (info, _):
        with pytest.raises(trio.ClosedResourceError):
            async with open_call_home(info, watch=CallHomeWatch()):
                pass


@pytest.fixture
def high_descriptors() -> Iterator[None]:
    """Over 1,024 descriptors open, so the next socket's number is above what
    ``select()`` takes (a worker with many calls in flight)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is under 1,200")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1030)]
    try:
        yield
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("high_descriptors")
async def test_a_call_home_whose_socket_number_is_over_1024_connects() -> None:
    async with caller() as (info, connections), running_watch() as watch:
        with trio.fail_after(5):
            async with open_call_home(info, watch=watch) as home:
                link = home._link
                assert isinstance(link, SocketIO)
                assert link.fileno() > 1024
                await home.send(encode_prologue())
                await home.finish(MSGPACK)
            stream = await connections.receive()
            assert (await read_until(stream, SENTINEL)).endswith(SENTINEL)
