"""Prometheus metrics under Dynamo 1.6.1's names (extra ``trioplane[metrics]``).

``open_worker(..., metrics=...)`` and ``open_endpoint_client(..., metrics=...)``
take a :class:`Metrics` (``Metrics(registry)`` for a registry of yours) or
``True`` (the default registry). The worker then exposes Dynamo's worker families
(``dynamo_component_*`` per endpoint, labelled ``dynamo_component``,
``dynamo_endpoint``, ``dynamo_namespace``, ``worker_id``, and the process-wide
``dynamo_work_handler_*``), the endpoint client Dynamo's caller families
(``dynamo_request_plane_*``, ``dynamo_transport_*``), each with Dynamo's help
text, labels, buckets and meanings (captured from real 1.6.1 processes), so
dashboards and alerts made for Dynamo work unchanged. ``trioplane_*`` families
add what Dynamo does not measure. docs/observability.rst lists them all.

Recording is plain integer arithmetic and a bisection per histogram sample, with
no locks (one Trio thread); the registry reads it when scraped, through one
collector per :class:`Metrics`. Nothing is created at import time, and without
``metrics`` nothing is recorded on the caller's side at all.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trioplane._errors import BadArgumentType, MissingExtra

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from trioplane.endpoint import EndpointClient
    from trioplane.worker import Worker

__all__ = [
    "CallerMetrics",
    "EndpointCounters",
    "Histogram",
    "Metrics",
    "WorkerMetrics",
    "as_metrics",
]

#: Bucket bounds of Dynamo 1.6.1's histograms (seconds).
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    20,
    30,
    60,
    120,
    300,
    600,
)
TRANSIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1)
FIRST_RESPONSE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
QUEUE_BUCKETS = TRANSIT_BUCKETS
SEND_BUCKETS = TRANSIT_BUCKETS
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

#: The labels of Dynamo's per-endpoint worker families, in Dynamo's (sorted) order.
ENDPOINT_LABELS = ("dynamo_component", "dynamo_endpoint", "dynamo_namespace", "worker_id")


class Histogram:
    """Observations counted into fixed buckets (no I/O, no locks): ``le`` semantics,
    a sample equal to a bound counts in that bound's bucket."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs as Prometheus exposes them, ending with ``+Inf``."""
        total = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else _number(bound), float(total)))
        return buckets

    def merge(self, other: Histogram) -> None:
        for i, count in enumerate(other.counts):
            self.counts[i] += count
        self.sum += other.sum


def _number(value: float) -> str:
    """``1``, ``0.0001``: a bound as Dynamo prints it."""
    return format(value, "f").rstrip("0").rstrip(".") if value != int(value) else str(int(value))


@dataclass
class EndpointCounters:
    """What a worker counts per served endpoint instance (Dynamo's ``dynamo_component_*``)."""

    namespace: str
    component: str
    endpoint: str
    worker_id: str
    requests: int = 0
    cancellations: int = 0
    inflight: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    handler_errors: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    duration: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS))

    @property
    def labels(self) -> tuple[str, str, str, str]:
        return (self.component, self.endpoint, self.namespace, self.worker_id)

    def error(self, error_type: str) -> None:
        """Count one of Dynamo's ``error_type``\\ s: ``generate`` (the handler could not
        start a stream), ``publish_final`` (the caller left before the end),
        ``deserialization`` (the request could not be decoded)."""
        self.errors[error_type] = self.errors.get(error_type, 0) + 1


@dataclass
class WorkerMetrics:
    """A worker's process-wide samples (Dynamo's ``dynamo_work_handler_*`` histograms)."""

    network_transit: Histogram = field(default_factory=lambda: Histogram(TRANSIT_BUCKETS))
    first_response: Histogram = field(default_factory=lambda: Histogram(FIRST_RESPONSE_BUCKETS))
    started: float = field(default_factory=time.monotonic)

    def transit(self, send_ts_ns: str | None) -> None:
        """Observe the caller-to-worker transit from the ``x-frontend-send-ts-ns`` header."""
        if send_ts_ns is None:
            return
        try:
            elapsed = (time.time_ns() - int(send_ts_ns)) / 1e9
        except ValueError:
            return
        if elapsed >= 0:
            self.network_transit.observe(elapsed)

    def uptime(self) -> float:
        return time.monotonic() - self.started


