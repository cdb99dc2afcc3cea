"""Whole deployments on the virtual network: the fixtures, crashes, and determinism."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
import trio.testing

import trioplane
from trioplane.testing import NetEvent, VirtualDeployment, VirtualNetwork
from trioplane.testing.virtual import open_virtual_deployment

Deployment = Callable[..., AbstractAsyncContextManager[VirtualDeployment]]


async def ticks(request: Any, context: trioplane.RequestContext) -> AsyncIterator[Any]:
    """``request["n"]`` items, one a second."""
    for i in range(request["n"]):
        await trio.sleep(1)
        yield i


async def test_the_fixtures(
    virtual_network: VirtualNetwork,
    virtual_deployment: Deployment,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        virtual_deployment(ticks, workers=3) as deployment,
        deployment.client() as client,
    ):
        assert len(await client.wait_for_instances()) == 3
        for _ in range(3):
            assert await client.call({"n": 2}) == [0, 1]
        assert {w.port for w in deployment.workers if w} == {30000}
        assert sorted(deployment.hosts) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert virtual_network.now == pytest.approx(6.0, abs=0.01)
    assert virtual_network.open_connections() == 0


async def test_a_worker_killed_mid_stream(
    virtual_network: VirtualNetwork,
    virtual_deployment: Deployment,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        virtual_deployment(ticks, workers=2) as deployment,
        deployment.client() as client,
    ):
        await client.wait_for_instances()
        got: list[int] = []
        virtual_network.at(2.5, lambda: deployment.kill(0))
        with pytest.raises(trioplane.StreamIncomplete):  # noqa: PT012
            async with client.generate({"n": 10}, instance_id=_id(deployment, 0)) as stream:
                async for item in stream:
                    got.append(item)
        assert got == [0, 1]
        assert deployment.workers[0] is None
        with trio.fail_after(1):
            while len(await client.discovery.instances()) != 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert await client.call({"n": 1}) == [0]  # the other one serves
        await deployment.start(0)
        assert len(await client.wait_for_instances()) >= 1


def _id(deployment: VirtualDeployment, index: int) -> int:
    worker = deployment.worker(index)
    return worker.instances[0].instance_id


async def _scenario(seed: int) -> list[NetEvent]:
    """Concurrent calls over links with jitter, a worker crashing halfway."""
    async with VirtualNetwork(seed=seed, latency=0.001, jitter=0.004) as net:
        async with (
            open_virtual_deployment(net, ticks, workers=2) as deployment,
            deployment.client(max_attempts=3) as client,
        ):
            await client.wait_for_instances()
            net.at(2.5, lambda: deployment.kill(1))
            outcomes: list[str] = []

            async def one(i: int) -> None:
                try:
                    outcomes.append(str(await client.call({"n": 3})))
                except trioplane.TrioplaneError as exc:
                    outcomes.append(type(exc).__name__)

            async with trio.open_nursery() as nursery:
                for i in range(6):
                    nursery.start_soon(one, i)
        return net.events


def _run(seed: int) -> list[NetEvent]:
    return trio.run(_scenario, seed, clock=trio.testing.MockClock(autojump_threshold=0))


def test_same_seed_same_event_log() -> None:
    first, second = _run(7), _run(7)
    assert len(first) > 50
    assert first == second
    assert _run(8) != first  # the seed matters (jitter)


async def test_entering_twice_is_refused() -> None:
    async with VirtualNetwork() as net:
        with pytest.raises(RuntimeError, match="already entered"):
            await net.__aenter__()
