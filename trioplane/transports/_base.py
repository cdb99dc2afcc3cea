"""The client side the transports share: lifecycle, close, stats, warm-up.

:class:`ManagedClient` is the lifecycle of every transport's client (its own
nursery, calls counted, close with a grace period). A pipelined transport (TCP,
WebSocket) subclasses :class:`PipelinedClient` and says three things: how an
address maps to a peer key and a frame, how to open a :class:`FrameChannel` to a
peer, and which instances it can warm up. The client's background tasks live in
a nursery of its own, started in the caller's nursery by :meth:`PipelinedClient.run`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterable, Iterator, Mapping, Sequence
from typing import Generic

import trio

from trioplane._errors import ClientClosed, TrioplaneError
from trioplane._types import ClientStats, Instance, StatsRecorder
from trioplane._util import AsyncResource
from trioplane.transports._pipeline import (
    CLOSE_TIMEOUT,
    ConnectionPool,
    FrameChannel,
    K,
    PoolOptions,
)

__all__ = ["ManagedClient", "PipelinedClient"]


class ManagedClient(AsyncResource):
    """The lifecycle every transport's client shares (TCP, WebSocket, HTTP).

    It runs in a nursery of its own (:meth:`run`, for ``nursery.start``), counts
    the calls in flight (:meth:`_call`), and closes by refusing new calls, giving
    those in flight ``close_grace_period``, releasing its connections, then
    cancelling what is left. Subclasses fill in :meth:`_resources`, :meth:`_serve`,
    :meth:`_refuse` and :meth:`_release`.
    """

    def __init__(self, close_grace_period: float) -> None:
        self.close_grace_period = close_grace_period
        self._closing = False
        self._calls = 0
        self._idle = trio.Event()
        self._stopped = trio.Event()
        self._nursery: trio.Nursery | None = None

    def _resources(self) -> contextlib.AbstractAsyncContextManager[object]:
        """What the client holds open around its nursery (closed after its tasks end)."""
        return contextlib.nullcontext()

    async def _serve(self, nursery: trio.Nursery) -> None:
        """Set up what the client's tasks need, in ``nursery`` (before ``started``)."""

    def _refuse(self) -> None:
        """Closing has begun: wake whoever waits for capacity that will never come."""

    async def _release(self) -> None:
        """After the grace period, before cancelling: close connections politely."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the client's connections and tasks until :meth:`aclose`."""
        if self._nursery is not None:
            raise RuntimeError("client already started")
        try:
            async with self._resources(), trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._serve(nursery)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._closing = True
            self._refuse()
            self._stopped.set()

    async def aclose(self) -> None:
        """Refuse new requests, give in-flight ones the grace period, then cancel them.

        Shielded and bounded by ``close_grace_period`` plus a short teardown, so it
        completes even inside a cancelled scope. Idempotent.
        """
        with trio.CancelScope(shield=True):
            self._closing = True
            self._refuse()
            if self._calls:
                with trio.move_on_after(self.close_grace_period):
                    await self._idle.wait()
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._release()
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
                with trio.move_on_after(CLOSE_TIMEOUT * 2):
                    await self._stopped.wait()
            else:
                self._stopped.set()

    async def _check_open(self) -> None:
        """Raise :class:`ClientClosed` (after a checkpoint) unless started and not closing."""
        if self._closing or self._nursery is None:
            await trio.lowlevel.checkpoint()
            raise ClientClosed("client is closed" if self._closing else "client is not started")

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        """Count one call in flight, for the grace period of :meth:`aclose`."""
        self._calls += 1
        try:
            yield
        finally:
            self._calls -= 1
            if self._calls == 0 and self._closing:
                self._idle.set()

    def is_healthy(self) -> bool:
        """Started and not closing (Dynamo: false once closed). No I/O."""
        return self._nursery is not None and not self._closing


class PipelinedClient(ManagedClient, abc.ABC, Generic[K]):
    """Base of the TCP and WebSocket clients (see :mod:`trioplane.transports._pipeline`)."""

    transport_name: str

    def __init__(self, options: PoolOptions) -> None:
        super().__init__(options.close_grace_period)
        self.options = options
        self._stats = StatsRecorder()
        self._pool: ConnectionPool[K] | None = None

    # -- what a transport provides -------------------------------------------------

    @abc.abstractmethod
    def _route(
        self, address: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> tuple[K, bytes]:
        """Parse ``address`` and encode the request: the peer key and the frame.

        Raises ``ValueError`` for a bad address and a :class:`TrioplaneError` for a
        frame that cannot be sent, before any I/O.
        """

    @abc.abstractmethod
    async def _open_channel(self, key: K) -> FrameChannel:
        """Connect to the peer ``key``."""

    @abc.abstractmethod
    def _peer_name(self, key: K) -> str:
        """How errors name the peer ``key`` (its address)."""

    @abc.abstractmethod
    def _warmup_key(self, instance: Instance) -> K | None:
        """The peer to warm up for ``instance``, or ``None`` if not this transport's."""

    # -- lifecycle -------------------------------------------------------------------

    async def _serve(self, nursery: trio.Nursery) -> None:
        self._pool = ConnectionPool(
            nursery, self._open_channel, self.options, self._stats, self._peer_name
        )

    def _refuse(self) -> None:
        if self._pool is not None:
            self._pool.close()

    async def _release(self) -> None:
        # A connection's close may talk to the peer (a WebSocket close handshake).
        if self._pool is not None:
            await self._pool.close_connections()

    # -- the request-plane interface ---------------------------------------------------

    async def send_request(
        self, address: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> bytes:
        """Send one request and wait for its ack (``b""`` = accepted, else the rejection).

        Raises :class:`ClientClosed`, :class:`ConnectError`, :class:`AckTimeout`,
        :class:`ConnectionLost`, :class:`ProtocolError`; ``ValueError`` for a bad
        address or headers. The caller's cancel scope bounds the call.
        """
        key, frame = self._route(address, payload, headers)
        await self._check_open()
        assert self._pool is not None
        with self._call():
            try:
                return await self._pool.request(key, frame)
            except TrioplaneError:
                self._stats.errors += 1
                raise

    def stats(self) -> ClientStats:
        conns = self._pool.connections() if self._pool is not None else []
        active = sum(1 for c in conns if c.in_flight)
        return self._stats.snapshot(active=active, idle=len(conns) - active)

    def start_warmup(self, instance_updates: AsyncIterable[Sequence[Instance]]) -> None:
        """Connect ahead of the first request to every new instance of this transport.

        Each item of ``instance_updates`` is the full current list (a Trio memory
        channel works); pools of instances that left the list are dropped. Runs in
        the client's nursery, so closing the client ends it.
        """
        if self._pool is None or self._nursery is None:
            raise ClientClosed("client is not started")
        self._nursery.start_soon(self._pool.watch_instances, instance_updates, self._warmup_key)
