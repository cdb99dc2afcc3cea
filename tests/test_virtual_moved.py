"""Slow timeout tests, moved onto the virtual network with production deadlines.

Over sockets, ``tests/test_hostile_peers.py`` shrinks the worker's call-home
deadlines to 0.3 s to stay fast (and still waits that long). Here the worker keeps
its production ones (a 10 s connect, a 30 s write) under ``autojump_clock``, and
the tests take milliseconds: same meaning, real numbers.
"""

from __future__ import annotations

import trio
import trio.testing

import trioplane
from trioplane import open_worker
from trioplane.testing import VirtualNetwork

from . import test_hostile_peers as hostile
from .test_hostile_peers import ENDPOINT, control_to, echo, endless, tcp_address


async def served(worker: trioplane.Worker) -> None:
    async with trioplane.open_endpoint_client(
        ENDPOINT, list(worker.instances), tls=trioplane.TcpTls()
    ) as client:
        assert await client.call("ok") == ["ok"]


async def test_call_home_to_a_black_hole_frees_the_slot(
    virtual_network: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    """A caller whose address swallows connects holds a slot for the worker's 10 s
    connect deadline, no longer."""
    virtual_network.blackhole("10.99.0.1")
    async with (
        open_worker(
            {ENDPOINT: echo},
            discovery=trioplane.StaticDiscovery(),
            max_concurrency=4,
            tls=trioplane.TcpTls(),
        ) as worker,
        trioplane.open_tcp_client() as tcp,
    ):
        start = trio.current_time()
        for _ in range(4):
            assert await tcp.send_request(tcp_address(worker), control_to("10.99.0.1:9")) == b""
        assert worker.statistics().calls_in_flight == 4
        try:
            await served(worker)
            raise AssertionError("the worker took a fifth call")
        except trioplane.WorkerOverloaded:
            pass
        while worker.statistics().calls_in_flight:  # noqa: ASYNC110 - the worker's own state
            await trio.sleep(0.01)
        assert 10.0 <= trio.current_time() - start < 10.1
        assert worker.statistics().call_home_failures == 4
        await served(worker)


async def test_a_caller_that_never_reads_the_stream_frees_the_slot(
    virtual_network: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    """A caller that accepts the call home and never reads: once its buffer is full,
    the worker's 30 s write deadline ends the call (the handler is killed)."""
    hostile.released.clear()
    async with (
        open_worker(
            {ENDPOINT: endless}, discovery=trioplane.StaticDiscovery(), tls=trioplane.TcpTls()
        ) as worker,
        trioplane.open_tcp_client() as tcp,
        trio.open_nursery() as nursery,
    ):
        listener, port = await virtual_network.listen("10.98.0.1", 0)
        accepted: list[trio.abc.Stream] = []

        async def accept_and_never_read() -> None:
            async with listener:
                while True:
                    accepted.append(await listener.accept())

        nursery.start_soon(accept_and_never_read)
        start = trio.current_time()
        control = control_to(f"10.98.0.1:{port}")
        assert await tcp.send_request(tcp_address(worker), control) == b""
        while worker.statistics().calls_in_flight:  # noqa: ASYNC110 - the worker's own state
            await trio.sleep(0.01)
        assert 30.0 <= trio.current_time() - start < 30.1
        assert hostile.released == ["killed"]
        for stream in accepted:
            await stream.aclose()
        nursery.cancel_scope.cancel()
