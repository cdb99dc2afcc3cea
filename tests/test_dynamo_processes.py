"""Dynamo 1.6.1's own client calling one instance served by N trioplane processes.

Dynamo's client holds one pipelined connection per worker address (and one NATS
subject per instance): the supervisor spreads its calls over the children, it sees
one instance, and a child killed mid-stream fails that call only.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from trioplane.processes import ChildStatistics, open_worker_processes

from .dynamo import dynamo_client_call
from .nats import NatsServer, start_nats_server
from .test_processes import TICKS, files, wait_until

pytestmark = pytest.mark.dynamo
ENDPOINT = "interop.procs.ticks"


def pids_of(lines: list[Any]) -> set[int]:
    return {line["item"]["pid"] for call in lines for line in call["call"] if "item" in line}


async def test_dynamo_client_gets_answers_from_every_child(tmp_path: Path) -> None:
    async with open_worker_processes(
        {ENDPOINT: TICKS}, processes=2, discovery_root=tmp_path
    ) as workers:
        assert len(files(tmp_path)) == 1  # one instance, one record
        lines = await dynamo_client_call(tmp_path, ENDPOINT, [{"n": 2}] * 6, "--batch")
        assert len(lines) == 6
        for call in lines:
            assert [line["item"]["i"] for line in call["call"][:-1]] == [0, 1]
            assert call["call"][-1] == {"done": True}
        assert pids_of(lines) == set(workers.pids())


async def test_dynamo_client_loses_only_the_killed_childs_call(tmp_path: Path) -> None:
    async with open_worker_processes(
        {ENDPOINT: TICKS}, processes=2, discovery_root=tmp_path
    ) as workers:
        results: list[list[Any]] = []

        async def call() -> None:
            request = {"n": 200, "interval": 0.05}
            results.append(await dynamo_client_call(tmp_path, ENDPOINT, request))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            nursery.start_soon(call)

            def busy() -> list[ChildStatistics]:
                return [c for c in workers.statistics().children if c.calls_in_flight]

            await wait_until(lambda: len(busy()) == 2, seconds=60)  # one call on each child
            await trio.sleep(0.5)
            victim = busy()[0].pid
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
        failed = [r for r in results if "error" in r[-1]]
        complete = [r for r in results if r[-1] == {"done": True}]
        assert len(failed) == 1, results
        assert len(complete) == 1, results
        assert {line["item"]["pid"] for line in failed[0][:-1]} == {victim}
        assert [line["item"]["i"] for line in complete[0][:-1]] == list(range(200))
        assert "Stream ended before generation completed" in failed[0][-1]["error"]


@pytest.fixture
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with start_nats_server(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.mark.nats
async def test_dynamo_client_over_nats(tmp_path: Path, nats: NatsServer) -> None:
    async with open_worker_processes(
        {ENDPOINT: TICKS},
        processes=2,
        discovery_root=tmp_path,
        transports=("nats",),
        nats_servers=nats.url,
    ) as workers:
        over_nats = {"DYN_REQUEST_PLANE": "nats", "NATS_SERVER": nats.url}
        lines = await dynamo_client_call(tmp_path, ENDPOINT, [{"n": 3}] * 6, "--batch", **over_nats)
        assert [len(call["call"]) for call in lines] == [4] * 6  # 3 items and done, once each
        assert pids_of(lines) == set(workers.pids())
        await wait_until(lambda: workers.statistics().worker.calls_in_flight == 0)
        assert workers.statistics().worker.calls_accepted == 6
