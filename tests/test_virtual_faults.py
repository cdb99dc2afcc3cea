"""Every fault of the virtual network, on bare streams and through trioplane, in virtual time.

Each test runs under Trio's ``autojump_clock``: seconds of virtual time cost
nothing, and the times asserted are exact.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import trioplane
from trioplane.testing import NetEvent, VirtualNetwork, faults, open_fake_endpoint_worker
from trioplane.testing.virtual import VirtualStream, open_virtual_deployment

ENDPOINT = "test.fake.generate"


async def pair(
    net: VirtualNetwork, src: str = "a", dst: str = "b"
) -> tuple[VirtualStream, VirtualStream]:
    """A connection from host ``src`` to a listener on ``dst``: (client, server) ends."""
    listener, port = await net.listen(dst, 0)
    with net.node(src):
        client = await net.connect(dst, port)
    server = await listener.accept()
    await listener.aclose()
    assert isinstance(client, VirtualStream)
    assert isinstance(server, VirtualStream)
    return client, server


async def read_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        assert chunk, "EOF"
        data += chunk
    return data


async def test_latency_and_jitter(autojump_clock: trio.testing.MockClock) -> None:
    async with VirtualNetwork(latency=0.05) as net:
        start = trio.current_time()
        client, server = await pair(net)
        assert trio.current_time() - start == pytest.approx(0.1)  # a round trip
        start = trio.current_time()
        await client.send_all(b"x")
        assert await server.receive_some() == b"x"
        assert trio.current_time() - start == pytest.approx(0.05)
        net.set_conditions("a", "b", jitter=0.02)
        delays = []
        for _ in range(20):
            start = trio.current_time()
            await client.send_all(b"y")
            await server.receive_some()
            delays.append(trio.current_time() - start)
        assert all(0.05 <= d <= 0.07 + 1e-9 for d in delays)
        assert len({round(d, 9) for d in delays}) > 1  # it does vary
        await client.aclose()
        await server.aclose()


async def test_bandwidth(autojump_clock: trio.testing.MockClock) -> None:
    async with VirtualNetwork(bandwidth=100_000) as net:
        client, server = await pair(net)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"z" * 200_000)
            assert len(await read_exactly(server, 200_000)) == 200_000
        assert trio.current_time() - start == pytest.approx(2.0)
        await client.aclose()
        await server.aclose()


async def test_connect_refused_then_allowed(autojump_clock: trio.testing.MockClock) -> None:
    async with VirtualNetwork() as net:
        listener, port = await net.listen("b", 0)
        fault = net.refuse("b")
        with pytest.raises(ConnectionRefusedError, match="refused by a fault"):
            await net.connect("b", port)
        fault.heal()
        stream = await net.connect("b", port)
        await stream.aclose()
        await listener.aclose()
        assert [e.kind for e in net.events if e.kind in ("refused", "connect")] == [
            "refused",
            "connect",
        ]


async def test_connect_black_holed_waits_for_the_callers_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with VirtualNetwork() as net:
        listener, port = await net.listen("b", 0)
        fault = net.blackhole(f"b:{port}")
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(30):
                await net.connect("b", port)
        assert net.now == pytest.approx(30)
        net.after(5, fault.heal)  # a connect waiting now goes through when it heals
        stream = await net.connect("b", port)
        assert net.now == pytest.approx(35)
        await stream.aclose()
        await listener.aclose()


async def test_drop_after_n_bytes(autojump_clock: trio.testing.MockClock) -> None:
    async with VirtualNetwork() as net:
        client, server = await pair(net)
        net.drop_after(10, "a", "b")
        await client.send_all(b"0123")
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"456789abcdef")
        assert await read_exactly(server, 10) == b"0123456789"
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await server.send_all(b"late")
        assert [e.kind for e in net.events][-1] == "reset"
        await client.aclose()
        await server.aclose()


async def test_stall_holds_bytes_until_healed(autojump_clock: trio.testing.MockClock) -> None:
    async with VirtualNetwork(buffer_size=100) as net:
        client, server = await pair(net)
        stall = net.stall("a", "b", both_ways=False)
        net.at(10, stall.heal)
        await client.send_all(b"x" * 100)  # fills the buffer
        with trio.move_on_after(1):
            await client.send_all(b"y")  # the sender now waits, as on a full socket
            pytest.fail("send_all did not block")
        await server.send_all(b"the other way still flows")
        assert await client.receive_some() == b"the other way still flows"
        assert len(await read_exactly(server, 100)) == 100
        assert net.now == pytest.approx(10)
        await client.aclose()
        await server.aclose()


async def test_partition_and_heal(autojump_clock: trio.testing.MockClock) -> None:
    async with VirtualNetwork() as net:
        client, server = await pair(net, "a", "b")
        listener, port = await net.listen("b", 0)
        split = net.partition("a", "b")
        await client.send_all(b"ping")
        with trio.move_on_after(5) as scope:
            await server.receive_some()
        assert scope.cancelled_caught
        with trio.move_on_after(5) as scope, net.node("a"):
            await net.connect("b", port)  # cannot even connect
        assert scope.cancelled_caught
        with net.node("c"):  # others are not affected
            other = await net.connect("b", port)
        await other.aclose()
        await (await listener.accept()).aclose()
        split.heal()
        assert await server.receive_some() == b"ping"
        assert [e.kind for e in net.events].count("heal") == 1
        for stream in (client, server, listener):
            await stream.aclose()


async def test_slow_reader_backs_up_the_sender(autojump_clock: trio.testing.MockClock) -> None:
    async with VirtualNetwork(buffer_size=1000) as net:
        client, server = await pair(net)
        net.set_conditions("a", "b", both_ways=False, read_rate=1000)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"s" * 5000)
            assert len(await read_exactly(server, 5000)) == 5000
        assert trio.current_time() - start == pytest.approx(5.0, abs=0.05)
        await client.aclose()
        await server.aclose()


async def test_reset_and_the_timeline(autojump_clock: trio.testing.MockClock) -> None:
    async with VirtualNetwork() as net:
        client, server = await pair(net, "a", "b")
        seen: list[float] = []
        net.at(2.0, lambda: seen.append(net.now))
        net.at(3.0, lambda: net.reset("b"))

        async def later() -> None:
            await trio.sleep(1)
            seen.append(net.now)

        net.at(4.0, later)  # an async action is awaited
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()
        assert net.now == pytest.approx(3.0)
        await trio.sleep(5)
        assert seen == [2.0, 5.0]
        await client.aclose()
        await server.aclose()


async def test_a_failing_timeline_action_fails_the_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):  # noqa: PT012 - plain, no exception group
        async with VirtualNetwork() as net:
            net.at(1, boom)
            await trio.sleep(10)


async def test_bad_fault_arguments() -> None:
    async with VirtualNetwork() as net:
        with pytest.raises(trioplane.BadArgument):
            net.set_conditions(latency=-1)
        with pytest.raises(trioplane.BadArgument):
            net.set_conditions(speed=1)
        with pytest.raises(trioplane.BadArgument):
            net.drop_after(-1)
    with pytest.raises(RuntimeError, match="enter the network"):
        VirtualNetwork().at(1, lambda: None)


# --- through trioplane: the timeouts that matter, in virtual time -----------------


async def test_call_home_deadline_of_30_s(autojump_clock: trio.testing.MockClock) -> None:
    """The client's default 30 s call-home deadline, met in milliseconds of wall time."""
    async with (
        VirtualNetwork() as net,
        open_fake_endpoint_worker(faults.never_call_home()) as fake,
        trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client,
    ):
        start = trio.current_time()
        with pytest.raises(trioplane.CallHomeTimeout, match="did not call home"):
            await client.call({})
        assert trio.current_time() - start == pytest.approx(30.0, abs=0.01)
        assert net.events


