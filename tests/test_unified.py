"""One client for every address: dispatch, bad addresses, stats, warm-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import trioplane
from trioplane import Instance
from trioplane.testing import TcpTestWorker, open_websocket_test_worker
from trioplane.testing.http import open_http_test_worker
from trioplane.transports.unified import address_for, classify

from .conftest import echo, wait_until
from .nats import run_responder, start_nats_server


@pytest.mark.parametrize(
    ("address", "kind", "target"),
    [
        ("127.0.0.1:9000/abc/ns/comp/ep", "tcp", "127.0.0.1:9000/abc/ns/comp/ep"),
        ("tcp://127.0.0.1:9000/p", "tcp", "tcp://127.0.0.1:9000/p"),
        ("[::1]:9000/p", "tcp", "[::1]:9000/p"),
        ("localhost:1", "tcp", "localhost:1"),
        ("http://127.0.0.1:8000/v1/rpc/generate", "http", "http://127.0.0.1:8000/v1/rpc/generate"),
        ("HTTPS://worker/v1/rpc/generate", "http", "HTTPS://worker/v1/rpc/generate"),
        ("ws://127.0.0.1:8000/plane", "websocket", "ws://127.0.0.1:8000/plane"),
        ("wss://w:443/p", "websocket", "wss://w:443/p"),
        ("nats:ns_comp.ep-1a2b", "nats", "ns_comp.ep-1a2b"),
        ("interop_echo.generate-cb52fd62", "nats", "interop_echo.generate-cb52fd62"),
    ],
)  # fmt: skip
def test_addresses_pick_their_transport(address: str, kind: str, target: str) -> None:
    assert classify(address) == (kind, target)


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("ftp://host:1/x", "unknown scheme"),
        ("host/path", "a port is needed"),
        ("host", "a port is needed"),
        ("host:1 /x", "bad address"),
        ("", "bad address"),
        ("nats:bad subject", "bad address"),
        ("nats:a..b", "bad NATS subject"),
    ],
)
def test_bad_addresses_name_the_accepted_forms(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        classify(address)
    assert "tcp://host:port/path" in str(info.value)


def test_instances_map_to_addresses() -> None:
    nats = Instance("ns", "comp", "ep", 1, "nats_tcp", "ns_comp.ep-1")
    tcp = Instance("ns", "comp", "ep", 1, "tcp", "127.0.0.1:1/1/ns/comp/ep")
    assert address_for(nats) == "nats:ns_comp.ep-1"
    assert address_for(tcp) == tcp.address


async def test_dispatches_to_tcp_and_sums_stats(worker: TcpTestWorker) -> None:
    async with trioplane.open_request_plane() as plane:
        assert isinstance(plane, trioplane.RequestPlaneClient)
        assert plane.is_healthy()
        assert await plane.send_request(worker.address("a/b"), b"one") == b"one"
        assert await plane.send_request(f"tcp://{worker.host}:{worker.port}/c", b"two") == b"two"
        stats = plane.stats()
        assert stats.requests_sent == stats.responses_received == 2
        assert stats.idle_connections == 1
        with pytest.raises(ValueError, match="no NATS server"):
            await plane.send_request("nats:some.subject", b"x")
    assert not plane.is_healthy()
    with pytest.raises(trioplane.ClientClosed):
        await plane.send_request(worker.address("a"), b"late")


async def test_warmup_is_forwarded_by_instance_kind(worker: TcpTestWorker) -> None:
    instance = Instance("ns", "comp", "ep", 7, "tcp", worker.address("7/ns/comp/ep"))
    send, receive = trio.open_memory_channel[list[Instance]](1)
    async with trioplane.open_request_plane() as plane:
        plane.start_warmup(receive)
        await send.send([instance])
        await wait_until(lambda: worker.connections_accepted == 1)
        assert plane.stats().idle_connections == 1


async def test_one_plane_for_four_transports_opened_lazily(
    worker: TcpTestWorker, tmp_path: Path
) -> None:
    """TCP, WebSocket and HTTP test workers and a real nats-server (a nats-py
    responder): each address goes its own way, each transport opens on first use,
    the stats add up, and health is every open transport's."""
    with start_nats_server(tmp_path) as nats, run_responder(nats, "ns_comp.ep-1", "empty"):
        async with (
            open_websocket_test_worker(echo) as ws_worker,
            open_http_test_worker() as http_worker,
            trioplane.open_request_plane(nats_servers=nats.url) as plane,
        ):
            assert plane.opened == frozenset()
            assert await plane.send_request(worker.address("t"), b"tcp") == b"tcp"
            assert plane.opened == {"tcp"}
            assert await plane.send_request(ws_worker.address("w"), b"ws") == b"ws"
            assert await plane.send_request(http_worker.url(), b"http") == b""
            assert await plane.send_request("nats:ns_comp.ep-1", b"nats") == b""
            assert [f.payload for f in worker.received] == [b"tcp"]
            assert [f.payload for f in ws_worker.received] == [b"ws"]
            assert [r.body for r in http_worker.received] == [b"http"]
            assert plane.opened == {"tcp", "websocket", "http", "nats"}
            stats = plane.stats()
            assert stats.requests_sent == stats.responses_received == 4
            assert stats.idle_connections == 4  # one per transport
            each = [(await plane.client_for(kind)).stats() for kind in plane.opened]
            assert stats.bytes_sent == sum(s.bytes_sent for s in each)  # each its own wire's
            assert stats.bytes_received == sum(s.bytes_received for s in each)
            assert plane.is_healthy()
            tcp_client = await plane.client_for("tcp")
            await tcp_client.aclose()  # one closed sub-client: the plane is not healthy
            assert not plane.is_healthy()
