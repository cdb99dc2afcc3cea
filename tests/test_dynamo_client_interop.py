"""Dynamo 1.6.1's own Python client calling a trioplane worker (file discovery; TCP, NATS)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioplane
from trioplane import FileDiscovery
from trioplane.worker import RequestContext, open_worker

from .dynamo import dynamo_client_call
from .nats import NatsServer, start_nats_server

pytestmark = pytest.mark.dynamo
stopped: list[bool] = []


async def count(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    for i in range(request["n"]):
        yield {"i": i, "codec": context.headers.get("request-id") is not None}


async def boom(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    yield {"i": 0}
    raise ValueError("boom")


async def slow(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    i = 0
    try:
        while not context.is_stopped():
            yield {"i": i}
            i += 1
            await trio.sleep(0.02)
    finally:
        stopped.append(context.is_stopped())


@pytest.fixture
async def kv(tmp_path: Path) -> AsyncIterator[Path]:
    endpoints = {"interop.tw.count": count, "interop.tw.boom": boom, "interop.tw.slow": slow}
    async with open_worker(endpoints, discovery_root=tmp_path):
        yield tmp_path


async def test_dynamo_client_streams_from_a_trioplane_worker(kv: Path) -> None:
    lines = await dynamo_client_call(kv, "interop.tw.count", {"n": 50})
    assert lines == [{"item": {"i": i, "codec": True}} for i in range(50)] + [{"done": True}]


async def test_dynamo_client_sees_the_handlers_error(kv: Path) -> None:
    lines = await dynamo_client_call(kv, "interop.tw.boom", {})
    assert lines[0] == {"item": {"i": 0}}
    assert "ValueError: boom" in lines[1]["error"]


async def test_dynamo_client_stopping_stops_the_handler(kv: Path) -> None:
    stopped.clear()
    lines = await dynamo_client_call(kv, "interop.tw.slow", {}, "3")
    assert lines == [{"item": {"i": i}} for i in range(3)] + [{"done": True}]
    with trio.fail_after(10):
        while not stopped:  # noqa: ASYNC110 - the handler runs in this process
            await trio.sleep(0.02)
    assert stopped == [True]


@pytest.fixture
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with start_nats_server(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.mark.nats
async def test_over_nats_both_clients_stream_from_a_trioplane_worker(
    tmp_path: Path, nats: NatsServer
) -> None:
    endpoints = {"interop.twn.count": count, "interop.twn.boom": boom, "interop.twn.slow": slow}
    async with open_worker(
        endpoints, discovery_root=tmp_path, transports=("nats",), nats_servers=nats.url
    ) as worker:
        assert {i.transport_kind for i in worker.instances} == {"nats_tcp"}
        over_nats = {"DYN_REQUEST_PLANE": "nats", "NATS_SERVER": nats.url}
        lines = await dynamo_client_call(tmp_path, "interop.twn.count", {"n": 5}, **over_nats)
        assert lines == [{"item": {"i": i, "codec": True}} for i in range(5)] + [{"done": True}]
        lines = await dynamo_client_call(tmp_path, "interop.twn.boom", {}, **over_nats)
        assert "ValueError: boom" in lines[1]["error"]
        stopped.clear()
        lines = await dynamo_client_call(tmp_path, "interop.twn.slow", {}, "2", **over_nats)
        assert lines == [{"item": {"i": 0}}, {"item": {"i": 1}}, {"done": True}]
        with trio.fail_after(10):
            while not stopped:  # noqa: ASYNC110 - the handler runs in this process
                await trio.sleep(0.02)
        assert stopped == [True]
        async with trioplane.open_endpoint_client(
            "interop.twn.boom", FileDiscovery(tmp_path, poll_interval=0.05), nats_servers=nats.url
        ) as client:
            await client.wait_for_instances()
            with pytest.raises(trioplane.RemoteError, match="ValueError: boom"):
                await client.call({})
