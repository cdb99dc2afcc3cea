"""One worker instance served by N processes: every core, one registration.

A worker is one Trio loop on one core. ``open_worker_processes`` (or ``trioplane
serve ... --processes N``) runs the same endpoints in N child processes behind a
small supervisor, itself a Trio program::

    async with open_worker_processes({"ns.comp.ep": "package.module:handler"},
                                     processes=2) as workers:
        ...

* **The supervisor is the instance**, as Dynamo sees it. It listens on every
  request plane (one port each), registers one instance id per plane (one etcd
  lease, one file record), answers every request's ack (Dynamo's ``Server
  overloaded`` past ``max_concurrency``, counted over all children) and hands each
  accepted request to the child with the fewest calls in flight, over a Unix
  socket. It never imports the handlers.
* **A child runs the handlers**: it decodes the request, runs the handler and
  calls the caller home itself; the response stream never passes through the
  supervisor. It tells the supervisor when each call has ended.
* Requests are spread per request, not per connection: Dynamo's client and
  trioplane's both send everything for one worker address over one pipelined
  connection, so children sharing a listening port (``SO_REUSEPORT``, or a listener
  handed down) would give all of one caller's calls to one child.
* A child that dies is restarted (after 0.1 s, doubling to 5 s while it keeps
  dying); its calls in flight fail (their callers' streams end early), the other
  children's do not. More than ``max_restarts`` restarts within ``restart_window``
  seconds is a crash loop: the supervisor drains and fails with
  :class:`WorkerProcessError`.
* Closing (SIGTERM or SIGINT for ``serve_processes``) deregisters first, stops
  accepting, then every child finishes its calls within ``grace_period`` (the
  rest end with Dynamo's ``EngineShutdown``) and exits 0.
* The instance is ready (published, ``/health`` 200) only while at least one child
  serves; it is published once all N serve at start.

Handlers are given as ``"package.module:function"`` (or a module-level function,
which is passed by that name): each child imports them. See docs/scaling.rst.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import trio

from trioplane._checks import check_count, check_seconds
from trioplane._errors import BadArgument, ProtocolError, TrioplaneError
from trioplane._sockets import SocketIO
from trioplane._types import Instance
from trioplane._util import collapse_groups, running
from trioplane.addresses import parse_endpoint
from trioplane.discovery import StaticDiscovery
from trioplane.metrics import EndpointCounters
from trioplane.servers import CallHomeLimits
from trioplane.status import StatusServer
from trioplane.tls import TcpTls
from trioplane.wire._json import dump_str_map, load_json
from trioplane.wire.rejections import WORKER_AT_CAPACITY
from trioplane.wire.tcp import RequestFrame
from trioplane.worker import SHUTDOWN_NOTICE, Handler, RequestContext, Worker, WorkerStatistics

__all__ = [
    "ChildStatistics",
    "ProcessesStatistics",
    "WorkerProcessError",
    "WorkerProcesses",
    "add_processes_options",
    "handler_spec",
    "open_worker_processes",
    "serve_processes",
]

log = logging.getLogger(__name__)

#: How long a child may take to import its handlers and say it serves.
START_TIMEOUT = 60.0
#: The first restart's delay; it doubles, up to ``MAX_RESTART_DELAY``, while a child keeps dying.
RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 5.0
#: A write to a child blocked this long: the child is hung, and is killed.
WRITE_TIMEOUT = 30.0
#: How long a drained child gets to exit after its calls have ended, before it is killed.
EXIT_TIMEOUT = SHUTDOWN_NOTICE + 4.0

# -- between the supervisor and a child ------------------------------------------------
#
# Messages over a Unix stream socket, both ways: ``u32 body length | u8 kind | u64 call
# id | body``. The supervisor sends CONFIG once, then CALL (the request frame) and
# DRAIN; a child sends READY once it serves (FAILED, why, if it cannot start), DONE
# (call id) when a call has ended, LEAVING when it drains on its own (SIGTERM), and
# STATS (what only it counts: bytes sent, handler errors...) every ``STATS_INTERVAL``
# while they change.

_HEAD = struct.Struct("!IBQ")
_CALL_HEAD = struct.Struct("!HI")
CONFIG, READY, CALL, DONE, DRAIN, LEAVING, STATS, FAILED = range(8)
#: How often a child reports its counts to the supervisor (whose ``/metrics`` has them).
STATS_INTERVAL = 1.0
#: What a message may hold beyond a request frame (headers, path, config).
_SLACK = 256 * 1024


class WorkerProcessError(TrioplaneError):
    """A child process could not start, or kept dying (a crash loop); the message says
    which and how (its exit status; its own error is on the supervisor's stderr)."""


def _encode_call(frame: RequestFrame) -> bytes:
    path = frame.path.encode()
    headers = dump_str_map(frame.headers) if frame.headers else b"{}"
    return b"".join((_CALL_HEAD.pack(len(path), len(headers)), path, headers, frame.payload))


def _decode_call(body: bytes) -> RequestFrame:
    path_len, headers_len = _CALL_HEAD.unpack_from(body)
    start = _CALL_HEAD.size
    path = body[start : start + path_len].decode()
    start += path_len
    headers = load_json(body[start : start + headers_len], "headers")
    return RequestFrame(path, headers, body[start + headers_len :])


class _Link:
    """Messages over one Unix socket: :meth:`send` writes a message at once when the
    kernel takes it (no task woken, no wait), else queues it for the one writer
    task, which sends what is queued in one write; :meth:`receive` reads the next
    messages."""

    def __init__(self, sock: socket.socket, *, max_body: int) -> None:
        self._io = SocketIO(sock)
        self._out: list[bytes] = []
        self._wake = trio.Event()
        self._writing = False
        self._idle = trio.Event()
        self._buffer = bytearray()
        self.max_body = max_body

    def send(self, kind: int, call_id: int = 0, body: bytes = b"") -> None:
        if self._io.closed:
            return
        head = _HEAD.pack(len(body), kind, call_id)
        if not self._out and not self._writing:  # nothing before it: write it now
            data = head + body
            try:
                sent = self._io.send_nowait(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the peer is gone: the reading side hears it
            if sent == len(data):
                return  # the usual case: no task woken
            self._out.append(data[sent:])  # the writer sends the rest, in order
        else:
            self._out.append(head)
            if body:
                self._out.append(body)
        self._wake.set()

    async def write_loop(self, write_timeout: float = WRITE_TIMEOUT) -> None:
        """Send until cancelled; ``trio.TooSlowError`` when the peer stops reading,
        ``trio.BrokenResourceError``/``ClosedResourceError`` when it is gone."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._out:
                data = b"".join(self._out)
                self._out.clear()
                self._writing = True
                try:
                    with trio.fail_after(write_timeout):
                        await self._io.send_all(data)
                finally:
                    self._writing = False
            self._idle.set()

    async def send_now(self, kind: int, body: bytes) -> None:
        """Send one message now (while no :meth:`write_loop` runs)."""
        await self._io.send_all(_HEAD.pack(len(body), kind, 0) + body)

    async def flushed(self) -> None:
        """Until everything queued is written."""
        while self._out or self._writing:
            self._idle = trio.Event()
            await self._idle.wait()

    async def receive(self) -> list[tuple[int, int, bytes]]:
        """The next messages; ``[]`` once the peer has gone. ``ProtocolError`` for a
        message over ``max_body``."""
        while True:
            messages = self._parse()
            if messages:
                return messages
            try:
                data = await self._io.receive()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return []
            if not data:
                return []
            self._buffer += data

    def _parse(self) -> list[tuple[int, int, bytes]]:
        buffer, offset, messages = self._buffer, 0, []
        while len(buffer) - offset >= _HEAD.size:
            length, kind, call_id = _HEAD.unpack_from(buffer, offset)
            if length > self.max_body:
                raise ProtocolError(f"a message of {length} bytes, over {self.max_body}")
            end = offset + _HEAD.size + length
            if end > len(buffer):
                break
            messages.append((kind, call_id, bytes(buffer[offset + _HEAD.size : end])))
            offset = end
        if offset:
            del buffer[:offset]
        return messages

    def close(self) -> None:
        self._io.close()


# -- a child -----------------------------------------------------------------------------


class _ChildWorker(Worker):
    """A worker that listens nowhere and registers nothing: its calls come from the
    supervisor, for the same instances (same ids, same paths)."""

    def __init__(
        self,
        endpoints: Mapping[str, Handler],
        link: _Link,
        bases: Mapping[str, str],
        ids: Mapping[str, int],
        **options: Any,
    ) -> None:
        super().__init__(
            endpoints, discovery=StaticDiscovery(), register=False, status=False, **options
        )
        self._link = link
        self._bases = dict(bases)
        self._ids = dict(ids)
        self._call_id = 0
        self._finished = False
        #: The last STATS sent.
        self.reported = b""

    async def _run(self, task_status: trio.TaskStatus[list[Instance]]) -> None:
        try:
            async with trio.open_nursery() as calls:
                await self._start_calls(calls)
                self._make_instances(self._bases, self._ids)
                task_status.started(list(self.instances))
                await trio.sleep_forever()
        finally:
            self._finished = True

    def take(self, call_id: int, frame: RequestFrame) -> None:
        """Serve a call the supervisor accepted (DONE goes back when it ends)."""
        if self._finished:
            refusal = "the child has stopped"
        else:
            self._call_id = call_id
            refusal = self._admit(frame)
        if refusal:  # not expected: the supervisor admits within the same limits
            log.warning("child %d cannot serve a call on %s: %s", os.getpid(), frame.path, refusal)
            self._link.send(DONE, call_id)

    def _start_call(
        self, route: tuple[Handler, Instance], counters: EndpointCounters, frame: RequestFrame
    ) -> None:
        assert self._calls is not None
        self._calls.start_soon(self._child_call, self._call_id, route, counters, frame)

    async def _child_call(
        self,
        call_id: int,
        route: tuple[Handler, Instance],
        counters: EndpointCounters,
        frame: RequestFrame,
    ) -> None:
        try:
            await self._call(route, counters, frame)
        finally:
            self._link.send(DONE, call_id)


async def _reap(process: trio.Process) -> None:
    """Let ``process`` exit on its own within ``EXIT_TIMEOUT``, then kill it."""
    with trio.move_on_after(EXIT_TIMEOUT):
        await process.wait()
    if process.returncode is None:
        process.kill()


def _load(spec: str) -> Handler:
    """``package.module:function`` -> the function (the current directory importable)."""
    module_name, _, name = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    handler = getattr(importlib.import_module(module_name), name, None)
    if not callable(handler):
        raise ValueError(f"{module_name!r} has no function {name!r}")  # noqa: TRY004
    return handler  # type: ignore[no-any-return]


async def _serve_child(fd: int) -> None:
    """A child's life on the socket ``fd``: CONFIG, import the handlers, READY, serve
    CALLs until DRAIN, SIGTERM or the supervisor's end, then drain and return."""
    link = _Link(socket.socket(fileno=fd), max_body=_SLACK)
    try:
        with collapse_groups():
            await _serve_link(link)
    finally:
        link.close()


async def _serve_link(link: _Link) -> None:
    with trio.fail_after(START_TIMEOUT):
        messages = await link.receive()
    if not messages or messages[0][0] != CONFIG:
        raise WorkerProcessError("the supervisor sent no configuration")
    config = json.loads(messages[0][2])  # math.inf may be in it
    link.max_body = config["max_body"]
    try:
        handlers = {name: _load(spec) for name, spec in config["endpoints"].items()}
    except Exception as exc:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await link.send_now(FAILED, f"{type(exc).__name__}: {exc}".encode())
        raise
    options = config["options"]
    options["call_home"] = CallHomeLimits(**options["call_home"])
    options["tls"] = TcpTls(**options["tls"])
    worker = _ChildWorker(handlers, link, config["bases"], config["ids"], **options)
    stop = trio.Event()

    async def read_loop() -> None:
        pending = messages[1:]
        while True:
            for kind, call_id, body in pending:
                if kind == CALL:
                    worker.take(call_id, _decode_call(body))
                elif kind == DRAIN:
                    stop.set()
            pending = await link.receive()
            if not pending:  # the supervisor is gone: drain, and leave
                stop.set()
                return

    async def on_sigterm() -> None:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                link.send(LEAVING)  # no new calls, please
                stop.set()

    async def write_loop() -> None:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            await link.write_loop()

    async def report() -> None:
        while True:
            await trio.sleep(STATS_INTERVAL)
            _report(link, worker)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_loop)
        await nursery.start(worker.run)
        nursery.start_soon(on_sigterm)
        nursery.start_soon(read_loop)
        nursery.start_soon(report)
        link.send(READY)
        await stop.wait()
        await worker.aclose()  # calls in flight get grace_period, then EngineShutdown
        _report(link, worker)
        with trio.move_on_after(SHUTDOWN_NOTICE):
            await link.flushed()  # the last DONEs
        nursery.cancel_scope.cancel()


def _counts(worker: Worker) -> dict[str, Any]:
    """What only a child counts, cumulative: per path (response bytes, handler errors,
    cancellations, errors by type), handler errors, call-home failures, and the
    first-response histogram."""
    first = worker._samples.first_response
    return {
        "paths": {
            path: [c.response_bytes, c.handler_errors, c.cancellations, c.errors]
            for path, c in worker._endpoint_counters.items()
        },
        "handler_errors": worker._handler_errors,
        "call_home_failures": worker._call_home_failures,
        "first_response": [first.counts, first.sum],
    }


def _report(link: _Link, worker: _ChildWorker) -> None:
    """Send STATS if the counts changed since the last report."""
    body = json.dumps(_counts(worker)).encode()
    if body != worker.reported:
        worker.reported = body
        link.send(STATS, 0, body)


def _child_main(fd: int) -> int:
    """``python -m trioplane.processes --child FD``: serve on the socket ``FD``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the supervisor drains us
    try:
        trio.run(_serve_child, fd)
    except Exception as exc:
        print(f"trioplane child {os.getpid()}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


# -- the supervisor ----------------------------------------------------------------------


async def _elsewhere(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    """The supervisor's stand-in for a handler: calls run in the children."""
    raise RuntimeError("calls are served by the child processes")
    yield  # pragma: no cover


class _Front(Worker):
    """The supervisor's worker: listens, registers, admits; each accepted call goes
    to a child (:meth:`WorkerProcesses._dispatch`) instead of a task of its own."""

    def __init__(self, supervisor: WorkerProcesses, names: list[str], **options: Any) -> None:
        super().__init__(dict.fromkeys(names, _elsewhere), **options)
        self._supervisor = supervisor
        self.bases: dict[str, str] = {}
        self.ids: dict[str, int] = {}

    def _make_instances(self, bases: Mapping[str, str], ids: Mapping[str, int]) -> None:
        self.bases, self.ids = dict(bases), dict(ids)
        super()._make_instances(bases, ids)

    def _admit(self, frame: RequestFrame) -> str:
        if not self._supervisor._serving_children() and frame.path in self._routes:
            self._refused += 1  # no child serves now (restarting): try another instance
            self._refused_at_capacity += 1
            return WORKER_AT_CAPACITY
        return super()._admit(frame)

    def _start_call(
        self, route: tuple[Handler, Instance], counters: EndpointCounters, frame: RequestFrame
    ) -> None:
        self._samples.transit(frame.headers.get("x-frontend-send-ts-ns"))
        self._supervisor._dispatch(counters, frame)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            if not self._closing:
                self._closing = True
                await self._sync_registration()  # deregister first
                self._accepting.cancel()
                self._supervisor._drain_children()  # after the last CALL, in order
            await super().aclose()  # calls in flight: grace_period


@dataclass
class _Child:
    """One child slot: the process now in it, and the calls it has in flight."""

    index: int
    process: trio.Process | None = None
    link: _Link | None = None
    serving: bool = False
    starts: int = 0
    served: int = 0
    failures: int = 0
    #: call id -> (the endpoint's counters, when the call was admitted)
    calls: dict[int, tuple[EndpointCounters, float]] = dataclasses.field(default_factory=dict)
    #: why this life could not start, as it said (FAILED)
    error: str | None = None
    #: the last STATS of this life (added to the supervisor's counts already)
    counts: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: set when this life of the child said READY, and when it has exited (or before
    #: its first life: no process to wait for)
    ready: trio.Event = dataclasses.field(default_factory=trio.Event)
    exited: trio.Event = dataclasses.field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.exited.set()


@dataclass(frozen=True)
class ChildStatistics:
    """One child slot: its process now (``pid`` ``None`` between lives), whether it
    serves, its calls in flight, the calls it served and how many times it started."""

    index: int
    pid: int | None
    serving: bool
    calls_in_flight: int
    calls_served: int
    starts: int


@dataclass(frozen=True)
class ProcessesStatistics:
    """The instance's counters (the supervisor's :class:`~trioplane.WorkerStatistics`:
    calls accepted, refused, in flight, readiness, registration, planes), each child's,
    and how many times children were restarted."""

    worker: WorkerStatistics
    children: tuple[ChildStatistics, ...]
    restarts: int


class WorkerProcesses:
    """Serves endpoints with ``processes`` child processes; see the module doc.

    ``endpoints`` maps ``"ns.comp.ep"`` to ``"package.module:function"`` (or to a
    module-level function, passed to the children by that name). The other options
    are :class:`~trioplane.Worker`'s; ``max_concurrency`` is the whole instance's.
    ``health_check`` and ``tracer_provider`` live in one process and are refused
    (configure tracing in the handlers' module: it runs in every child).
    ``start_timeout``: how long a child may take to start serving; ``max_restarts``
    restarts within ``restart_window`` seconds is a crash loop.
    """

    def __init__(
        self,
        endpoints: Mapping[str, str | Handler],
        *,
        processes: int = 2,
        start_timeout: float = START_TIMEOUT,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        **options: Any,
    ) -> None:
        check_count(processes, "processes")
        check_seconds(start_timeout, "start_timeout", zero=False)
        check_seconds(restart_window, "restart_window", zero=False)
        check_count(max_restarts, "max_restarts", minimum=0)
        for name in ("health_check", "tracer_provider"):
            if options.get(name) is not None:
                raise BadArgument(
                    f"{name} is not supported with processes: it would live in the supervisor,"
                    " which runs no handler"
                )
        self.specs = {name: handler_spec(handler) for name, handler in endpoints.items()}
        for name in self.specs:
            parse_endpoint(name)
        self._front = _Front(self, list(self.specs), **options)
        self.start_timeout = start_timeout
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self._children = [_Child(i) for i in range(processes)]
        #: The instances served (one per endpoint and plane), once running.
        self.instances: list[Instance] = []
        self._call_ids = itertools.count(1)
        self._next = 0
        self._crashes: deque[float] = deque()
        self._restarts = 0
        self._started = False
        self._closing = False
        self._user_ready = True
        self._failure: str | None = None
        self._failed = trio.Event()
        self._startup_over = trio.Event()  # every child serves, or one failed
        self._closed = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def processes(self) -> int:
        return len(self._children)

    @property
    def grace_period(self) -> float:
        """What calls in flight get when closing (:class:`~trioplane.Worker`'s option)."""
        return self._front.grace_period

    @property
    def status(self) -> StatusServer | None:
        """The status server (``/health``, ``/live``, ``/metrics``) once running, if on."""
        return self._front.status

    def pids(self) -> list[int]:
        """The children's process ids now (a restarting slot has none)."""
        return [c.process.pid for c in self._children if c.process is not None]

    def statistics(self) -> ProcessesStatistics:
        """A snapshot of the instance's and each child's counters (no I/O)."""
        children = tuple(
            ChildStatistics(
                c.index,
                c.process.pid if c.process is not None else None,
                c.serving,
                len(c.calls),
                c.served,
                c.starts,
            )
            for c in self._children
        )
        return ProcessesStatistics(self._front.statistics(), children, self._restarts)

    async def set_ready(self, ready: bool) -> None:
        """As :meth:`Worker.set_ready`; the instance is published only while it is ready
        and a child serves."""
        self._user_ready = ready
        await self._sync_ready()

    # -- running -------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[list[Instance]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, start the children, register once they all serve; serve until closed.

        :class:`WorkerProcessError` if a child cannot start, or in a crash loop (after
        draining the others and deregistering).
        """
        try:
            with collapse_groups():
                await self._run(task_status)
        finally:
            self._closed.set()
        if self._failure is not None:
            raise WorkerProcessError(self._failure)

    async def _run(self, task_status: trio.TaskStatus[list[Instance]]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._front.set_ready(False)  # published once the children serve
            self.instances = await nursery.start(self._front.run)
            for child in self._children:
                nursery.start_soon(self._keep, child)
            with trio.move_on_after(self.start_timeout):
                await self._startup_over.wait()
            if not self._failed.is_set() and not all(c.serving for c in self._children):
                self._fail(f"the children did not all serve within {self.start_timeout:g} s")
            if not self._failed.is_set():
                self._started = True
                await self._sync_ready()
                task_status.started(list(self.instances))
                await self._failed.wait()
            await self.aclose()

    async def aclose(self) -> None:
        """Deregister, stop accepting, let every child finish its calls within
        ``grace_period`` and exit (killed if it does not within a few seconds more)."""
        with trio.CancelScope(shield=True):
            if self._closing:
                if self._nursery is not None:
                    await self._closed.wait()
                return
            self._closing = True
            await self._front.aclose()
            with trio.move_on_after(EXIT_TIMEOUT):
                for child in self._children:
                    await child.exited.wait()
            for child in self._children:
                if child.process is not None and child.process.returncode is None:
                    log.warning("child %d did not exit after draining; killing it", child.index)
                    child.process.kill()
            for child in self._children:
                await child.exited.wait()
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()

    def _fail(self, why: str) -> None:
        if self._failure is None:
            log.error("trioplane worker processes: %s; stopping", why)
            self._failure = why
            self._failed.set()
            self._startup_over.set()

    async def _sync_ready(self) -> None:
        if self._started and not self._closing:
            await self._front.set_ready(self._user_ready and self._serving_children())

    # -- the children --------------------------------------------------------------------

    async def _keep(self, child: _Child) -> None:
        """Run the slot's child; restart it when it dies (with back-off) until closing."""
        while True:
            child.ready, child.exited = trio.Event(), trio.Event()
            began = trio.current_time()
            try:
                status = await self._run_child(child)
            finally:
                child.exited.set()
            if self._closing:
                return
            if not self._started:
                if child.error:
                    self._fail(f"child {child.index} could not start: {child.error}")
                else:
                    self._fail(f"child {child.index} exited with {status} before serving")
                return
            now = trio.current_time()
            child.failures = 1 if now - began > self.restart_window else child.failures + 1
            self._crashes.append(now)
            while self._crashes and now - self._crashes[0] > self.restart_window:
                self._crashes.popleft()
            if len(self._crashes) > self.max_restarts:
                self._fail(
                    f"a crash loop: {len(self._crashes)} child exits within"
                    f" {self.restart_window:g} s (the last: child {child.index}, {status})"
                )
                return
            delay = min(RESTART_DELAY * 2 ** (child.failures - 1), MAX_RESTART_DELAY)
            log.warning(
                "child %d exited with %s; restarting it in %.1f s", child.index, status, delay
            )
            await trio.sleep(delay)
            if self._closing:
                return
            self._restarts += 1

    async def _run_child(self, child: _Child) -> str:
        """One life of a child: start it, configure it, serve through it until it exits;
        its exit status, as words."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trioplane.processes", "--child", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        link = _Link(mine, max_body=self._front.max_frame_size + _SLACK)
        child.process, child.link, child.counts, child.error = process, link, {}, None
        child.starts += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_to, child, link, process)
                nursery.start_soon(self._read_from, child, link, process)
                nursery.start_soon(self._start_deadline, child, process)
                if self._closing:  # closing began while it was being started
                    process.kill()
                link.send(CONFIG, 0, self._config(child))
                await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                self._lost(child)
                link.close()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                child.process = None
                await self._sync_ready()
        code = process.returncode
        assert code is not None
        return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"

    def _config(self, child: _Child) -> bytes:
        front = self._front
        options = {
            "transports": list(front.transports),
            "nats_servers": front.nats_servers,
            "codec": front.codec,
            "grace_period": front.grace_period,
            "max_concurrency": front.max_concurrency,
            "max_frame_size": front.max_frame_size,
            "call_home": dataclasses.asdict(front.call_home_limits),
            "tls": {f.name: getattr(front.tls, f.name) for f in dataclasses.fields(front.tls)},
        }
        config = {
            "index": child.index,
            "endpoints": self.specs,
            "bases": front.bases,
            "ids": front.ids,
            "max_body": front.max_frame_size + _SLACK,
            "options": options,
        }
        return json.dumps(config).encode()

    async def _write_to(self, child: _Child, link: _Link, process: trio.Process) -> None:
        try:
            await link.write_loop()
        except trio.TooSlowError:
            log.warning("child %d has not read for %g s: killing it", child.index, WRITE_TIMEOUT)
            process.kill()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await _reap(process)  # its end is gone: it is on its way out

    async def _read_from(self, child: _Child, link: _Link, process: trio.Process) -> None:
        front = self._front
        try:
            while True:
                messages = await link.receive()
                if not messages:
                    break
                for kind, call_id, body in messages:
                    if kind == DONE:
                        call = child.calls.pop(call_id, None)
                        if call is not None:
                            child.served += 1
                            front._end_call(*call)
                    elif kind == FAILED:
                        child.error = body.decode(errors="replace")[:2000]
                    elif kind == STATS:
                        try:
                            self._absorb(child, json.loads(body))
                        except (ValueError, TypeError, KeyError) as exc:  # a child's bug
                            log.warning("child %d sent bad counts: %r", child.index, exc)
                    elif kind in (READY, LEAVING):
                        child.serving = kind == READY and not self._closing
                        child.ready.set()
                        if all(c.serving for c in self._children):
                            self._startup_over.set()
                        self._update_readiness()
        except ProtocolError as exc:
            log.warning("child %d broke the link: %s; killing it", child.index, exc)
            process.kill()
        child.serving = False  # its link is gone: so is it, or it soon will be
        self._update_readiness()
        await _reap(process)

    async def _start_deadline(self, child: _Child, process: trio.Process) -> None:
        with trio.move_on_after(self.start_timeout):
            await child.ready.wait()
            return
        log.warning("child %d did not serve in %g s: killing it", child.index, self.start_timeout)
        process.kill()

    def _update_readiness(self) -> None:
        """Publish or withdraw the instance as the children serve (in a task: the
        registration's I/O must not hold up the calls' bookkeeping)."""
        if self._nursery is not None and self._started and not self._closing:
            self._nursery.start_soon(self._sync_ready)

    def _absorb(self, child: _Child, counts: dict[str, Any]) -> None:
        """Add what the child counted since its last STATS to the supervisor's counts
        (its statistics and ``/metrics`` are the whole instance's)."""
        front, before = self._front, child.counts
        old_paths = before.get("paths", {})
        for path, (sent, errors, cancels, by_type) in counts["paths"].items():
            counters = front._endpoint_counters.get(path)
            if counters is None:
                continue
            old_sent, old_errors, old_cancels, old_by_type = old_paths.get(path, (0, 0, 0, {}))
            counters.response_bytes += sent - old_sent
            counters.handler_errors += errors - old_errors
            counters.cancellations += cancels - old_cancels
            for kind, n in by_type.items():
                counters.errors[kind] = counters.errors.get(kind, 0) + n - old_by_type.get(kind, 0)
        front._handler_errors += counts["handler_errors"] - before.get("handler_errors", 0)
        front._call_home_failures += counts["call_home_failures"] - before.get(
            "call_home_failures", 0
        )
        histogram = front._samples.first_response
        buckets, total = counts["first_response"]
        old_buckets, old_total = before.get("first_response", ([0] * len(buckets), 0.0))
        if len(buckets) == len(histogram.counts):
            for i, (new, old) in enumerate(zip(buckets, old_buckets, strict=True)):
                histogram.counts[i] += new - old
            histogram.sum += total - old_total
        child.counts = counts

    def _lost(self, child: _Child) -> None:
        """The child is gone: its calls in flight are over (their callers' streams broke)."""
        child.serving = False
        calls, child.calls = child.calls, {}
        for counters, started in calls.values():
            self._front._end_call(counters, started)

    def _serving_children(self) -> bool:
        return any(c.serving for c in self._children)

    def _dispatch(self, counters: EndpointCounters, frame: RequestFrame) -> None:
        """Hand an accepted call to the serving child with the fewest calls in flight
        (ties in turn)."""
        children = self._children
        count = len(children)
        best: _Child | None = None
        for i in range(count):
            child = children[(self._next + i) % count]
            if child.serving and (best is None or len(child.calls) < len(best.calls)):
                best = child
        self._next = (self._next + 1) % count
        assert best is not None  # _Front._admit checked
        assert best.link is not None
        call_id = next(self._call_ids)
        best.calls[call_id] = (counters, time.perf_counter())
        best.link.send(CALL, call_id, _encode_call(frame))

    def _drain_children(self) -> None:
        for child in self._children:
            child.serving = False
            if child.link is not None:
                child.link.send(DRAIN)
            if child.process is not None and not child.ready.is_set():
                child.process.kill()  # still starting: it has no call to finish


def handler_spec(handler: str | Handler) -> str:
    """``"package.module:function"`` for a handler given as that text or as a
    module-level function; :class:`~trioplane.BadArgument` (a ``ValueError``) for
    anything a child cannot import."""
    if isinstance(handler, str):
        before, sep, after = handler.partition(":")
        if not sep or not before or not after:
            raise BadArgument(f"a handler is package.module:function, not {handler!r}")
        return handler
    module: str | None = getattr(handler, "__module__", None)
    name: str = getattr(handler, "__qualname__", "")
    if not module or module == "__main__" or "<" in name or "." in name or not callable(handler):
        raise BadArgument(
            f"{handler!r} cannot be imported by a child process: give a module-level"
            " function of an importable module, or 'package.module:function'"
        )
    return f"{module}:{name}"


@asynccontextmanager
async def open_worker_processes(
    endpoints: Mapping[str, str | Handler], *, processes: int = 2, **options: Any
) -> AsyncIterator[WorkerProcesses]:
    """Serve ``endpoints`` with ``processes`` child processes for the block (see
    :class:`WorkerProcesses`); leaving it drains them."""
    async with running(WorkerProcesses(endpoints, processes=processes, **options)) as workers:
        yield workers


async def serve_processes(
    endpoints: Mapping[str, str | Handler],
    *,
    processes: int,
    on_serving: Callable[[WorkerProcesses], object] | None = None,
    **options: Any,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return (what ``trioplane serve
    --processes N`` runs): prints a line per instance served, and on stderr what
    signal started the drain. ``on_serving`` is called once every child serves."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_worker_processes(endpoints, processes=processes, **options) as workers:
            if on_serving is not None:
                on_serving(workers)
            pids = ", ".join(str(pid) for pid in workers.pids())
            for instance in workers.instances:
                print(
                    f"serving {instance.endpoint_path} as {instance.instance_id:x} on "
                    f"{instance.transport_kind} {instance.address} "
                    f"({processes} processes: {pids})",
                    flush=True,
                )
            async for signum in signals:
                name = signal.Signals(signum).name
                grace = workers.grace_period
                print(f"trioplane: {name}: draining (up to {grace:g} s)", file=sys.stderr)
                break


# -- the command line ----------------------------------------------------------------------


def add_processes_options(parser: argparse.ArgumentParser) -> None:
    """``--processes N`` for ``trioplane serve``."""
    parser.add_argument(
        "--processes",
        type=_process_count,
        default=1,
        metavar="N",
        help="serve the instance with N child processes behind one registration "
        "(one per core; default 1: in this process)",
    )


def _process_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of processes: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError("--processes must be at least 1")
    return count


def main(argv: list[str] | None = None) -> int:
    """``python -m trioplane.processes --child FD``: a child process, started by its
    supervisor (``trioplane serve --processes N`` is the command for people)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"] and len(argv) == 2:
        return _child_main(int(argv[1]))
    print("trioplane: use 'trioplane serve ... --processes N'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
