"""Metrics and the status server, trioplane on both sides: values after known calls
(parsed with prometheus-client's own parser), the routes over a real HTTP client,
Dynamo's environment variables, and the status server's limits against hostile peers.
Compared with real Dynamo 1.6.1 processes in test_dynamo_metrics.py."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import trioplane
from trioplane.discovery import FileDiscovery
from trioplane.metrics import Histogram, Metrics
from trioplane.servers import ServerLimits
from trioplane.status import StatusOptions
from trioplane.worker import RequestContext, Worker, open_worker

from .conftest import wait_until
from .handlers import worker_ops as handler

ENDPOINT = "ns.met.gen"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and labels (``worker_id`` dropped)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "worker_id"))
            found[sample.name, labels] = sample.value
    return found


LBL = (("dynamo_component", "met"), ("dynamo_endpoint", "gen"), ("dynamo_namespace", "ns"))


async def known_calls(client: trioplane.EndpointClient, kv: Path) -> None:
    """Two calls, an error after one item, a stopped call and a killed one."""
    await client.call({"op": "count", "n": 3})
    await client.call({"op": "count", "n": 0})
    with pytest.raises(trioplane.InvalidArgument):
        await client.call({"op": "error_after"})
    async with client.generate({"op": "slow"}) as items:
        await items.__anext__()
    async with (
        trioplane.open_endpoint_client(ENDPOINT, FileDiscovery(kv), cancel_mode="kill") as killer,
        killer.generate({"op": "slow"}) as items,
    ):
        await items.__anext__()


def assert_known_calls_counted(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> None:
    """What an instance's ``/metrics`` say after :func:`known_calls` (one worker, or the
    supervisor of several processes: the same counts)."""
    assert found["dynamo_component_requests_total", LBL] == 5
    assert found["dynamo_component_cancellation_total", LBL] == 2
    assert found["dynamo_component_errors_total", (*LBL, ("error_type", "publish_final"))] == 1
    assert found["dynamo_component_inflight_requests", LBL] == 0
    assert found["dynamo_component_request_duration_seconds_count", LBL] == 5
    assert found["dynamo_component_request_bytes_total", LBL] > 5 * 100
    assert found["dynamo_component_response_bytes_total", LBL] > 0
    assert found["trioplane_worker_handler_errors_total", LBL] == 1
    assert found["dynamo_work_handler_network_transit_seconds_count", ()] == 5


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[Worker]:
    async with open_worker({ENDPOINT: handler}, discovery_root=tmp_path, status=True) as worker:
        yield worker


async def scrape(worker: Worker, path: str = "/metrics") -> httpx.Response:
    assert worker.status is not None
    async with httpx.AsyncClient() as http:
        return await http.get(worker.status.url + path)


async def test_worker_metrics_after_known_calls(worker: Worker, tmp_path: Path) -> None:
    async with trioplane.open_endpoint_client(ENDPOINT, FileDiscovery(tmp_path)) as client:
        await known_calls(client, tmp_path)
    await wait_until(lambda: worker.statistics().calls_in_flight == 0)
    response = await scrape(worker)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    found = samples(response.text)
    assert_known_calls_counted(found)
    assert found["dynamo_work_handler_time_to_first_response_seconds_count", ()] == 5
    assert found["dynamo_engine_request", ()] == 0
    assert found["dynamo_work_handler_pool_capacity", ()] == worker.max_concurrency


async def test_caller_metrics_after_known_calls(worker: Worker, tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    async with trioplane.open_endpoint_client(
        ENDPOINT, FileDiscovery(tmp_path), metrics=metrics
    ) as client:
        await known_calls(client, tmp_path)
        live = samples(generate_latest(metrics.registry).decode())
    closed = samples(generate_latest(metrics.registry).decode())
    for found in (live, closed):  # a closed client's counts stay (counters never go back)
        assert found["dynamo_request_plane_queue_seconds_count", ()] == 4
        assert found["dynamo_request_plane_send_seconds_count", ()] == 4
        assert found["dynamo_request_plane_roundtrip_ttft_seconds_count", ()] == 4
        assert found["dynamo_transport_tcp_bytes_sent_total", ()] > 4 * 100
        assert found["dynamo_transport_tcp_errors_total", ()] == 0
    assert live["dynamo_request_plane_inflight_requests", ()] == 0
    assert (
        live["trioplane_request_plane_connections", (("state", "idle"), ("transport", "tcp"))] >= 1
    )


async def test_rejections_and_failures_are_counted_by_reason(tmp_path: Path) -> None:
    release = trio.Event()

    async def busy(request: Any, context: RequestContext) -> AsyncIterator[Any]:
        await release.wait()
        yield {}

    metrics = Metrics(CollectorRegistry())
    async with (
        open_worker({ENDPOINT: busy}, discovery_root=tmp_path, max_concurrency=1),
        trioplane.open_endpoint_client(ENDPOINT, FileDiscovery(tmp_path), metrics=metrics) as c,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(c.call, {})
        await wait_until(lambda: len(c._calls) == 1)
        with pytest.raises(trioplane.WorkerOverloaded):
            await c.call({})
        found = samples(generate_latest(metrics.registry).decode())
        release.set()
    assert found["trioplane_request_rejections_total", (("reason", "overloaded"),)] == 1
    assert found["trioplane_request_failures_total", (("outcome", "rejected"),)] == 1
    assert found["dynamo_request_plane_inflight_requests", ()] == 1
    assert found["trioplane_instance_inflight_requests", LBL] == 1


async def test_no_metrics_option_records_nothing(worker: Worker, tmp_path: Path) -> None:
    async with trioplane.open_endpoint_client(ENDPOINT, FileDiscovery(tmp_path)) as client:
        await client.call({"op": "count", "n": 1})
        assert client.metrics_samples is None


def test_importing_trioplane_creates_no_metrics_and_imports_no_extras() -> None:
    code = (
        "import sys, trioplane, trioplane.worker, trioplane.endpoint;"
        "print(sorted(m for m in ('prometheus_client', 'opentelemetry') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_histograms_count_as_prometheus_does() -> None:
    histogram = Histogram((0.1, 1))
    for value in (0.05, 0.1, 0.5, 1, 7):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2.0), ("1", 4.0), ("+Inf", 5.0)]
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(8.65)


# -- the status server -------------------------------------------------------------------


async def test_health_follows_readiness(worker: Worker) -> None:
    response = await scrape(worker, "/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["endpoints"] == {"gen": "ready"}
    assert set(body["uptime"]) == {"secs", "nanos"}
    await worker.set_ready(False)
    response = await scrape(worker, "/health?probe=1")
    assert (response.status_code, response.json()["status"]) == (503, "notready")
    assert (await scrape(worker, "/live")).status_code == 200  # alive, just not routable
    await worker.set_ready(True)
    assert (await scrape(worker, "/health")).status_code == 200


async def test_methods_and_unknown_paths(worker: Worker) -> None:
    assert worker.status is not None
    async with httpx.AsyncClient(base_url=worker.status.url) as http:
        head = await http.head("/metrics")
        assert (head.status_code, head.content) == (200, b"")
        post = await http.post("/health", content=b"x" * 1000)
        assert (post.status_code, post.headers["allow"]) == (405, "GET,HEAD")
        missing = await http.get("/nope")
        assert (missing.status_code, missing.text) == (404, "Route not found")
        for _ in range(3):  # keep-alive: one connection, several requests
            assert (await http.get("/live")).status_code == 200
    assert worker.status.statistics().connections_accepted <= 3


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"DYN_SYSTEM_PORT": ""}, None),
        ({"DYN_SYSTEM_PORT": "-1"}, None),
        ({"DYN_SYSTEM_PORT": "0"}, StatusOptions(host="0.0.0.0", port=0)),
        (
            {
                "DYN_SYSTEM_PORT": "9090",
                "DYN_SYSTEM_HOST": "127.0.0.1",
                "DYN_SYSTEM_HEALTH_PATH": "/h2",
                "DYN_SYSTEM_LIVE_PATH": "/l2",
            },
            StatusOptions(host="127.0.0.1", port=9090, health_path="/h2", live_path="/l2"),
        ),
    ],
)
def test_status_options_from_dynamos_environment(
    env: dict[str, str], expected: StatusOptions | None
) -> None:
    assert StatusOptions.from_env(env) == expected


def test_a_bad_dyn_system_port_is_named() -> None:
    with pytest.raises(ValueError, match="DYN_SYSTEM_PORT"):
        StatusOptions.from_env({"DYN_SYSTEM_PORT": "eighty"})
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        StatusOptions.from_env({"DYN_SYSTEM_PORT": "70000"})


async def test_dyn_system_port_turns_it_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYN_SYSTEM_PORT", "0")
    monkeypatch.setenv("DYN_SYSTEM_HOST", "127.0.0.1")
    monkeypatch.setenv("DYN_SYSTEM_HEALTH_PATH", "/ready")
    async with open_worker({ENDPOINT: handler}, discovery_root=tmp_path) as worker:
        assert (await scrape(worker, "/ready")).status_code == 200
        assert (await scrape(worker, "/health")).status_code == 404
    async with open_worker({ENDPOINT: handler}, discovery_root=tmp_path, status=False) as worker:
        assert worker.status is None


# -- hostile peers ---------------------------------------------------------------------------

TIGHT = ServerLimits(
    max_connections=2,
    idle_timeout=0.5,
    frame_timeout=0.5,
    write_timeout=0.5,
    handshake_timeout=0.5,
    max_frame_size=1024,
)


@pytest.fixture
async def tight(tmp_path: Path) -> AsyncIterator[Worker]:
    options = StatusOptions(limits=TIGHT)
    async with open_worker({ENDPOINT: handler}, discovery_root=tmp_path, status=options) as w:
        yield w


async def connect(worker: Worker) -> trio.SocketStream:
    assert worker.status is not None
    return await trio.open_tcp_stream("127.0.0.1", worker.status.port)


async def closed_by_server(stream: trio.SocketStream) -> bytes:
    """What the server sends until it closes (bounded: the test fails, never hangs)."""
    received = b""
    with trio.fail_after(5):
        try:
            while chunk := await stream.receive_some():
                received += chunk
        except trio.BrokenResourceError:  # reset: closed with our bytes unread
            pass
    return received


async def test_a_request_head_that_trickles_is_cut_off(tight: Worker) -> None:
    stream = await connect(tight)
    with trio.fail_after(5):
        for byte in b"GET /health HTTP/1.1\r\n":
            try:
                await stream.send_all(bytes([byte]))
            except trio.BrokenResourceError:
                break
            await trio.sleep(0.1)
    assert await closed_by_server(stream) == b""
    assert tight.status is not None
    assert tight.status.statistics().timeouts >= 1


async def test_an_idle_connection_is_closed(tight: Worker) -> None:
    stream = await connect(tight)
    assert await closed_by_server(stream) == b""


async def test_an_oversized_request_head_is_refused(tight: Worker) -> None:
    stream = await connect(tight)
    await stream.send_all(b"GET /health HTTP/1.1\r\nx-junk: " + b"a" * 4096 + b"\r\n\r\n")
    reply = await closed_by_server(stream)
    assert reply.startswith(b"HTTP/1.1 431 ")


async def test_garbage_gets_a_400(tight: Worker) -> None:
    stream = await connect(tight)
    await stream.send_all(b"\x16\x03\x01 not http at all\r\n\r\n")
    assert (await closed_by_server(stream)).startswith(b"HTTP/1.1 400 ")


async def test_connections_past_the_cap_are_closed_at_once(tight: Worker) -> None:
    held = [await connect(tight) for _ in range(2)]
    assert tight.status is not None
    await wait_until(
        lambda: tight.status is not None and tight.status.statistics().open_connections == 2
    )
    extra = await connect(tight)
    assert await closed_by_server(extra) == b""
    assert tight.status.statistics().connections_refused == 1
    for stream in held:
        await stream.aclose()


async def test_a_peer_that_does_not_read_its_responses_is_dropped(tight: Worker) -> None:
    """Pipelined requests, never read: the server's writes stall, then it gives up."""
    stream = await connect(tight)
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert tight.status is not None
    with trio.move_on_after(3), contextlib.suppress(trio.BrokenResourceError):
        for _ in range(5000):  # the server drops us (a reset) once its write stalls
            await stream.send_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
    await wait_until(lambda: tight.status is not None and tight.status.statistics().timeouts >= 1)
