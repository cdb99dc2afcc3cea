"""One request-plane client for every address: it picks the transport from the address.

=================================================== ===========
Address                                             Transport
=================================================== ===========
``host:port/path``, ``tcp://host:port/path``        TCP
``http://host:port/path``, ``https://...``          HTTP
``ws://host:port/path``, ``wss://...``              WebSocket
``nats:subject``, or a bare subject as Dynamo       NATS
advertises it (``ns_comp.ep-1a2b``)
=================================================== ===========

Each transport's client opens on first use, in this client's nursery; NATS only
when servers are configured (``nats_servers``, or ``$NATS_SERVER``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypedDict

import trio

from trioplane._checks import check_plane_options
from trioplane._errors import BadArgument, BadArgumentType, ClientClosed
from trioplane._logging import RateLimitedLog
from trioplane._types import ClientStats, Instance, RequestPlaneClient
from trioplane._util import AsyncResource, Latest, check_options, iter_leaves, reason, running
from trioplane.nats import NatsOptions
from trioplane.transports.tcp import TcpClientOptions, start_tcp_client

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from trioplane.transports.http import HttpClientOptions
    from trioplane.transports.websocket import WebSocketClientOptions

__all__ = [
    "RequestPlaneOptions",
    "UnifiedClient",
    "address_for",
    "open_request_plane",
    "start_request_plane",
]

log = logging.getLogger(__name__)
#: Warm-up failures: the same error reaches the first call to the transport, so
#: they are logged at INFO (not shown by default), a few a minute.
_warmup_log = RateLimitedLog(log)

ADDRESS_FORMS = (
    "'host:port/path', 'tcp://host:port/path', 'http(s)://host:port/path', "
    "'ws(s)://host:port/path', 'nats:subject' (or a bare NATS subject)"
)
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^/:\s]+):[^/]*(/|\Z)")
_SPACE = re.compile(r"\s")  # an address never holds one (a hot path: one search per call)
_SUBJECT = re.compile(r"[^\s.:/]+(\.[^\s.:/]+)*\Z")
_SCHEMES = {"tcp": "tcp", "http": "http", "https": "http", "ws": "websocket", "wss": "websocket"}
_INSTANCE_KINDS = {"tcp": "tcp", "http": "http", "websocket": "websocket", "nats_tcp": "nats"}
#: What a caller without a NATS server is told to do.
NATS_SERVER_HINT = "pass nats_servers='nats://host:4222', or set NATS_SERVER (as for Dynamo)"


class RequestPlaneOptions(TypedDict, total=False):
    """Options of :func:`open_request_plane`, one entry per transport.

    * ``tcp``: :class:`~trioplane.TcpClientOptions`; ``http``:
      :class:`~trioplane.transports.http.HttpClientOptions`; ``websocket``:
      :class:`~trioplane.transports.websocket.WebSocketClientOptions`.
    * ``nats_servers``: NATS server URL(s); default ``$NATS_SERVER``. Without
      either, NATS addresses are refused. ``nats``: :class:`~trioplane.NatsOptions`.
    """

    tcp: TcpClientOptions
    http: HttpClientOptions
    websocket: WebSocketClientOptions
    nats_servers: str | Sequence[str]
    nats: NatsOptions


def classify(address: str) -> tuple[str, str]:
    """``(transport, address for it)``; ``ValueError`` naming the forms if unknown."""
    if not isinstance(address, str):
        raise BadArgumentType(f"address must be str, not {type(address).__name__}")
    if not address or _SPACE.search(address):
        raise BadArgument(f"bad address {address!r}; accepted forms: {ADDRESS_FORMS}")
    scheme, sep, _ = address.partition("://")
    if sep:
        kind = _SCHEMES.get(scheme.lower())
        if kind is None:
            raise BadArgument(f"unknown scheme in {address!r}; accepted forms: {ADDRESS_FORMS}")
        return kind, address
    if address.startswith("nats:"):
        subject = address[len("nats:") :]
        if not _SUBJECT.match(subject):
            raise BadArgument(f"bad NATS subject in {address!r}; accepted forms: {ADDRESS_FORMS}")
        return "nats", subject
    if _HOST_PORT.match(address):
        return "tcp", address
    if _SUBJECT.match(address) and "." in address:
        return "nats", address
    raise BadArgument(f"bad address {address!r} (a port is needed); accepted: {ADDRESS_FORMS}")


def address_for(instance: Instance) -> str:
    """The unified address of an instance (its advertised address, NATS subjects prefixed)."""
    if instance.transport_kind == "nats_tcp":
        return f"nats:{instance.address}"
    return instance.address


class UnifiedClient(AsyncResource):
    """A :class:`~trioplane.RequestPlaneClient` over every transport; see the module doc."""

    transport_name = "unified"

    def __init__(self, **options: Unpack[RequestPlaneOptions]) -> None:
        check_options(options, RequestPlaneOptions, "request-plane")
        check_plane_options(options)
        self.options = options
        self.nats_servers = options.get("nats_servers") or os.environ.get("NATS_SERVER")
        self._clients: dict[str, RequestPlaneClient] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._warmups: dict[str, Latest[list[Instance]]] = {}
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._stopped = trio.Event()

    @property
    def opened(self) -> frozenset[str]:
        """The transports opened so far (each on its first use): ``"tcp"``,
        ``"http"``, ``"websocket"``, ``"nats"``."""
        return frozenset(self._clients)

    def kinds(self) -> set[str]:
        """The instance transport kinds this client can reach."""
        kinds = {"tcp", "http", "websocket"}
        if self.nats_servers:
            kinds.add("nats_tcp")
        return kinds

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the transports' clients until :meth:`aclose`; use with ``nursery.start``."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._closing = True
            self._stopped.set()

    async def client_for(self, kind: str) -> RequestPlaneClient:
        """The client of transport ``kind``, opened on first use."""
        client = self._clients.get(kind)
        if client is not None:
            return client
        if self._closing or self._nursery is None:
            raise ClientClosed("request plane is closed")
        lock = self._locks.setdefault(kind, trio.Lock())
        async with lock:
            if kind not in self._clients:
                self._clients[kind] = client = await self._start(kind)
                if kind in self._warmups:
                    client.start_warmup(self._warmups[kind])
        return self._clients[kind]

    async def _start(self, kind: str) -> RequestPlaneClient:
        nursery = self._nursery
        assert nursery is not None
        options: Any = self.options.get(kind, {})
        if kind == "tcp":
            return await start_tcp_client(nursery, **options)
        if kind == "http":
            from trioplane.transports.http import start_http_client

            return await start_http_client(nursery, **options)
        if kind == "websocket":
            from trioplane.transports.websocket import start_websocket_client

            return await start_websocket_client(nursery, **options)
        if not self.nats_servers:
            raise BadArgument(f"a NATS address, but no NATS server: {NATS_SERVER_HINT}")
        from trioplane.transports.nats import start_nats_client

        return await start_nats_client(nursery, self.nats_servers, **self.options.get("nats", {}))

    async def send_request(
        self, address: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> bytes:
        """Send with the transport the address names (see the module doc)."""
        kind, target = classify(address)
        if kind == "nats" and not self.nats_servers:
            raise BadArgument(f"NATS address {address!r}, but no NATS server: {NATS_SERVER_HINT}")
        client = await self.client_for(kind)
        return await client.send_request(target, payload, headers)

    def is_healthy(self) -> bool:
        """Open, and every transport opened so far healthy. No I/O."""
        return (
            self._nursery is not None
            and not self._closing
            and all(c.is_healthy() for c in self._clients.values())
        )

    def stats_by_transport(self) -> dict[str, ClientStats]:
        """Each transport's own counters, by kind (``"tcp"``, ``"nats"``...), once opened."""
        return {kind: client.stats() for kind, client in self._clients.items()}

    def transport(self, kind: str) -> RequestPlaneClient | None:
        """The transport client of ``kind`` if it was opened (no I/O)."""
        return self._clients.get(kind)

    def stats(self) -> ClientStats:
        """The sum over the transports opened so far (latency weighted by responses)."""
        snapshots = [c.stats() for c in self._clients.values()]
        responses = sum(s.responses_received for s in snapshots)
        latency = sum(s.avg_latency_us * s.responses_received for s in snapshots)
        return ClientStats(
            requests_sent=sum(s.requests_sent for s in snapshots),
            responses_received=responses,
            errors=sum(s.errors for s in snapshots),
            bytes_sent=sum(s.bytes_sent for s in snapshots),
            bytes_received=sum(s.bytes_received for s in snapshots),
            active_connections=sum(s.active_connections for s in snapshots),
            idle_connections=sum(s.idle_connections for s in snapshots),
            avg_latency_us=latency // responses if responses else 0,
        )

    def start_warmup(self, instance_updates: AsyncIterable[Sequence[Instance]]) -> None:
        """Forward each instance list to the transport of each instance's kind.

        A transport with instances to warm up is opened now, not at first use.
        """
        if self._nursery is None:
            raise ClientClosed("request plane is not started")
        self._nursery.start_soon(self._forward_warmups, instance_updates)

    async def _forward_warmups(self, instance_updates: AsyncIterable[Sequence[Instance]]) -> None:
        async for instances in instance_updates:
            by_kind: dict[str, list[Instance]] = {}
            for instance in instances:
                kind = _INSTANCE_KINDS.get(instance.transport_kind)
                if kind is not None and (kind != "nats" or self.nats_servers):
                    by_kind.setdefault(kind, []).append(instance)
            for kind in {*self._warmups, *by_kind}:
                latest = self._warmups.setdefault(kind, Latest())
                latest.set(by_kind.get(kind, []))
                if kind not in self._clients and by_kind.get(kind):
                    try:
                        await self.client_for(kind)
                    except Exception as exc:
                        _log_warmup_failure(kind, exc)

    async def aclose(self) -> None:
        """Close every transport (each with its own grace period), then this client."""
        with trio.CancelScope(shield=True):
            self._closing = True
            for client in list(self._clients.values()):
                await client.aclose()
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
                await self._stopped.wait()


def _log_warmup_failure(kind: str, exc: BaseException) -> None:
    """One plain line: the error itself (a lone error out of its group), not
    "Exceptions from Trio nursery (1 sub-exception)"."""
    errors = "; ".join(f"{type(e).__name__}: {reason(e)}" for e in iter_leaves(exc))
    _warmup_log.log(
        logging.INFO, f"warmup-{kind}", "cannot warm up the %s transport: %s", kind, errors
    )


async def start_request_plane(
    nursery: trio.Nursery, **options: Unpack[RequestPlaneOptions]
) -> UnifiedClient:
    """Start a :class:`UnifiedClient` in ``nursery``; ``aclose`` it yourself."""
    client = UnifiedClient(**options)
    await nursery.start(client.run)
    return client


@asynccontextmanager
async def open_request_plane(
    **options: Unpack[RequestPlaneOptions],
) -> AsyncIterator[UnifiedClient]:
    """One client for every address (TCP, HTTP, WebSocket, NATS); see the module doc."""
    async with running(UnifiedClient(**options)) as client:
        yield client
