"""OpenTelemetry spans for calls and handled requests, named and linked as Dynamo's.

With ``opentelemetry-api`` installed (extra ``trioplane[otel]``) and a tracer
provider configured (the global one, or ``tracer_provider=`` on the endpoint
client or the worker), each call is a client span ``router.route_request`` whose
id goes to the worker in the W3C ``traceparent`` header, and each request a
worker handles is a server span ``handle_payload`` parented on the caller's
``traceparent``. These are the spans, kinds and attributes a Dynamo 1.6.1 process
makes (captured from real processes), so traces run through Dynamo workers and
trioplane workers alike. Without the package, or without a configured provider,
nothing is recorded and nothing is sent (as Dynamo with tracing off), at the cost
of one attribute check per call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from trioplane._errors import MissingExtra

if TYPE_CHECKING:
    from types import ModuleType

    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "CLIENT_SPAN",
    "SERVER_SPAN",
    "Tracing",
    "current",
    "parent_span_id",
    "record_failure",
    "span_ids",
    "trace_headers",
]

CLIENT_SPAN = "router.route_request"
SERVER_SPAN = "handle_payload"
#: Dynamo's names of the router modes, for the client span's ``router_mode``.
ROUTER_MODES = {
    "round_robin": "RoundRobin",
    "random": "Random",
    "least_loaded": "LeastLoaded",
    "power_of_two": "PowerOfTwo",
    "direct": "Direct",
}
_UNLOADED: Any = object()
#: ``opentelemetry.trace``, imported on first use (``None``: not installed).
otel_trace: ModuleType | None = _UNLOADED
_W3C: TextMapPropagator | None = None


def _opentelemetry() -> ModuleType | None:
    """``opentelemetry.trace``, imported the first time tracing is asked about."""
    global otel_trace, _W3C
    if otel_trace is _UNLOADED:
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:  # the extra is not installed: tracing is off
            otel_trace = None
        else:
            otel_trace, _W3C = trace, TraceContextTextMapPropagator()
    return otel_trace


#: Whether ``OTEL_PYTHON_TRACER_PROVIDER`` names a provider (read once: a hot path).
_PROVIDER_FROM_ENV: bool | None = None


def _global_provider(trace: ModuleType) -> TracerProvider | None:
    """``trace.get_tracer_provider()``, or ``None`` when none is configured, without
    its look at the environment on every call (µs per call) while none is set."""
    global _PROVIDER_FROM_ENV
    provider: TracerProvider | None = getattr(trace, "_TRACER_PROVIDER", _UNLOADED)
    if provider is None:  # none set in code (yet): the environment may name one
        if _PROVIDER_FROM_ENV is None:
            _PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
        if not _PROVIDER_FROM_ENV:
            return None
    elif provider is not _UNLOADED:
        return provider
    return trace.get_tracer_provider()  # type: ignore[no-any-return]


class Tracing:
    """Where a client's or a worker's spans go: ``provider``, else the global provider
    once one is configured (checked per call, so one set up later is used)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        if provider is not None and _opentelemetry() is None:
            raise MissingExtra("tracer_provider", "opentelemetry-api", "otel")
        self._provider = provider
        self._tracers: dict[int, Tracer] = {}

    def tracer(self) -> Tracer | None:
        """The tracer to use now, or ``None`` when tracing is off."""
        trace = _opentelemetry()
        if trace is None:
            return None
        provider = self._provider or _global_provider(trace)
        if provider is None or isinstance(
            provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        ):
            return None  # nothing configured: no spans, no headers
        tracer = self._tracers.get(id(provider))
        if tracer is None:
            from trioplane._version import __version__

            tracer = provider.get_tracer("trioplane", __version__)
            self._tracers = {id(provider): tracer}
        return tracer

    def start_client_span(
        self, request_id: str, router_mode: str, parent: Span | None
    ) -> Span | None:
        """A call's span (``router.route_request``, CLIENT), child of ``parent`` (the
        handler's span when the call forwards a context) or of the current span."""
        tracer = self.tracer()
        if tracer is None or otel_trace is None:
            return None
        context = otel_trace.set_span_in_context(parent) if parent is not None else None
        return tracer.start_span(
            CLIENT_SPAN,
            context=context,
            kind=otel_trace.SpanKind.CLIENT,
            attributes={
                "request_id": request_id,
                "router_mode": ROUTER_MODES.get(router_mode, router_mode),
                "migration.is_retry": False,
            },
        )

    def start_server_span(
        self,
        headers: Mapping[str, str],
        endpoint: tuple[str, str, str],
        instance_id: int,
        request_id: str,
    ) -> Span | None:
        """A handled request's span (``handle_payload``, SERVER), child of the caller's
        ``traceparent`` if it sent one, with Dynamo's attributes."""
        tracer = self.tracer()
        if tracer is None or _W3C is None or otel_trace is None:
            return None
        lowered = {k.lower(): v for k, v in headers.items()}
        parent = _W3C.extract(lowered)
        namespace, component, name = endpoint
        attributes: dict[str, Any] = {
            "namespace": namespace,
            "component": component,
            "endpoint": name,
            "instance_id": str(instance_id),
            "request_id": request_id,
        }
        if "x-request-id" in lowered:
            attributes["x_request_id"] = lowered["x-request-id"]
        if "tracestate" in lowered:
            attributes["tracestate"] = lowered["tracestate"]
        return tracer.start_span(
            SERVER_SPAN, context=parent, kind=otel_trace.SpanKind.SERVER, attributes=attributes
        )


def span_ids(span: Span | None) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` in hex, or ``None`` for no span (or an invalid one)."""
    if span is None:
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def trace_headers(span: Span | None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) naming ``span`` as the parent; ``{}`` if none.

    The flags are W3C level 1's (sampled or not): Dynamo 1.6.1 ignores a
    ``traceparent`` with level 2's "random" flag, which recent SDKs set on new traces.
    """
    if span is None:
        return {}
    context = span.get_span_context()
    if not context.is_valid:
        return {}
    flags = context.trace_flags & 0x01
    headers = {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"}
    state = context.trace_state.to_header() if context.trace_state else ""
    if state:
        headers["tracestate"] = state
    return headers


def current(span: Span | None) -> AbstractContextManager[Any]:
    """Make ``span`` the current span (its children: the handler's own spans, its calls)
    and end it on exit, recording an exception that escapes; nothing for ``None``."""
    if span is None or otel_trace is None:
        return nullcontext()
    manager: AbstractContextManager[Any] = otel_trace.use_span(span, end_on_exit=True)
    return manager


def record_failure(span: Span | None, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc`` (a handler's error, a call's)."""
    if span is not None and otel_trace is not None:
        span.record_exception(exc)
        span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, str(exc)))


def parent_span_id(span: Span | None) -> str | None:
    """The id of ``span``'s parent in hex (the caller's span for a server span)."""
    parent = getattr(span, "parent", None)  # the SDK's spans have it; the API's do not
    if parent is None or not parent.is_valid:
        return None
    return format(parent.span_id, "016x")
