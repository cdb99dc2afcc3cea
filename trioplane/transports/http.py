"""The HTTP request plane (httpx), as Dynamo 1.2.1's workers serve it.

``send_request(url, payload, headers)`` POSTs the payload
(``application/octet-stream``) with the headers. ``2xx`` -> the (empty) body is
the ack; 404 (``Endpoint not found``) -> :class:`~trioplane.WorkerUnavailable`;
503 and 429 -> :class:`~trioplane.WorkerOverloaded`; 413 ->
:class:`~trioplane.FrameTooLarge`; any other status -> :class:`HttpStatusError`.
HTTP/1.1 by default; ``http2=True`` speaks h2 (prior knowledge on ``http://``,
ALPN on ``https://``).

Cancellation does not leak: httpx/httpcore under Trio lose an HTTP/2 stream slot
for every request cancelled mid-flight (httpcore issue 1022: the stream is never
reset), so a connection dies after as many cancellations as the server allows
streams. Here each request runs in a task of the client's own nursery that its
caller never cancels: a caller that gives up stops waiting at once, and the
request finishes in the background within the client's timeouts.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypedDict

import outcome
import trio

from trioplane._checks import check_bytes, check_count, check_seconds, check_str_map
from trioplane._errors import (
    AckTimeout,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    FrameTooLarge,
    MissingExtra,
    TrioplaneError,
    WorkerOverloaded,
    WorkerUnavailable,
)
from trioplane._types import ClientStats, Instance, StatsRecorder
from trioplane._util import check_options, reason, running
from trioplane.addresses import split_url
from trioplane.transports._base import ManagedClient
from trioplane.wire.rejections import ENDPOINT_NOT_FOUND
from trioplane.wire.tcp import DEFAULT_MAX_FRAME_SIZE

if TYPE_CHECKING:
    from typing_extensions import Unpack

try:
    import httpcore
    import httpx

    from trioplane.transports._httpcore import Attempt, WatchedTransport, attempting
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtra("the HTTP transport", "httpx", "http") from exc

__all__ = [
    "HttpClient",
    "HttpClientOptions",
    "HttpStatusError",
    "open_http_client",
    "parse_http_address",
    "start_http_client",
]

ADDRESS_FORMS = "'http://host:port/path', 'https://host:port/path'"
#: Body pieces handed to httpcore on HTTP/2: h2's default initial window (4 DATA frames).
H2_BODY_PIECE = 64 * 1024
RETRY_PAUSE = 0.005
MAX_RETRY_PAUSE = 0.1


class HttpStatusError(TrioplaneError):
    """The worker answered with an HTTP status that is neither success nor a known refusal."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}" if text else f"HTTP {status}")
        self.status = status
        self.text = text


class HttpClientOptions(TypedDict, total=False):
    """Options of :func:`open_http_client`.

    * ``http2`` (False): speak HTTP/2 (h2c with prior knowledge on ``http://``).
    * ``ssl_context``: for ``https://`` (default: the system's trust store).
    * ``connect_timeout`` (5 s) -> :class:`~trioplane.ConnectError`;
      ``ack_timeout`` (5 s): to write the request and read the answer ->
      :class:`~trioplane.AckTimeout`.
    * ``max_connections`` (100), ``max_keepalive_connections`` (20),
      ``keepalive_expiry`` (5 s): httpx's pool limits.
    * ``max_body_size`` (32 MiB): larger payloads are refused before sending
      (:class:`~trioplane.FrameTooLarge`).
    * ``retries`` (100): how often a request the server cannot have processed
      (its body was not all sent, or a GOAWAY refused its stream) may be sent
      again on a fresh connection, within its ``ack_timeout``.
    * ``close_grace_period`` (5 s): on close, how long requests in flight may finish.
    """

    http2: bool
    ssl_context: ssl.SSLContext
    connect_timeout: float
    ack_timeout: float
    max_connections: int
    max_keepalive_connections: int
    keepalive_expiry: float
    max_body_size: int
    retries: int
    close_grace_period: float


@functools.lru_cache(maxsize=4096)
def parse_http_address(address: str) -> str:
    """Check an ``http(s)://host[:port]/path`` address; ``ValueError`` if malformed."""
    split_url(address, ("http", "https"), ADDRESS_FORMS, "an HTTP")
    return address


class _Call:
    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: outcome.Outcome[bytes] | None = None


