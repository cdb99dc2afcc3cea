"""The worker's status server, like Dynamo's system server: ``/health``, ``/live``,
``/metrics``.

Off by default; on with ``open_worker(..., status=StatusOptions(...))`` or
``status=True``, or, with no ``status`` option, when ``DYN_SYSTEM_PORT`` is set (as a
Dynamo process: ``0`` for a free port, empty or negative for off; the host from
``DYN_SYSTEM_HOST``, default ``0.0.0.0``; the paths from ``DYN_SYSTEM_HEALTH_PATH``
and ``DYN_SYSTEM_LIVE_PATH``). It runs in the worker's nursery.

* ``GET /health``: ``200`` when the worker is ready (its instances published, not
  withdrawn by ``set_ready(False)``, and its health check passing), else ``503``;
  the body is Dynamo's JSON: ``{"status": "ready"|"notready", "uptime": {"secs",
  "nanos"}, "endpoints": {"name": "ready"|"notready"}}``.
* ``GET /live``: ``200`` while the worker serves (``{"status": "live", "uptime"}``).
  Dynamo answers ``/live`` like ``/health``; trioplane's says only that the process
  is alive, so a liveness probe does not restart a worker that is merely draining
  or withdrawn.
* ``GET /metrics``: the worker's metrics (:mod:`trioplane.metrics`) in Prometheus's
  text format; ``501`` without prometheus-client.
* ``HEAD`` too; another method ``405``; another path ``404`` (``Route not found``).

HTTP/1.1 with keep-alive, parsed by h11, on the same listener as the request-plane
servers: at most ``limits.max_connections`` (64) peers, a request head of at most
``limits.max_frame_size`` (16 KiB) within ``limits.frame_timeout`` (10 s) of its
first byte, ``limits.idle_timeout`` (30 s) between requests, ``limits.write_timeout``
(10 s) per response.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h11
import trio

from trioplane._errors import BadArgument, BadArgumentType
from trioplane.servers._base import PlaneServer, ServerLimits

if TYPE_CHECKING:
    from trioplane.metrics import Metrics
    from trioplane.worker import Worker

__all__ = ["STATUS_LIMITS", "StatusOptions", "StatusServer"]

#: The status server's defaults: a few probes and scrapers, small requests.
STATUS_LIMITS = ServerLimits(
    max_connections=64,
    idle_timeout=30.0,
    frame_timeout=10.0,
    write_timeout=10.0,
    handshake_timeout=10.0,
    max_frame_size=16 * 1024,
)
TEXT = "text/plain; charset=utf-8"  # Dynamo's, for every route (its bodies are JSON)
RECEIVE_SIZE = 4096
#: How long a connection closed after an error response still drains the peer's bytes.
LINGER_TIME = 1.0


@dataclass(frozen=True)
class StatusOptions:
    """Where the status server listens, its paths and its limits."""

    host: str = "127.0.0.1"
    port: int = 0
    health_path: str = "/health"
    live_path: str = "/live"
    limits: ServerLimits = field(default=STATUS_LIMITS)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise BadArgument(f"status port must be 0..65535, not {self.port}")
        for path in (self.health_path, self.live_path):
            if not path.startswith("/"):
                raise BadArgument(f"status paths start with '/': {path!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StatusOptions | None:
        """Dynamo's ``DYN_SYSTEM_*`` settings, or ``None`` when they turn it off."""
        env = os.environ if environ is None else environ
        text = env.get("DYN_SYSTEM_PORT", "").strip()
        if not text:
            return None
        try:
            port = int(text)
        except ValueError:
            raise BadArgument(f"DYN_SYSTEM_PORT is not a port number: {text!r}") from None
        if port < 0:
            return None  # Dynamo's "off"
        return cls(
            host=env.get("DYN_SYSTEM_HOST") or "0.0.0.0",
            port=port,
            health_path=env.get("DYN_SYSTEM_HEALTH_PATH") or "/health",
            live_path=env.get("DYN_SYSTEM_LIVE_PATH") or "/live",
        )


def resolve_status(option: StatusOptions | bool | None) -> StatusOptions | None:
    """A ``status=`` option: options, ``True`` (defaults), ``False`` (off), ``None`` (env)."""
    if option is None:
        return StatusOptions.from_env()
    if option is True:
        return StatusOptions()
    if option is False:
        return None
    if isinstance(option, StatusOptions):
        return option
    raise BadArgumentType(f"status must be StatusOptions or a bool, not {option!r}")


