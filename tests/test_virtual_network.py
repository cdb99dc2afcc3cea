"""The virtual network: its streams, and the same behaviour over it as over loopback.

The tests parametrised with ``net`` run once over real loopback sockets and once
over a :class:`~trioplane.testing.VirtualNetwork`, and must agree.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import trioplane
from trioplane._network import current_network, open_tcp_listeners, open_tcp_stream
from trioplane.testing import (
    FakeEndpointWorker,
    Reply,
    VirtualNetwork,
    faults,
    open_fake_endpoint_worker,
    open_tcp_test_worker,
    stream_frames,
)
from trioplane.testing.virtual import VirtualStream

from .conftest import echo
from .pki import Pki

ENDPOINT = "test.fake.generate"


@pytest.fixture(params=["loopback", "virtual"])
async def net(request: pytest.FixtureRequest) -> AsyncIterator[VirtualNetwork | None]:
    """``None`` (real sockets on 127.0.0.1), then a virtual network, entered."""
    if request.param == "loopback":
        yield None
        return
    async with VirtualNetwork() as network:
        yield network


def items(n: int) -> Any:
    return lambda call: stream_frames(call.codec, [{"i": i} for i in range(n)])


# --- the seam -------------------------------------------------------------------


async def test_the_fixture_network_is_the_tests(net: VirtualNetwork | None) -> None:
    """A network entered in a fixture is current in the test (and its tasks)."""
    assert current_network() is net
    found: list[object] = []

    async def look() -> None:
        found.append(current_network())
        await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(look)
    assert found == [net]


async def test_no_network_outside_the_block() -> None:
    async with VirtualNetwork():
        assert current_network() is not None
    assert current_network() is None


async def test_stream_basics(net: VirtualNetwork | None) -> None:
    """Connect, accept, bytes both ways, half-close, close: as TCP."""
    listeners, port = await open_tcp_listeners("127.0.0.1", 0)
    assert port > 0
    async with listeners[0] as listener:
        client = await open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
        assert isinstance(client, VirtualStream) == (net is not None)
        await client.send_all(b"hello")
        got = b""
        while len(got) < 5:
            got += await server.receive_some(100)
        assert got == b"hello"
        await server.send_all(b"back")
        assert await client.receive_some(2) == b"ba"
        assert await client.receive_some() == b"ck"
        await client.aclose()
        assert await server.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError):
            await client.send_all(b"x")
        await server.aclose()


async def test_nothing_listening_is_refused(net: VirtualNetwork | None) -> None:
    listeners, port = await open_tcp_listeners("127.0.0.1", 0)
    await listeners[0].aclose()
    with pytest.raises(OSError) as info:  # noqa: PT011 - trio's message differs
        await open_tcp_stream("127.0.0.1", port)
    if net is not None:  # trio's own error, over sockets, gathers every attempt's
        assert info.value.errno == errno.ECONNREFUSED


async def test_virtual_ports_and_wildcards() -> None:
    async with VirtualNetwork() as net:
        listener, port = await net.listen("0.0.0.0", 0)
        assert port == 30000
        with pytest.raises(OSError, match="in use"):
            await net.listen("0.0.0.0", port)
        stream = await net.connect("10.9.9.9", port)  # any host reaches a wildcard
        peer = await listener.accept()
        assert isinstance(peer, VirtualStream)
        assert (peer.remote, peer.local) == ("127.0.0.1", "10.9.9.9:30000")
        await stream.send_all(b"abc")
        assert await peer.peek(2) == b"ab"
        assert await peer.receive_some() == b"abc"
        await listener.aclose()
        await stream.aclose()
        await peer.aclose()


async def test_closing_wakes_a_blocked_reader() -> None:
    async with VirtualNetwork() as net:
        listener, port = await net.listen("h", 0)
        stream = await net.connect("h", port)
        peer = await listener.accept()
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await stream.receive_some()

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            await stream.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await peer.send_all(b"x")  # the peer is gone
        await peer.aclose()
        await listener.aclose()


async def test_the_trio_stream_contract() -> None:
    """Trio's own conformance checks for stream implementations."""
    from trio.testing import check_half_closeable_stream

    async with VirtualNetwork(buffer_size=1024) as net:

        async def pair() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
            listener, port = await net.listen("h", 0)
            client = await net.connect("h", port)
            server = await listener.accept()
            await listener.aclose()
            assert isinstance(client, VirtualStream)
            assert isinstance(server, VirtualStream)
            return client, server

        await check_half_closeable_stream(pair, None)


# --- the same behaviour over loopback and the virtual network -------------------


