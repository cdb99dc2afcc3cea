"""The worker side: serve Dynamo endpoints that Dynamo's own clients (and trioplane's) call.

``async with trioplane.open_worker({"ns.comp.ep": handler}) as worker:`` listens on
the TCP request plane, registers each endpoint's instance in Dynamo's file
discovery backend, and runs ``handler(request, context)`` (an async generator) for
each accepted request, streaming what it yields back over the response plane:

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

import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from trioplane._errors import ProtocolError, TrioplaneError
from trioplane._sockets import RECEIVE_SIZE
from trioplane._types import Instance
from trioplane._util import collapse_groups
from trioplane.discovery import default_file_root, instance_key
from trioplane.endpoint import parse_endpoint
from trioplane.nats import NatsConnection, NatsOptions, Subscription, start_nats_connection
from trioplane.transports._base import format_host_port, split_host_port
from trioplane.wire.codecs import get_codec
from trioplane.wire.control import ControlMessage, encode_handshake
from trioplane.wire.response import (
    decode_cancel,
    encode_end,
    encode_item,
    encode_prologue,
    encode_sentinel,
)
from trioplane.wire.tcp import DEFAULT_MAX_FRAME_SIZE, RequestFrame, RequestFrameDecoder, encode_ack
from trioplane.wire.twopart import TwoPartDecoder, decode_two_part

if TYPE_CHECKING:
    from trioplane._http_plane import HttpPlaneServer  # needs hypercorn: imported when used

__all__ = ["Handler", "RequestContext", "Worker", "open_worker", "serve_endpoint"]

log = logging.getLogger(__name__)

#: ``handler(request, context)``: an async generator of response items.
Handler = Callable[[Any, "RequestContext"], AsyncIterator[Any]]
#: How often a registration file's mtime is refreshed (Dynamo: stale after 10 s).
REFRESH_INTERVAL = 3.0
#: How long closing waits for the discovery records' removal (a hung file system).
DEREGISTER_TIMEOUT = 5.0
#: How long a finished stream waits for the caller to close (as Dynamo).
SENTINEL_WAIT = 10.0
OVERLOADED = "Server overloaded: worker at capacity"
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
        self._stopped = trio.Event()
        self._killed = False

    def id(self) -> str:
        """The request id (Dynamo's context id)."""
        return self.request_id

    def is_stopped(self) -> bool:
        """The caller sent ``"stop"`` or ``"kill"`` (or went away)."""
        return self._stopped.is_set()

    def is_killed(self) -> bool:
        """The caller sent ``"kill"``: the handler is being cancelled."""
        return self._killed

    async def wait_stopped(self) -> None:
        """Until the caller stops the call."""
        await self._stopped.wait()


def _error_object(exc: BaseException) -> dict[str, Any]:
    """Dynamo's error annotation for a handler's exception."""
    invalid = isinstance(exc, (ValueError, TypeError, KeyError))
    message = f"{type(exc).__name__}: {exc}"
    return {
        "error_type": {"Backend": "InvalidArgument" if invalid else "Unknown"},
        "class": "InvalidRequest" if invalid else "Internal",
        "reason": "backend.invalid_argument" if invalid else "backend.unknown",
        "message": message,
        "diagnostic": message,
    }


class Worker:
    """Serves endpoints; see the module doc. Use :func:`open_worker` or ``nursery.start(run)``."""

    def __init__(
        self,
        endpoints: Mapping[str, Handler],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise_host: str | None = None,
        discovery_root: str | os.PathLike[str] | None = None,
        register: bool = True,
        codec: str = "msgpack",
        max_concurrency: int = 1024,
        grace_period: float = 5.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        transports: Sequence[str] = ("tcp",),
        websocket_port: int = 0,
        http_port: int = 0,
        nats_servers: str | Sequence[str] | None = None,
        nats: NatsOptions | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("a worker needs at least one endpoint")
        unknown = set(transports) - set(_INSTANCE_KINDS)
        if unknown or not transports:
            raise ValueError(
                f"transports are 'tcp', 'nats', 'websocket', 'http'; not {sorted(unknown)}"
            )
        self.transports = tuple(transports)
        self.websocket_port = websocket_port
        self.http_port = http_port
        self._http: HttpPlaneServer | None = None
        self.nats_servers = nats_servers or os.environ.get("NATS_SERVER")
        self.nats_options: NatsOptions = nats or {}
        if "nats" in self.transports and not self.nats_servers:
            raise ValueError("the NATS plane needs nats_servers (or $NATS_SERVER)")
        get_codec(codec)
        self.handlers = {parse_endpoint(name): handler for name, handler in endpoints.items()}
        self.host = host
        self.port = port
        self.advertise_host = advertise_host or host
        self.discovery_root = Path(discovery_root) if discovery_root else default_file_root()
        self.register = register
        self.codec = codec
        self.max_concurrency = max_concurrency
        self.grace_period = grace_period
        self.max_frame_size = max_frame_size
        self.instances: list[Instance] = []
        self._routes: dict[str, tuple[Handler, Instance]] = {}
        self._active = 0
        self._calls: trio.Nursery | None = None
        self._deregistered = False
        self._accepting = trio.CancelScope()
        self._idle = trio.Event()

    async def run(
        self, *, task_status: trio.TaskStatus[list[Instance]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, register, serve until cancelled; reports the instances it serves."""
        try:
            async with trio.open_nursery() as calls:
                self._calls = calls
                async with trio.open_nursery() as service:
                    with self._accepting:
                        bases = await self._listen(service)
                        self._make_instances(bases)
                        if "nats" in self.transports:
                            await self._serve_nats_plane(service)
                        if self.register:
                            await trio.to_thread.run_sync(self._write_registrations)
                            service.start_soon(self._refresh_registrations)
                        task_status.started(list(self.instances))
                        await trio.sleep_forever()
        finally:
            await self._deregister()

    async def _listen(self, nursery: trio.Nursery) -> dict[str, str]:
        """Open the TCP and WebSocket listeners; each plane's address base."""
        bases = {}
        if "tcp" in self.transports:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
            self.port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, self._serve_connection, listeners)
            bases["tcp"] = format_host_port(self.advertise_host, self.port)
        if "websocket" in self.transports:
            bases["websocket"] = await self._start_websocket(nursery)
        if "http" in self.transports:
            bases["http"] = await self._start_http(nursery)
        return bases

    async def _start_http(self, nursery: trio.Nursery) -> str:
        """Serve Dynamo's HTTP plane (``POST /v1/rpc/{path}`` -> 202) with hypercorn."""
        from trioplane._http_plane import HttpPlaneServer, HttpReply, HttpRequest

        def answer(request: HttpRequest) -> HttpReply:
            endpoint = request.path.removeprefix(HTTP_ROOT + "/")
            ack = self._admit(RequestFrame(endpoint, request.headers, request.body))
            if not ack:
                return HttpReply.accept()
            status = 503 if ack.startswith("Server overloaded") else 404
            return HttpReply.status_code(status, ack)

        self._http = HttpPlaneServer(
            policy=answer,
            host=self.host,
            port=self.http_port,
            max_body_size=self.max_frame_size,
            keep_received=False,  # a worker runs for long: keep no request bodies
        )
        await nursery.start(self._http.serve)
        return f"http://{format_host_port(self.advertise_host, self._http.port)}{HTTP_ROOT}"

    def _make_instances(self, bases: Mapping[str, str]) -> None:
        for (namespace, component, endpoint), handler in self.handlers.items():
            for kind in self.transports:
                instance_id = random.getrandbits(63)
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
                self.instances.append(instance)
        if self._http is not None:  # the HTTP server answers 404 for any other path
            self._http.endpoints = tuple(
                path for path, (_, i) in self._routes.items() if i.transport_kind == "http"
            )

    async def _serve_nats_plane(self, nursery: trio.Nursery) -> None:
        nats = await start_nats_connection(nursery, self.nats_servers, **self.nats_options)
        for path, (_, instance) in self._routes.items():
            if instance.transport_kind == "nats_tcp":
                requests = await nats.subscribe(path)
                nursery.start_soon(self._serve_nats, nats, requests, path)
        await nats.flush()  # subscribed before anyone can discover us

    async def aclose(self) -> None:
        """Stop accepting, deregister; calls in flight get ``grace_period``, then are cancelled."""
        with trio.CancelScope(shield=True):
            await self._deregister()
            self._accepting.cancel()
            if self._active:
                with trio.move_on_after(self.grace_period):
                    await self._idle.wait()
            if self._calls is not None:
                self._calls.cancel_scope.cancel()

    # -- discovery ---------------------------------------------------------------------

    def _path_of(self, instance: Instance) -> Path:
        return self.discovery_root / "v1" / "instances" / instance_key(instance)

    # File I/O runs in a thread: a discovery root may sit on a slow or network file system.

    def _write_registrations(self) -> None:
        for instance in self.instances:
            path = self._path_of(instance)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp_{path.name}.{os.getpid()}")
            tmp.write_bytes(instance.to_json())
            os.replace(tmp, path)  # atomic, as Dynamo's file backend

    async def _refresh_registrations(self) -> None:
        while True:
            await trio.sleep(REFRESH_INTERVAL)
            await trio.to_thread.run_sync(self._touch_registrations, abandon_on_cancel=True)

    def _touch_registrations(self) -> None:
        now = time.time()
        for instance in self.instances:
            with suppress(OSError):
                os.utime(self._path_of(instance), (now, now))

    async def _deregister(self) -> None:
        """Remove the discovery records (once), even when cancelled, within a timeout."""
        if not self.register or self._deregistered:
            return
        self._deregistered = True
        with trio.CancelScope(shield=True), trio.move_on_after(DEREGISTER_TIMEOUT):
            await trio.to_thread.run_sync(self._remove_registrations, abandon_on_cancel=True)

    def _remove_registrations(self) -> None:
        for instance in self.instances:
            with suppress(OSError):
                self._path_of(instance).unlink()

    # -- the request plane ---------------------------------------------------------------

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        decoder = RequestFrameDecoder(max_frame_size=self.max_frame_size)
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                decoder.feed(data)
                acks = []
                try:
                    for frame in decoder.frames():
                        acks.append(self._accept(frame))
                except ProtocolError as exc:
                    acks.append(encode_ack(f"Read error: {exc}"))
                    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await stream.send_all(b"".join(acks))
                    return
                if acks:
                    try:
                        await stream.send_all(b"".join(acks))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return

    def _accept(self, frame: RequestFrame) -> bytes:
        """The TCP ack frame for a request (and its call started, if accepted)."""
        return encode_ack(self._admit(frame))

    def _admit(self, frame: RequestFrame) -> str:
        """Start the call, or say why not: the ack text, empty when accepted."""
        route = self._routes.get(frame.path)
        if route is None:
            return f"Server unavailable: unknown endpoint {frame.path}"
        if self._active >= self.max_concurrency or self._calls is None:
            return OVERLOADED
        self._active += 1
        self._calls.start_soon(self._call, route[0], frame)
        return ""

    # -- the WebSocket request plane ---------------------------------------------------------

    async def _start_websocket(self, nursery: trio.Nursery) -> str:
        """Serve the WebSocket plane (one TCP frame per message); its ``ws://`` base."""
        import trio_websocket  # an optional extra: trioplane[websocket]

        server = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                self._serve_websocket,
                self.host,
                self.websocket_port,
                None,
                max_message_size=self.max_frame_size,
            )
        )
        return f"ws://{format_host_port(self.advertise_host, server.port)}"

    async def _serve_websocket(self, request: Any) -> None:
        import trio_websocket

        ws = await request.accept()
        try:
            while True:
                message = await ws.get_message()
                try:
                    frame = self._one_frame(message)
                except ProtocolError as exc:
                    await ws.send_message(encode_ack(f"Read error: {exc}"))
                    await ws.aclose()
                    return
                await ws.send_message(self._accept(frame))
        except trio_websocket.ConnectionClosed:
            pass

    def _one_frame(self, message: bytes | str) -> RequestFrame:
        """The request frame a WebSocket message holds: exactly one, binary."""
        if isinstance(message, str):
            raise ProtocolError("a request must be a binary message")
        decoder = RequestFrameDecoder(max_frame_size=self.max_frame_size)
        decoder.feed(message)
        frame = decoder.next_frame()
        if frame is None or decoder.buffered:
            raise ProtocolError("a message must hold exactly one request frame")
        return frame

    # -- the NATS request plane -----------------------------------------------------------

    async def _serve_nats(
        self, connection: NatsConnection, requests: Subscription, subject: str
    ) -> None:
        """Requests on ``subject``: the reply is the ack (empty = accepted), as Dynamo's."""
        async with requests:
            async for msg in requests:
                headers = {k: v[0] for k, v in (msg.headers or {}).items() if v}
                ack = self._admit(RequestFrame(subject, headers, msg.payload))
                if msg.reply is not None:
                    with suppress(TrioplaneError):
                        await connection.publish(msg.reply, ack.encode())

    # -- one call ------------------------------------------------------------------------

    async def _call(self, handler: Handler, frame: RequestFrame) -> None:
        try:
            await self._stream_call(handler, frame)
        except Exception:
            log.exception("call on %s failed", frame.path)
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()
                self._idle = trio.Event()

    async def _stream_call(self, handler: Handler, frame: RequestFrame) -> None:
        try:
            message = decode_two_part(frame.payload)
            control = ControlMessage.decode(message.header)
        except ProtocolError as exc:
            log.warning("request on %s has no valid control message: %s", frame.path, exc)
            return  # as Dynamo: acked, and nowhere to call home
        codec = get_codec(control.payload_codec)
        context = RequestContext(control.id, control.metadata, frame.headers)
        host, port = split_host_port(control.call_home.address, control.call_home.address, "")
        stream = await trio.open_tcp_stream(host, port)
        async with stream, trio.open_nursery() as nursery:
            await stream.send_all(encode_handshake(control.call_home.subject))
            try:
                request = codec.decode(message.body)
            except ProtocolError as exc:
                await stream.send_all(encode_prologue(f"cannot decode the request: {exc}"))
                return
            handler_scope = trio.CancelScope()
            nursery.start_soon(self._watch_caller, stream, context, handler_scope)
            await stream.send_all(encode_prologue())
            completed = await self._produce(handler, request, context, stream, codec, handler_scope)
            if completed and not context.is_stopped():
                await stream.send_all(encode_end(codec) + encode_sentinel())
                with trio.move_on_after(SENTINEL_WAIT):  # as Dynamo: let the caller close
                    await context.wait_stopped()
            nursery.cancel_scope.cancel()

    async def _produce(
        self,
        handler: Handler,
        request: Any,
        context: RequestContext,
        stream: trio.SocketStream,
        codec: Any,
        scope: trio.CancelScope,
    ) -> bool:
        """Run the handler, sending each item; False if it was stopped or killed."""
        with scope:
            try:
                async with aclosing(handler(request, context)) as items:  # type: ignore[type-var]
                    async for item in items:
                        if context.is_stopped():
                            continue  # the handler decides when to end; nobody reads now
                        try:
                            await stream.send_all(encode_item(codec, {"data": item}))
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            context._stopped.set()  # the caller went away
            except Exception as exc:  # the handler's error goes to the caller
                await stream.send_all(
                    encode_item(codec, {"event": "error", "error": _error_object(exc)})
                )
            return not context.is_stopped()
        return False  # killed: the scope was cancelled

    async def _watch_caller(
        self, stream: trio.SocketStream, context: RequestContext, handler_scope: trio.CancelScope
    ) -> None:
        """Read ``"stop"``/``"kill"`` (or the caller leaving) off the call-home connection."""
        decoder = TwoPartDecoder()
        try:
            while data := await stream.receive_some(RECEIVE_SIZE):
                decoder.feed(data)
                for message in decoder.messages():
                    kind = decode_cancel(message.header)
                    context._killed = context._killed or kind == "kill"
                    context._stopped.set()
                    if context._killed:
                        handler_scope.cancel()
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        context._stopped.set()  # the caller went away: nobody reads the items any more


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
    worker = Worker(endpoints, **options)
    with collapse_groups():
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.run)
            try:
                yield worker
            finally:
                await worker.aclose()
                nursery.cancel_scope.cancel()
