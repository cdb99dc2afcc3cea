"""A Trio test worker for Dynamo's HTTP request plane (as served by Dynamo up to 1.2.1).

:class:`HttpTestWorker` is the worker side's HTTP plane server
(:class:`~trioplane.servers.http.HttpPlaneServer`: hypercorn's Trio server with
a small ASGI app that answers like Dynamo 1.2.1's worker, checked against the
real one; spec, section 4.3) that also remembers every request it received:
``202`` for a ``POST {root}/{endpoint}`` (or what its ``policy`` says), ``404``
for a path outside the root or (``Endpoint not found``) an endpoint it does not
serve, ``405`` for other methods, ``413`` over ``max_body_size``. One port speaks
HTTP/1.1 and h2c, or https with ``certfile``/``keyfile``. It needs hypercorn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from trioplane._util import serving
from trioplane.servers.http import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_ROOT,
    HttpPlaneServer,
    HttpPolicy,
    HttpReply,
    HttpRequest,
    accept_all,
)

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_ROOT",
    "HttpPolicy",
    "HttpReply",
    "HttpRequest",
    "HttpTestWorker",
    "open_http_test_worker",
]


@dataclass
class HttpTestWorker(HttpPlaneServer):
    """A running HTTP test worker: its URLs, what it received, and its policy."""

    #: Every request, in the order their bodies were complete (when ``keep_received``).
    received: list[HttpRequest] = field(default_factory=list)
    #: False: keep nothing in ``received`` (a long run's memory stays flat).
    keep_received: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.on_request is None:
            self.on_request = self._record

    def _record(self, request: HttpRequest) -> None:
        if self.keep_received:
            self.received.append(request)


@asynccontextmanager
async def open_http_test_worker(
    policy: HttpPolicy | None = None,
    *,
    endpoints: Iterable[str] = ("generate",),
    host: str = "127.0.0.1",
    port: int = 0,
    root: str = DEFAULT_ROOT,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    keep_alive_max_requests: int | None = None,
    keep_alive_timeout: float = 5.0,
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS,
    keep_received: bool = True,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> AsyncIterator[HttpTestWorker]:
    """Run an :class:`HttpTestWorker` for the duration of the block.

    ``keep_alive_max_requests`` makes hypercorn retire connections (see
    :class:`~trioplane.servers.http.HttpPlaneServer`); ``max_concurrent_streams``
    is the HTTP/2 ``SETTINGS_MAX_CONCURRENT_STREAMS`` (Dynamo's is 200);
    ``keep_received=False`` keeps no request in ``received``; ``certfile`` and
    ``keyfile`` (PEM) make it serve https, HTTP/2 chosen by ALPN. Leaving the
    block stops the server at once: requests in flight are dropped.
    """
    worker = HttpTestWorker(
        policy=policy or accept_all,
        endpoints=tuple(endpoints),
        host=host,
        port=port,
        root=root,
        max_body_size=max_body_size,
        keep_alive_max_requests=keep_alive_max_requests,
        keep_alive_timeout=keep_alive_timeout,
        max_concurrent_streams=max_concurrent_streams,
        keep_received=keep_received,
        certfile=certfile,
        keyfile=keyfile,
    )
    async with serving(worker.serve):
        yield worker
