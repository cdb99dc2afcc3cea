"""Routing: the router's modes and back-off (no I/O), then the endpoint client over workers."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioplane
from trioplane import Instance, StaticDiscovery
from trioplane.routing import Router, RouterMode
from trioplane.testing import FakeCall, Reply, open_fake_endpoint_worker, stream_frames
from trioplane.testing.endpoint import Action
from trioplane.worker import RequestContext, open_worker

from .conftest import wait_until

ENDPOINT = "ns.route.ep"


def instances(n: int) -> list[Instance]:
    return [
        Instance("ns", "route", "ep", i, "tcp", f"127.0.0.1:1/{i:x}/ns/route/ep")
        for i in range(1, n + 1)
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_round_robin_and_random() -> None:
    pool = instances(3)
    router = Router("round_robin", clock=Clock())
    assert [router.pick(pool).instance_id for _ in range(6)] == [1, 2, 3, 1, 2, 3]
    shuffled = Router("random", clock=Clock(), rng=random.Random(1))
    picks = Counter(shuffled.pick(pool).instance_id for _ in range(300))
    assert set(picks) == {1, 2, 3}


def test_least_loaded_and_power_of_two_prefer_the_idle() -> None:
    pool = instances(4)
    modes: tuple[RouterMode, ...] = ("least_loaded", "power_of_two")
    for mode in modes:
        router = Router(mode, clock=Clock(), rng=random.Random(2))
        for instance in pool[:3]:
            for _ in range(5):
                router.started(instance.instance_id)
        if mode == "least_loaded":
            assert {router.pick(pool).instance_id for _ in range(10)} == {4}
        else:  # two at random: the idle one wins whenever it is drawn
            picks = Counter(router.pick(pool).instance_id for _ in range(400))
            assert picks[4] > 150
    router = Router("least_loaded", clock=Clock())
    router.started(1)
    router.finished(1)
    assert router.statistics().in_flight == {}
    assert [router.pick(pool).instance_id for _ in range(4)] == [1, 2, 3, 4]  # ties in turn


def test_overloaded_instances_are_avoided_for_a_back_off_that_expires() -> None:
    pool, clock = instances(2), Clock()
    router = Router("round_robin", overload_backoff=2.0, clock=clock)
    router.overloaded(1)
    assert {router.pick(pool).instance_id for _ in range(4)} == {2}
    assert router.statistics().avoided == (1,)
    clock.now = 2.5  # the mark expired: an idle worker is not shunned forever
    assert {router.pick(pool).instance_id for _ in range(4)} == {1, 2}
    assert router.statistics().avoided == ()
    router.overloaded(1)
    router.overloaded(2)  # all marked: the marks are a hint, never a reason to fail
    assert {router.pick(pool).instance_id for _ in range(4)} == {1, 2}
    with pytest.raises(ValueError, match="router_mode"):
        Router("fastest", clock=clock)  # type: ignore[arg-type]


async def test_the_client_avoids_an_overloaded_worker_then_tries_it_again() -> None:
    busy = True

    def sometimes_busy(call: FakeCall) -> list[Action] | Reply:
        if busy:
            return Reply.reject("Server overloaded: busy")
        return stream_frames(call.codec, ["from the busy one"])

    async with (
        open_fake_endpoint_worker(sometimes_busy) as busy_worker,
        open_fake_endpoint_worker() as good_worker,
    ):
        pool = [busy_worker.instance(ENDPOINT, 1), good_worker.instance(ENDPOINT, 2)]
        async with trioplane.open_endpoint_client(ENDPOINT, pool, overload_backoff=0.3) as client:
            assert client.instance_ids() == [1, 2]
            for _ in range(6):
                assert await client.call("x") == ["x"]  # retried on the good one, then avoided
            assert len(busy_worker.calls) == 1
            busy = False
            await trio.sleep(0.35)
            results = [await client.call("x") for _ in range(4)]
            assert ["from the busy one"] in results  # the mark expired


async def test_least_loaded_sends_to_the_idle_worker(tmp_path: Path) -> None:
    release = trio.Event()

    async def hold(request: Any, context: RequestContext) -> AsyncIterator[Any]:
        if request == "hold":
            await release.wait()
        yield context.headers.get("x-worker")

    discovery = StaticDiscovery()
    async with (
        open_worker({ENDPOINT: hold}, discovery=discovery) as first,
        open_worker({ENDPOINT: hold}, discovery=discovery) as second,
        trioplane.open_endpoint_client(ENDPOINT, discovery, router_mode="least_loaded") as client,
    ):
        assert len(client.instances()) == 2
        async with trio.open_nursery() as nursery:
            held: list[Instance] = []

            async def holding() -> None:
                async with client.generate("hold") as stream:
                    assert stream.instance is not None
                    held.append(stream.instance)
                    _ = [item async for item in stream]

            nursery.start_soon(holding)
            await wait_until(lambda: bool(held))
            idle = second if held[0] == first.instances[0] else first
            for _ in range(3):
                async with client.generate("now") as stream:
                    assert stream.instance == idle.instances[0]
                    _ = [item async for item in stream]
            assert client.router.statistics().in_flight == {held[0].instance_id: 1}
            release.set()
        assert client.router.statistics().in_flight == {}


async def test_a_chosen_request_id_is_the_handlers_context_id() -> None:
    seen: list[str] = []

    def record(call: FakeCall) -> list[Action] | Reply:
        seen.append(call.control.id)
        if len(seen) == 1:
            return Reply.reject("Server overloaded: busy")
        return stream_frames(call.codec, [call.headers["request-id"]])

    async with (
        open_fake_endpoint_worker(record) as a,
        open_fake_endpoint_worker(record) as b,
    ):
        pool = [a.instance(ENDPOINT, 1), b.instance(ENDPOINT, 2)]
        async with trioplane.open_endpoint_client(ENDPOINT, pool) as client:
            async with client.generate("x", request_id="req-42") as stream:
                assert [item async for item in stream] == ["req-42"]
                assert stream.request_id == "req-42"
            assert seen == ["req-42", "req-42"]  # the same id on the retry
            with pytest.raises(ValueError, match="request_id"):
                client.generate("x", request_id="")
