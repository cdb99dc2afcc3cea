"""The WebSocket test worker, driven by trio-websocket's own client; and the shared
request handling on the TCP side (frames spanning reads, one write per read)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio
import trio.testing
import trio_websocket

import trioplane
import trioplane.testing
from trioplane.testing import (
    Reply,
    WebSocketTestWorker,
    open_websocket_test_worker,
    serve_request_stream,
)
from trioplane.wire.tcp import (
    ACK_ACCEPTED,
    AckDecoder,
    RequestFrame,
    encode_ack,
    encode_request_frame,
)

from .conftest import echo, wait_until

#: A request frame whose path is not UTF-8: the decoder rejects it.
BAD_FRAME = b"\x00\x01\xff" + b"\x00\x02{}" + b"\x00\x00\x00\x00"


def frame(payload: bytes, path: str = "p") -> bytes:
    return encode_request_frame(path, None, payload)


def read_error(message: bytes | str) -> str:
    """The text of a ``Read error: ...`` ack message (fails on anything else)."""
    assert isinstance(message, bytes)
    decoder = AckDecoder()
    decoder.feed(message)
    acks = list(decoder.acks())
    assert len(acks) == 1
    assert not decoder.buffered
    text = acks[0].decode()
    assert text.startswith("Read error: ")
    return text


@pytest.fixture
async def ws_worker() -> AsyncIterator[WebSocketTestWorker]:
    async with open_websocket_test_worker(echo) as running:
        yield running


async def test_accept_reject_and_received_frames(ws_worker: WebSocketTestWorker) -> None:
    ws_worker.policy = lambda frame: (
        Reply.accept() if frame.path == "ok" else Reply.reject("Server unavailable: nope")
    )
    assert ws_worker.port != 0
    url = ws_worker.address("any/url/path")
    assert url == f"ws://127.0.0.1:{ws_worker.port}/any/url/path"
    async with trio_websocket.open_websocket_url(url) as ws:
        await ws.send_message(encode_request_frame("ok", {"request-id": "r1"}, b"x"))
        assert await ws.get_message() == ACK_ACCEPTED
        await ws.send_message(encode_request_frame("other", None, b"y"))
        assert await ws.get_message() == encode_ack("Server unavailable: nope")
    assert ws_worker.received == [
        RequestFrame("ok", {"request-id": "r1"}, b"x"),
        RequestFrame("other", {}, b"y"),
    ]
    assert ws_worker.connections_accepted == 1
    await wait_until(lambda: ws_worker.open_connections == 0)


async def test_a_delay_keeps_pipelined_acks_in_order_one_per_message(
    ws_worker: WebSocketTestWorker,
) -> None:
    ws_worker.policy = lambda frame: Reply.reject(
        frame.payload, delay=0.2 if frame.payload == b"slow" else 0
    )
    payloads = [b"slow", b"a", b"b", b"c"]
    async with trio_websocket.open_websocket_url(ws_worker.address("p")) as ws:
        for payload in payloads:  # all in flight before any ack
            await ws.send_message(frame(payload))
        assert [await ws.get_message() for _ in payloads] == [encode_ack(p) for p in payloads]
    assert [f.payload for f in ws_worker.received] == payloads


async def test_drop_closes_the_websocket(ws_worker: WebSocketTestWorker) -> None:
    ws_worker.policy = lambda frame: Reply.drop() if frame.payload == b"drop" else echo(frame)
    async with trio_websocket.open_websocket_url(ws_worker.address("p")) as ws:
        for payload in (b"before", b"drop", b"after"):
            await ws.send_message(frame(payload))
        assert await ws.get_message() == encode_ack(b"before")
        with pytest.raises(trio_websocket.ConnectionClosed) as caught:
            await ws.get_message()  # never the ack of "after"
        assert caught.value.reason is not None
        assert caught.value.reason.code == 1000  # a closing handshake, not a cut connection
    await wait_until(lambda: ws_worker.open_connections == 0)


async def test_garbage_is_one_message_as_it_is(ws_worker: WebSocketTestWorker) -> None:
    garbage = b"\xff\xff\xff\xffgarbage"
    ws_worker.policy = lambda frame: (
        Reply.garbage(garbage) if frame.payload == b"g" else echo(frame)
    )
    async with trio_websocket.open_websocket_url(ws_worker.address("p")) as ws:
        await ws.send_message(frame(b"g"))
        await ws.send_message(frame(b"next"))
        assert await ws.get_message() == garbage
        assert await ws.get_message() == encode_ack(b"next")  # the connection lives on


@pytest.mark.parametrize(
    ("message", "error"),
    [
        pytest.param(BAD_FRAME, "not UTF-8", id="malformed"),
        pytest.param(frame(b"1") + frame(b"2"), "holds 2 whole frames", id="two-frames"),
        pytest.param(frame(b"cut")[:-1], "holds 0 whole frames", id="partial"),
        pytest.param(frame(b"x") + b"\x00", "and 1 more bytes", id="extra-bytes"),
        pytest.param(b"", "empty", id="empty"),
        pytest.param("text", "text message", id="text"),
    ],
)
async def test_a_message_not_one_whole_frame_gets_read_error_then_close(
    ws_worker: WebSocketTestWorker, message: bytes | str, error: str
) -> None:
    async with trio_websocket.open_websocket_url(ws_worker.address("p")) as ws:
        await ws.send_message(message)
        assert error in read_error(await ws.get_message())
        with pytest.raises(trio_websocket.ConnectionClosed) as caught:
            await ws.get_message()
        assert caught.value.reason is not None
        assert caught.value.reason.code == 1000
    assert ws_worker.received == []  # a bad message serves none of its frames
    await wait_until(lambda: ws_worker.open_connections == 0)


async def test_a_message_over_max_message_size_closes_the_connection() -> None:
    async with (
        open_websocket_test_worker(max_message_size=100) as worker,
        trio_websocket.open_websocket_url(worker.address("p")) as ws,
    ):
        await ws.send_message(frame(b"x" * 200))
        with pytest.raises(trio_websocket.ConnectionClosed) as caught:
            await ws.get_message()
        assert caught.value.reason is not None
        assert caught.value.reason.code == 1009  # Message Too Big
        assert worker.received == []


async def test_each_connection_is_counted_and_served_alone(ws_worker: WebSocketTestWorker) -> None:
    async with (
        trio_websocket.open_websocket_url(ws_worker.address("a")) as one,
        trio_websocket.open_websocket_url(ws_worker.address("b")) as two,
    ):
        await one.send_message(frame(b"1"))
        await two.send_message(frame(b"2"))
        assert await two.get_message() == encode_ack(b"2")
        assert await one.get_message() == encode_ack(b"1")
        assert ws_worker.open_connections == 2
    assert ws_worker.connections_accepted == 2
    await wait_until(lambda: ws_worker.open_connections == 0)


async def test_tcp_worker_joins_a_reads_acks_and_reassembles_frames_across_reads() -> None:
    client, server = trio.testing.lockstep_stream_pair()  # one receive_some = one send_all
    frames = [frame(b"0"), frame(b"1"), frame(b"2")]
    blob = b"".join(frames)
    cut = len(frames[0]) + len(frames[1]) + 3  # the third frame spans two reads
    received: list[RequestFrame] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(serve_request_stream, server, echo, on_frame=received.append))
        await client.send_all(blob[:cut])
        assert await client.receive_some() == encode_ack(b"0") + encode_ack(b"1")
        await client.send_all(blob[cut:])
        assert await client.receive_some() == encode_ack(b"2")
        await client.send_all(BAD_FRAME)
        assert "not UTF-8" in read_error(bytes(await client.receive_some()))
        assert await client.receive_some() == b""  # then the worker closes
    assert [f.payload for f in received] == [b"0", b"1", b"2"]


def test_websocket_names_are_lazy_and_optional() -> None:
    assert trioplane.testing.WebSocketTestWorker is WebSocketTestWorker
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        trioplane.testing.Nope  # noqa: B018
    script = (
        "import sys; sys.modules['trio_websocket'] = None\n"
        "import trioplane.testing\n"
        "try:\n"
        "    trioplane.testing.WebSocketTestWorker\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'trioplane[websocket]'" in result.stdout


async def test_worker_shutdown_closes_open_connections_at_once() -> None:
    async with trio.open_nursery() as nursery:
        async with open_websocket_test_worker(lambda f: Reply.accept(delay=60)) as worker:
            ws = await trio_websocket.connect_websocket_url(nursery, worker.address("p"))
            await ws.send_message(frame(b"x"))
            await wait_until(lambda: len(worker.received) == 1)
            start = trio.current_time()
        assert trio.current_time() - start < 0.5  # no closing handshake: it stopped reading
        assert worker.open_connections == 0
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()
        await ws.aclose()


@pytest.mark.parametrize("kind", ["tcp", "websocket"])
async def test_keep_received_false_answers_and_keeps_nothing(kind: str) -> None:
    opener = (
        trioplane.testing.open_tcp_test_worker
        if kind == "tcp"
        else trioplane.testing.open_websocket_test_worker
    )
    async with (
        opener(keep_received=False) as worker,
        trioplane.open_request_plane() as plane,
    ):
        for _ in range(3):
            assert await plane.send_request(worker.address("p"), b"x" * 1000) == b""
        assert worker.received == []
        assert worker.connections_accepted == 1
