"""The WebSocket request plane against trio-websocket's own server."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.lowlevel
import trio_websocket
import trustme

import trioplane
from trioplane import Instance
from trioplane.transports.websocket import parse_websocket_address
from trioplane.wire.tcp import RequestFrame, RequestFrameDecoder, encode_ack

from .conftest import all_tasks, wait_until

Answer = Callable[[RequestFrame], Awaitable[bytes | str | None]]


async def echo(frame: RequestFrame) -> bytes:
    """The payload back as the ack: each caller can check it got its own."""
    return encode_ack(frame.payload)


@asynccontextmanager
async def ws_server(
    answer: Answer = echo, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, list[RequestFrame]]]:
    """trio-websocket's server; ``answer`` gives each request's reply message (None: close)."""
    received: list[RequestFrame] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                message = await ws.get_message()
                assert isinstance(message, bytes)
                decoder = RequestFrameDecoder()
                decoder.feed(message)
                frame = decoder.next_frame()
                assert frame is not None
                received.append(frame)
                reply = await answer(frame)
                if reply is None:
                    await ws.aclose()
                    return
                await ws.send_message(reply)
        except trio_websocket.ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        serve = partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context)
        server = await nursery.start(serve)
        yield server.port, received
        nursery.cancel_scope.cancel()


async def test_requests_and_acks_one_message_each() -> None:
    async with ws_server() as (port, received), trioplane.open_websocket_client() as client:
        assert client.transport_name == "websocket"
        address = f"ws://127.0.0.1:{port}/0/ns/comp/ep"
        ack = await client.send_request(address, b"hello", {"request-id": "1"})
        assert ack == b"hello"
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            results[i] = await client.send_request(address, b"%d" % i)

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
        stats = client.stats()
    assert results == {i: b"%d" % i for i in range(200)}
    assert received[0].path == "0/ns/comp/ep"
    assert received[0].headers == {"request-id": "1"}
    assert stats.requests_sent == stats.responses_received == 201
    assert stats.active_connections + stats.idle_connections == 1


async def test_acks_keep_fifo_order_with_a_slow_first_answer() -> None:
    async def slow_first(frame: RequestFrame) -> bytes:
        if frame.payload == b"0":
            await trio.sleep(0.05)
        return encode_ack(frame.payload)

    async with ws_server(slow_first) as (port, _), trioplane.open_websocket_client() as client:
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            results[i] = await client.send_request(f"ws://127.0.0.1:{port}/p", b"%d" % i)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(one, i)
                await trio.lowlevel.checkpoint()
    assert results == {i: b"%d" % i for i in range(10)}


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("a text message", trioplane.ProtocolError),
        (encode_ack(b"a") + encode_ack(b"b"), trioplane.ProtocolError),
        (b"\x00\x00", trioplane.ProtocolError),
        (None, trioplane.ConnectionLost),
    ],
    ids=["text", "two-acks", "truncated", "closed"],
)
async def test_bad_answers_fail_the_request_and_the_next_reconnects(
    reply: bytes | str | None, error: type[Exception]
) -> None:
    answers = [reply]

    async def answer(frame: RequestFrame) -> bytes | str | None:
        return answers.pop() if answers else encode_ack(b"")

    async with ws_server(answer) as (port, _), trioplane.open_websocket_client() as client:
        address = f"ws://127.0.0.1:{port}/p"
        with pytest.raises(error):
            await client.send_request(address, b"x")
        assert await client.send_request(address, b"y") == b""


async def test_refused_connection_is_a_connect_error_naming_the_url() -> None:
    async with trioplane.open_websocket_client(connect_timeout=2) as client:
        with pytest.raises(
            trioplane.ConnectError, match=re.escape("cannot connect to ws://127.0.0.1:1/p")
        ):
            await client.send_request("ws://127.0.0.1:1/p", b"x")


async def test_message_size_limit() -> None:
    async with (
        ws_server() as (port, _),
        trioplane.open_websocket_client(max_message_size=1024) as client,
    ):
        with pytest.raises(trioplane.FrameTooLarge):
            await client.send_request(f"ws://127.0.0.1:{port}/p", b"x" * 2000)


async def test_unanswered_pings_close_the_connection() -> None:
    """A peer that stops answering pings is dropped; the next request reconnects."""
    async with (
        ws_server() as (port, _),
        trioplane.open_websocket_client(ping_interval=0.05, ping_timeout=0.05) as client,
    ):
        address = f"ws://127.0.0.1:{port}/p"
        assert await client.send_request(address, b"a") == b"a"
        pool = client._pool
        assert pool is not None
        (connection,) = pool.connections()
        channel = connection._channel

        async def hang(payload: bytes | None = None) -> None:
            await trio.sleep_forever()

        channel._ws.ping = hang  # type: ignore[attr-defined]  # pings hang, as if the peer died
        await wait_until(lambda: connection not in pool.connections())
        assert await client.send_request(address, b"b") == b"b"


async def test_wss_with_a_trusted_certificate() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with (
        ws_server(ssl_context=server_context) as (port, _),
        trioplane.open_websocket_client(ssl_context=client_context) as client,
    ):
        assert await client.send_request(f"wss://127.0.0.1:{port}/p", b"tls") == b"tls"


async def test_wss_with_an_untrusted_certificate_fails_at_once_saying_why() -> None:
    """Not a connect timeout: trio-websocket alone would wait for a WebSocket
    handshake that a failed TLS handshake never brings."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_context)
    async with (
        ws_server(ssl_context=server_context) as (port, _),
        trioplane.open_websocket_client(connect_timeout=60) as client,  # the system's CAs
    ):
        url = f"wss://127.0.0.1:{port}/p"
        with pytest.raises(trioplane.ConnectError, match="CERTIFICATE_VERIFY_FAILED") as caught:
            await client.send_request(url, b"x")
        assert str(caught.value).startswith(f"TLS with {url} failed")
        assert client.stats().active_connections + client.stats().idle_connections == 0


async def test_warmup_connects_to_websocket_instances() -> None:
    async with ws_server() as (port, _), trioplane.open_websocket_client() as client:
        instance = Instance("ns", "c", "e", 1, "websocket", f"ws://127.0.0.1:{port}/1/ns/c/e")
        send, receive = trio.open_memory_channel[list[Instance]](1)
        client.start_warmup(receive)
        await send.send([instance])
        await wait_until(lambda: client.stats().idle_connections == 1)
        assert client.stats().requests_sent == 0


async def test_nothing_is_left_after_close() -> None:
    async with ws_server() as (port, _):
        tasks = len(all_tasks())
        async with trioplane.open_websocket_client() as client:
            await client.send_request(f"ws://127.0.0.1:{port}/p", b"x")
        assert len(all_tasks()) == tasks


@pytest.mark.parametrize(
    "address", ["http://h:1/p", "ws://", "ws://h:notaport/p", "ws://h:1/p q", "ws://h:1/p?q=1"]
)
def test_bad_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="ws"):
        parse_websocket_address(address)


def test_default_ports() -> None:
    assert parse_websocket_address("ws://h/p") == (False, "h", 80, "/p")
    assert parse_websocket_address("wss://h") == (True, "h", 443, "/")