async def test_a_partition_during_the_call_home(autojump_clock: trio.testing.MockClock) -> None:
    """The worker cannot reach the caller: the call home times out (10 s, the worker's
    connect deadline), the client's 30 s one fires; healed, calls work again."""

    async def handler(request: Any, context: trioplane.RequestContext) -> AsyncIterator[Any]:
        yield "ok"

    async with (
        VirtualNetwork() as net,
        open_virtual_deployment(net, handler, workers=1) as deployment,
        deployment.client(call_home_timeout=30, max_attempts=1) as client,
    ):
        # bytes from the worker to the response plane (not its acks to the client)
        call_home = client.response_plane.address
        split = net.stall(deployment.host(0), call_home, both_ways=False)
        with pytest.raises(trioplane.CallHomeTimeout):
            await client.call({})
        assert net.now == pytest.approx(30.0, abs=0.01)
        split.heal()
        assert await client.call({}) == ["ok"]


async def test_overload_moves_on_to_another_instance(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(request: Any, context: trioplane.RequestContext) -> AsyncIterator[Any]:
        await trio.sleep(1)
        yield request

    async with (
        VirtualNetwork(latency=0.001) as net,
        open_virtual_deployment(net, slow, workers=2, max_concurrency=1) as deployment,
        deployment.client() as client,
    ):
        await client.wait_for_instances()
        results: list[Any] = []

        async def call(i: int) -> None:
            results.append(await client.call(i))

        async with trio.open_nursery() as nursery:
            for i in range(2):
                nursery.start_soon(call, i)
        assert sorted(r[0] for r in results) == [0, 1]
        assert net.now < 1.1  # both ran at once, one per worker


def test_events_are_plain_data() -> None:
    event = NetEvent(1.5, "bytes", 3, "a", "b:1", 10)
    assert event == NetEvent(1.5, "bytes", 3, "a", "b:1", 10)
    assert math.isfinite(event.time)
