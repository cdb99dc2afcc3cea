"""One instance served by N real processes (``trioplane.processes``): registration,
spreading, restarts, draining, health, the instance's concurrency limit, NATS.

The supervisor runs in the test's Trio loop (``open_worker_processes``) or as the
command (``trioplane serve --processes N``); the children are real processes
importing their handlers by name (``tests.handlers:ticks``, or this module's).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import trioplane
import trioplane.processes
from trioplane import FileDiscovery, StaticDiscovery
from trioplane.processes import (
    WorkerProcessError,
    WorkerProcesses,
    handler_spec,
    open_worker_processes,
)
from trioplane.status import StatusOptions
from trioplane.worker import HealthCheck, RequestContext

ENDPOINT = "ns.procs.ep"
TICKS = "tests.handlers:ticks"


async def exits(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    """Kills its own process (a child's crash)."""
    os._exit(3)
    yield  # pragma: no cover


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll ``condition`` (state owned by other processes) for up to ``seconds``.

    (Not conftest's: the children import this module, and should start fast.)
    """
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - no event exists for another process's state
            await trio.sleep(0.01)


def gone(pid: int) -> bool:
    """The process has exited and been reaped."""
    return not Path(f"/proc/{pid}").exists()


async def health(http: httpx.AsyncClient, url: str, status: int) -> None:
    """Poll ``url`` until it answers ``status``."""
    while (await http.get(url)).status_code != status:  # noqa: ASYNC110 - another process's state
        await trio.sleep(0.02)


def files(root: Path) -> list[str]:
    folder = root / "v1" / "instances"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def serving_pids(workers: WorkerProcesses) -> set[int]:
    return {c.pid for c in workers.statistics().children if c.serving and c.pid is not None}


async def test_two_children_serve_one_instance(tmp_path: Path) -> None:
    async with (
        open_worker_processes({ENDPOINT: TICKS}, processes=2, discovery_root=tmp_path) as workers,
        trioplane.open_endpoint_client(ENDPOINT, FileDiscovery(tmp_path, poll_interval=0.05))
        as client,
    ):  # fmt: skip
        [instance] = workers.instances  # one instance: one id, one address, one record
        assert len(files(tmp_path)) == 1
        pids = set(workers.pids())
        assert len(pids) == 2
        assert os.getpid() not in pids
        await client.wait_for_instances()
        assert [i.instance_id for i in client.instances()] == [instance.instance_id]
        seen = set()
        for _ in range(6):  # one at a time: the least busy child, ties in turn
            [item] = await client.call({"n": 1})
            seen.add(item["pid"])
        assert seen == pids
        async with trio.open_nursery() as nursery:  # and at once
            results: list[list[Any]] = []

            async def call() -> None:
                results.append(await client.call({"n": 5, "interval": 0.01}))

            for _ in range(8):
                nursery.start_soon(call)
        assert all([i["i"] for i in r] == list(range(5)) for r in results)
        assert {i["pid"] for r in results for i in r} == pids
        # A child says a call is done after the caller has read its end.
        await wait_until(lambda: workers.statistics().worker.calls_in_flight == 0)
        stats = workers.statistics()
        assert stats.worker.calls_accepted == 14
        assert sum(c.calls_served for c in stats.children) == 14
        assert stats.restarts == 0
    assert files(tmp_path) == []  # deregistered
    assert all(gone(pid) for pid in pids)


async def test_a_killed_child_fails_its_call_only_and_is_restarted(tmp_path: Path) -> None:
    discovery = StaticDiscovery()
    async with (
        open_worker_processes({ENDPOINT: TICKS}, processes=2, discovery=discovery) as workers,
        trioplane.open_endpoint_client(ENDPOINT, discovery) as client,
    ):
        await client.wait_for_instances()
        first = set(workers.pids())
        outcomes: dict[int, Any] = {}
        progress: dict[int, int] = {}

        async def stream(slot: int) -> None:
            try:
                async with client.generate({"n": 40, "interval": 0.05}) as items:
                    async for item in items:
                        progress[slot] = item["pid"]
                        outcomes.setdefault(slot, []).append(item["i"])
            except trioplane.StreamError as exc:
                outcomes[slot] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream, 0)
            nursery.start_soon(stream, 1)
            await wait_until(lambda: len(set(progress.values())) == 2)  # one on each child
            victim = progress[0]
            os.kill(victim, signal.SIGKILL)
        assert isinstance(outcomes[0], trioplane.StreamIncomplete)
        assert outcomes[1] == list(range(40))  # the other child's call went on
        await wait_until(lambda: len(serving_pids(workers)) == 2, seconds=30)
        now = serving_pids(workers)
        assert victim not in now
        assert len(now & first) == 1
        assert workers.statistics().restarts == 1
        await wait_until(lambda: workers.statistics().worker.calls_in_flight == 0)
        seen = {(await client.call({"n": 1}))[0]["pid"] for _ in range(6)}
        assert seen == now


async def test_the_command_drains_every_child_on_sigterm(tmp_path: Path) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioplane", "serve", TICKS, "--endpoint", ENDPOINT,
         "--processes", "2", "--grace", "10", "--discovery", f"file://{tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        with trio.fail_after(30):
            line = (await process.stdout.receive_some()).decode()
        assert line.startswith(f"serving {ENDPOINT} as "), line
        children = [int(pid) for pid in line.split("processes: ")[1].rstrip(")\n").split(", ")]
        discovery = FileDiscovery(tmp_path, poll_interval=0.05)
        async with trioplane.open_endpoint_client(ENDPOINT, discovery) as client:
            await client.wait_for_instances()
            streams: dict[int, list[Any]] = {0: [], 1: []}

            async def stream(slot: int) -> None:
                async with client.generate({"n": 20, "interval": 0.05}) as items:
                    async for item in items:
                        streams[slot].append(item)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream, 0)
                nursery.start_soon(stream, 1)
                await wait_until(lambda: len(streams[0]) >= 3 and len(streams[1]) >= 3)
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(5):  # deregistered first, at once
                    await wait_until(lambda: files(tmp_path) == [])
        for slot in (0, 1):  # every child finished its call
            assert [item["i"] for item in streams[slot]] == list(range(20))
        assert {streams[0][0]["pid"], streams[1][0]["pid"]} == set(children)
        with trio.fail_after(20):
            assert await process.wait() == 0
        assert "SIGTERM: draining" in (await process.stderr.receive_some()).decode()
        assert all(gone(pid) for pid in children)
    finally:
        process.kill()
        await process.wait()


def exited(pid: int) -> bool:
    """The process has exited (reaped, or a zombie its new parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_children_of_a_killed_supervisor_leave(tmp_path: Path) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioplane", "serve", TICKS, "--endpoint", ENDPOINT,
         "--processes", "2", "--discovery", f"file://{tmp_path}"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        with trio.fail_after(30):
            line = (await process.stdout.receive_some()).decode()
        children = [int(pid) for pid in line.split("processes: ")[1].rstrip(")\n").split(", ")]
        process.kill()  # no drain, no restart: the children see their link close
        await wait_until(lambda: all(exited(pid) for pid in children), seconds=15)
    finally:
        process.kill()
        await process.wait()


async def test_calls_beyond_grace_end_with_engine_shutdown(tmp_path: Path) -> None:
    discovery = StaticDiscovery()
    items: list[Any] = []
    async with (
        trioplane.open_endpoint_client(ENDPOINT, discovery) as client,
        open_worker_processes(
            {ENDPOINT: TICKS}, processes=2, discovery=discovery, grace_period=0.3
        ) as workers,
    ):
        await client.wait_for_instances()

        async def stream() -> None:
            async with client.generate({"n": 1000, "interval": 0.05}) as stream:
                async for item in stream:
                    items.append(item)
                    if len(items) == 2:
                        await workers.aclose()  # drains: this call outlives the grace

        with pytest.raises(trioplane.EngineShutdown):
            await stream()
        assert 2 <= len(items) < 1000
        assert discovery._instances == []


async def test_max_concurrency_is_the_instances(tmp_path: Path) -> None:
    discovery = StaticDiscovery()
    async with (
        open_worker_processes(
            {ENDPOINT: TICKS}, processes=2, discovery=discovery, max_concurrency=2
        ) as workers,
        trioplane.open_endpoint_client(ENDPOINT, discovery) as client,
    ):
        await client.wait_for_instances()
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(client.call, {"n": 2, "interval": 2})
            await wait_until(lambda: workers.statistics().worker.calls_in_flight == 2)
            assert {c.calls_in_flight for c in workers.statistics().children} == {1}
            with pytest.raises(trioplane.WorkerOverloaded):
                await client.call({"n": 1})
        assert workers.statistics().worker.calls_refused == 1


async def test_health_is_ready_only_while_a_child_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trioplane.processes, "RESTART_DELAY", 1.5)
    discovery = StaticDiscovery()
    status = StatusOptions(port=0)
    async with (
        open_worker_processes(
            {ENDPOINT: TICKS}, processes=2, discovery=discovery, status=status
        ) as workers,
        httpx.AsyncClient(timeout=5) as http,
    ):
        assert workers.status is not None
        url = f"http://127.0.0.1:{workers.status.port}/health"
        assert (await http.get(url)).status_code == 200
        for pid in workers.pids():
            os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: not serving_pids(workers))
        with trio.fail_after(1):
            await health(http, url, 503)
        assert discovery._instances == []  # withdrawn while no child serves
        with trio.fail_after(20):
            await health(http, url, 200)
        assert len(serving_pids(workers)) >= 1
        assert discovery._instances == workers.instances


async def test_a_crash_loop_is_reported_and_stops(tmp_path: Path) -> None:
    discovery = StaticDiscovery()
    endpoints = {ENDPOINT: "tests.test_processes:exits"}
    failures: list[Exception] = []

    async def crash_them() -> None:
        async with (
            open_worker_processes(endpoints, processes=2, discovery=discovery, max_restarts=2)
            as workers,
            trioplane.open_endpoint_client(ENDPOINT, discovery) as client,
        ):  # fmt: skip
            await client.wait_for_instances()
            for _ in range(10):
                try:
                    await client.call({})
                except trioplane.TrioplaneError as exc:  # each call kills its child
                    failures.append(exc)
                await wait_until(lambda: bool(serving_pids(workers)), seconds=30)

    with pytest.raises(WorkerProcessError, match="crash loop"):
        await crash_them()
    assert len(failures) >= 3  # (a call may reach a child before its sibling's exit is seen)
    assert discovery._instances == []


async def test_a_child_that_cannot_start_fails_at_once(tmp_path: Path) -> None:
    failure = "child . could not start: ModuleNotFoundError: No module named 'tests.nosuchmodule'"
    with trio.fail_after(30), pytest.raises(WorkerProcessError, match=failure):
        async with open_worker_processes(
            {ENDPOINT: "tests.nosuchmodule:ticks"}, processes=2, discovery_root=tmp_path
        ):
            pass  # pragma: no cover
    assert files(tmp_path) == []


def test_handlers_are_given_by_name() -> None:
    assert handler_spec("a.b:c") == "a.b:c"
    assert handler_spec(exits) == "tests.test_processes:exits"
    with pytest.raises(ValueError, match=r"package\.module:function"):
        handler_spec("nocolon")
    with pytest.raises(ValueError, match="cannot be imported"):
        handler_spec(lambda request, context: exits(request, context))
    with pytest.raises(ValueError, match="not supported with processes"):
        WorkerProcesses({ENDPOINT: TICKS}, health_check=HealthCheck({}))


@pytest.mark.nats
async def test_nats_plane_acks_each_request_once(tmp_path: Path) -> None:
    from trioplane.nats import open_nats_connection
    from trioplane.testing.nats_server import run_nats_server

    with run_nats_server() as url:
        discovery = StaticDiscovery()
        async with (
            open_worker_processes(
                {ENDPOINT: TICKS},
                processes=2,
                discovery=discovery,
                transports=("nats",),
                nats_servers=url,
            ) as workers,
            trioplane.open_endpoint_client(ENDPOINT, discovery, nats_servers=url) as client,
            open_nats_connection(url) as nats,
        ):
            [instance] = workers.instances
            assert instance.transport_kind == "nats_tcp"
            await client.wait_for_instances()
            results: list[list[Any]] = []

            async def call() -> None:
                results.append(await client.call({"n": 3, "interval": 0.01}))

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(call)
            assert len(results) == 20
            assert all([i["i"] for i in r] == [0, 1, 2] for r in results)
            assert {i["pid"] for r in results for i in r} == set(workers.pids())
            # Raw requests (a body no child can decode is still acked): one reply each.
            async with await nats.subscribe("_INBOX.procs.>") as replies:
                for n in range(10):
                    await nats.publish(instance.address, b"junk", reply=f"_INBOX.procs.{n}")
                got: list[str] = []
                with trio.move_on_after(1.0):
                    async for msg in replies:
                        got.append(msg.subject)
                assert sorted(got) == sorted(f"_INBOX.procs.{n}" for n in range(10))
            assert workers.statistics().worker.calls_accepted == 30


async def test_the_supervisors_metrics_count_every_child(tmp_path: Path) -> None:
    """The same calls as test_metrics.py's against one worker, the same counts."""
    from .test_metrics import ENDPOINT as MET
    from .test_metrics import assert_known_calls_counted, known_calls, samples

    async with (
        open_worker_processes(
            {MET: "tests.test_metrics:handler"}, processes=2, discovery_root=tmp_path, status=True
        ) as workers,
        httpx.AsyncClient(timeout=5) as http,
    ):
        async with trioplane.open_endpoint_client(MET, FileDiscovery(tmp_path)) as client:
            await known_calls(client, tmp_path)
        assert workers.status is not None
        url = workers.status.url + "/metrics"
        wanted = ("dynamo_work_handler_time_to_first_response_seconds_count", ())
        with trio.fail_after(10):  # the children report every second
            while samples((await http.get(url)).text).get(wanted) != 5:  # noqa: ASYNC110
                await trio.sleep(0.1)
        found = samples((await http.get(url)).text)
        assert_known_calls_counted(found)
        assert workers.statistics().worker.handler_errors == 1
        assert {c.calls_served > 0 for c in workers.statistics().children} == {True}


async def test_a_child_sent_sigterm_drains_and_is_replaced() -> None:
    discovery = StaticDiscovery()
    async with (
        open_worker_processes({ENDPOINT: TICKS}, processes=2, discovery=discovery) as workers,
        trioplane.open_endpoint_client(ENDPOINT, discovery) as client,
    ):
        await client.wait_for_instances()
        items: list[Any] = []
        async with client.generate({"n": 10, "interval": 0.05}) as stream:
            async for item in stream:
                items.append(item)
                if len(items) == 2:  # the child serving this call is told to go
                    os.kill(item["pid"], signal.SIGTERM)
        assert [item["i"] for item in items] == list(range(10))  # it finished it first
        leaver = items[0]["pid"]
        await wait_until(lambda: leaver not in workers.pids(), seconds=15)
        await wait_until(lambda: len(serving_pids(workers)) == 2, seconds=30)
        assert workers.statistics().restarts == 1
        assert discovery._instances == workers.instances  # never withdrawn: one served
