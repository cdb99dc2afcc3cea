"""The NATS connection against a scripted fake server: keep-alive and protocol faults
that a real nats-server does not produce on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial

import pytest
import trio

import trioplane
from trioplane.nats import open_nats_connection

from .conftest import wait_until

INFO = b'INFO {"server_id":"fake","max_payload":1048576,"headers":true} \r\n'
Handler = Callable[[trio.SocketStream, bytes], Awaitable[None]]


async def read_until(stream: trio.SocketStream, needle: bytes, seen: bytes = b"") -> bytes:
    while needle not in seen:
        data = await stream.receive_some()
        if not data:
            raise EOFError(seen)
        seen += data
    return seen


@asynccontextmanager
async def fake_server(after_connect: Handler) -> AsyncIterator[str]:
    """A server that sends INFO, answers the CONNECT's PING, then runs ``after_connect``."""

    async def handle(stream: trio.SocketStream) -> None:
        await stream.send_all(INFO)
        seen = await read_until(stream, b"PING\r\n")
        await stream.send_all(b"PONG\r\n")
        with suppress(trio.BrokenResourceError, EOFError):
            await after_connect(stream, seen)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"nats://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def test_connect_sends_the_right_connect_line() -> None:
    lines: list[bytes] = []

    async def record(stream: trio.SocketStream, seen: bytes) -> None:
        lines.append(seen)
        await trio.sleep_forever()

    async with fake_server(record) as url, open_nats_connection(url, name="me", token="t"):
        await wait_until(lambda: bool(lines))
    connect = lines[0].split(b"\r\n")[0]
    assert connect.startswith(b"CONNECT {")
    assert b'"auth_token":"t"' in connect
    assert b'"name":"me"' in connect
    assert b'"headers":true' in connect
    assert b'"no_responders":true' in connect
    assert b'"verbose":false' in connect


async def test_server_ping_gets_a_pong_and_info_is_taken_any_time() -> None:
    pongs = trio.Event()

    async def ping(stream: trio.SocketStream, seen: bytes) -> None:
        await stream.send_all(
            b'INFO {"server_id":"fake","max_payload":2048,'
            b'"connect_urls":["127.0.0.1:1"]}\r\nPING\r\n'
        )
        await read_until(stream, b"PONG\r\n")
        pongs.set()
        await trio.sleep_forever()

    async with fake_server(ping) as url, open_nats_connection(url) as nc:
        with trio.fail_after(5):
            await pongs.wait()
        assert nc.max_payload == 2048
        assert [s.url for s in nc._servers][-1] == "nats://127.0.0.1:1"


async def test_unanswered_pings_mean_a_stale_connection() -> None:
    events: list[str] = []

    async def ignore_pings(stream: trio.SocketStream, seen: bytes) -> None:
        await trio.sleep_forever()

    async with (
        fake_server(ignore_pings) as url,
        open_nats_connection(
            url,
            ping_interval=0.05,
            max_outstanding_pings=2,
            reconnect_wait=0.05,
            on_event=lambda event, detail: events.append(f"{event}: {detail}"),
        ) as nc,
    ):
        await wait_until(lambda: nc.reconnects >= 1)
    assert "disconnected: stale connection (no PONG)" in events


@pytest.mark.parametrize(
    "garbage",
    [b"BOGUS\r\n", b"MSG a notanumber 3\r\nabc\r\n", b"MSG a 1 3\r\nabcXY"],
)
async def test_garbage_drops_the_connection_and_fails_requests(garbage: bytes) -> None:
    events: list[str] = []

    async def garble(stream: trio.SocketStream, seen: bytes) -> None:
        await read_until(stream, b"PUB ", seen)
        await stream.send_all(garbage)
        await trio.sleep_forever()

    async with (
        fake_server(garble) as url,
        open_nats_connection(
            url, reconnect_wait=0.05, on_event=lambda event, detail: events.append(event)
        ) as nc,
    ):
        with pytest.raises(trioplane.ConnectionLost):
            await nc.request("svc", b"x")
    assert "disconnected" in events


async def test_server_error_is_reported() -> None:
    events: list[tuple[str, str]] = []

    async def complain(stream: trio.SocketStream, seen: bytes) -> None:
        await stream.send_all(b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n")
        await trio.sleep_forever()

    async with (
        fake_server(complain) as url,
        open_nats_connection(url, on_event=lambda event, detail: events.append((event, detail))),
    ):
        await wait_until(lambda: any(e == "server_error" for e, _ in events))
    assert ("server_error", 'Permissions Violation for Publish to "x"') in events
