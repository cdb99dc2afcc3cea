"""The endpoint client: call a Dynamo endpoint and stream its responses.

``open_endpoint_client("ns.comp.ep", discovery=...)`` owns everything a call
needs: the request-plane transports, the response-plane listener that workers
call home to, and the discovery watcher (which also warms up connections).
A call (:meth:`EndpointClient.generate`) picks an instance, registers a
call-home subject, sends the request, checks the ack, then reads the worker's
stream. Leaving the call's ``async with`` early, or a cancel scope firing,
sends ``"stop"`` (or ``"kill"``) to the worker and closes the stream.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol, TypedDict

import trio

from trioplane._checks import check_count, check_plane_options, check_seconds, check_str_map
from trioplane._errors import (
    BadArgument,
    BadArgumentType,
    CallHomeTimeout,
    ClientClosed,
    ConnectError,
    InstanceNotFound,
    MalformedStream,
    NoInstances,
    RemoteError,
    RemoteUnknown,
    StreamIncomplete,
    TrioplaneError,
    WorkerOverloaded,
    WorkerRejected,
    WorkerUnavailable,
    WrongIdiom,
)
from trioplane._types import ClientStats, Instance, RequestPlaneClient
from trioplane._util import AsyncResource, Latest, check_options, running
from trioplane.addresses import parse_endpoint, parse_tcp_address
from trioplane.discovery import DiscoverySource, as_discovery
from trioplane.metrics import CallerMetrics, as_metrics
from trioplane.nats import NatsOptions
from trioplane.response_plane import (
    CallHome,
    ResponsePlane,
    ResponsePlaneStatistics,
    receive_into,
)
from trioplane.routing import Router, RouterMode
from trioplane.tls import TcpTls
from trioplane.tracing import Tracing, record_failure, trace_headers
from trioplane.transports._pipeline import CLOSE_TIMEOUT
from trioplane.transports.tcp import TcpClientOptions
from trioplane.transports.unified import (
    NATS_SERVER_HINT,
    RequestPlaneOptions,
    UnifiedClient,
    address_for,
    start_request_plane,
)
from trioplane.wire.codecs import JSON, PayloadCodec, get_codec
from trioplane.wire.control import encode_control
from trioplane.wire.errors import remote_error
from trioplane.wire.rejections import is_overloaded
from trioplane.wire.response import (
    CANCEL_KILL,
    CANCEL_STOP,
    NOT_DATA,
    Annotated,
    End,
    Item,
    Prologue,
    Rejected,
    encode_cancel,
    unwrap_annotated,
)
from trioplane.wire.twopart import DEFAULT_MAX_BODY_SIZE, encode_two_part

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider
    from typing_extensions import Unpack

    from trioplane.metrics import Metrics
    from trioplane.transports.http import HttpClientOptions
    from trioplane.transports.websocket import WebSocketClientOptions

__all__ = [
    "EndpointClient",
    "EndpointClientOptions",
    "EndpointStatistics",
    "ResponseStream",
    "open_endpoint_client",
    "parse_endpoint",
    "rejection_error",
]

#: Headers the endpoint client sets itself, as Dynamo's client does.
RESERVED_HEADERS = frozenset({"request-id", "x-endpoint-path", "x-frontend-send-ts-ns"})
#: Headers a call made with ``context=`` takes from the upstream call (tracing).
FORWARDED_HEADERS = ("traceparent", "tracestate", "x-request-id")
#: How a call's stream is read: what the errors of the wrong idioms show.
STREAM_IDIOM = (
    "    async with client.generate(request) as stream:\n"
    "        async for item in stream:\n"
    "            ...\n"
    "(or items = await client.call(request) for every item as a list)"
)


class CallerContext(Protocol):
    """The context of the call a handler serves, as :meth:`EndpointClient.generate`
    forwards it downstream (:class:`~trioplane.RequestContext` is one)."""

    def id(self) -> str: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def is_stopped(self) -> bool: ...
    def is_killed(self) -> bool: ...
    async def wait_stopped(self) -> None: ...


_CODECS = ("auto", "json", "msgpack")


class EndpointClientOptions(TypedDict, total=False):
    """Options of :func:`open_endpoint_client`.

    * ``router_mode`` (``"round_robin"``): how a call without ``instance_id``
      picks an instance; or ``"random"``, ``"least_loaded"`` (fewest calls in flight
      from this client), ``"power_of_two"`` (the less loaded of two at random); see
      :mod:`trioplane.routing`.
    * ``overload_backoff`` (1 s): an instance that answered ``Server overloaded`` is
      avoided this long, then tried again.
    * ``codec`` (``"auto"``): payload codec; ``auto`` uses the instance's
      ``request_plane_codec`` (JSON if absent), else ``"json"`` or ``"msgpack"``.
    * ``max_attempts`` (3): instances tried per call when one rejects the
      request or cannot be reached. Never retried once a worker accepted it.
    * ``call_home_timeout`` (30 s): from the accepting ack to the worker's call
      home -> :class:`~trioplane.CallHomeTimeout`.
    * ``cancel_mode`` (``"stop"``): what an abandoned stream sends: ``"stop"``
      (the handler sees itself stopped and ends) or ``"kill"``.
    * ``response_host`` (``127.0.0.1``), ``response_port`` (0), ``advertise_host``:
      the response-plane listener, and the host workers are told to dial.
    * ``handshake_timeout`` (10 s): call-home connections silent for longer are dropped;
      ``max_pending_handshakes`` (2,048): past that many connections waiting for
      their handshake, a new one is dropped at once.
    * ``max_item_size`` (32 MiB): cap on one response frame.
    * ``close_grace_period`` (5 s): on close, how long open calls may finish.
    * ``tls`` (:class:`~trioplane.TcpTls`): TLS on the TCP request plane and the
      response plane, with Dynamo's meanings: a CA (or ``insecure``) dials workers
      with TLS, a certificate and key make the response plane serve TLS. Absent:
      from ``DYN_TCP_TLS_*``, as a Dynamo caller; ``TcpTls()`` is plain text.
    * ``nats_servers``: the NATS server(s) for instances on the NATS request plane
      (``nats_tcp``); default ``$NATS_SERVER`` (as Dynamo). The connection opens
      with the first call to such an instance (or its warm-up).
    * ``tcp``, ``http``, ``websocket``, ``nats``: options of each transport's client.
    * ``request_plane``: a :class:`~trioplane.RequestPlaneClient` of yours to send
      with (it must take the unified addresses of :func:`~trioplane.open_request_plane`);
      by default the endpoint client opens a unified one itself.
    * ``metrics``: a :class:`trioplane.metrics.Metrics` (or ``True``: prometheus-client's
      default registry) to record Dynamo's caller metrics in (default: none recorded).
    * ``tracer_provider``: an OpenTelemetry tracer provider for the calls' spans
      (default: the global one, once configured; see :mod:`trioplane.tracing`).
    """

    router_mode: RouterMode
    overload_backoff: float
    codec: Literal["auto", "json", "msgpack"]
    max_attempts: int
    call_home_timeout: float
    cancel_mode: Literal["stop", "kill"]
    response_host: str
    response_port: int
    advertise_host: str
    handshake_timeout: float
    max_pending_handshakes: int
    max_item_size: int
    close_grace_period: float
    tls: TcpTls
    tcp: TcpClientOptions
    http: HttpClientOptions
    websocket: WebSocketClientOptions
    nats_servers: str | Sequence[str]
    nats: NatsOptions
    request_plane: RequestPlaneClient
    metrics: Metrics | bool
    tracer_provider: TracerProvider


def error_item(item: Mapping[str, Any]) -> RemoteError:
    """The error an ``{"event": "error", ...}`` item reports: its typed error object,
    or (older workers) its comment."""
    if "error" in item:
        return remote_error(item["error"])
    comment = item.get("comment")
    text = "; ".join(comment) if isinstance(comment, list) and comment else "unknown error"
    return RemoteUnknown({"message": str(text)})


def failed_start(prologue: Prologue) -> RemoteError:
    """The error of a prologue that failed the stream: its typed error, else its text."""
    if isinstance(prologue.typed_error, Mapping):
        return remote_error(prologue.typed_error)
    return RemoteUnknown({"message": str(prologue.error)})


@dataclass
class _Timing:
    """When a call entered ``generate`` and when its request was sent (for metrics)."""

    started: float
    send_began: float = 0.0
    sent: float = 0.0

    def sending(self, samples: CallerMetrics | None) -> None:
        self.send_began = time.perf_counter()
        if samples is not None:
            samples.queue.observe(self.send_began - self.started)

    def sent_now(self, samples: CallerMetrics | None) -> None:
        self.sent = time.perf_counter()
        if samples is not None:
            samples.send.observe(self.sent - self.send_began)


def _outcome(exc: BaseException) -> str:
    """Dynamo's ``request.outcome`` for a call that failed with ``exc``."""
    if isinstance(exc, WorkerOverloaded):
        return "rejected"
    if isinstance(exc, (WorkerUnavailable, NoInstances)):
        return "unavailable"
    if isinstance(exc, ConnectError):
        return "connection_failed"
    if isinstance(exc, (CallHomeTimeout, trio.TooSlowError)):
        return "timeout"
    if isinstance(exc, trio.Cancelled):
        return "cancelled"
    if isinstance(exc, StreamIncomplete) and not isinstance(exc, RemoteError):
        return "worker_disconnected"
    return "error"