async def test_tcp_client_and_test_worker(net: VirtualNetwork | None) -> None:
    async with (
        open_tcp_test_worker(echo) as worker,
        trioplane.open_tcp_client() as client,
    ):
        for n in range(3):
            ack = await client.send_request(worker.address("ep"), b"r%d" % n)
            assert ack == b"r%d" % n
        assert len(worker.received) == 3


async def test_websocket_client_and_worker(net: VirtualNetwork | None) -> None:
    from trioplane.testing import open_websocket_test_worker

    async with (
        open_websocket_test_worker(echo) as worker,
        trioplane.open_websocket_client() as client,
    ):
        assert await client.send_request(worker.address("ep"), b"ws!") == b"ws!"


async def test_endpoint_client_and_worker(net: VirtualNetwork | None) -> None:
    async def handler(request: Any, context: trioplane.RequestContext) -> AsyncIterator[Any]:
        for i in range(request["n"]):
            yield {"i": i}

    discovery = trioplane.StaticDiscovery()
    async with (
        trioplane.open_worker({ENDPOINT: handler}, discovery=discovery, tls=trioplane.TcpTls()),
        trioplane.open_endpoint_client(ENDPOINT, discovery, tls=trioplane.TcpTls()) as client,
    ):
        assert await client.call({"n": 3}) == [{"i": 0}, {"i": 1}, {"i": 2}]
        async with client.generate({"n": 2}) as stream:
            assert [x async for x in stream] == [{"i": 0}, {"i": 1}]


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (faults.reject(), trioplane.WorkerOverloaded),
        (faults.drop_after(1, lambda call: [1, 2, 3]), trioplane.StreamIncomplete),
        (faults.corrupt_after(1, items=lambda call: [1, 2]), trioplane.MalformedStream),
        (faults.never_call_home(), trioplane.CallHomeTimeout),
    ],
)
async def test_fault_scripts_name_the_same_errors(
    net: VirtualNetwork | None, script: Any, error: type[Exception]
) -> None:
    """The fake worker's fault scripts compose with the network, and read the same."""
    async with (
        open_fake_endpoint_worker(script) as fake,
        trioplane.open_endpoint_client(
            ENDPOINT, [fake.instance(ENDPOINT)], max_attempts=1, call_home_timeout=0.2
        ) as client,
    ):
        with pytest.raises(error):
            await client.call({})


async def test_tls_on_both_planes(net: VirtualNetwork | None, pki: Pki) -> None:
    """TLS runs over virtual streams too: the request plane and the call home."""

    async def count(request: Any, context: trioplane.RequestContext) -> AsyncIterator[Any]:
        for i in range(request["n"]):
            yield {"i": i}

    client_tls = trioplane.TcpTls(
        ca_path=pki.ca, cert_path=pki.server_cert, key_path=pki.server_key
    )
    discovery = trioplane.StaticDiscovery()
    async with (
        trioplane.open_worker({ENDPOINT: count}, discovery=discovery, tls=pki.server(mtls=False)),
        trioplane.open_endpoint_client(ENDPOINT, discovery, tls=client_tls) as client,
    ):
        assert await client.call({"n": 2}) == [{"i": 0}, {"i": 1}]
        assert client.statistics().response_plane.dropped_connections == 0


async def test_a_plain_text_peer_on_a_tls_port_is_named(
    net: VirtualNetwork | None, pki: Pki
) -> None:
    """The server's first-bytes check (a socket's MSG_PEEK; a virtual stream's peek)."""
    tls = trioplane.TcpTls(cert_path=pki.server_cert, key_path=pki.server_key)
    async with (
        open_tcp_test_worker(echo, ssl_context=tls.server_context) as worker,
        trioplane.open_tcp_client(ssl_context=None) as client,
    ):
        with pytest.raises(trioplane.TrioplaneError):
            with trio.fail_after(5):
                await client.send_request(worker.address("ep"), b"x")
        assert worker.statistics().handshake_failures == 1


async def test_the_fake_worker_fixture_runs_on_the_network(
    net: VirtualNetwork | None,
) -> None:
    async with open_fake_endpoint_worker(items(1)) as fake:
        assert isinstance(fake, FakeEndpointWorker)
        if net is not None:
            assert any(e.kind == "listen" for e in net.events)
        fake.script = lambda call: Reply.reject("Server unavailable: draining")
        async with trioplane.open_endpoint_client(
            ENDPOINT, [fake.instance(ENDPOINT)], max_attempts=1
        ) as client:
            with pytest.raises(trioplane.WorkerUnavailable):
                await client.call({})
