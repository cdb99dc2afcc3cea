"""OpenTelemetry spans: a call's client span, the handled request's server span, and
the links between them across hops (trioplane on both sides; against real Dynamo
processes in test_dynamo_tracing.py)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import trioplane
import trioplane.tracing
from trioplane.discovery import FileDiscovery
from trioplane.worker import RequestContext, open_worker

seen: dict[str, Any] = {}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def traced(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    provider = seen.get("provider") or trace.get_tracer_provider()
    seen["context"] = (context.trace_id, context.span_id, context.parent_span_id)
    seen["headers"] = dict(context.headers)
    seen["trace_headers"] = context.trace_headers()
    with provider.get_tracer("app").start_as_current_span("app.work"):
        yield {"ok": True}
    if request.get("fail"):
        raise ValueError("boom")


async def forwarding(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    async with (
        trioplane.open_endpoint_client(
            "ns.tr.traced", FileDiscovery(seen["kv"]), tracer_provider=seen["provider"]
        ) as downstream,
        downstream.generate({}, context=context) as items,
    ):
        async for item in items:
            yield item


@pytest.fixture
async def kv(tmp_path: Path, provider: TracerProvider) -> AsyncIterator[Path]:
    seen.clear()
    seen["kv"], seen["provider"] = tmp_path, provider
    endpoints = {"ns.tr.traced": traced, "ns.tr.forward": forwarding}
    async with open_worker(endpoints, discovery_root=tmp_path, tracer_provider=provider):
        yield tmp_path


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


async def test_the_server_span_is_the_client_spans_child(
    kv: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with trioplane.open_endpoint_client(
        "ns.tr.traced", FileDiscovery(kv), tracer_provider=provider
    ) as c:
        assert await c.call({}, request_id="req-1") == [{"ok": True}]
    spans = exporter.get_finished_spans()
    (client,) = by_name(spans, "router.route_request")
    (server,) = by_name(spans, "handle_payload")
    (app,) = by_name(spans, "app.work")
    assert client.kind is trace.SpanKind.CLIENT
    assert server.kind is trace.SpanKind.SERVER
    trace_id, client_span_id = hex_ids(client)
    assert server.parent is not None
    assert server.parent.is_remote
    assert format(server.parent.span_id, "016x") == client_span_id
    assert app.parent is not None
    assert app.parent.span_id == server.context.span_id
    flags = "01"  # sampled; never W3C level 2's "random" (0x02), which Dynamo ignores
    assert seen["headers"]["traceparent"] == f"00-{trace_id}-{client_span_id}-{flags}"
    assert seen["context"] == (trace_id, hex_ids(server)[1], client_span_id)
    assert seen["trace_headers"] == {
        "traceparent": f"00-{trace_id}-{hex_ids(server)[1]}-{flags}",
        "request-id": "req-1",
    }
    assert client.attributes is not None
    assert server.attributes is not None
    assert dict(client.attributes) == {
        "request_id": "req-1",
        "router_mode": "RoundRobin",
        "migration.is_retry": False,
        "worker_id": server.attributes["instance_id"],
        "request.outcome": "success",
    }
    assert [e.name for e in client.events] == ["route request completed"]
    assert {k: server.attributes[k] for k in ("namespace", "component", "endpoint")} == {
        "namespace": "ns",
        "component": "tr",
        "endpoint": "traced",
    }
    assert server.attributes["request_id"] == "req-1"


async def test_a_handler_error_fails_both_spans(
    kv: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with trioplane.open_endpoint_client(
        "ns.tr.traced", FileDiscovery(kv), tracer_provider=provider
    ) as c:
        with pytest.raises(trioplane.InvalidArgument):
            await c.call({"fail": True})
    spans = exporter.get_finished_spans()
    (client,) = by_name(spans, "router.route_request")
    (server,) = by_name(spans, "handle_payload")
    assert server.status.status_code is trace.StatusCode.ERROR
    assert next(e.name for e in server.events) == "exception"
    assert client.status.status_code is trace.StatusCode.ERROR
    assert client.attributes is not None
    assert client.attributes["request.outcome"] == "error"


async def test_a_call_left_early_is_cancelled(
    kv: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with trioplane.open_endpoint_client(
        "ns.tr.traced", FileDiscovery(kv), tracer_provider=provider
    ) as c:
        async with c.generate({}) as items:
            pass
        del items
    (client,) = by_name(exporter.get_finished_spans(), "router.route_request")
    assert client.attributes is not None
    assert client.attributes["request.outcome"] == "cancelled"
    assert client.attributes["cancellation.signal"] == "stop"


async def test_a_call_that_forwards_its_context_continues_the_trace(
    kv: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """caller -> forward (server, then client) -> traced (server): one trace, a chain."""
    async with trioplane.open_endpoint_client(
        "ns.tr.forward", FileDiscovery(kv), tracer_provider=provider
    ) as c:
        await c.call({})
    spans = exporter.get_finished_spans()
    outer_client, inner_client = sorted(
        by_name(spans, "router.route_request"), key=lambda s: s.start_time or 0
    )
    outer_server, inner_server = sorted(
        by_name(spans, "handle_payload"), key=lambda s: s.start_time or 0
    )
    chain = [outer_client, outer_server, inner_client, inner_server]
    assert len({hex_ids(s)[0] for s in chain}) == 1
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert child.parent.span_id == parent.context.span_id


async def test_without_a_provider_nothing_is_traced_or_sent(tmp_path: Path) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    async with (
        open_worker({"ns.tr.traced": traced}, discovery_root=tmp_path),
        trioplane.open_endpoint_client("ns.tr.traced", FileDiscovery(tmp_path)) as c,
    ):
        await c.call({})
    assert "traceparent" not in seen["headers"]
    assert seen["context"] == (None, None, None)
    assert seen["trace_headers"] is None


@pytest.fixture
def without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trioplane.tracing, "otel_trace", None)
    return


def test_without_the_package_tracing_is_off(without_opentelemetry: None) -> None:
    assert trioplane.tracing.Tracing().tracer() is None
    with pytest.raises(trioplane.MissingExtra, match=r"pip install 'trioplane\[otel\]'"):
        trioplane.tracing.Tracing(TracerProvider())
