"""A worker's lifecycle: readiness, a health check, draining on SIGTERM (``trioplane serve``)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioplane
from trioplane import FileDiscovery, StaticDiscovery
from trioplane.worker import HealthCheck, RequestContext, open_worker

from .conftest import wait_until

ENDPOINT = "ns.life.ep"


async def echo(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    if request == "fail":
        raise RuntimeError("sick")
    yield request


async def test_set_ready_withdraws_and_publishes_again(tmp_path: Path) -> None:
    release = trio.Event()

    async def slow(request: Any, context: RequestContext) -> AsyncIterator[Any]:
        await release.wait()
        yield "done"

    discovery = StaticDiscovery()
    async with (
        open_worker({ENDPOINT: slow}, discovery=discovery) as worker,
        trioplane.open_endpoint_client(ENDPOINT, discovery) as client,
    ):
        await client.wait_for_instances()
        async with trio.open_nursery() as nursery:
            results: list[Any] = []

            async def in_flight() -> None:
                results.extend(await client.call("x"))

            nursery.start_soon(in_flight)
            await wait_until(lambda: worker.statistics().calls_in_flight == 1)
            await worker.set_ready(False)
            await wait_until(lambda: client.instances() == [])  # nobody routes here now
            assert not worker.statistics().registration.registered
            release.set()
        assert results == ["done"]  # the call in flight finished
        await worker.set_ready(True)
        with trio.fail_after(2):
            await client.wait_for_instances()
        assert worker.statistics().ready


async def test_a_failing_health_check_withdraws_until_it_passes() -> None:
    payload = {"ask": "fail"}

    async def canary(request: Any, context: RequestContext) -> AsyncIterator[Any]:
        if request["ask"] == "fail":
            raise RuntimeError("the engine is wedged")
        yield "ok"

    discovery = StaticDiscovery()
    check = HealthCheck(payload, interval=0.05, timeout=1)
    async with open_worker({ENDPOINT: canary}, discovery=discovery, health_check=check) as worker:
        with trio.fail_after(5):
            await wait_until(lambda: not worker.statistics().healthy)
            await wait_until(lambda: discovery._instances == [])
            assert worker.statistics().canary_failures >= 1
            payload["ask"] = "fine"
            await wait_until(lambda: worker.statistics().healthy)
            await wait_until(lambda: discovery._instances == worker.instances)


def test_a_health_check_of_an_unserved_endpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="not served"):
        trioplane.Worker(
            {ENDPOINT: echo}, discovery=StaticDiscovery(), health_check=HealthCheck({}, "a.b.c")
        )


async def serve(tmp_path: Path, *args: str) -> trio.Process:
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioplane", "serve", *args, "--discovery", f"file://{tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


async def test_serve_drains_on_sigterm(tmp_path: Path) -> None:
    process = await serve(tmp_path, "tests.handlers:ticks", "--endpoint", ENDPOINT, "--grace", "10")
    assert process.stdout is not None
    try:
        with trio.fail_after(20):
            line = (await process.stdout.receive_some()).decode()
        assert line.startswith(f"serving {ENDPOINT} as ")
        discovery = FileDiscovery(tmp_path, poll_interval=0.05)
        async with trioplane.open_endpoint_client(ENDPOINT, discovery) as client:
            with trio.fail_after(10):
                await client.wait_for_instances()
            items = []
            async with client.generate({"n": 20, "interval": 0.05}) as stream:
                async for item in stream:
                    items.append(item)
                    if len(items) == 3:
                        process.send_signal(signal.SIGTERM)
                        with trio.fail_after(5):  # deregistered first, at once
                            await wait_until(lambda: not list(discovery.folder.iterdir()))
            assert [item["i"] for item in items] == list(range(20))  # ended cleanly
            assert {item["pid"] for item in items} == {process.pid}
        with trio.fail_after(15):
            assert await process.wait() == 0
        assert process.stderr is not None
        assert "SIGTERM: draining" in (await process.stderr.receive_some()).decode()
    finally:
        process.kill()
        await process.wait()


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("nomodule", "package.module:function"),
        ("tests.nosuchmodule:ticks", "cannot import"),
        ("tests.handlers:nothing", "has no function"),
    ],
)
def test_serve_usage_errors_exit_2(tmp_path: Path, handler: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioplane", "serve", handler, "--endpoint", ENDPOINT,
         "--discovery", f"file://{tmp_path}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr
