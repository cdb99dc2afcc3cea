"""The metric families of workers and endpoint clients, built when a registry scrapes.

Names, help texts, label names and buckets are Dynamo 1.6.1's (captured from real
processes); ``trioplane_*`` families are trioplane's own. Imported by
:meth:`trioplane.metrics.Metrics.collect` only, so prometheus-client is needed only
when metrics are on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from trioplane.metrics import (
    ENDPOINT_LABELS,
    FIRST_RESPONSE_BUCKETS,
    QUEUE_BUCKETS,
    SEND_BUCKETS,
    TRANSIT_BUCKETS,
    TTFT_BUCKETS,
    EndpointCounters,
    Histogram,
)

if TYPE_CHECKING:
    from trioplane.endpoint import EndpointClient
    from trioplane.metrics import Metrics
    from trioplane.worker import Worker

WORK_HANDLER = "work handler"


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _histogram(
    name: str, doc: str, histograms: Iterable[Histogram], bounds: tuple[float, ...]
) -> Metric:
    total = Histogram(bounds)
    for histogram in histograms:
        total.merge(histogram)
    family = HistogramMetricFamily(name, doc, labels=())
    family.add_metric((), total.cumulative(), total.sum)
    return family


def _per_endpoint(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    doc: str,
    counters: list[EndpointCounters],
    value: str,
) -> Metric:
    family = kind(name, doc, labels=ENDPOINT_LABELS)
    for c in counters:
        family.add_metric(c.labels, float(getattr(c, value)))
    return family


def worker_families(workers: list[Worker]) -> Iterator[Metric]:
    """Dynamo's worker families (``dynamo_component_*``, ``dynamo_work_handler_*``...)."""
    if not workers:
        return
    counters = [c for w in workers for c in w._endpoint_counters.values()]
    for name, doc, value in (
        (
            "dynamo_component_requests",
            "Total number of requests processed by work handler",
            "requests",
        ),
        (
            "dynamo_component_cancellation",
            "Total number of requests cancelled by work handler",
            "cancellations",
        ),
        (
            "dynamo_component_request_bytes",
            "Total number of bytes received in requests by work handler",
            "request_bytes",
        ),
        (
            "dynamo_component_response_bytes",
            "Total number of bytes sent in responses by work handler",
            "response_bytes",
        ),
        (
            "trioplane_worker_handler_errors",
            "Handler exceptions sent to the caller as error items (Dynamo counts none)",
            "handler_errors",
        ),
    ):
        yield _per_endpoint(CounterMetricFamily, name, doc, counters, value)
    yield _per_endpoint(
        GaugeMetricFamily,
        "dynamo_component_inflight_requests",
        "Number of requests currently being processed by work handler",
        counters,
        "inflight",
    )
    errors = CounterMetricFamily(
        "dynamo_component_errors",
        "Total number of errors in work handler processing",
        labels=(*ENDPOINT_LABELS[:3], "error_type", "worker_id"),
    )
    for c in counters:
        for error_type, count in sorted(c.errors.items()):
            errors.add_metric(
                (c.component, c.endpoint, c.namespace, error_type, c.worker_id), count
            )
    if errors.samples:  # as Dynamo's: absent until the first error
        yield errors
    duration = HistogramMetricFamily(
        "dynamo_component_request_duration_seconds",
        "Time spent processing requests by work handler",
        labels=ENDPOINT_LABELS,
    )
    for c in counters:
        duration.add_metric(c.labels, c.duration.cumulative(), c.duration.sum)
    yield duration
    uptime = GaugeMetricFamily(
        "dynamo_component_uptime_seconds",
        "Total uptime of the DistributedRuntime in seconds",
        labels=("worker_id",),
    )
    for w in workers:
        uptime.add_metric((w._worker_id,), w._samples.uptime())
    yield uptime
    stats = [w.statistics() for w in workers]
    in_flight = sum(s.calls_in_flight for s in stats)
    yield _gauge(
        "dynamo_engine_request",
        "Current number of requests being handled by the engine (--engine-request-limit)",
        in_flight,
    )
    yield _gauge(
        "dynamo_work_handler_pool_active_tasks",
        "Current number of active worker-pool tasks (permits in use)",
        in_flight,
    )
    yield _gauge(
        "dynamo_work_handler_pool_capacity",
        "Configured worker-pool capacity (total permits)",
        sum(w.max_concurrency for w in workers),
    )
    yield _counter(
        "dynamo_rejection_request",
        "Requests rejected because the worker is at capacity (engine in-flight limit and "
        "Dynamo queue both full)",
        sum(w._refused_at_capacity for w in workers),
    )
    yield _histogram(
        "dynamo_work_handler_network_transit_seconds",
        "Frontend-to-backend network transit time (cross-process wall-clock, seconds)",
        (w._samples.network_transit for w in workers),
        TRANSIT_BUCKETS,
    )
    yield _histogram(
        "dynamo_work_handler_time_to_first_response_seconds",
        "Backend processing time from handle_payload entry to prologue sent (seconds)",
        (w._samples.first_response for w in workers),
        FIRST_RESPONSE_BUCKETS,
    )
    yield _counter(
        "trioplane_worker_call_home_failures",
        "Accepted requests whose caller could not be reached or stopped reading",
        sum(s.call_home_failures for s in stats),
    )
    refused = CounterMetricFamily(
        "trioplane_worker_requests_refused",
        "Requests answered 'Server overloaded' or 'Server unavailable', by reason",
        labels=("reason",),
    )
    refused.add_metric(("capacity",), sum(w._refused_at_capacity for w in workers))
    refused.add_metric(
        ("unknown_endpoint",), sum(w._refused - w._refused_at_capacity for w in workers)
    )
    yield refused


