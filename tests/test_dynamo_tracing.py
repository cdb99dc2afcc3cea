"""Traces across real Dynamo 1.6.1 processes, both ways.

Dynamo's processes export their spans over OTLP/HTTP to a receiver in the test
(``tests/otlp.py``); trioplane's spans go to the OpenTelemetry SDK's in-memory
exporter. A Dynamo worker's ``handle_payload`` must be the child of trioplane's
``router.route_request``, and a trioplane worker's ``handle_payload`` the child of
Dynamo's client span; through a trioplane worker in the middle, one trace runs from
Dynamo's client to a Dynamo worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import trioplane
from trioplane import FileDiscovery
from trioplane.worker import RequestContext, open_worker

from .dynamo import DynamoWorker, dynamo_client_call, run_dynamo_worker
from .otlp import OtlpReceiver, run_otlp_receiver

pytestmark = pytest.mark.dynamo
DYNAMO = "trace.dyn.generate"
OURS = "trace.tp.generate"
FORWARD = "trace.tp.forward"
#: The attributes trioplane's spans share with Dynamo's (Dynamo's tracing library adds
#: its own code.*, thread.*, busy_ns... on top).
SERVER_ATTRIBUTES = {"namespace", "component", "endpoint", "instance_id", "request_id"}
REQUEST_ID = "4d6a0c1e-1111-4aaa-8bbb-000000000001"  # Dynamo records a request id if a UUID
CLIENT_ATTRIBUTES = {"request_id", "router_mode", "worker_id", "request.outcome"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with run_otlp_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def dynamo_worker(
    tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver
) -> Iterator[DynamoWorker]:
    kv = tmp_path_factory.mktemp("kv")
    with run_dynamo_worker(kv, [DYNAMO], **receiver.env("dyn-worker")) as worker:
        yield worker


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def ours(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    yield {"trace_id": context.trace_id, "parent_span_id": context.parent_span_id}


@pytest.fixture
async def kv(dynamo_worker: DynamoWorker, provider: TracerProvider) -> AsyncIterator[Path]:
    """Dynamo's traced worker and a traced trioplane worker in one discovery directory."""
    kv = dynamo_worker.discovery_dir

    async def forward(request: Any, context: RequestContext) -> AsyncIterator[Any]:
        async with (
            trioplane.open_endpoint_client(
                DYNAMO, FileDiscovery(kv, poll_interval=0.05), tracer_provider=provider
            ) as downstream,
            downstream.generate({"op": "trace"}, context=context) as items,
        ):
            async for item in items:
                yield item

    endpoints = {OURS: ours, FORWARD: forward}
    async with open_worker(endpoints, discovery_root=kv, tracer_provider=provider):
        yield kv


def ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def parent_id(span: ReadableSpan) -> str:
    return format(span.parent.span_id, "016x") if span.parent is not None else ""


def only(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    (span,) = [s for s in spans if s.name == name]
    return span


async def test_dynamos_worker_joins_our_callers_trace(
    kv: Path, provider: TracerProvider, exporter: InMemorySpanExporter, receiver: OtlpReceiver
) -> None:
    async with trioplane.open_endpoint_client(
        DYNAMO, FileDiscovery(kv, poll_interval=0.05), tracer_provider=provider
    ) as client:
        await client.wait_for_instances()
        (seen,) = await client.call(
            {"op": "trace"}, request_id="4d6a0c1e-1111-4aaa-8bbb-000000000001"
        )
    ours_ = only(exporter.get_finished_spans(), "router.route_request")
    trace_id, client_span_id = ids(ours_)
    assert (seen["trace_id"], seen["parent_span_id"]) == (trace_id, client_span_id)
    theirs = receiver.wait_for(lambda s: s.trace_id == trace_id and s.name == "handle_payload")
    assert theirs.span_id == seen["span_id"]
    assert theirs.kind == "SERVER"
    assert theirs.parent_span_id == client_span_id
    assert theirs.attributes["request_id"] == REQUEST_ID
    assert ours_.attributes is not None
    assert theirs.attributes["instance_id"] == ours_.attributes["worker_id"]


async def test_our_worker_joins_dynamos_callers_trace(
    kv: Path, exporter: InMemorySpanExporter, receiver: OtlpReceiver
) -> None:
    env = {**receiver.env("dyn-client"), "CLIENT_LINGER": "1.5"}
    lines = await dynamo_client_call(kv, OURS, {}, **env)
    (server,) = [s for s in exporter.get_finished_spans() if s.name == "handle_payload"]
    trace_id, _ = ids(server)
    assert lines == [
        {"item": {"trace_id": trace_id, "parent_span_id": parent_id(server)}},
        {"done": True},
    ]
    theirs = receiver.wait_for(lambda s: s.trace_id == trace_id)
    assert (theirs.name, theirs.kind) == ("router.route_request", "CLIENT")
    assert server.parent is not None
    assert server.parent.is_remote
    assert parent_id(server) == theirs.span_id
    assert server.kind is trace.SpanKind.SERVER
    assert server.attributes is not None
    assert set(server.attributes) >= SERVER_ATTRIBUTES


async def test_one_trace_from_dynamos_client_through_ours_to_dynamos_worker(
    kv: Path, exporter: InMemorySpanExporter, receiver: OtlpReceiver
) -> None:
    env = {**receiver.env("dyn-client"), "CLIENT_LINGER": "1.5"}
    lines = await dynamo_client_call(kv, FORWARD, {}, **env)
    spans = exporter.get_finished_spans()
    our_server = only(spans, "handle_payload")
    our_client = only(spans, "router.route_request")
    trace_id, server_span_id = ids(our_server)
    dynamo_client = receiver.wait_for(
        lambda s: s.trace_id == trace_id and s.name == "router.route_request"
    )
    dynamo_worker = receiver.wait_for(
        lambda s: s.trace_id == trace_id and s.name == "handle_payload"
    )
    assert parent_id(our_server) == dynamo_client.span_id
    assert parent_id(our_client) == server_span_id
    assert dynamo_worker.parent_span_id == ids(our_client)[1]
    assert lines[0] == {
        "item": {
            "trace_id": trace_id,
            "span_id": dynamo_worker.span_id,
            "parent_span_id": ids(our_client)[1],
        }
    }
    # Our spans carry the attributes Dynamo's carry, under the same names.
    assert our_client.attributes is not None
    assert set(our_client.attributes) & set(dynamo_client.attributes) >= CLIENT_ATTRIBUTES
    assert our_server.attributes is not None
    assert set(our_server.attributes) & set(dynamo_worker.attributes) >= SERVER_ATTRIBUTES