def rejection_error(ack: bytes | str, instance_id: int | None = None) -> WorkerRejected:
    """The error for a non-empty ack: overloaded, or unavailable (any other text)."""
    text = ack if isinstance(ack, str) else ack.decode("utf-8", "replace")
    if is_overloaded(text):
        return WorkerOverloaded(text, instance_id)
    return WorkerUnavailable(text, instance_id)


@dataclass(frozen=True)
class EndpointStatistics:
    """A snapshot of an endpoint client (trio-style ``statistics()``; no I/O).

    ``calls_in_flight`` are streams entered and not yet closed; ``instances`` the
    endpoint's instances known now; ``request_plane`` the transports' counters
    (``None`` before start); ``response_plane`` the call-home listener's.
    """

    calls_in_flight: int
    instances: int
    request_plane: ClientStats | None
    response_plane: ResponsePlaneStatistics


class ResponseStream:
    """The responses of one call: an async context manager and async iterator.

    Made by :meth:`EndpointClient.generate`. Entering sends the request (and
    raises :class:`~trioplane.WorkerRejected` and friends); iterating yields
    each item the worker's handler yielded. Leaving before the end tells the
    worker to stop.
    """

    def __init__(
        self,
        client: EndpointClient,
        request: Any,
        instance_id: int | None,
        metadata: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        request_id: str | None = None,
        annotated: bool = False,
        context: CallerContext | None = None,
    ) -> None:
        self._client = client
        self._annotated = annotated
        self._context = context
        self._forwarder = trio.CancelScope()
        self._forwarded: str | None = None
        self._span: Span | None = None
        self._timing: _Timing | None = None
        self._request = request
        self._instance_id = instance_id
        self._request_id = request_id
        self._metadata = dict(metadata or {})
        self._headers = dict(headers or {})
        self._call_home: CallHome | None = None
        self._deadline = 0.0
        self._drops_before = 0
        self._finished = False
        self._failed = False
        self._entered = False
        self._closed = False
        self._closed_by_client = False
        self._cancelling: CallHome | None = None
        #: The instance that accepted the request (set once entered).
        self.instance: Instance | None = None
        #: The request id (Dynamo's context id), set once entered.
        self.request_id = ""

    def __await__(self) -> Generator[Any, None, NoReturn]:
        """Dynamo's ``await client.generate(req)``: a :class:`~trioplane.WrongIdiom`
        showing trioplane's. Nothing was sent and nothing is left to clean up."""
        raise WrongIdiom(
            "client.generate(...) is not awaited here: it returns the call's stream,"
            " an async context manager that ends the call when its block ends"
            " (Dynamo's Python client awaits it instead):\n" + STREAM_IDIOM
        )

    async def __aenter__(self) -> ResponseStream:
        if self._entered:
            raise WrongIdiom(
                "a ResponseStream can be entered once: call client.generate(...) again"
                " for another call"
            )
        self._entered = True
        self._drops_before = self._client.response_plane.dropped_connections
        client = self._client
        timing = self._timing = _Timing(time.perf_counter()) if client.metrics_samples else None
        request_id = self._request_id or str(uuid.uuid4())  # one id for every attempt
        span = client.tracing.start_client_span(
            request_id,
            client.router.mode if self._instance_id is None else "direct",
            getattr(self._context, "span", None),  # a handler's span, forwarding its context
        )
        headers = self._headers if span is None else {**self._headers, **trace_headers(span)}
        try:
            self._call_home, self.instance, self.request_id = await client._start_call(
                self._request, self._instance_id, self._metadata, headers, request_id, timing
            )
        except BaseException as exc:
            if client.metrics_samples is not None:
                client.metrics_samples.failed(_outcome(exc))
            if span is not None:
                span.set_attribute("request.outcome", _outcome(exc))
                record_failure(span, exc)
                span.end()
            raise
        if span is not None:
            span.set_attribute("worker_id", str(self.instance.instance_id))
            self._span = span
        self._client._calls.add(self)
        self._deadline = trio.current_time() + self._client.call_home_timeout
        nursery = self._client._nursery
        if self._context is not None and nursery is not None:
            nursery.start_soon(self._forward_stop, self._call_home, self._context)
        return self

    async def _forward_stop(self, call_home: CallHome, context: CallerContext) -> None:
        """Pass the upstream call's ``"stop"``/``"kill"`` on to this call's worker."""
        with self._forwarder:
            await context.wait_stopped()
            if call_home.connection is None:
                with trio.move_on_at(self._deadline):
                    await call_home.wait_connected()
            connection = call_home.connection
            if self._call_home is not call_home or self._finished or connection is None:
                return
            self._forwarded = CANCEL_KILL if context.is_killed() else CANCEL_STOP
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await connection.send_all(encode_cancel(self._forwarded))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> Any:
        call_home = self._call_home
        if call_home is None:
            if self._closed_by_client:
                raise ClientClosed("the endpoint client closed this stream")
            if self._closed:
                raise StopAsyncIteration
            raise WrongIdiom(
                "a call's stream is read inside its async with block, which sends the"
                " request and ends the call:\n" + STREAM_IDIOM
            )
        if self._finished:
            raise StopAsyncIteration
        try:
            item = await self._next_item(call_home)
        except TrioplaneError as exc:
            self._first_frame()
            self._finished = self._failed = True
            samples = self._client.metrics_samples
            if samples is not None:
                if isinstance(exc, CallHomeTimeout):
                    samples.call_home_timeouts += 1
                samples.failed(_outcome(exc))
            if self._span is not None:
                self._span.set_attribute("request.outcome", _outcome(exc))
                record_failure(self._span, exc)
            raise
        except StopAsyncIteration:
            self._first_frame()
            raise
        if self._timing is not None:
            self._first_frame()
        return item

    def _first_frame(self) -> None:
        """Observe the round trip to the first item (or error, or end), once."""
        timing, self._timing = self._timing, None
        samples = self._client.metrics_samples
        if timing is not None and samples is not None and timing.sent:
            samples.first_item.observe(time.perf_counter() - timing.sent)

    async def _next_item(self, call_home: CallHome) -> Any:
        connection = call_home.connection
        if connection is None:
            with trio.move_on_at(self._deadline):
                await call_home.wait_connected()
            connection = call_home.connection
            if connection is None and call_home.closed:
                raise ClientClosed("the endpoint client closed before the worker called home")
            if connection is None:
                raise CallHomeTimeout(
                    f"instance {self._instance_label()} accepted the request but did not "
                    f"call home within {self._client.call_home_timeout:g} s (a body the worker "
                    f"cannot decode, e.g. a codec mismatch, looks like this){self._drops()}"
                )
        decoder = call_home.decoder
        while True:
            item = decoder.next_data()  # an item, without an event object: the hot path
            if item is NOT_DATA:
                event = decoder.next_event()
                if event.__class__ is Item:
                    item = event.data
            if item is not NOT_DATA:
                if item.__class__ is dict and "event" not in item and not self._annotated:
                    data = item.get("data")  # a Python worker's item: the fast path
                    if data is not None:
                        return data
                if isinstance(item, Mapping) and item.get("event") == "error":
                    raise error_item(item)
                if self._annotated:
                    return Annotated.from_wire(item)
                has_data, data = unwrap_annotated(item)
                if has_data:
                    return data
            elif event is None:
                try:
                    more = await receive_into(connection, decoder)
                except trio.ClosedResourceError:
                    raise ClientClosed("the endpoint client closed this stream") from None
                except trio.BrokenResourceError as exc:
                    raise StreamIncomplete(f"response stream broke: {exc}") from exc
                if not more:
                    if self._forwarded is None:  # a worker told to stop may just hang up
                        decoder.check_eof()
                    self._finished = True
                    raise StopAsyncIteration
            elif isinstance(event, End):
                self._finished = True
                # Frames already received after the end must be the sentinel (else
                # MalformedStream); later ones are read by the plane as it lingers.
                decoder.next_event()
                raise StopAsyncIteration
            elif isinstance(event, Prologue):
                if event.error is not None:
                    raise failed_start(event)
            elif isinstance(event, Rejected):
                raise rejection_error(event.text, self._instance_id_or_none())
            else:  # Handshake is consumed by the plane, Sentinel only follows End
                raise MalformedStream(f"unexpected {type(event).__name__} in a response stream")

    def _drops(self) -> str:
        """What the response plane dropped since this call began (a TLS mismatch...)."""
        plane = self._client.response_plane
        dropped = plane.dropped_connections - self._drops_before
        if not dropped:
            return ""
        return f"; meanwhile the response plane dropped {dropped} connection(s): {plane.last_drop}"

    def _instance_id_or_none(self) -> int | None:
        return self.instance.instance_id if self.instance is not None else None

    def _instance_label(self) -> str:
        return f"{self.instance.instance_id:x}" if self.instance is not None else "?"

    async def aclose(self) -> None:
        """Stop the call if it is still running and release its connection. Idempotent."""
        unsent = self._close_nowait()
        if unsent:
            await self._send_cancel(unsent)
        else:
            await trio.lowlevel.checkpoint()

    def _close_nowait(self) -> bytes:
        """Close without waiting: unregister, write ``"stop"``/``"kill"`` if the call is
        still running, release the connection. What of the cancel frame the kernel did
        not take now is returned, for :meth:`_send_cancel`."""
        call_home, self._call_home = self._call_home, None
        self._forwarder.cancel()
        if call_home is None:
            return b""
        self._closed = True
        if self._span is not None:
            self._end_span(call_home)
        self._client._call_ended(self)
        done = self._finished or call_home.decoder.ended
        connection = call_home.connection
        unsent = b""
        kind = self._client.cancel_mode
        if self._context is not None and self._context.is_killed():
            kind = CANCEL_KILL
        if connection is not None and not done and not self._failed and self._forwarded != kind:
            unsent = encode_cancel(kind)
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                unsent = unsent[connection.send_nowait(unsent) :]
            if unsent:
                self._cancelling = call_home
                return unsent  # closed by _send_cancel once the frame is out
        # A finished (or failed) stream lingers for the worker's last frames.
        call_home.close(linger=done or self._failed)
        self._finished = True
        return b""

    def _end_span(self, call_home: CallHome) -> None:
        span, self._span = self._span, None
        assert span is not None
        if not self._failed:
            ended = self._finished or call_home.decoder.ended
            span.set_attribute("request.outcome", "success" if ended else "cancelled")
            if not ended:
                span.set_attribute("cancellation.signal", self._client.cancel_mode)
        span.add_event("route request completed")
        span.end()

    async def _send_cancel(self, unsent: bytes) -> None:
        """Write the rest of the cancel frame (shielded, ``CLOSE_TIMEOUT``), then close."""
        call_home, self._cancelling = self._cancelling, None
        assert call_home is not None
        assert call_home.connection is not None
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLOSE_TIMEOUT
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await call_home.connection.send_all(unsent)
        call_home.close()
        self._finished = True


