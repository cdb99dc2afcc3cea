"""Dynamo's HTTP request plane (as served by Dynamo up to 1.2.1), on hypercorn.

The server behind the worker side's HTTP plane (:func:`trioplane.open_worker`)
and the HTTP test worker of :mod:`trioplane.testing.http` (which records what
it receives). It needs hypercorn (extras ``http-worker`` and ``test``).

It runs hypercorn's Trio server on 127.0.0.1 (a free port by default) with a
small ASGI app that answers like Dynamo 1.2.1's worker (checked against the
real one; spec, section 4.3):

* ``POST {root}/{endpoint}`` (``root`` is ``/v1/rpc``) -> ``202`` with an empty
  body: the request is accepted (what :attr:`HttpPlaneServer.policy` says, by default);
* a path outside ``{root}/...`` -> ``404`` with an empty body;
* any other method under ``{root}/`` -> ``405`` with ``allow: POST``;
* a body over ``max_body_size`` (2 MiB) -> ``413``, checked before the endpoint;
* an endpoint it does not serve -> ``404`` with the body ``Endpoint not found``.

One plain-text port speaks HTTP/1.1 (keep-alive) and HTTP/2 with prior
knowledge (h2c): hypercorn switches to HTTP/2 when a connection opens with the
HTTP/2 preface. (It also honours ``Upgrade: h2c``, but only on a request without
a body, so never on a POST; Dynamo ignores that header altogether.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import trio

from trioplane._errors import BadArgument, MissingExtra
from trioplane.wire.rejections import ENDPOINT_NOT_FOUND

try:
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from hypercorn.typing import (
        ASGIReceiveCallable,
        ASGISendCallable,
        HTTPResponseBodyEvent,
        HTTPResponseStartEvent,
        HTTPScope,
        Scope,
    )
except ImportError as exc:
    raise MissingExtra(
        "serving the HTTP request plane (a worker's transport 'http', or trioplane.testing.http)",
        "hypercorn",
        "http-worker",
    ) from exc

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_ROOT",
    "HttpPolicy",
    "HttpReply",
    "HttpRequest",
    "HttpPlaneServer",
    "HttpPlaneStatistics",
]

DEFAULT_ROOT = "/v1/rpc"
DEFAULT_MAX_BODY_SIZE = 2 * 1024 * 1024
#: Dynamo 1.2.1's HTTP/2 server allows 200 concurrent streams (hypercorn's default is 100).
DEFAULT_MAX_CONCURRENT_STREAMS = 200
TEXT_PLAIN = ("content-type", "text/plain; charset=utf-8")
BODY_TOO_LARGE = b"Failed to buffer the request body: length limit exceeded"
UNLIMITED = 2**62


@dataclass(frozen=True)
class HttpRequest:
    """One request as the test worker received it."""

    method: str
    #: The path without the query string, e.g. ``/v1/rpc/generate``.
    path: str
    #: Header names in lower case; repeated headers are joined with ``", "``.
    headers: dict[str, str]
    #: The body; for a ``413`` only its first ``max_body_size`` bytes.
    body: bytes
    #: ``"1.1"`` or ``"2"``.
    http_version: str = "1.1"
    #: The caller's ``(host, port)``: one port per connection.
    client: tuple[str, int] | None = None
    #: False when the caller (or the connection) went away before the body ended:
    #: such a request was never processed.
    complete: bool = True


@dataclass(frozen=True)
class HttpReply:
    """How the test worker answers an accepted request. Build with the class methods."""

    status: int = 202
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (TEXT_PLAIN,)
    #: Seconds to wait before answering (``math.inf``: never answer).
    delay: float = 0.0

    @classmethod
    def accept(cls, *, delay: float = 0.0) -> HttpReply:
        """Dynamo's ack: ``202 Accepted``, empty body."""
        return cls(delay=delay)

    @classmethod
    def status_code(
        cls,
        status: int,
        text: str | bytes = b"",
        *,
        headers: Iterable[tuple[str, str]] = (TEXT_PLAIN,),
        delay: float = 0.0,
    ) -> HttpReply:
        """Any other answer, e.g. ``HttpReply.status_code(503, "overloaded")``."""
        body = text.encode() if isinstance(text, str) else text
        return cls(status, body, tuple(headers), delay)

    @classmethod
    def hang(cls) -> HttpReply:
        """Never answer (until the caller gives up or the worker stops)."""
        return cls(delay=math.inf)


#: Decides the reply to each request the worker would accept.
HttpPolicy = Callable[[HttpRequest], HttpReply]


def accept_all(request: HttpRequest) -> HttpReply:
    return HttpReply.accept()


@dataclass(frozen=True)
class HttpPlaneStatistics:
    """A snapshot of an HTTP plane server's counters."""

    #: Requests answered (any status).
    requests_served: int = 0
    #: Requests whose caller left before the answer (e.g. an HTTP/2 ``RST_STREAM``).
    requests_abandoned: int = 0
    #: Requests received and not yet answered or abandoned.
    requests_in_flight: int = 0


