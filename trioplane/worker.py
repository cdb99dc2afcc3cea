"""The worker side: serve Dynamo endpoints that Dynamo's own clients (and trioplane's) call.

``async with trioplane.open_worker({"ns.comp.ep": handler}) as worker:`` listens on
the TCP request plane, registers each endpoint's instance in discovery (Dynamo's
file or etcd backend, as ``DYN_DISCOVERY_BACKEND`` says, or ``discovery=``), and
runs ``handler(request, context)`` (an async generator) for each accepted request,
streaming what it yields back over the response plane:

1. the request frame is acked at once (empty ack; ``Server unavailable: unknown
   endpoint <path>`` for an unknown path; ``Server overloaded: worker at
   capacity`` past ``max_concurrency``), as Dynamo's worker does;
2. the worker calls the caller home: handshake, prologue, each item in Dynamo's
   Python-worker wrapper (``{"data": item}``), ``complete_final`` and the sentinel.
   A handler that raises sends Dynamo's error annotation
   (``{"event": "error", "error": {...}}``) before the end;
3. ``"stop"`` from the caller sets ``context.is_stopped()`` (the handler decides
   when to end); ``"kill"`` also cancels the handler. After either the stream
   ends without ``complete_final``, as Dynamo's does.

Closing stops accepting, deregisters, gives calls in flight ``grace_period`` to
finish, then cancels them.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

import trio

from trioplane._checks import check_count, check_port, check_seconds
from trioplane._errors import (
    BadArgument,
    BadArgumentType,
    ConnectError,
    EngineShutdown,
    InvalidArgument,
    ProtocolError,
)
from trioplane._logging import RateLimitedLog
from trioplane._types import Instance
from trioplane._util import running
from trioplane.addresses import format_host_port, parse_endpoint
from trioplane.discovery import (
    FileDiscovery,
    Registration,
    RegistrationStatistics,
    Registry,
    StaticDiscovery,
    discovery_from_env,
)
from trioplane.metrics import EndpointCounters, Metrics, WorkerMetrics, as_metrics
from trioplane.nats import NatsOptions, start_nats_connection
from trioplane.servers import (
    ACCEPT,
    CallHomeLimits,
    CallHomeSender,
    CallHomeWatch,
    NatsPlaneServer,
    PlaneServer,
    Reply,
    ServerLimits,
    ServerStatistics,
    TcpPlaneServer,
    open_call_home,
)
from trioplane.servers.callhome import KILL, STALLED, STOP
from trioplane.status import StatusOptions, StatusServer, resolve_status
from trioplane.tls import TcpTls
from trioplane.tracing import (
    Tracing,
    current,
    parent_span_id,
    record_failure,
    span_ids,
    trace_headers,
)
from trioplane.wire.codecs import PayloadCodec, get_codec
from trioplane.wire.control import ControlMessage
from trioplane.wire.errors import error_object, prologue_error, unencodable_item_error
from trioplane.wire.rejections import WORKER_AT_CAPACITY, is_overloaded, unknown_endpoint
from trioplane.wire.response import Annotated, encode_item, encode_prologue
from trioplane.wire.tcp import RequestFrame
from trioplane.wire.twopart import decode_two_part

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

    from trioplane.servers.http import HttpPlaneServer, HttpPlaneStatistics

__all__ = [
    "Handler",
    "HealthCheck",
    "RequestContext",
    "Worker",
    "WorkerStatistics",
    "open_worker",
    "serve_endpoint",
]

log = logging.getLogger(__name__)

#: ``handler(request, context)``: an async generator of response items.
Handler = Callable[[Any, "RequestContext"], AsyncIterator[Any]]
#: How long closing lets cancelled calls tell their callers ``EngineShutdown``.
SHUTDOWN_NOTICE = 1.0
#: The instance transport kind each request plane advertises.
_INSTANCE_KINDS = {"tcp": "tcp", "nats": "nats_tcp", "websocket": "websocket", "http": "http"}
#: Dynamo's HTTP request-plane root.
HTTP_ROOT = "/v1/rpc"


class RequestContext:
    """What a handler knows about its call, and how it learns it should stop."""

    def __init__(self, request_id: str, metadata: Mapping[str, str], headers: Mapping[str, str]):
        self.request_id = request_id
        self.metadata = dict(metadata)
        self.headers = dict(headers)
        #: The OpenTelemetry span of this request (``handle_payload``), when tracing is on.
        self.span: Span | None = None
        self._stopped = trio.Event()
        self._killed = False

    def id(self) -> str:
        """The request id (Dynamo's context id)."""
        return self.request_id

    def is_stopped(self) -> bool:
        """The caller sent ``"stop"`` or ``"kill"`` (or went away)."""
        return self._stopped.is_set()

    def is_killed(self) -> bool:
        """The caller sent ``"kill"`` (or stopped reading): the handler is being cancelled."""
        return self._killed

    async def wait_stopped(self) -> None:
        """Until the caller stops the call."""
        await self._stopped.wait()

    @property
    def trace_id(self) -> str | None:
        """The trace this request is part of (hex), or ``None`` with tracing off."""
        ids = span_ids(self.span)
        return ids[0] if ids else None

    @property
    def span_id(self) -> str | None:
        """This request's span id (hex), or ``None`` with tracing off."""
        ids = span_ids(self.span)
        return ids[1] if ids else None

    @property
    def parent_span_id(self) -> str | None:
        """The caller's span id (hex), or ``None`` (no caller span, or tracing off)."""
        return parent_span_id(self.span)

    def trace_headers(self) -> dict[str, str] | None:
        """What a call made for this request sends on (Dynamo's ``trace_headers()``):
        ``traceparent`` naming this request's span, ``tracestate``, ``x-request-id``
        and ``request-id``; ``None`` with tracing off."""
        if self.span is None:
            return None
        headers = trace_headers(self.span)
        upstream = {k.lower(): v for k, v in self.headers.items()}
        if "x-request-id" in upstream:
            headers["x-request-id"] = upstream["x-request-id"]
        headers["request-id"] = self.request_id
        return headers

    def _cancel(self, why: str) -> None:
        """The call home heard ``why``: stop, or kill (a stalled caller is killed too)."""
        self._killed = self._killed or why in (KILL, STALLED)
        self._stopped.set()


@dataclass(frozen=True)
class WorkerStatistics:
    """A snapshot of a worker's counters.

    ``calls_refused`` were answered ``Server overloaded``/``Server unavailable``;
    ``call_home_failures`` were accepted but their caller could not be reached in
    time; ``ready`` is :meth:`Worker.set_ready`'s, ``healthy`` the last health
    check's (``canary_failures`` counts the failed ones); ``registration`` says whether
    the instances are discoverable (and how often an etcd lease was lost and
    restored); ``planes`` has each request-plane server's own statistics.
    """

    calls_in_flight: int = 0
    calls_accepted: int = 0
    calls_refused: int = 0
    handler_errors: int = 0
    call_home_failures: int = 0
    ready: bool = True
    healthy: bool = True
    canary_failures: int = 0
    registration: RegistrationStatistics = field(default_factory=RegistrationStatistics)
    planes: Mapping[str, ServerStatistics | HttpPlaneStatistics] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthCheck:
    """A canary for :class:`Worker`: ``payload`` run through ``endpoint``'s handler.

    When the worker has had no call for ``interval`` seconds, the handler is called
    with ``payload`` (in-process, no network); a first item within ``timeout`` is a
    pass. While it fails (it raised, or was too slow) the worker's instances are
    withdrawn from discovery, so callers route elsewhere; the first pass publishes
    them again. ``endpoint`` defaults to the worker's first.
    """

    payload: Any
    endpoint: str | None = None
    interval: float = 10.0
    timeout: float = 5.0

    def __post_init__(self) -> None:
        check_seconds(self.interval, "a health check's interval", zero=False)
        check_seconds(self.timeout, "a health check's timeout", zero=False)


class Worker:
    """Serves endpoints; see the module doc. Use :func:`open_worker` or ``nursery.start(run)``.

    ``limits`` (:class:`~trioplane.servers.ServerLimits`) bound what each peer of
    the TCP and WebSocket planes may hold (connections, idle time, a frame's and
    a write's time; ``max_frame_size`` overrides its frame cap); ``call_home``
    (:class:`~trioplane.servers.CallHomeLimits`) bounds each call's connection
    back to its caller. ``tls`` (:class:`~trioplane.TcpTls`; default: from
    ``DYN_TCP_TLS_*``, as a Dynamo worker; ``TcpTls()`` is plain text) makes the
    TCP plane serve TLS (a certificate and key; client certificates required with
    a client CA) and the call home dial TLS (a CA, ``insecure``, or an identity).
    """

    def __init__(
        self,
        endpoints: Mapping[str, Handler],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise_host: str | None = None,
        discovery: Registry | None = None,
        discovery_root: str | os.PathLike[str] | None = None,
        register: bool = True,
        codec: str = "msgpack",
        max_concurrency: int = 1024,
        grace_period: float = 5.0,
        max_frame_size: int | None = None,
        transports: Sequence[str] = ("tcp",),
        websocket_port: int = 0,
        http_port: int = 0,
        nats_servers: str | Sequence[str] | None = None,
        nats: NatsOptions | None = None,
        limits: ServerLimits | None = None,
        call_home: CallHomeLimits | None = None,
        tls: TcpTls | None = None,
        health_check: HealthCheck | None = None,
        tracer_provider: TracerProvider | None = None,
        metrics: Metrics | bool | None = None,
        status: StatusOptions | bool | None = None,
    ) -> None:
        if not endpoints:
            raise BadArgument("a worker needs at least one endpoint")
        if isinstance(transports, str):
            raise BadArgumentType(f"transports is a list of planes: [{transports!r}], not a str")
        unknown = set(transports) - set(_INSTANCE_KINDS)
        if unknown or not transports:
            raise BadArgument(
                f"transports are 'tcp', 'nats', 'websocket', 'http'; not {sorted(unknown)}"
            )
        self.transports = tuple(transports)
        for plane in ("http", "websocket"):  # a missing extra is a MissingExtra now, before I/O
            if plane in self.transports:
                importlib.import_module(f"trioplane.servers.{plane}")
        self.websocket_port = check_port(websocket_port, "websocket_port")
        self.http_port = check_port(http_port, "http_port")
        self.nats_servers = nats_servers or os.environ.get("NATS_SERVER")
        self.nats_options: NatsOptions = nats or {}
        if "nats" in self.transports and not self.nats_servers:
            raise BadArgument("the NATS plane needs nats_servers (or $NATS_SERVER)")
        get_codec(codec)
        self.handlers = {parse_endpoint(name): handler for name, handler in endpoints.items()}
        self.host = host
        self.port = check_port(port)
        self.advertise_host = advertise_host or host
        if discovery is None:
            discovery = FileDiscovery(discovery_root) if discovery_root else discovery_from_env()
        elif discovery_root is not None:
            raise BadArgument("give discovery or discovery_root, not both")
        if not isinstance(discovery, Registry):
            raise BadArgumentType(
                f"{type(discovery).__name__} is not a backend a worker registers in"
            )
        self.discovery: Registry = discovery
        self.register = register
        self.codec = codec
        self.max_concurrency = check_count(max_concurrency, "max_concurrency")
        self.grace_period = check_seconds(grace_period, "grace_period")
        self.limits = limits or ServerLimits()
        if max_frame_size is not None:
            self.limits = dataclasses.replace(self.limits, max_frame_size=max_frame_size)
        self.call_home_limits = call_home or CallHomeLimits()
        self.tls = tls or TcpTls.from_env()
        self.health_check = health_check
        self.tracing = Tracing(tracer_provider)
        self.metrics = as_metrics(metrics)
        self.status_options = resolve_status(status)
        #: The status server (``/health``, ``/live``, ``/metrics``) once running, if on.
        self.status: StatusServer | None = None
        self._samples = WorkerMetrics()
        #: Dynamo's per-endpoint counters, by the path the request plane routes on.
        self._endpoint_counters: dict[str, EndpointCounters] = {}
        self._refused_at_capacity = 0
        checked = health_check.endpoint if health_check is not None else None
        if checked is not None and parse_endpoint(checked) not in self.handlers:
            raise BadArgument(f"the health check's endpoint {checked!r} is not served")
        self.instances: list[Instance] = []
        #: The running request-plane servers, by plane (``"tcp"``, ``"websocket"``...).
        self.servers: dict[str, PlaneServer | HttpPlaneServer | NatsPlaneServer] = {}
        self._routes: dict[str, tuple[Handler, Instance]] = {}
        self._active = 0
        self._accepted = 0
        self._refused = 0
        self._handler_errors = 0
        self._call_home_failures = 0
        self._calls: trio.Nursery | None = None
        self._watch: CallHomeWatch | None = None
        self._log = RateLimitedLog(log)  # what callers cause: a few lines a minute per kind
        self._registration: Registration | None = None
        self._registration_lock = trio.Lock()
        self._handler_scopes: set[trio.CancelScope] = set()
        self._published = False
        self._ready = True
        self._healthy = True
        self._closing = False
        self._canary_failures = 0
        self._last_call = 0.0
        self._accepting = trio.CancelScope()
        self._idle = trio.Event()

    @property
    def max_frame_size(self) -> int:
        return self.limits.max_frame_size

    def statistics(self) -> WorkerStatistics:
        """A snapshot of the worker's counters (no I/O)."""
        return WorkerStatistics(
            calls_in_flight=self._active,
            calls_accepted=self._accepted,
            calls_refused=self._refused,
            handler_errors=self._handler_errors,
            call_home_failures=self._call_home_failures,
            ready=self._ready,
            healthy=self._healthy,
            canary_failures=self._canary_failures,
            registration=(
                self._registration.statistics()
                if self._registration is not None
                else RegistrationStatistics()
            ),
            planes={name: server.statistics() for name, server in self.servers.items()},
        )

    async def run(
        self, *, task_status: trio.TaskStatus[list[Instance]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, register, serve until cancelled; reports the instances it serves."""
        if self.metrics is not None:
            self.metrics.attach(self)
        try:
            await self._run(task_status)
        finally:
            if self.metrics is not None:
                self.metrics.detach(self)

    @property
    def _worker_id(self) -> str:
        """Dynamo's ``worker_id`` label for the whole worker: its first instance id, hex."""
        return f"{self.instances[0].instance_id:x}" if self.instances else "0"

    async def _run(self, task_status: trio.TaskStatus[list[Instance]]) -> None:
        async with trio.open_nursery() as calls:
            await self._start_calls(calls)
            async with trio.open_nursery() as service:
                with self._accepting:
                    if self.status_options is not None:
                        await self._serve_status(service, self.status_options)
                    bases = await self._listen(service)
                    async with self._open_registration() as registration:
                        ids = [await registration.new_instance_id() for _ in self.transports]
                        self._make_instances(bases, dict(zip(self.transports, ids, strict=True)))
                        if "nats" in self.transports:
                            await self._serve_nats_plane(service)
                        self._registration = registration
                        await self._sync_registration()
                        if self.health_check is not None:
                            service.start_soon(self._health_loop, self.health_check)
                        task_status.started(list(self.instances))
                        await trio.sleep_forever()

    async def _start_calls(self, calls: trio.Nursery) -> None:
        """Calls run in ``calls``, and so does the watch that hears their callers."""
        self._calls = calls
        self._watch = CallHomeWatch()
        await calls.start(self._watch.run)

    @property
    def closing(self) -> bool:
        """True once :meth:`aclose` began (the worker drains, then stops)."""
        return self._closing

    async def _serve_status(self, nursery: trio.Nursery, options: StatusOptions) -> None:
        """Start the status server; its ``/metrics`` are :attr:`metrics`, or a registry
        of its own when the worker was given none (and prometheus-client is installed)."""
        metrics = self.metrics
        if metrics is None and find_spec("prometheus_client") is not None:
            from prometheus_client import CollectorRegistry

            metrics = Metrics(CollectorRegistry())
            metrics.attach(self)
        self.status = StatusServer(self, options, metrics)
        await nursery.start(self.status.serve)

    def _open_registration(self) -> AbstractAsyncContextManager[Registration]:
        if self.register:
            return self.discovery.open_registration()
        return StaticDiscovery().open_registration()  # ids only: nothing is published

    async def _listen(self, nursery: trio.Nursery) -> dict[str, str]:
        """Start the TCP, WebSocket and HTTP servers; each plane's address base."""
        bases = {}
        if "tcp" in self.transports:
            tcp = TcpPlaneServer(
                self._policy,
                host=self.host,
                port=self.port,
                limits=self._tcp_limits(),
                ssl_context=self.tls.server_context,
            )
            await nursery.start(tcp.serve)
            self.servers["tcp"] = tcp
            self.port = tcp.port
            bases["tcp"] = format_host_port(self.advertise_host, tcp.port)
        if "websocket" in self.transports:
            from trioplane.servers.websocket import WebSocketPlaneServer

            ws = WebSocketPlaneServer(
                self._policy, host=self.host, port=self.websocket_port, limits=self.limits
            )
            await nursery.start(ws.serve)
            self.servers["websocket"] = ws
            self.websocket_port = ws.port
            bases["websocket"] = f"ws://{format_host_port(self.advertise_host, ws.port)}"
        if "http" in self.transports:
            bases["http"] = await self._start_http(nursery)
        return bases

    def _tcp_limits(self) -> ServerLimits:
        """The TCP plane's limits: with TLS, its handshake has Dynamo's TLS deadline."""
        if not self.tls.serves:
            return self.limits
        return dataclasses.replace(self.limits, handshake_timeout=self.tls.handshake_timeout)

    async def _start_http(self, nursery: trio.Nursery) -> str:
        """Serve Dynamo's HTTP plane (``POST /v1/rpc/{path}`` -> 202) with hypercorn."""
        from trioplane.servers.http import HttpPlaneServer, HttpReply, HttpRequest

        def answer(request: HttpRequest) -> HttpReply:
            endpoint = request.path.removeprefix(HTTP_ROOT + "/")
            ack = self._admit(RequestFrame(endpoint, request.headers, request.body))
            if not ack:
                return HttpReply.accept()
            return HttpReply.status_code(503 if is_overloaded(ack) else 404, ack)

        http = HttpPlaneServer(
            policy=answer,
            host=self.host,
            port=self.http_port,
            max_body_size=self.limits.max_frame_size,
            handshake_timeout=self.limits.handshake_timeout,
        )
        await nursery.start(http.serve)
        self.servers["http"] = http
        self.http_port = http.port
        return f"http://{format_host_port(self.advertise_host, http.port)}{HTTP_ROOT}"

    def _make_instances(self, bases: Mapping[str, str], ids: Mapping[str, int]) -> None:
        """One instance per endpoint and plane; a plane's instances share its id (as a
        Dynamo worker's share its lease)."""
        for (namespace, component, endpoint), handler in self.handlers.items():
            for kind in self.transports:
                instance_id = ids[kind]
                if kind == "nats":  # Dynamo's NATS subject for the instance
                    path = address = f"{namespace}_{component}.{endpoint}-{instance_id:x}"
                else:
                    path = f"{instance_id:x}/{namespace}/{component}/{endpoint}"
                    address = f"{bases[kind]}/{path}"
                instance = Instance(
                    namespace, component, endpoint, instance_id, _INSTANCE_KINDS[kind], address,
                    device_type="cpu", request_plane_codec=self.codec,
                )  # fmt: skip
                self._routes[path] = (handler, instance)
                self._endpoint_counters[path] = EndpointCounters(
                    namespace, component, endpoint, f"{instance_id:x}"
                )
                self.instances.append(instance)
        http = self.servers.get("http")
        if http is not None:  # the HTTP server answers 404 for any other path
            http.endpoints = tuple(  # type: ignore[union-attr]
                path for path, (_, i) in self._routes.items() if i.transport_kind == "http"
            )

    async def _serve_nats_plane(self, nursery: trio.Nursery) -> None:
        nats = await start_nats_connection(nursery, self.nats_servers, **self.nats_options)
        subjects = [p for p, (_, i) in self._routes.items() if i.transport_kind == "nats_tcp"]
        server = NatsPlaneServer(
            nats, subjects, self._policy, max_frame_size=self.limits.max_frame_size
        )
        await nursery.start(server.serve)  # subscribed before anyone can discover us
        self.servers["nats"] = server

    async def set_ready(self, ready: bool) -> None:
        """Be routable or not, without stopping: ``False`` withdraws the instances from
        discovery (calls in flight finish, and requests still sent here are served);
        ``True`` publishes them again (if the health check passes)."""
        self._ready = ready
        await self._sync_registration()

    async def _sync_registration(self) -> None:
        """Publish or withdraw, as readiness, health and closing say (one at a time)."""
        async with self._registration_lock:
            registration = self._registration
            want = self.register and self._ready and self._healthy and not self._closing
            if registration is None or want == self._published:
                return
            if want:
                await registration.publish(self.instances)
            else:
                await registration.withdraw()
            self._published = want

    async def _health_loop(self, check: HealthCheck) -> None:
        path = parse_endpoint(check.endpoint) if check.endpoint else next(iter(self.handlers))
        handler = self.handlers[path]
        while True:
            await trio.sleep(check.interval)
            if self._active or trio.current_time() - self._last_call < check.interval:
                continue  # calls are flowing: they are the proof
            healthy = await self._run_canary(handler, check)
            if not healthy:
                self._canary_failures += 1
            if healthy != self._healthy:
                log.warning(
                    "health check %s: instances %s discovery",
                    "passes again" if healthy else "failed",
                    "back in" if healthy else "withdrawn from",
                )
            self._healthy = healthy
            await self._sync_registration()

    async def _run_canary(self, handler: Handler, check: HealthCheck) -> bool:
        context = RequestContext(f"health-check-{uuid.uuid4()}", {}, {})
        with trio.move_on_after(check.timeout):
            try:
                async with aclosing(handler(check.payload, context)) as items:  # type: ignore[type-var]
                    async for _ in items:
                        return True
                self._log.warning("canary", "health check: the handler yielded nothing")
            except Exception as exc:
                self._log.warning("canary", "health check: the handler raised %r", exc)
            return False
        self._log.warning("canary", "health check: no item within %g s", check.timeout)
        return False

    async def aclose(self) -> None:
        """Deregister, stop accepting; calls in flight get ``grace_period``, then their
        handlers are cancelled and their callers told ``EngineShutdown`` (within
        ``SHUTDOWN_NOTICE``), then the calls are cancelled."""
        with trio.CancelScope(shield=True):
            self._closing = True
            await self._sync_registration()
            self._accepting.cancel()
            if self._active:
                with trio.move_on_after(self.grace_period):
                    await self._idle.wait()
            if self._active and self._handler_scopes:
                for scope in list(self._handler_scopes):
                    scope.cancel()
                with trio.move_on_after(SHUTDOWN_NOTICE):
                    await self._idle.wait()
            if self._calls is not None:
                self._calls.cancel_scope.cancel()

    # -- admission -----------------------------------------------------------------------

    def _admit(self, frame: RequestFrame) -> str:
        """Start the call, or say why not: the ack text, empty when accepted."""
        route = self._routes.get(frame.path)
        if route is None:
            self._refused += 1
            return unknown_endpoint(frame.path)
        if self._active >= self.max_concurrency or self._calls is None:
            self._refused += 1
            self._refused_at_capacity += 1
            return WORKER_AT_CAPACITY
        self._active += 1
        self._accepted += 1
        self._last_call = trio.current_time()
        counters = self._endpoint_counters[frame.path]
        counters.requests += 1
        counters.inflight += 1
        counters.request_bytes += len(frame.payload)
        self._start_call(route, counters, frame)
        return ""

    def _start_call(
        self, route: tuple[Handler, Instance], counters: EndpointCounters, frame: RequestFrame
    ) -> None:
        """Run an admitted call in a task of its own (:mod:`trioplane.processes` hands it
        to a child process instead, and calls :meth:`_end_call` when the child is done)."""
        assert self._calls is not None
        self._calls.start_soon(self._call, route, counters, frame)

    def _policy(self, frame: RequestFrame) -> Reply:
        """The TCP, WebSocket and NATS planes' policy: admit, or refuse with Dynamo's text."""
        text = self._admit(frame)
        return ACCEPT if not text else Reply.reject(text)

    # -- one call ------------------------------------------------------------------------

    async def _call(
        self, route: tuple[Handler, Instance], counters: EndpointCounters, frame: RequestFrame
    ) -> None:
        started = time.perf_counter()
        self._samples.transit(frame.headers.get("x-frontend-send-ts-ns"))
        try:
            await self._stream_call(*route, counters, started, frame)
        except Exception:
            log.exception("call on %s failed", frame.path)
        finally:
            self._end_call(counters, started)

    def _end_call(self, counters: EndpointCounters, started: float) -> None:
        """A call admitted at ``started`` (``time.perf_counter()``) has ended."""
        counters.inflight -= 1
        counters.duration.observe(time.perf_counter() - started)
        self._active -= 1
        if self._active == 0:
            self._idle.set()
            self._idle = trio.Event()

    async def _stream_call(
        self,
        handler: Handler,
        instance: Instance,
        counters: EndpointCounters,
        started: float,
        frame: RequestFrame,
    ) -> None:
        try:
            message = decode_two_part(frame.payload)
            control = ControlMessage.decode(message.header)
        except ProtocolError as exc:
            self._log.warning(
                "control", "request on %s has no valid control message: %s", frame.path, exc
            )
            return  # as Dynamo: acked, and nowhere to call home
        context = RequestContext(control.id, control.metadata, frame.headers)
        context.span = self.tracing.start_server_span(
            frame.headers,
            (instance.namespace, instance.component, instance.endpoint),
            instance.instance_id,
            control.id,
        )
        call = _Call(context, counters, started)
        with current(context.span):
            await self._serve_call(handler, frame, control, message.body, call)

    async def _serve_call(
        self,
        handler: Handler,
        frame: RequestFrame,
        control: ControlMessage,
        body: bytes,
        call: _Call,
    ) -> None:
        context = call.context

        def on_cancel(why: str) -> None:
            if not call.ended and not context.is_stopped():  # Dynamo counts each call once
                call.counters.cancellations += 1
                if why != STOP:  # killed, or the caller left: the final frame cannot go out
                    call.counters.error("publish_final")
            context._cancel(why)
            if context.is_killed():
                call.scope.cancel()

        def on_failure(why: str) -> None:
            self._call_home_failures += 1
            self._log.warning(
                "call-home", "request %s on %s cannot be answered: %s", control.id, frame.path, why
            )

        try:
            async with open_call_home(
                control.call_home,
                limits=self.call_home_limits,
                tls=self.tls,
                on_cancel=on_cancel,
                on_failure=on_failure,  # maybe after the block: the watch hears the caller
                watch=self._watch,  # hears the caller's stop/kill: no task per call
            ) as home:
                try:
                    await self._respond(home, handler, body, control, call)
                finally:
                    call.ended = True
                    call.counters.response_bytes += home.bytes_sent
        except ConnectError as exc:
            on_failure(str(exc))

    async def _respond(
        self,
        home: CallHomeSender,
        handler: Handler,
        body: bytes,
        control: ControlMessage,
        call: _Call,
    ) -> None:
        """Decode the request, start the handler, stream the prologue, items and end."""
        context = call.context
        try:
            codec = get_codec(control.payload_codec)
            request = codec.decode(body)
        except (ProtocolError, ValueError) as exc:  # Dynamo: no call home at all
            self._log.warning("decode", "cannot decode request %s: %s", control.id, exc)
            call.counters.error("deserialization")
            typed = error_object(InvalidArgument(f"cannot decode the request: {exc}"))
            await home.send(encode_prologue(typed["message"], typed))
            return
        try:
            items = _start(handler, request, context)
        except Exception as exc:  # the stream cannot start: Dynamo's failed prologue
            self._handler_errors += 1
            call.counters.error("generate")
            record_failure(context.span, exc)
            self._log.exception("handler", "handler failed on request %s: %r", control.id, exc)
            failed = prologue_error(exc)
            await home.send(encode_prologue(failed["error"], failed["typed_error"]))
            call.ended = True  # what the caller does from here is no cancellation
            await home.finish(None)
            return
        await home.send(encode_prologue())
        self._samples.first_response.observe(time.perf_counter() - call.started)
        completed = await self._produce(items, call, home, codec)
        if completed and not context.is_stopped():
            call.ended = True
            await home.finish(codec)

    async def _produce(
        self, items: AsyncIterator[Any], call: _Call, home: CallHomeSender, codec: PayloadCodec
    ) -> bool:
        """Run the handler, sending each item; False if it was stopped or killed.

        A call cancelled because the worker is closing sends Dynamo's
        ``EngineShutdown`` error, so the caller knows to try elsewhere.
        """
        context, scope = call.context, call.scope
        self._handler_scopes.add(scope)
        try:
            with scope:
                async with aclosing(items):  # type: ignore[type-var]
                    try:
                        async for item in items:
                            if context.is_stopped():  # the handler decides when to end
                                continue
                            try:
                                frame = encode_item(codec, _wire_item(item))
                            except ValueError as exc:  # Dynamo ends the stream there
                                self._log.warning("encode", "request %s: %s", context.id(), exc)
                                error = unencodable_item_error(codec.name, exc)
                                await home.send(encode_item(codec, error))
                                return True
                            await home.send(frame)
                    except Exception as exc:  # the handler's error goes to the caller
                        self._handler_errors += 1
                        call.counters.handler_errors += 1
                        record_failure(context.span, exc)
                        self._log.exception(
                            "handler", "handler failed on request %s: %r", context.id(), exc
                        )
                        await home.send(_error_frame(codec, exc))
                return not context.is_stopped()
        finally:
            self._handler_scopes.discard(scope)
        if self._closing and not context.is_stopped():  # cancelled by close, not by the caller
            await home.send(_error_frame(codec, EngineShutdown("the worker is shutting down")))
            return True
        return False  # killed: the scope was cancelled


@dataclass
class _Call:
    """One call being served: its context, its endpoint's counters, when it began, the
    cancel scope its handler runs in, and whether its stream has ended."""

    context: RequestContext
    counters: EndpointCounters
    started: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    ended: bool = False


def _start(handler: Handler, request: Any, context: RequestContext) -> AsyncIterator[Any]:
    """Call the handler: its async iterator of items, or the error Dynamo reports for a
    handler that is no async generator (a coroutine or generator it returned is closed)."""
    items = handler(request, context)
    if not isinstance(items, AsyncIterator):
        close = getattr(items, "close", None)
        if callable(close):
            close()  # no "coroutine was never awaited"
        raise AttributeError(f"{type(items).__name__!r} object has no attribute '__anext__'")  # noqa: TRY004 (Dynamo's text)
    return items


def _wire_item(item: Any) -> Any:
    """What goes in Dynamo's item wrapper: an :class:`Annotated` as is, else ``{"data": item}``."""
    return item.to_wire() if isinstance(item, Annotated) else {"data": item}


def _error_frame(codec: PayloadCodec, exc: BaseException) -> bytes:
    """The error item a Dynamo worker sends when its handler raises ``exc``."""
    return encode_item(codec, {"event": "error", "error": error_object(exc)})


async def serve_endpoint(
    endpoint: str,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[list[Instance]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve one endpoint until cancelled: ``instances = await nursery.start(serve_endpoint,
    "ns.comp.ep", handler)`` (options: those of :class:`Worker`)."""
    worker = Worker({endpoint: handler}, **options)
    try:
        await worker.run(task_status=task_status)
    finally:
        await worker.aclose()


@asynccontextmanager
async def open_worker(endpoints: Mapping[str, Handler], **options: Any) -> AsyncIterator[Worker]:
    """Serve ``endpoints`` (``{"ns.comp.ep": handler}``) for the duration of the block."""
    async with running(Worker(endpoints, **options)) as worker:
        yield worker
