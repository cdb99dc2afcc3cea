"""The worker side: trioplane serving endpoints, called by trioplane's endpoint client."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioplane
import trioplane.discovery.file as file_backend
import trioplane.worker
from trioplane.discovery import FileDiscovery, instance_key
from trioplane.servers.http import HttpPlaneServer
from trioplane.worker import RequestContext, open_worker

from .conftest import wait_until

seen: dict[str, Any] = {}


async def count(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    for i in range(request["n"]):
        yield {"i": i}


async def boom(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    yield {"i": 0}
    raise ValueError("boom")


async def echo_context(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    yield {
        "id": context.id(),
        "metadata": context.metadata,
        "trace": context.headers.get("traceparent"),
    }


async def slow(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    """Items every 10 ms until stopped; records how it ended."""
    i = 0
    try:
        while not context.is_stopped():
            yield {"i": i}
            i += 1
            await trio.sleep(0.01)
        seen["ended"] = "stopped"
    except trio.Cancelled:
        seen["ended"] = "killed" if context.is_killed() else "cancelled"
        raise


ENDPOINTS = {
    "ns.w.count": count,
    "ns.w.boom": boom,
    "ns.w.context": echo_context,
    "ns.w.slow": slow,
}


@pytest.fixture
async def kv(tmp_path: Path) -> AsyncIterator[Path]:
    seen.clear()
    async with open_worker(ENDPOINTS, discovery_root=tmp_path):
        yield tmp_path


def client(kv: Path, endpoint: str, **options: Any) -> Any:
    return trioplane.open_endpoint_client(
        endpoint, FileDiscovery(kv, poll_interval=0.05), **options
    )


async def test_items_stream_in_both_codecs(kv: Path) -> None:
    for codec in ("json", "msgpack"):
        async with client(kv, "ns.w.count", codec=codec) as c:
            await c.wait_for_instances()
            assert await c.call({"n": 100}) == [{"i": i} for i in range(100)]
            assert await c.call({"n": 0}) == []


async def test_handler_errors_are_dynamo_error_annotations(kv: Path) -> None:
    async with client(kv, "ns.w.boom") as c:
        await c.wait_for_instances()
        async with c.generate({}) as responses:
            iterator = aiter(responses)
            assert await anext(iterator) == {"i": 0}
            with pytest.raises(trioplane.RemoteError) as info:
                await anext(iterator)
    assert info.value.message == "ValueError: boom"
    assert info.value.error_type == {"Backend": "InvalidArgument"}


async def test_context_carries_id_metadata_and_headers(kv: Path) -> None:
    async with client(kv, "ns.w.context") as c:
        await c.wait_for_instances()
        async with c.generate({}, metadata={"k": "v"}, headers={"traceparent": "00-x"}) as r:
            (item,) = [item async for item in r]
    assert item == {"id": r.request_id, "metadata": {"k": "v"}, "trace": "00-x"}


@pytest.mark.parametrize("mode", ["stop", "kill"])
async def test_stop_and_kill_reach_the_handler(kv: Path, mode: str) -> None:
    async with client(kv, "ns.w.slow", cancel_mode=mode) as c:
        await c.wait_for_instances()
        async with c.generate({}) as responses:
            async for item in responses:
                if item["i"] == 2:
                    break
        await wait_until(lambda: "ended" in seen)
    assert seen["ended"] == ("stopped" if mode == "stop" else "killed")


async def test_registration_follows_dynamo_file_backend(tmp_path: Path) -> None:
    async with open_worker({"ns.w.count": count}, discovery_root=tmp_path) as worker:
        (instance,) = worker.instances
        path = tmp_path / "v1" / "instances" / instance_key(instance)
        assert trioplane.Instance.from_json(path.read_bytes()) == instance
        assert instance.address.endswith(f"/{instance.instance_id:x}/ns/w/count")
        assert instance.request_plane_codec == "msgpack"
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp_")]
    assert not path.exists()  # removed on a clean exit


async def test_registration_file_io_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, bool] = {}

    def spy(name: str, original: Any) -> Any:
        def spying(*args: Any) -> None:
            threads[name] = threading.current_thread() is not threading.main_thread()
            original(*args)

        return spying

    registration = file_backend._FileRegistration
    monkeypatch.setattr(registration, "_write", spy("write", registration._write))
    monkeypatch.setattr(registration, "_touch", spy("touch", registration._touch))
    monkeypatch.setattr(file_backend, "_remove", spy("remove", file_backend._remove))
    monkeypatch.setattr(file_backend, "REFRESH_INTERVAL", 0.01)
    async with open_worker({"ns.w.count": count}, discovery_root=tmp_path):
        await wait_until(lambda: "touch" in threads)
    assert threads == {"write": True, "touch": True, "remove": True}


async def test_a_cancelled_worker_still_deregisters(tmp_path: Path) -> None:
    with trio.move_on_after(0.2):
        async with open_worker({"ns.w.count": count}, discovery_root=tmp_path) as worker:
            await trio.sleep_forever()
    assert worker.instances
    assert not list((tmp_path / "v1" / "instances").iterdir())


async def test_unknown_paths_and_overload_are_acked_as_dynamo_does(tmp_path: Path) -> None:
    release = trio.Event()

    async def blocking(request: Any, context: RequestContext) -> AsyncIterator[Any]:
        await release.wait()
        yield 1

    async with (
        open_worker({"ns.w.block": blocking}, discovery_root=tmp_path, max_concurrency=1) as w,
        trioplane.open_tcp_client() as tcp,
        client(tmp_path, "ns.w.block", max_attempts=1) as c,
    ):
        (instance,) = w.instances
        host_port = instance.address.split("/", 1)[0]
        ack = await tcp.send_request(f"{host_port}/nope", b"")
        assert ack == b"Server unavailable: unknown endpoint nope"
        await c.wait_for_instances()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.call, {})
            await wait_until(lambda: w.statistics().calls_in_flight == 1)
            with pytest.raises(trioplane.WorkerOverloaded, match="worker at capacity"):
                await c.call({})
            release.set()


async def test_close_lets_calls_finish_then_cancels(tmp_path: Path) -> None:
    async with client(tmp_path, "ns.w.slow") as c:
        errors: list[BaseException] = []
        async with open_worker({"ns.w.slow": slow}, discovery_root=tmp_path, grace_period=0.1) as w:
            await c.wait_for_instances()

            async def reader() -> None:
                try:
                    await c.call({})
                except trioplane.TrioplaneError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await wait_until(lambda: w.statistics().calls_in_flight == 1)
                await w.aclose()
        assert len(errors) == 1
        assert isinstance(errors[0], trioplane.EngineShutdown)
        assert errors[0].error_class == "Unavailable"


async def test_every_plane_at_once(tmp_path: Path) -> None:
    """TCP, WebSocket and HTTP instances of one endpoint; the endpoint client uses all."""
    planes = ("tcp", "websocket", "http")
    async with open_worker(
        {"ns.w.count": count}, discovery_root=tmp_path, transports=planes
    ) as worker:
        kinds = sorted(i.transport_kind for i in worker.instances)
        assert kinds == ["http", "tcp", "websocket"]
        async with client(tmp_path, "ns.w.count", http={"http2": True}) as c:
            with trio.fail_after(5):
                while len(c.instances()) < 3:
                    await c.wait_for_instances()
                    await trio.sleep(0.02)
            used = set()
            for _ in range(6):
                async with c.generate({"n": 3}) as responses:
                    assert [item async for item in responses] == [{"i": i} for i in range(3)]
                    assert responses.instance is not None
                    used.add(responses.instance.transport_kind)
    assert used == {"tcp", "websocket", "http"}


async def test_http_plane_answers_as_dynamo_1_2_1(tmp_path: Path) -> None:
    async with (
        open_worker({"ns.w.count": count}, discovery_root=tmp_path, transports=("http",)) as w,
        trioplane.open_http_client() as http,
    ):
        (instance,) = w.instances
        assert instance.address.endswith(f"/v1/rpc/{instance.instance_id:x}/ns/w/count")
        base = instance.address.split("/v1/rpc/")[0]
        with pytest.raises(trioplane.WorkerUnavailable, match="Endpoint not found"):
            await http.send_request(f"{base}/v1/rpc/nope", b"x")
        await http.send_request(instance.address, b'{"n": 0}')
        server = w.servers["http"]
        assert isinstance(server, HttpPlaneServer)
        assert server.on_request is None  # a long-running worker keeps no request bodies
        await wait_until(lambda: server.statistics().requests_served == 2)


def test_bad_transports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NATS_SERVER", raising=False)
    with pytest.raises(ValueError, match="transports"):
        trioplane.Worker({"a.b.c": count}, transports=("carrier-pigeon",))
    with pytest.raises(ValueError, match="nats_servers"):
        trioplane.Worker({"a.b.c": count}, transports=("nats",), nats_servers=None)


async def test_a_worker_leaves_nothing_behind(tmp_path: Path, no_leaks: None) -> None:
    async with (
        open_worker({"ns.w.count": count}, discovery_root=tmp_path) as worker,
        client(tmp_path, "ns.w.count") as c,
    ):
        await c.wait_for_instances()
        assert await c.call({"n": 3}) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert worker.instances