@dataclass
class HttpPlaneServer:
    """A running HTTP plane server: its URLs, its policy, its counters.

    ``policy`` is asked only about requests Dynamo would accept (a ``POST`` to a
    served endpoint with a body within the limit); the 404/405/413 answers come
    first, in Dynamo's order (path, method, body size, endpoint name).
    ``on_request`` sees every request received (the test worker records them).
    One port speaks HTTP/1.1 and h2c; with ``certfile`` and ``keyfile``, https.
    ``keep_alive_max_requests`` makes hypercorn retire connections: on HTTP/1.1
    the N-th answer carries ``connection: close``; on HTTP/2 the request *after*
    the N-th makes it send GOAWAY (``last_stream_id`` = that request's stream),
    and it then drops that request and every other one still in flight on the
    connection without an answer (their callers see the GOAWAY as an error).
    """

    policy: HttpPolicy = accept_all
    endpoints: tuple[str, ...] = ("generate",)
    host: str = "127.0.0.1"
    port: int = 0
    root: str = DEFAULT_ROOT
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    #: Requests per connection before hypercorn closes it (HTTP/1.1: ``connection: close``
    #: on the last answer; HTTP/2: GOAWAY, see :func:`open_http_plane_server`). ``None``:
    #: no limit, like Dynamo (hypercorn's own default is 1000).
    keep_alive_max_requests: int | None = None
    #: Seconds an idle connection stays open (hypercorn's default).
    keep_alive_timeout: float = 5.0
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    #: Called with every request, once its body is complete (or its caller left).
    on_request: Callable[[HttpRequest], None] | None = None
    #: PEM files of the server's certificate (chain) and key: serve https (ALPN: h2,
    #: http/1.1). ``None``: plain text.
    certfile: str | None = None
    keyfile: str | None = None
    #: Seconds a TLS handshake may take.
    handshake_timeout: float = 10.0
    #: Requests answered (any status).
    requests_served: int = 0
    #: Requests whose caller left before the answer (e.g. an HTTP/2 ``RST_STREAM``).
    requests_abandoned: int = 0
    #: Requests received and not yet answered or abandoned.
    requests_in_flight: int = 0

    def __post_init__(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise BadArgument("https needs both certfile and keyfile")

    def statistics(self) -> HttpPlaneStatistics:
        """A snapshot of the server's counters."""
        return HttpPlaneStatistics(
            self.requests_served, self.requests_abandoned, self.requests_in_flight
        )

    @property
    def base_url(self) -> str:
        scheme = "http" if self.certfile is None else "https"
        return f"{scheme}://{self.host}:{self.port}"

    def url(self, endpoint: str | None = None) -> str:
        """``http://127.0.0.1:PORT/v1/rpc/<endpoint>`` (default: the first endpoint served)."""
        name = self.endpoints[0] if endpoint is None else endpoint
        return f"{self.base_url}{self.root}/{name}"

    def config(self) -> Config:
        config = Config()
        config.bind = [f"{self.host}:{self.port}"]
        if self.keep_alive_max_requests is None:
            config.keep_alive_max_requests = UNLIMITED
        else:
            config.keep_alive_max_requests = self.keep_alive_max_requests
        config.keep_alive_timeout = self.keep_alive_timeout
        config.h2_max_concurrent_streams = self.max_concurrent_streams
        config.certfile = self.certfile
        config.keyfile = self.keyfile
        config.ssl_handshake_timeout = self.handshake_timeout
        config.include_server_header = False
        config.accesslog = None
        config.errorlog = logging.getLogger("trioplane.http_plane")
        return config

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``port`` is set before ``started``."""
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                partial(serve, self._app, self.config(), mode="asgi")
            )
            self.port = int(binds[0].rsplit(":", 1)[1])  # "http://127.0.0.1:PORT"
            task_status.started()

    async def _app(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await self._handle(scope, receive, send)

    async def _handle(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        path = scope["path"]
        method = scope["method"]
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body, too_large, disconnected = await self._read_body(receive)
        client = scope["client"]
        request = HttpRequest(
            method=method,
            path=path,
            headers=headers,
            body=body,
            http_version=scope["http_version"],
            client=(client[0], client[1]) if client is not None else None,
            complete=not disconnected,
        )
        if self.on_request is not None:
            self.on_request(request)
        if disconnected:
            self.requests_abandoned += 1
            return
        prefix = self.root.rstrip("/") + "/"
        endpoint = path[len(prefix) :] if path.startswith(prefix) else ""
        if not endpoint:
            reply = HttpReply.status_code(404, headers=())
        elif method != "POST":
            reply = HttpReply.status_code(405, headers=[("allow", "POST")])
        elif too_large:
            reply = HttpReply.status_code(413, BODY_TOO_LARGE)
        elif endpoint not in self.endpoints:
            reply = HttpReply.status_code(404, ENDPOINT_NOT_FOUND)
        else:
            reply = self.policy(request)
        self.requests_in_flight += 1
        try:
            if reply.delay and await self._caller_leaves_within(receive, reply.delay):
                self.requests_abandoned += 1
                return
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    *((k.encode(), v.encode()) for k, v in reply.headers),
                    (b"content-length", str(len(reply.body)).encode()),
                ],
                "trailers": False,
            }
            content: HTTPResponseBodyEvent = {
                "type": "http.response.body",
                "body": reply.body,
                "more_body": False,
            }
            await send(start)
            await send(content)
            self.requests_served += 1
        finally:
            self.requests_in_flight -= 1

    async def _read_body(self, receive: ASGIReceiveCallable) -> tuple[bytes, bool, bool]:
        """The body (at most ``max_body_size`` bytes), whether it was longer, whether the
        caller left. A longer body is read to its end and dropped, so that the caller
        reads the ``413`` instead of failing to write."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks), size > self.max_body_size, True
            if message["type"] != "http.request":  # pragma: no cover - not sent for http
                continue
            data = message["body"]
            if size < self.max_body_size:
                chunks.append(data[: self.max_body_size - size])
            size += len(data)
            if not message["more_body"]:
                return b"".join(chunks), size > self.max_body_size, False

    async def _caller_leaves_within(self, receive: ASGIReceiveCallable, delay: float) -> bool:
        """Wait ``delay`` seconds; ``True`` as soon as the caller disconnects."""
        with trio.move_on_after(delay):
            while (await receive())["type"] != "http.disconnect":
                pass
            return True
        return False
