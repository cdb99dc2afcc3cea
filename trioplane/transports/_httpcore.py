"""httpx's transport, on httpcore's public API, with each HTTP/2 connection's GOAWAY watched.

httpx's own ``AsyncHTTPTransport`` gives no way to choose httpcore's network
backend. This one does: it runs httpcore's Trio backend, wrapped so that the
bytes of every connection also go through a
:class:`~trioplane.wire.h2frames.GoawayWatch` (on HTTP/2), and each request
attempt learns which connection it used (:func:`attempting`). When it fails,
:meth:`Attempt.goaway_last_stream_id` gives the last stream id of the server's
GOAWAY, if there was one: the requests above it were never processed and may be
sent again.

The watched stream also works around an httpcore (1.0.x) stall: a request waiting
for HTTP/2 flow-control window may read the connection after another request's
read already brought the ``WINDOW_UPDATE`` it waits for (pydantic/httpx2 issue
1133). If the server then has nothing more to send, that read blocks until its
timeout, holding the connection's read lock. Such a read, when nothing arrives
within :data:`WINDOW_NUDGE_AFTER`, sends the server a PING: its answer ends the
read, and httpcore looks at its window again.

Errors are httpcore's own (``httpcore.ConnectError``, ``httpcore.WriteError``, ...),
not httpx's copies of them.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import h2.events
import httpcore
import httpx
import trio

from trioplane._util import iter_causes
from trioplane.wire.h2frames import GoawayWatch, ping_frame

__all__ = ["Attempt", "WatchedTransport", "attempting"]

#: After a failed write, how long to look for what the server sent before it closed.
GOAWAY_LOOKUP_TIMEOUT = 0.05
#: At most this much unread data is held for httpcore after a failed write.
MAX_UNREAD = 256 * 1024
READ_SIZE = 64 * 1024
#: A read made while waiting for flow-control window that brings nothing for this
#: long sends a PING (see the module doc): at most one PING per read.
WINDOW_NUDGE_AFTER = 0.1
NUDGE_PING = ping_frame(b"trioplan")


class Attempt:
    """One request attempt: the watch of the connection it wrote on (HTTP/2 only).

    Set by the connection's first write from the attempt's own task, which is
    where httpcore sends a request's headers; see :func:`attempting`.
    ``sending_body`` is for the attempt's owner to keep (from httpcore's trace):
    True while httpcore sends the body, when any read it makes in this attempt's
    task waits for flow-control window.
    """

    __slots__ = ("sending_body", "watch")

    def __init__(self) -> None:
        self.watch: GoawayWatch | None = None
        self.sending_body = False

    def goaway_last_stream_id(self, error: BaseException) -> int | None:
        """The lowest last stream id any GOAWAY of this attempt's connection named.

        From the watch, or from the ``ConnectionTerminated`` event of an
        ``httpcore.RemoteProtocolError`` in ``error``'s chain; ``None`` if neither.
        """
        found = []
        if self.watch is not None and not self.watch.broken:
            found.append(self.watch.last_stream_id)
        for seen in iter_causes(error):  # a wrapper or two, then httpcore's error
            if isinstance(seen, httpcore.RemoteProtocolError) and seen.args:
                event = seen.args[0]
                if isinstance(event, h2.events.ConnectionTerminated):
                    found.append(event.last_stream_id)
        known = [number for number in found if number is not None]
        return min(known) if known else None


_ATTEMPT: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "trioplane_http_attempt", default=None
)


@contextlib.contextmanager
def attempting(attempt: Attempt) -> Iterator[None]:
    """Within the block, the current task's writes record their connection in ``attempt``."""
    token = _ATTEMPT.set(attempt)
    try:
        yield
    finally:
        _ATTEMPT.reset(token)


class _WatchedStream(httpcore.AsyncNetworkStream):
    """A connection whose incoming bytes also feed a :class:`GoawayWatch`."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self.watch = GoawayWatch()
        self._goaway_seen = trio.Event()
        self._unread = b""  # read while looking for a GOAWAY, not yet given to httpcore
        self._write_lock = trio.Lock()  # httpcore's writes and a nudge's PING, whole

    def _feed(self, data: bytes) -> None:
        self.watch.feed(data)
        if self.watch.last_stream_id is not None:
            self._goaway_seen.set()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._unread:
            data, self._unread = self._unread[:max_bytes], self._unread[max_bytes:]
            return data
        attempt = _ATTEMPT.get()
        if attempt is not None and attempt.sending_body:
            data = await self._read_for_window(max_bytes, timeout)
        else:
            data = await self._inner.read(max_bytes, timeout)
        self._feed(data)
        return data

    async def _read_for_window(self, max_bytes: int, timeout: float | None) -> bytes:
        """httpcore's read while a request waits for flow-control window; nudged with
        a PING when nothing comes (see the module doc). Cancelling trio's read loses
        no data."""
        with trio.move_on_after(WINDOW_NUDGE_AFTER):
            return await self._inner.read(max_bytes, timeout)
        # A connection too broken or too stuck for 17 bytes: the read below says so.
        with contextlib.suppress(httpcore.NetworkError, httpcore.TimeoutException):
            async with self._write_lock:
                await self._inner.write(NUDGE_PING, timeout)
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        attempt = _ATTEMPT.get()
        if attempt is not None:
            attempt.watch = self.watch
        try:
            async with self._write_lock:
                await self._inner.write(buffer, timeout)
        except httpcore.WriteError:
            # The server may have sent GOAWAY and closed: it is in the receive buffer.
            await self._look_for_goaway()
            raise

    async def _look_for_goaway(self) -> None:
        with trio.move_on_after(GOAWAY_LOOKUP_TIMEOUT):
            while self.watch.last_stream_id is None and len(self._unread) < MAX_UNREAD:
                try:
                    data = await self._inner.read(READ_SIZE)
                except trio.BusyResourceError:  # a request is reading: it will see the GOAWAY
                    await self._goaway_seen.wait()
                    return
                except httpcore.NetworkError:
                    return
                if not data:
                    return
                self._feed(data)
                self._unread += data

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _WatchedStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _WatchedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's Trio backend, every connection a :class:`_WatchedStream`."""

    def __init__(self) -> None:
        self._inner = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _WatchedStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _WatchedStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


class WatchedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool whose connections are watched."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        http2: bool,
        max_connections: int,
        max_keepalive_connections: int,
        keepalive_expiry: float,
    ) -> None:
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            http1=not http2,
            http2=http2,
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry,
            network_backend=_WatchedBackend() if http2 else httpcore.TrioBackend(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = request.url
        response = await self.pool.handle_async_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
        )
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseBody(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()