def caller_families(clients: list[EndpointClient], metrics: Metrics) -> Iterator[Metric]:
    """Dynamo's caller families (``dynamo_request_plane_*``, ``dynamo_transport_*``) and
    trioplane's own; closed clients' counts (``metrics.retired*``) included."""
    if not clients and not metrics.retired_transports and not metrics.retired.send.count:
        return
    samples = [metrics.retired, *(c.metrics_samples for c in clients if c.metrics_samples)]
    yield _gauge(
        "dynamo_request_plane_inflight_requests",
        "Currently in-flight requests at AddressedPushRouter",
        sum(len(c._calls) for c in clients),
    )
    yield _histogram(
        "dynamo_request_plane_queue_seconds",
        "Time from generate() entry to send_request() (seconds)",
        (s.queue for s in samples),
        QUEUE_BUCKETS,
    )
    yield _histogram(
        "dynamo_request_plane_send_seconds",
        "Time for send_request() to complete (seconds)",
        (s.send for s in samples),
        SEND_BUCKETS,
    )
    yield _histogram(
        "dynamo_request_plane_roundtrip_ttft_seconds",
        "Time from send_request() to first response item (seconds)",
        (s.first_item for s in samples),
        TTFT_BUCKETS,
    )
    by_transport: dict[str, list[tuple[int, int, int, int, int]]] = {
        kind: [(sent, received, errors, 0, 0)]
        for kind, (sent, received, errors) in metrics.retired_transports.items()
    }
    for client in clients:
        for kind, stats in client._transport_stats().items():
            by_transport.setdefault(kind, []).append(
                (
                    stats.bytes_sent,
                    stats.bytes_received,
                    stats.errors,
                    stats.active_connections,
                    stats.idle_connections,
                )
            )
    tcp = [sum(column) for column in zip(*by_transport.get("tcp", [(0, 0, 0, 0, 0)]), strict=True)]
    yield _counter(
        "dynamo_transport_tcp_bytes_sent", "Total bytes sent by TCP request client", tcp[0]
    )
    yield _counter(
        "dynamo_transport_tcp_bytes_received", "Total bytes received by TCP request client", tcp[1]
    )
    yield _counter(
        "dynamo_transport_tcp_errors", "Total TCP request errors (send failure or timeout)", tcp[2]
    )
    nats_errors = sum(row[2] for row in by_transport.get("nats", []))
    if nats_errors:  # as Dynamo's: absent until the first error
        family = CounterMetricFamily(
            "dynamo_transport_nats_errors", "Total NATS request errors", labels=("error_type",)
        )
        family.add_metric(("request_failed",), nats_errors)
        yield family
    connections = GaugeMetricFamily(
        "trioplane_request_plane_connections",
        "Request-plane connections held, by transport and state (active: requests in flight)",
        labels=("state", "transport"),
    )
    for kind, rows in sorted(by_transport.items()):
        connections.add_metric(("active", kind), sum(row[3] for row in rows))
        connections.add_metric(("idle", kind), sum(row[4] for row in rows))
    yield connections
    planes = [c.response_plane.statistics() for c in clients]
    yield _gauge(
        "trioplane_response_plane_connections",
        "Call-home connections held by the response plane (streams being read or lingering)",
        sum(p.open_connections for p in planes),
    )
    yield _counter(
        "trioplane_response_plane_dropped_connections",
        "Call-home connections dropped for a bad or missing handshake or an unknown subject",
        metrics.retired_dropped + sum(p.dropped_connections for p in planes),
    )
    yield _counter(
        "trioplane_call_home_timeouts",
        "Calls accepted whose worker never called home within call_home_timeout",
        sum(s.call_home_timeouts for s in samples),
    )
    yield _by_key(
        "trioplane_request_rejections",
        "Requests a worker refused, by reason (overloaded: 'Server overloaded')",
        "reason",
        (s.rejections for s in samples),
    )
    yield _by_key(
        "trioplane_request_failures",
        "Calls that failed, by Dynamo's request.outcome (connection_failed, timeout, ...)",
        "outcome",
        (s.failures for s in samples),
    )
    per_instance = GaugeMetricFamily(
        "trioplane_instance_inflight_requests",
        "Calls in flight from this process, per instance",
        labels=ENDPOINT_LABELS,
    )
    for client in clients:
        for instance_id, count in sorted(client.router.statistics().in_flight.items()):
            labels = (client.component, client.endpoint, client.namespace, f"{instance_id:x}")
            per_instance.add_metric(labels, count)
    yield per_instance


def _by_key(name: str, doc: str, label: str, counts: Iterable[Mapping[str, int]]) -> Metric:
    total: dict[str, int] = {}
    for mapping in counts:
        for key, value in mapping.items():
            total[key] = total.get(key, 0) + value
    family = CounterMetricFamily(name, doc, labels=(label,))
    for key, value in sorted(total.items()):
        family.add_metric((key,), value)
    return family
