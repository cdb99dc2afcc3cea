"""The NATS connection against a scripted fake server: keep-alive and protocol faults
that a real nats-server does not produce on demand."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path

import pytest
import trio

import trioplane
from trioplane.nats import open_nats_connection

from .conftest import wait_until
from .nats import new_user_nkey, sign_nonce

INFO = '{{"server_id":"fake","max_payload":1048576,"headers":true{extra}}}'
Handler = Callable[[trio.SocketStream, bytes], Awaitable[None]]


async def read_until(stream: trio.SocketStream, needle: bytes, seen: bytes = b"") -> bytes:
    while needle not in seen:
        data = await stream.receive_some()
        if not data:
            raise EOFError(seen)
        seen += data
    return seen


@asynccontextmanager
async def fake_server(after_connect: Handler, *, nonce: str | None = None) -> AsyncIterator[str]:
    """A server that sends INFO, answers the CONNECT's PING, then runs ``after_connect``."""
    info = INFO.format(extra=f',"nonce":"{nonce}"' if nonce else "")

    async def handle(stream: trio.SocketStream) -> None:
        await stream.send_all(f"INFO {info} \r\n".encode())
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
        assert nc.statistics().servers[-1] == "nats://127.0.0.1:1"


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


async def test_repeated_server_errors_are_logged_a_few_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server repeating ``-ERR``: every one reaches ``on_event``, five reach the log."""
    events: list[str] = []

    async def complain(stream: trio.SocketStream, seen: bytes) -> None:
        await stream.send_all(b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n" * 50)
        await trio.sleep_forever()

    caplog.set_level("INFO", logger="trioplane.nats")
    async with (
        fake_server(complain) as url,
        open_nats_connection(url, on_event=lambda event, detail: events.append(event)),
    ):
        await wait_until(lambda: events.count("server_error") == 50)
    logged = [r for r in caplog.records if "server_error" in r.getMessage()]
    assert len(logged) == 5
    assert all(r.levelname == "WARNING" for r in logged)


async def test_creds_file_signs_the_nonce_with_its_seed(tmp_path: Path) -> None:
    """A .creds file: the user JWT goes in CONNECT, the nonce is signed with its seed."""
    seed, public = new_user_nkey()
    jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5In0.e30.c2ln"
    creds = tmp_path / "user.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    lines: list[bytes] = []

    async def record(stream: trio.SocketStream, seen: bytes) -> None:
        lines.append(seen)
        await trio.sleep_forever()

    async with (
        fake_server(record, nonce="n0nce") as url,
        open_nats_connection(url, creds_file=creds),
    ):
        await wait_until(lambda: bool(lines))
    connect = json.loads(lines[0].split(b"\r\n")[0][len(b"CONNECT ") :])
    assert connect["jwt"] == jwt
    assert connect["sig"] == sign_nonce(seed, "n0nce")
    assert "nkey" not in connect
    assert public.startswith("U")


async def test_nkey_seed_sends_the_public_key(tmp_path: Path) -> None:
    seed, public = new_user_nkey()
    lines: list[bytes] = []

    async def record(stream: trio.SocketStream, seen: bytes) -> None:
        lines.append(seen)
        await trio.sleep_forever()

    async with fake_server(record, nonce="abc") as url, open_nats_connection(url, nkey_seed=seed):
        await wait_until(lambda: bool(lines))
    connect = json.loads(lines[0].split(b"\r\n")[0][len(b"CONNECT ") :])
    assert connect["nkey"] == public
    assert connect["sig"] == sign_nonce(seed, "abc")


def test_a_creds_file_without_a_seed_is_refused(tmp_path: Path) -> None:
    creds = tmp_path / "bad.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\nabc\n------END NATS USER JWT------\n")
    with pytest.raises(ValueError, match="creds file"):
        trioplane.NatsConnection(creds_file=creds)


async def test_a_message_over_the_limit_is_frame_too_large_not_a_group() -> None:
    """With reconnect off, the connection's own failure is what the block raises: the
    requests it failed (``ConnectionLost``) are its consequence, not concurrent errors."""

    async def too_big(stream: trio.SocketStream, seen: bytes) -> None:
        await read_until(stream, b"PUB ", seen)
        size = 2 * 1024 * 1024  # INFO said max_payload 1 MiB
        await stream.send_all(b"MSG x 1 %d\r\n" % size + b"y" * size + b"\r\n")
        await trio.sleep_forever()

    async with fake_server(too_big) as url:
        with pytest.raises(trioplane.FrameTooLarge, match="exceeds limit"):
            async with open_nats_connection(url, reconnect=False) as nc:
                await nc.request("svc", b"1")