class EndpointClient(AsyncResource):
    """A client of one Dynamo endpoint. Made by :func:`open_endpoint_client`."""

    def __init__(
        self,
        endpoint: str,
        discovery: DiscoverySource = None,
        **options: Unpack[EndpointClientOptions],
    ) -> None:
        check_options(options, EndpointClientOptions, "endpoint client")
        self.namespace, self.component, self.endpoint = parse_endpoint(endpoint)
        self.endpoint_path = f"{self.namespace}.{self.component}.{self.endpoint}"
        self.discovery = as_discovery(discovery)
        self.router = Router(
            options.get("router_mode", "round_robin"),
            overload_backoff=options.get("overload_backoff", 1.0),
            clock=trio.current_time,
        )
        self.codec = options.get("codec", "auto")
        if self.codec not in _CODECS:
            raise BadArgument(f"codec must be one of {_CODECS}")
        self.max_attempts = check_count(options.get("max_attempts", 3), "max_attempts")
        self.call_home_timeout = check_seconds(
            options.get("call_home_timeout", 30.0), "call_home_timeout", zero=False
        )
        self.cancel_mode = options.get("cancel_mode", CANCEL_STOP)
        if self.cancel_mode not in (CANCEL_STOP, CANCEL_KILL):
            raise BadArgument("cancel_mode must be 'stop' or 'kill'")
        self.close_grace_period = check_seconds(
            options.get("close_grace_period", 5.0), "close_grace_period"
        )
        self.tracing = Tracing(options.get("tracer_provider"))
        self.metrics = as_metrics(options.get("metrics"))
        #: What this client records for :attr:`metrics` (``None`` when it records nothing).
        self.metrics_samples = CallerMetrics() if self.metrics is not None else None
        self.tls = options.get("tls") or TcpTls.from_env()
        self._plane_options: RequestPlaneOptions = {}
        check_plane_options(options)
        for key in ("tcp", "http", "websocket", "nats_servers", "nats"):
            if key in options:
                self._plane_options[key] = options[key]
        self._plane_options["tcp"] = self._tcp_options(self._plane_options.get("tcp", {}))
        self._given_plane = options.get("request_plane")
        self.response_plane = ResponsePlane(
            host=options.get("response_host", "127.0.0.1"),
            port=options.get("response_port", 0),
            advertise_host=options.get("advertise_host"),
            handshake_timeout=options.get("handshake_timeout", 10.0),
            max_pending_handshakes=options.get("max_pending_handshakes", 2048),
            max_item_size=options.get("max_item_size", DEFAULT_MAX_BODY_SIZE),
            ssl_context=self.tls.server_context,
            tls_handshake_timeout=self.tls.handshake_timeout,
        )
        self._plane: RequestPlaneClient | None = None
        self._instances: dict[int, Instance] = {}
        self._instances_changed = trio.Event()
        self._warmup: Latest[list[Instance]] = Latest()
        self._calls: set[ResponseStream] = set()
        self._no_calls = trio.Event()
        self._closing = False
        self._nursery: trio.Nursery | None = None
        self._stopped = trio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the transports, the response plane and the watcher; use with ``nursery.start``."""
        if self.metrics is not None:
            self.metrics.attach(self)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.response_plane.run)
                if self._given_plane is not None:
                    self._plane = self._given_plane
                else:
                    self._plane = await start_request_plane(nursery, **self._plane_options)
                    self._plane.start_warmup(self._warmup)
                await nursery.start(self._watch_discovery)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._closing = True
            self._stopped.set()
            if self.metrics is not None:
                self.metrics.detach(self)

    async def _watch_discovery(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        async with aclosing(self.discovery.changes()) as changes:  # type: ignore[type-var]
            async for snapshot in changes:
                mine = [i for i in snapshot if i.endpoint_path == self.endpoint_path]
                self._instances = {i.instance_id: i for i in mine}
                self._instances_changed.set()
                self._instances_changed = trio.Event()
                self._warmup.set(mine)
                if not started:
                    started = True
                    task_status.started()

    async def aclose(self) -> None:
        """Refuse new calls, let open ones finish within the grace period, then close all."""
        with trio.CancelScope(shield=True):
            self._closing = True
            if self._calls:
                with trio.move_on_after(self.close_grace_period):
                    await self._no_calls.wait()
            await self._close_calls()
            if self._plane is not None and self._plane is not self._given_plane:
                await self._plane.aclose()
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
                with trio.move_on_after(CLOSE_TIMEOUT * 2):
                    await self._stopped.wait()

    async def _close_calls(self) -> None:
        """Stop every open call at once: cancel frames are written without waiting where
        the kernel takes them, the rest concurrently, all within one ``CLOSE_TIMEOUT``
        (one at a time, 1,000 calls took 20 s next to a worker in the same loop)."""
        late: list[tuple[ResponseStream, bytes]] = []
        for call in list(self._calls):
            call._closed_by_client = True
            unsent = call._close_nowait()
            if unsent:
                late.append((call, unsent))
        if late:
            async with trio.open_nursery() as nursery:
                for call, unsent in late:
                    nursery.start_soon(call._send_cancel, unsent)
        await trio.lowlevel.checkpoint()

    def _attempt_failed(self, instance: Instance, call_home: CallHome, exc: Exception) -> None:
        if self.metrics_samples is not None and isinstance(exc, WorkerRejected):
            reason = "overloaded" if isinstance(exc, WorkerOverloaded) else "unavailable"
            self.metrics_samples.rejected(reason)
        """An attempt that never started a stream: release it, remember an overload."""
        self.router.finished(instance.instance_id)
        call_home.close()
        if isinstance(exc, WorkerRejected) and exc.instance_id is None:
            exc.instance_id = instance.instance_id
        if isinstance(exc, WorkerOverloaded):
            self.router.overloaded(instance.instance_id)

    def _call_ended(self, call: ResponseStream) -> None:
        if call.instance is not None and call in self._calls:
            self.router.finished(call.instance.instance_id)
        self._calls.discard(call)
        if not self._calls and self._closing:
            self._no_calls.set()

    def _tcp_options(self, given: TcpClientOptions) -> TcpClientOptions:
        """The TCP transport's options: ``tls`` dialling, unless ``tcp`` says otherwise."""
        if "ssl_context" in given:
            return given
        tls = self.tls
        options: TcpClientOptions = {
            "ssl_context": tls.client_context,
            "tls_handshake_timeout": tls.handshake_timeout,
        }
        if tls.server_name is not None:
            options["server_hostname"] = tls.server_name
        return {**options, **given}

    def statistics(self) -> EndpointStatistics:
        """A snapshot of the client's calls, instances and planes."""
        return EndpointStatistics(
            calls_in_flight=len(self._calls),
            instances=len(self._instances),
            request_plane=self._plane.stats() if self._plane is not None else None,
            response_plane=self.response_plane.statistics(),
        )

    # -- instances ----------------------------------------------------------------------

    @property
    def router_mode(self) -> RouterMode:
        return self.router.mode

    def instances(self) -> list[Instance]:
        """The endpoint's instances known now, by instance id."""
        return [self._instances[k] for k in sorted(self._instances)]

    def instance_ids(self) -> list[int]:
        """The ids of the endpoint's instances known now (Dynamo's ``instance_ids()``)."""
        return sorted(self._instances)

    async def wait_for_instances(self) -> list[Instance]:
        """Until at least one instance is known (bound it with your own cancel scope)."""
        while not self._instances:
            if self._closing:
                raise ClientClosed("endpoint client is closed")
            await self._instances_changed.wait()
        await trio.lowlevel.checkpoint()
        return self.instances()

    def _pick(self, instance_id: int | None, tried: set[int]) -> Instance:
        if instance_id is not None:
            instance = self._instances.get(instance_id)
            if instance is None:
                raise InstanceNotFound(
                    f"no instance {instance_id:x} of {self.endpoint_path} (known: "
                    f"{', '.join(f'{i:x}' for i in sorted(self._instances)) or 'none'})"
                )
            return instance
        candidates = [
            i
            for i in self.instances()
            if i.instance_id not in tried and i.transport_kind in self._reachable_kinds()
        ]
        if not candidates:
            if tried:
                raise NoInstances(f"every instance of {self.endpoint_path} was tried")
            kinds = sorted({i.transport_kind for i in self._instances.values()})
            reachable = sorted(self._reachable_kinds())
            detail = f" reachable by {reachable} (they use {kinds})" if kinds else ""
            if "nats_tcp" in kinds and "nats_tcp" not in reachable:
                detail += (
                    ": they serve on NATS and this client knows no NATS server; to the"
                    f" endpoint client, {NATS_SERVER_HINT}"
                )
            raise NoInstances(f"no instances of {self.endpoint_path}{detail}")
        return self.router.pick(candidates)

    # -- calls --------------------------------------------------------------------------

    def generate(
        self,
        request: Any,
        *,
        instance_id: int | None = None,
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        annotated: bool = False,
        context: CallerContext | None = None,
    ) -> ResponseStream:
        """One call: ``async with client.generate(req) as responses: async for item in responses``.

        ``instance_id`` sends to that instance only (Dynamo's ``direct``);
        ``metadata`` reaches the handler's context; ``headers`` (strings) go on
        the request-plane frame next to the ones Dynamo sets; ``request_id`` is the
        call's id (Dynamo's context id: the handler's ``context.id()``; default: a
        fresh UUID), the same for every instance tried. With ``annotated=True`` every
        item is a :class:`~trioplane.Annotated` (data, event, comment, id), also those
        that carry annotations only, as Dynamo's ``annotated=True``; by default items
        are the data alone and annotation-only items are skipped.

        ``context`` (a handler's :class:`~trioplane.RequestContext`) makes this call
        part of the one being served, as Dynamo's ``context=``: its id is the request
        id, its metadata is sent (``metadata`` adds to it), its ``traceparent``,
        ``tracestate`` and ``x-request-id`` headers go along, and when the upstream
        caller stops or kills its call, this one is stopped or killed too.
        """
        if request_id is not None and (not isinstance(request_id, str) or not request_id):
            raise BadArgument("request_id must be a non-empty string")
        if instance_id is not None and (
            not isinstance(instance_id, int) or isinstance(instance_id, bool)
        ):
            hint = f" (hex? int({instance_id!r}, 16))" if isinstance(instance_id, str) else ""
            raise BadArgumentType(f"instance_id must be an int, not {instance_id!r}{hint}")
        for key in check_str_map(headers, "headers"):
            if key.lower() in RESERVED_HEADERS:
                raise BadArgument(f"header {key!r} is set by the endpoint client")
        check_str_map(metadata, "metadata")
        if context is not None:
            request_id = request_id or context.id() or None
            metadata = {**context.metadata, **(metadata or {})}
            upstream = {k.lower(): v for k, v in context.headers.items()}
            forwarded = {k: upstream[k] for k in FORWARDED_HEADERS if k in upstream}
            headers = {**forwarded, **(headers or {})}
        return ResponseStream(
            self, request, instance_id, metadata, headers, request_id, annotated, context
        )

    async def call(
        self,
        request: Any,
        *,
        instance_id: int | None = None,
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        annotated: bool = False,
        context: CallerContext | None = None,
    ) -> list[Any]:
        """Every item of one call, as a list (the options are :meth:`generate`'s)."""
        stream = self.generate(
            request,
            instance_id=instance_id,
            metadata=metadata,
            headers=headers,
            request_id=request_id,
            annotated=annotated,
            context=context,
        )
        async with stream as responses:
            return [item async for item in responses]

    def _transport_stats(self) -> dict[str, ClientStats]:
        """Each request-plane transport's counters, by kind (for metrics)."""
        plane = self._plane
        if isinstance(plane, UnifiedClient):
            return plane.stats_by_transport()
        return {plane.transport_name: plane.stats()} if plane is not None else {}

    def _reachable_kinds(self) -> set[str]:
        if isinstance(self._plane, UnifiedClient):
            return self._plane.kinds()
        return {"tcp", "nats_tcp", "http", "websocket"}

    def _codec_for(self, instance: Instance) -> PayloadCodec:
        if self.codec != "auto":
            return get_codec(self.codec)
        try:
            return get_codec(instance.request_plane_codec)
        except ValueError:
            return JSON  # any Dynamo worker accepts JSON

    async def _start_call(
        self,
        request: Any,
        instance_id: int | None,
        metadata: dict[str, str],
        headers: dict[str, str],
        request_id: str | None,
        timing: _Timing | None = None,
    ) -> tuple[CallHome, Instance, str]:
        if self._closing or self._nursery is None:
            await trio.lowlevel.checkpoint()
            raise ClientClosed("endpoint client is closed" if self._closing else "not started")
        tried: set[int] = set()
        bodies: dict[str, bytes] = {}
        last_error: TrioplaneError | None = None
        request_id = request_id or str(uuid.uuid4())  # one id for every attempt
        for _ in range(self.max_attempts if instance_id is None else 1):
            try:
                instance = self._pick(instance_id, tried)
            except NoInstances:
                # Every call is a checkpoint, failed ones too: a loop of calls to an
                # endpoint with no instances must still see its deadline and Ctrl-C.
                await trio.lowlevel.checkpoint()
                if last_error is not None:
                    raise last_error from None
                raise
            tried.add(instance.instance_id)
            codec = self._codec_for(instance)
            if codec.name not in bodies:
                bodies[codec.name] = codec.encode(request)
            call_home = self.response_plane.register()
            call_home.decoder.codec = codec
            self.router.started(instance.instance_id)
            if timing is not None:
                timing.sending(self.metrics_samples)
            try:
                ack = await self._send(
                    instance, request_id, call_home, codec, bodies[codec.name], metadata, headers
                )
                if timing is not None:
                    timing.sent_now(self.metrics_samples)
            except (ConnectError, WorkerRejected) as exc:
                # Never reached the worker, or refused (an HTTP status): another may serve it.
                self._attempt_failed(instance, call_home, exc)
                last_error = exc
                continue
            except BaseException:
                self.router.finished(instance.instance_id)
                call_home.close()
                raise
            if not ack:
                if self._closing:
                    self.router.finished(instance.instance_id)
                    call_home.close()
                    raise ClientClosed("the endpoint client closed while the request was sent")
                return call_home, instance, request_id
            last_error = rejection_error(ack, instance.instance_id)
            self._attempt_failed(instance, call_home, last_error)
        assert last_error is not None
        raise last_error

    async def _send(
        self,
        instance: Instance,
        request_id: str,
        call_home: CallHome,
        codec: PayloadCodec,
        body: bytes,
        metadata: dict[str, str],
        extra_headers: dict[str, str],
    ) -> bytes:
        """Send one request to ``instance`` and return its ack."""
        plane = self._plane
        assert plane is not None
        send_ts = time.time_ns()
        control = encode_control(
            request_id,
            self.response_plane.address,
            call_home.subject,
            payload_codec=codec.name,
            metadata=metadata,
        )  # no frontend_send_ts_ns, as Dynamo's Python client: its worker would count the
        # transit twice (from this field and from the header), in its metrics
        headers = {"request-id": request_id, "x-frontend-send-ts-ns": str(send_ts)}
        if instance.transport_kind == "tcp":
            headers["x-endpoint-path"] = _endpoint_path(instance.address)
        headers.update(extra_headers)
        payload = encode_two_part(control, body)
        return await plane.send_request(address_for(instance), payload, headers)


@functools.lru_cache(maxsize=1024)
def _endpoint_path(address: str) -> str:
    """The path part of a TCP instance address (parsed once per address: a hot path)."""
    return parse_tcp_address(address)[2]


@asynccontextmanager
async def open_endpoint_client(
    endpoint: str,
    discovery: DiscoverySource = None,
    **options: Unpack[EndpointClientOptions],
) -> AsyncIterator[EndpointClient]:
    """Open a client of the Dynamo endpoint ``endpoint`` (``"namespace.component.endpoint"``).

    ``discovery`` is a :class:`~trioplane.discovery.Discovery` (``EtcdDiscovery``,
    ``FileDiscovery``...), a list of :class:`~trioplane.Instance`, a file-backend root
    directory, or ``None`` for what a Dynamo process would use
    (:func:`~trioplane.discovery_from_env`: etcd unless ``DYN_DISCOVERY_BACKEND`` says
    ``file``).
    """
    async with running(EndpointClient(endpoint, discovery, **options)) as client:
        yield client