class HttpClient(ManagedClient):
    """A :class:`~trioplane.RequestPlaneClient` for Dynamo's HTTP request plane."""

    transport_name = "http"

    def __init__(self, **options: Unpack[HttpClientOptions]) -> None:
        check_options(options, HttpClientOptions, "HTTP client")
        self.options = options
        self.http2 = options.get("http2", False)
        self.max_body_size = check_count(
            options.get("max_body_size", DEFAULT_MAX_FRAME_SIZE), "max_body_size"
        )
        self.retries = check_count(options.get("retries", 100), "retries", minimum=0)
        super().__init__(
            check_seconds(options.get("close_grace_period", 5.0), "close_grace_period")
        )
        connect = check_seconds(options.get("connect_timeout", 5.0), "connect_timeout", zero=False)
        ack = check_seconds(options.get("ack_timeout", 5.0), "ack_timeout", zero=False)
        self._ack_timeout = ack
        for name in ("max_connections", "max_keepalive_connections"):
            if name in options:
                check_count(options[name], name, minimum=0 if "keepalive" in name else 1)
        if "keepalive_expiry" in options:
            check_seconds(options["keepalive_expiry"], "keepalive_expiry")
        ssl_context = options.get("ssl_context")
        self._transport = WatchedTransport(
            ssl_context=ssl_context if ssl_context is not None else httpx.create_ssl_context(),
            http2=self.http2,
            max_connections=options.get("max_connections", 100),
            max_keepalive_connections=options.get("max_keepalive_connections", 20),
            keepalive_expiry=options.get("keepalive_expiry", 5.0),
        )
        self._client = httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(ack, connect=connect, pool=ack),
            trust_env=False,
        )
        self._stats = StatsRecorder()

    # -- lifecycle ---------------------------------------------------------------------

    def _resources(self) -> AbstractAsyncContextManager[object]:
        return self._client  # closed after the requests' tasks have ended

    # -- the request-plane interface ---------------------------------------------------------

    async def send_request(
        self, address: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> bytes:
        """POST ``payload`` to ``address``; the (empty) body of a 2xx answer is the ack."""
        url = parse_http_address(address)
        check_bytes(payload)
        if len(payload) > self.max_body_size:
            raise FrameTooLarge(f"body of {len(payload)} bytes exceeds {self.max_body_size}")
        request_headers = {"content-type": "application/octet-stream"}
        if headers:
            request_headers.update(check_str_map(headers))
        await self._check_open()
        assert self._nursery is not None
        call = _Call()
        with self._call():
            # In the client's nursery, never cancelled by this caller (see the module doc).
            self._nursery.start_soon(self._perform, url, payload, request_headers, call)
            await call.done.wait()
        assert call.result is not None
        return call.result.unwrap()

    async def _perform(
        self, url: str, payload: bytes, headers: dict[str, str], call: _Call
    ) -> None:
        start = time.perf_counter()
        try:
            ack = await self._post(url, payload, headers)
        except TrioplaneError as exc:
            self._stats.errors += 1
            call.result = outcome.Error(exc)
        else:
            self._stats.latency_total += time.perf_counter() - start
            self._stats.latency_count += 1
            call.result = outcome.Value(ack)
        finally:
            if call.result is None:  # cancelled: the client is closing
                call.result = outcome.Error(ClientClosed("client closed before the answer"))
            call.done.set()

    async def _post(self, url: str, payload: bytes, headers: dict[str, str]) -> bytes:
        # Requests the server never processed are retried until the ack timeout.
        deadline = trio.current_time() + self._ack_timeout
        content: bytes | _Pieces = payload
        if self.http2 and len(payload) > H2_BODY_PIECE:
            content = _Pieces(payload, H2_BODY_PIECE)  # iterable again on each attempt
            headers = {**headers, "content-length": str(len(payload))}
        attempts = 0
        while True:
            attempts += 1
            self._stats.requests_sent += 1
            self._stats.bytes_sent += len(payload)
            progress = _Progress()
            try:
                with attempting(progress):
                    response = await self._client.post(
                        url, content=content, headers=headers, extensions={"trace": progress.trace}
                    )
            except httpcore.TimeoutException as exc:
                if isinstance(exc, httpcore.ConnectTimeout):
                    raise ConnectError(f"connect to {url} timed out") from exc
                raise AckTimeout(f"no answer from {url}: {exc!r}") from exc
            except httpcore.ConnectError as exc:
                raise ConnectError(f"cannot connect to {url}: {reason(exc)}") from exc
            except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
                if (
                    attempts <= self.retries
                    and trio.current_time() < deadline
                    and progress.never_processed(exc)
                ):
                    # Again, once the pool has had a moment to drop the dead connection.
                    await trio.sleep(min(RETRY_PAUSE * attempts, MAX_RETRY_PAUSE))
                    continue
                raise ConnectionLost(f"{url}: {exc!r} (attempt {attempts})") from exc
            self._stats.responses_received += 1
            self._stats.bytes_received += len(response.content)
            return _ack(response)

    def stats(self) -> ClientStats:
        active = idle = 0
        for connection in self._transport.pool.connections:
            if connection.is_idle():
                idle += 1
            else:
                active += 1
        return self._stats.snapshot(active, idle)

    def start_warmup(self, instance_updates: AsyncIterable[Sequence[Instance]]) -> None:
        """Connections open with the first request (httpx's pool has no warm-up)."""


class _Pieces:
    """A body handed to httpx in frame-sized pieces (HTTP/2 only).

    httpcore's HTTP/2 writer cuts a body into DATA frames with ``data = data[n:]``,
    copying the rest after every frame: 64 copies averaging 512 KiB for a 1 MiB
    body. Cut in 64 KiB pieces first, it copies 1.5 times the body in all (fewer,
    larger pieces cost less per byte than one per frame). Iterable more than
    once, so httpcore may still move the request to another connection.
    """

    __slots__ = ("payload", "size")

    def __init__(self, payload: bytes, size: int) -> None:
        self.payload = payload
        self.size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        payload, size = self.payload, self.size
        for start in range(0, len(payload), size):
            yield payload[start : start + size]


class _Progress(Attempt):
    """How far one attempt got (httpcore's trace hook), which decides whether the
    server can have processed the request when the connection fails."""

    __slots__ = ("body_queued", "stream_id")

    def __init__(self) -> None:
        super().__init__()
        self.body_queued = False
        self.stream_id: int | None = None

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.startswith("http2.send_request_body."):
            self.sending_body = event.endswith(".started")
        if event == "http2.send_request_headers.started":
            self.stream_id = info["stream_id"]
        elif event == "http2.send_request_headers.complete":
            # From here on the body is queued in the connection's shared h2 state,
            # which any stream's write may flush, whatever this one's write says.
            self.body_queued = True
        elif event == "http11.send_request_body.complete":
            self.body_queued = True

    def never_processed(self, exc: Exception) -> bool:
        """True when the server cannot have processed the request: a retry is safe.

        * Its bytes cannot all have left: over HTTP/1.1 its body was not all
          written; over HTTP/2 not even its headers were queued (once they are,
          other streams' writes may carry them).
        * HTTP/2: the server's GOAWAY named a last stream id below this request's
          stream, which promises the stream was not processed (RFC 9113, 6.8),
          even when the GOAWAY was only found in what the server sent before it
          closed (the connection is watched: see ``_httpcore``).

        (httpcore itself moves a request to a fresh connection when it reads the
        GOAWAY first, and when it has not written it yet.)
        """
        if not self.body_queued:
            return True
        if self.stream_id is None:
            return False
        last_stream_id = self.goaway_last_stream_id(exc)
        return last_stream_id is not None and self.stream_id > last_stream_id


def _ack(response: httpx.Response) -> bytes:
    status = response.status_code
    if 200 <= status < 300:
        return response.content
    text = response.text.strip()
    if status == 404:
        raise WorkerUnavailable(text or ENDPOINT_NOT_FOUND)
    if status in (429, 503):
        raise WorkerOverloaded(text or f"HTTP {status}")
    if status == 413:
        raise FrameTooLarge(f"the worker refused the body as too large: {text}")
    raise HttpStatusError(status, text)


async def start_http_client(
    nursery: trio.Nursery, **options: Unpack[HttpClientOptions]
) -> HttpClient:
    """Start an :class:`HttpClient` whose tasks run in ``nursery``; ``aclose`` it yourself."""
    client = HttpClient(**options)
    await nursery.start(client.run)
    return client


@asynccontextmanager
async def open_http_client(**options: Unpack[HttpClientOptions]) -> AsyncIterator[HttpClient]:
    """Open an HTTP request-plane client that owns its connections and tasks."""
    async with running(HttpClient(**options)) as client:
        yield client
