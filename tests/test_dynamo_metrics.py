"""trioplane's metrics against those a real Dynamo 1.6.1 process exposes.

The same calls go to a Dynamo worker (its system server's ``/metrics``, with
``DYN_SYSTEM_PORT``) and to a trioplane worker (its status server's): every
``dynamo_*`` family trioplane exposes must exist in Dynamo's with the same type,
help, labels and buckets, and count the same. Likewise on the caller's side, against
Dynamo's client process (its request-plane metrics are on its HTTP service).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

import trioplane
from trioplane import FileDiscovery
from trioplane.metrics import Metrics
from trioplane.worker import Worker, open_worker

from .conftest import wait_until
from .dynamo import DynamoWorker, dynamo_client_call, free_low_port, run_dynamo_worker
from .handlers import worker_ops as handler

pytestmark = pytest.mark.dynamo
DYNAMO = "metrics.dyn.gen"
OURS = "metrics.tp.gen"


@pytest.fixture(scope="module")
def dynamo_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoWorker]:
    port = free_low_port()
    env = {"DYN_SYSTEM_PORT": str(port), "DYN_SYSTEM_HOST": "127.0.0.1"}
    with run_dynamo_worker(tmp_path_factory.mktemp("kv"), [DYNAMO], **env) as worker:
        worker.system_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        yield worker


@pytest.fixture
async def ours(dynamo_worker: DynamoWorker) -> AsyncIterator[Worker]:
    kv = dynamo_worker.discovery_dir
    async with open_worker({OURS: handler}, discovery_root=kv, status=True) as worker:
        yield worker


def families(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def shape(family: Metric) -> tuple[str, str, set[str], list[str]]:
    """Type, help, label names and bucket bounds of a family (what dashboards rely on)."""
    labels = {k for s in family.samples for k in s.labels if k != "le"}
    buckets = sorted(
        {s.labels["le"] for s in family.samples if "le" in s.labels},
        key=lambda le: float(le),
    )
    return family.type, family.documentation, labels, [str(float(b)) for b in buckets]


def value(found: dict[str, Metric], sample: str, **labels: str) -> float:
    name = sample.removesuffix("_total").removesuffix("_count")
    for family_name in (sample, name):
        family = found.get(family_name)
        if family is None:
            continue
        matches = [
            s.value
            for s in family.samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        if matches:
            return sum(matches)
    return 0.0


async def known_calls(kv: Path, endpoint: str, marker: Path) -> None:
    """Two calls, an error after one item, a stopped call and a killed one."""
    discovery = FileDiscovery(kv, poll_interval=0.05)
    async with trioplane.open_endpoint_client(endpoint, discovery) as client:
        await client.wait_for_instances()
        await client.call({"op": "count", "n": 3})
        await client.call({"op": "count", "n": 0})
        with pytest.raises(trioplane.RemoteError):
            await client.call({"op": "error_after"})
        slow = {"op": "slow", "interval": 0.02, "marker": str(marker)}
        async with client.generate(slow) as items:
            await items.__anext__()
    async with (
        trioplane.open_endpoint_client(endpoint, discovery, cancel_mode="kill") as killer,
        killer.generate(slow) as items,
    ):
        await items.__anext__()


async def test_worker_metrics_match_a_dynamo_workers(
    dynamo_worker: DynamoWorker, ours: Worker, tmp_path: Path
) -> None:
    kv = dynamo_worker.discovery_dir
    await known_calls(kv, DYNAMO, tmp_path / "marker")
    await known_calls(kv, OURS, tmp_path / "marker")
    await wait_until(lambda: ours.statistics().calls_in_flight == 0)
    await trio.sleep(0.5)  # Dynamo's worker finishes its killed stream in its own time
    assert ours.status is not None
    async with httpx.AsyncClient() as http:
        theirs_text = (await http.get(dynamo_worker.system_url + "/metrics")).text  # type: ignore[attr-defined]
        ours_text = (await http.get(ours.status.url + "/metrics")).text
    theirs, mine = families(theirs_text), families(ours_text)
    dynamo_named = {name: family for name, family in mine.items() if name.startswith("dynamo_")}
    assert len(dynamo_named) >= 12
    for name, family in dynamo_named.items():
        assert name in theirs, f"{name} is not a Dynamo 1.6.1 family"
        assert shape(family) == shape(theirs[name]), name
    for sample in (
        "dynamo_component_requests_total",
        "dynamo_component_cancellation_total",
        "dynamo_component_inflight_requests",
        "dynamo_component_request_duration_seconds_count",
        "dynamo_work_handler_network_transit_seconds_count",
        "dynamo_work_handler_time_to_first_response_seconds_count",
        "dynamo_engine_request",
        "dynamo_rejection_request_total",
    ):
        assert value(mine, sample) == value(theirs, sample), sample
    assert value(mine, "dynamo_component_requests_total") == 5
    assert value(mine, "dynamo_component_cancellation_total") == 2
    for error_type in ("publish_final", "generate", "deserialization"):
        sample = "dynamo_component_errors_total"
        assert value(mine, sample, error_type=error_type) == value(
            theirs, sample, error_type=error_type
        ), error_type


async def test_caller_metrics_match_a_dynamo_callers(
    dynamo_worker: DynamoWorker, ours: Worker
) -> None:
    kv = dynamo_worker.discovery_dir
    requests = [{"op": "count", "n": 3}, {"op": "count", "n": 1}, {}]
    lines = await dynamo_client_call(
        kv, DYNAMO, requests, "--batch", METRICS_HTTP_PORT=str(free_low_port())
    )
    theirs = families(lines[-1]["metrics"])
    metrics = Metrics(CollectorRegistry())
    async with trioplane.open_endpoint_client(
        DYNAMO, FileDiscovery(kv, poll_interval=0.05), metrics=metrics
    ) as client:
        await client.wait_for_instances()
        for request in requests:
            await client.call(request)
        mine = families(generate_latest(metrics.registry).decode())
    dynamo_named = {name: family for name, family in mine.items() if name.startswith("dynamo_")}
    assert len(dynamo_named) >= 7
    for name, family in dynamo_named.items():
        assert name in theirs, f"{name} is not a Dynamo 1.6.1 family"
        assert shape(family) == shape(theirs[name]), name
    for sample in (
        "dynamo_request_plane_queue_seconds_count",
        "dynamo_request_plane_send_seconds_count",
        "dynamo_request_plane_roundtrip_ttft_seconds_count",
        "dynamo_request_plane_inflight_requests",
        "dynamo_transport_tcp_errors_total",
    ):
        assert value(mine, sample) == value(theirs, sample), sample
    assert value(mine, "dynamo_request_plane_send_seconds_count") == 3
    # Bytes: the same three requests; ours carry the same frames (ids differ in length
    # by nothing: both send UUIDs), so the totals are close.
    sent_mine = value(mine, "dynamo_transport_tcp_bytes_sent_total")
    sent_theirs = value(theirs, "dynamo_transport_tcp_bytes_sent_total")
    assert 0.5 * sent_theirs < sent_mine < 2 * sent_theirs