@dataclass
class CallerMetrics:
    """An endpoint client's samples (Dynamo's ``dynamo_request_plane_*`` histograms, and
    trioplane's counts of what went wrong)."""

    queue: Histogram = field(default_factory=lambda: Histogram(QUEUE_BUCKETS))
    send: Histogram = field(default_factory=lambda: Histogram(SEND_BUCKETS))
    first_item: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    call_home_timeouts: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def absorb(self, other: CallerMetrics) -> None:
        """Add ``other``'s samples to these (a closed client's, kept by :class:`Metrics`)."""
        self.queue.merge(other.queue)
        self.send.merge(other.send)
        self.first_item.merge(other.first_item)
        self.call_home_timeouts += other.call_home_timeouts
        for mine, theirs in ((self.rejections, other.rejections), (self.failures, other.failures)):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count

    def rejected(self, reason: str) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    def failed(self, outcome: str) -> None:
        self.failures[outcome] = self.failures.get(outcome, 0) + 1


class Metrics:
    """The metrics of the workers and endpoint clients given it, in one registry.

    One collector is registered in ``registry`` (default: prometheus-client's
    default registry) when the first worker or client attaches. Caller families
    are process-wide as in Dynamo: several endpoint clients sharing a
    :class:`Metrics` add up.
    """

    _default: Metrics | None = None

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        try:
            import prometheus_client
        except ImportError as exc:
            raise MissingExtra("metrics (metrics=)", "prometheus-client", "metrics") from exc
        self.registry: CollectorRegistry = registry or prometheus_client.REGISTRY
        self._workers: list[Worker] = []
        self._clients: list[EndpointClient] = []
        #: What closed endpoint clients counted, so that caller counters stay monotonic
        #: (they are process-wide, as Dynamo's): samples, and per-transport totals.
        self.retired = CallerMetrics()
        self.retired_transports: dict[str, list[int]] = {}
        self.retired_dropped = 0
        self._registered = False

    @classmethod
    def default(cls) -> Metrics:
        """The one :class:`Metrics` of prometheus-client's default registry."""
        if cls._default is None:
            cls._default = cls()
        return cls._default

    def attach(self, source: Worker | EndpointClient) -> None:
        """Include ``source`` in scrapes from now on (until :meth:`detach`)."""
        from trioplane.worker import Worker

        if isinstance(source, Worker):
            self._workers.append(source)
        else:
            self._clients.append(source)
        if not self._registered:
            self.registry.register(self)
            self._registered = True

    def detach(self, source: Worker | EndpointClient) -> None:
        """Leave ``source`` out of scrapes from now on."""
        self._workers = [w for w in self._workers if w is not source]
        if any(c is source for c in self._clients):
            self._clients = [c for c in self._clients if c is not source]
            self._retire(source)  # type: ignore[arg-type]

    def _retire(self, client: EndpointClient) -> None:
        if client.metrics_samples is not None:
            self.retired.absorb(client.metrics_samples)
        for kind, stats in client._transport_stats().items():
            totals = self.retired_transports.setdefault(kind, [0, 0, 0])
            totals[0] += stats.bytes_sent
            totals[1] += stats.bytes_received
            totals[2] += stats.errors
        self.retired_dropped += client.response_plane.statistics().dropped_connections

    def collect(self) -> Iterator[Metric]:
        """The families, as the registry asks for them (sorted by name, as Dynamo's)."""
        from trioplane import _metric_families

        families = [
            *_metric_families.worker_families(self._workers),
            *_metric_families.caller_families(self._clients, self),
        ]
        families.sort(key=lambda family: family.name)
        yield from families


def as_metrics(option: Metrics | bool | None) -> Metrics | None:
    """A ``metrics=`` option: a :class:`Metrics`, ``True`` (the default registry's) or off."""
    if option is None or option is False:
        return None
    if option is True:
        return Metrics.default()
    if isinstance(option, Metrics):
        return option
    raise BadArgumentType(f"metrics must be a trioplane.metrics.Metrics or a bool, not {option!r}")
