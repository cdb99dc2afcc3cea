"""trioplane's NATS connection and request-plane client against a real nats-server.

The peer on the other side is nats-py in another process (``tests/nats/responder.py``):
an implementation we did not write, so these tests prove byte compatibility.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioplane
from trioplane.nats import NatsConnection, ReconnectBufferFull, open_nats_connection

from .conftest import all_tasks, open_fds, wait_until
from .nats import NatsServer, request_with_nats_py, run_responder, start_nats_server

pytestmark = pytest.mark.nats


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with start_nats_server(tmp_path) as running:
        yield running


def auth_options(server: NatsServer) -> dict[str, Any]:
    """The trioplane options that authenticate against ``server``."""
    options: dict[str, Any] = {}
    if server.token is not None:
        options["token"] = server.token
    if server.user is not None:
        options["user"] = server.user
        options["password"] = server.password
    if server.nkey_seed is not None:
        options["nkey_seed"] = server.nkey_seed
    if server.tls:
        options["ssl_context"] = server.client_ssl_context()
        options["tls_handshake_first"] = server.tls_handshake_first
    return options


@pytest.mark.parametrize(
    ("auth", "tls", "first"),
    [
        (None, False, False),
        ("token", False, False),
        ("userpass", False, False),
        ("nkey", False, False),
        (None, True, False),
        (None, True, True),
    ],
    ids=["plain", "token", "userpass", "nkey", "tls", "tls-handshake-first"],
)
async def test_request_reply_with_a_nats_py_responder(
    tmp_path: Path, auth: str | None, tls: bool, first: bool
) -> None:
    with (
        start_nats_server(tmp_path, auth=auth, tls=tls, tls_handshake_first=first) as server,
        run_responder(server, "svc.echo"),
    ):
        async with open_nats_connection(server.url, **auth_options(server)) as nc:
            reply = await nc.request("svc.echo", b"hello", headers={"request-id": "r-1"})
            assert reply.payload == b"hello"
            assert reply.headers == {"request-id": ["r-1"]}
            assert nc.is_healthy()


@pytest.mark.parametrize("auth", ["token", "userpass", "nkey"])
async def test_bad_credentials_are_a_connect_error(tmp_path: Path, auth: str) -> None:
    with (
        start_nats_server(tmp_path, auth=auth) as server,
        pytest.raises(trioplane.ConnectError, match="Authorization Violation"),
    ):
        async with open_nats_connection(server.url, connect_timeout=2):
            pass


async def test_no_responders(server: NatsServer) -> None:
    async with open_nats_connection(server.url) as nc:
        with pytest.raises(trioplane.NoResponders, match=r"nobody\.home"):
            await nc.request("nobody.home", b"x")
        assert nc.statistics().pending_requests == 0


async def test_request_timeout(server: NatsServer) -> None:
    with run_responder(server, "svc.silent", "silent"):
        async with open_nats_connection(server.url, request_timeout=0.2) as nc:
            with pytest.raises(trio.TooSlowError):
                await nc.request("svc.silent", b"x")
            assert nc.statistics().pending_requests == 0


async def test_max_payload_is_enforced_before_sending(tmp_path: Path) -> None:
    with start_nats_server(tmp_path, max_payload=1024) as server, run_responder(server, "svc"):
        async with open_nats_connection(server.url) as nc:
            assert nc.max_payload == 1024
            with pytest.raises(trioplane.MaxPayloadExceeded):
                await nc.request("svc", b"x" * 1025)
            with pytest.raises(trioplane.MaxPayloadExceeded):
                await nc.publish("svc", b"x" * 1000, headers={"k": "v" * 100})
            assert (await nc.request("svc", b"x" * 1000)).payload == b"x" * 1000


async def test_subscribe_receives_from_a_nats_py_requester(server: NatsServer) -> None:
    async with open_nats_connection(server.url) as nc:
        sub = await nc.subscribe("svc.trio")
        await nc.flush()

        async def respond() -> None:
            async for msg in sub:
                assert msg.reply is not None
                await nc.publish(msg.reply, msg.payload.upper(), headers={"seen": "yes"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(respond)
            reply = await trio.to_thread.run_sync(
                lambda: request_with_nats_py(server, "svc.trio", b"abc", {"h": "1"})
            )
            nursery.cancel_scope.cancel()
    assert reply.payload == b"ABC"
    assert reply.headers == {"seen": "yes"}


async def test_subscription_context_and_queue_groups(server: NatsServer) -> None:
    async with open_nats_connection(server.url) as nc:
        async with (
            await nc.subscribe("jobs.*", queue="workers") as first,
            await nc.subscribe("jobs.*", queue="workers") as second,
        ):
            await nc.flush()
            for i in range(20):
                await nc.publish(f"jobs.{i}", b"%d" % i)
            await nc.flush()
            got = [first.statistics().pending, second.statistics().pending]
        assert sum(got) == 20  # each message went to one member of the group
        assert nc.statistics().subscriptions == 0  # both gone; no request made an inbox
        assert [msg async for msg in first] != []  # queued messages stay readable


async def test_slow_consumer_drops_are_counted_and_reported(server: NatsServer) -> None:
    events: list[tuple[str, str]] = []
    async with open_nats_connection(server.url, on_event=lambda e, d: events.append((e, d))) as nc:
        sub = await nc.subscribe("firehose", max_pending=3)
        for i in range(10):
            await nc.publish("firehose", b"%d" % i)
        await nc.flush()
        await wait_until(lambda: sub.dropped == 7)
        assert [msg.payload for msg in [await sub.__anext__() for _ in range(3)]] == [
            b"0",
            b"1",
            b"2",
        ]
    assert ("slow_consumer", "firehose: 1 messages dropped") in events


async def test_server_restart_mid_traffic(server: NatsServer) -> None:
    """In-flight requests fail cleanly, then the connection comes back by itself."""
    events: list[str] = []
    with run_responder(server, "svc.slow", "silent"), run_responder(server, "svc.echo"):
        async with open_nats_connection(
            server.url, reconnect_wait=0.1, on_event=lambda e, d: events.append(e)
        ) as nc:
            sub = await nc.subscribe("broadcast")
            await nc.flush()
            errors: list[BaseException] = []

            async def stuck() -> None:
                try:
                    await nc.request("svc.slow", b"never answered")
                except (trioplane.ConnectionLost, trio.TooSlowError) as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stuck)
                await wait_until(lambda: nc.statistics().pending_requests > 0)
                await trio.to_thread.run_sync(server.restart)
            assert len(errors) == 1
            assert isinstance(errors[0], trioplane.ConnectionLost)
            with trio.fail_after(20):
                await nc.wait_healthy()
                while True:  # the nats-py responder reconnects on its own schedule
                    try:
                        reply = await nc.request("svc.echo", b"after")
                        break
                    except (trioplane.NoResponders, trio.TooSlowError):
                        await trio.sleep(0.1)
            assert reply.payload == b"after"
            # The subscription was re-sent on reconnect.
            await nc.publish("broadcast", b"still here")
            with trio.fail_after(5):
                assert (await sub.__anext__()).payload == b"still here"
    assert "disconnected" in events
    assert "reconnected" in events
    assert nc.reconnects == 1


async def test_publishes_while_disconnected_are_sent_after_reconnect(server: NatsServer) -> None:
    async with open_nats_connection(
        server.url, reconnect_wait=0.1, reconnect_buffer_size=1000
    ) as nc:
        sub = await nc.subscribe("buffered")
        await nc.flush()
        server.stop()
        await wait_until(lambda: not nc.is_healthy())
        await nc.publish("buffered", b"kept")  # queued for the reconnect
        with pytest.raises(ReconnectBufferFull):
            await nc.publish("buffered", b"x" * 1000)
        await trio.to_thread.run_sync(server.start)
        with trio.fail_after(10):
            await nc.wait_healthy()
            assert (await sub.__anext__()).payload == b"kept"


async def test_reconnect_gives_up_after_the_attempts(server: NatsServer) -> None:
    with pytest.raises(trioplane.ConnectError, match="attempts exhausted"):  # noqa: PT012
        async with open_nats_connection(
            server.url, reconnect_wait=0.05, max_reconnect_attempts=2
        ) as nc:
            server.stop()
            with trio.fail_after(10):
                await trio.sleep_forever()
    assert not nc.is_healthy()


async def test_cancelled_requests_leave_nothing_behind(server: NatsServer) -> None:
    with run_responder(server, "svc.silent", "silent"):
        async with open_nats_connection(server.url) as nc:
            await nc.flush()
            tasks, fds = len(all_tasks()), open_fds()
            for _ in range(100):
                async with trio.open_nursery() as nursery:
                    for _ in range(100):
                        nursery.start_soon(nc.request, "svc.silent", b"x")
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.cancel_scope.cancel()
            await nc.flush()
            assert nc.statistics().pending_requests == 0
            stats = nc.statistics()
            assert stats.subscriptions == 1  # one muxed inbox, nothing per request
            assert stats.outbox_bytes == 0
            assert len(all_tasks()) == tasks
            assert open_fds() == fds


async def test_drain_lets_requests_finish(server: NatsServer) -> None:
    with run_responder(server, "svc.echo"):
        async with open_nats_connection(server.url) as nc:
            sub = await nc.subscribe("other")
            results = []

            async def ask() -> None:
                results.append((await nc.request("svc.echo", b"x")).payload)

            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(ask)
                await trio.testing.wait_all_tasks_blocked()
                await nc.drain()
            assert results == [b"x"] * 5
            assert not nc.is_healthy()
            assert [m async for m in sub] == []
            with pytest.raises(trioplane.ClientClosed):
                await nc.publish("other", b"late")


async def test_nothing_is_left_after_close(server: NatsServer) -> None:
    tasks, fds = len(all_tasks()), open_fds()
    with run_responder(server, "svc.echo"):
        async with open_nats_connection(server.url) as nc:
            await nc.request("svc.echo", b"x")
            await nc.subscribe("a.>")
    assert len(all_tasks()) == tasks
    assert open_fds() == fds


async def test_request_plane_client(server: NatsServer) -> None:
    with run_responder(server, "dyn.accept", "empty"), run_responder(server, "dyn.echo"):
        async with trioplane.open_nats_client(server.url) as client:
            assert isinstance(client, trioplane.RequestPlaneClient)
            assert client.transport_name == "nats"
            assert await client.send_request("dyn.accept", b"payload", {"request-id": "1"}) == b""
            assert await client.send_request("dyn.echo", b"rejected?") == b"rejected?"
            with pytest.raises(trioplane.NoResponders):
                await client.send_request("dyn.nobody", b"x")
            stats = client.stats()
            assert client.is_healthy()
    assert stats.requests_sent == 3
    assert stats.responses_received == 2
    assert stats.errors == 1
    assert stats.idle_connections == 1
    assert stats.bytes_sent == len(b"payload") + len(b"rejected?") + 1
    assert not client.is_healthy()


def test_bad_options() -> None:
    with pytest.raises(TypeError, match="unknown NATS options: bogus"):
        NatsConnection("nats://127.0.0.1:1", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="not a NATS server URL"):
        NatsConnection("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="ping_interval"):
        NatsConnection(ping_interval=0)


async def test_unreachable_server_is_a_connect_error() -> None:
    with pytest.raises(trioplane.ConnectError, match="cannot connect to NATS"):
        async with open_nats_connection("nats://127.0.0.1:1"):
            pass