class StatusServer(PlaneServer):
    """Serves a worker's status over HTTP/1.1 (see the module doc)."""

    def __init__(self, worker: Worker, options: StatusOptions, metrics: Metrics | None) -> None:
        super().__init__(host=options.host, port=options.port, limits=options.limits)
        self.worker = worker
        self.options = options
        self.metrics = metrics
        self.started = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    async def _serve_stream(self, stream: trio.abc.Stream) -> None:
        limits = self.limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_frame_size)
        deadline = trio.current_time() + limits.idle_timeout
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.counters.read_errors += 1
                status = exc.error_status_hint
                can_answer = conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)
                if can_answer and await self._send(stream, conn, status, b"", close=True):
                    await _lingering_close(stream)
                return
            if event is h11.NEED_DATA:
                # Between requests the idle deadline runs; from a request's first byte,
                # its whole head must come within frame_timeout (however it trickles).
                between = conn.their_state is h11.IDLE and not conn.trailing_data[0]
                if between:
                    deadline = trio.current_time() + limits.idle_timeout
                with trio.move_on_at(deadline):
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if between and data:
                        deadline = trio.current_time() + limits.frame_timeout
                    conn.receive_data(bytes(data))
                    continue
                self.counters.timeouts += 1
                return  # idle too long, or a request head too slow
            if isinstance(event, h11.Request):
                self.counters.requests += 1
                status, headers, body = self.answer(event.method.decode(), event.target.decode())
                # A request with a body (which nothing here reads) is answered, then closed.
                close = not isinstance(conn.next_event(), h11.EndOfMessage)
                if not await self._send(stream, conn, status, body, headers, close=close):
                    return
                if close:
                    await _lingering_close(stream)
                    return
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                if event is h11.PAUSED and conn.states == {
                    h11.CLIENT: h11.DONE,
                    h11.SERVER: h11.DONE,
                }:
                    conn.start_next_cycle()
                    continue
                return

    async def _send(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection,
        status: int,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        *,
        close: bool,
    ) -> bool:
        """Write one response within ``write_timeout``; ``False`` if that failed."""
        all_headers = [("content-type", TEXT), ("content-length", str(len(body)))]
        all_headers += headers or []
        if close:
            all_headers.append(("connection", "close"))
        data = conn.send(h11.Response(status_code=status, headers=all_headers)) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        with trio.move_on_after(self.limits.write_timeout) as scope:
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        if scope.cancelled_caught:
            self.counters.timeouts += 1
            return False
        return True

    def answer(self, method: str, target: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, extra headers and body for ``method target`` (no I/O)."""
        path = target.split("?", 1)[0]
        routes = {
            self.options.health_path: self._health,
            self.options.live_path: self._live,
            "/metrics": self._metrics,
        }
        route = routes.get(path)
        if route is None:
            return 404, [], b"Route not found"
        if method not in ("GET", "HEAD"):
            return 405, [("allow", "GET,HEAD")], b""
        status, body = route()
        return status, [], b"" if method == "HEAD" else body

    def _uptime(self) -> dict[str, int]:
        elapsed = time.monotonic() - self.started
        return {"secs": int(elapsed), "nanos": int((elapsed % 1) * 1e9)}

    def _health(self) -> tuple[int, bytes]:
        stats = self.worker.statistics()
        ready = (
            stats.ready
            and stats.healthy
            and stats.registration.registered
            and not self.worker.closing
        )
        state = "ready" if ready else "notready"
        endpoints = {endpoint: state for _, _, endpoint in self.worker.handlers}
        body = {"status": state, "uptime": self._uptime(), "endpoints": endpoints}
        return (200 if ready else 503), json.dumps(body, separators=(",", ":")).encode()

    def _live(self) -> tuple[int, bytes]:
        body = {"status": "live", "uptime": self._uptime()}
        return 200, json.dumps(body, separators=(",", ":")).encode()

    def _metrics(self) -> tuple[int, bytes]:
        if self.metrics is None:
            return 501, b"metrics need prometheus-client (pip install 'trioplane[metrics]')"
        from prometheus_client import generate_latest

        return 200, generate_latest(self.metrics.registry)


async def _lingering_close(stream: trio.abc.Stream) -> None:
    """Read (and drop) what the peer still sends, briefly, before closing: closing with
    unread bytes makes the kernel reset the connection, and the peer could lose the
    response it has not read yet."""
    with trio.move_on_after(LINGER_TIME):
        try:
            while len(await stream.receive_some(RECEIVE_SIZE)):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
