"""Pipelined request/ack connections and their pool, shared by TCP and WebSocket.

A *pipelined* connection carries many requests at once and answers them with
acks that carry no id, in the order the requests were written (Dynamo's TCP
plane). On an idle connection a caller writes its own frame; otherwise a single
writer task per connection sends whatever callers have queued in one write. A
reader task hands each ack to the oldest waiting caller. A caller that gives up
(its cancel scope fires, or the ack timeout) only marks its slot abandoned: the
slot keeps its place in the FIFO and its late ack is read and dropped, so the
acks of the others stay matched.

The transports supply a :class:`FrameChannel` (how frames go out and acks come
in) and a way to open one; everything else lives here once.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import outcome
import trio

from trioplane._checks import check_count, check_seconds
from trioplane._errors import (
    AckTimeout,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    ProtocolError,
    TrioplaneError,
)
from trioplane._types import Instance, StatsRecorder

__all__ = [
    "ConnectionPool",
    "FrameChannel",
    "PipelinedConnection",
    "PoolOptions",
]

log = logging.getLogger("trioplane")

#: How long teardown may spend closing one connection.
CLOSE_TIMEOUT = 1.0
#: The ack timer's shortest idle sleep (an ``ack_timeout`` of 0 must not spin).
MIN_TIMER_SLEEP = 0.01


def fresh_error(error: TrioplaneError) -> TrioplaneError:
    """A new copy of a shared error, so each caller raises its own object."""
    copy = type(error)(*error.args)
    copy.__dict__.update(error.__dict__)  # attributes too (a WrongProtocol's protocol...)
    copy.__cause__ = error.__cause__
    return copy


class FrameChannel(Protocol):
    """One open connection as a pipelined connection sees it."""

    def send_nowait(self, data: bytes) -> int:
        """Write what the kernel takes now, without blocking; return the bytes written.

        0 when nothing fits (or the channel has no such fast path). Raise
        :class:`ConnectionLost` if the peer is gone.
        """
        ...

    async def send_frames(self, frames: Sequence[bytes]) -> None:
        """Write these frames, in order. Raise :class:`ConnectionLost` if the peer is gone."""

    async def receive_acks(self) -> list[bytes]:
        """Wait for one or more acks. Raise :class:`ConnectionLost` at EOF, or
        :class:`ProtocolError` for bad bytes."""
        ...

    async def aclose(self) -> None:
        """Release the connection (may be called while the others are blocked)."""


class _Slot:
    """One request's place in a connection's FIFO.

    The outcome goes to ``task`` if the caller is parked, else into ``result``
    for the caller to pick up. An ``abandoned`` slot (its caller gave up) is
    never written if it was not yet, and its ack, if it was, is read and dropped.
    """

    __slots__ = ("abandoned", "deadline", "frame", "queued_at", "result", "task")

    def __init__(self, frame: bytes, queued_at: float, deadline: float) -> None:
        self.frame = frame
        self.queued_at = queued_at
        self.deadline = deadline
        self.task: trio.lowlevel.Task | None = None
        self.result: outcome.Outcome[bytes] | None = None
        self.abandoned = False

    @property
    def waiting(self) -> bool:
        return not self.abandoned and self.result is None

    def resolve(self, result: outcome.Outcome[bytes]) -> None:
        if self.abandoned or self.result is not None:
            return
        self.result = result
        if self.task is not None:
            trio.lowlevel.reschedule(self.task, result)
            self.task = None


class PipelinedConnection:
    """A connection with a single writer, a reader, and a FIFO of waiting callers.

    Callers park with ``wait_task_rescheduled`` and are woken directly by the
    reader; one timer task enforces the ack timeout for all of them (deadlines
    grow along the FIFO, so it only ever watches the oldest).
    """

    def __init__(
        self,
        channel: FrameChannel,
        *,
        name: str,
        max_in_flight: int,
        ack_timeout: float,
        stats: StatsRecorder,
        on_capacity: Callable[[], object] = lambda: None,
    ) -> None:
        self.name = name
        self.max_in_flight = max_in_flight
        self.ack_timeout = ack_timeout
        #: Requests this connection still owes an outcome: queued, or written and unacked.
        self.in_flight = 0
        self._channel = channel
        self._stats = stats
        self._on_capacity = on_capacity
        self._outbox: list[_Slot] = []
        self._written: deque[_Slot] = deque()
        self._parked_writer: trio.lowlevel.Task | None = None
        self._writing = False
        self._write_started = 0.0
        self._error: TrioplaneError | None = None
        self._retired = False
        self._cancel_scope = trio.CancelScope()
        #: Set once the connection and its channel are closed.
        self.closed = trio.Event()

    @property
    def has_capacity(self) -> bool:
        return self._error is None and not self._retired and self.in_flight < self.max_in_flight

    def retire(self) -> None:
        """Take no new requests; close once the ones in flight are answered."""
        self._retired = True
        if self.in_flight == 0:
            self.close()

    async def request(self, frame: bytes) -> bytes:
        """Send ``frame`` and wait for its ack (the caller already chose this connection).

        On an idle connection the caller writes its own frame, saving a task switch
        (shielded, bounded by its ack deadline: a half-written frame would break the
        connection for all); otherwise it queues the frame for the writer task, which
        sends everything queued in one write.
        """
        if self._error is not None:
            await trio.lowlevel.checkpoint()
            raise fresh_error(self._error)
        now = trio.current_time()
        slot = _Slot(frame, now, now + self.ack_timeout)
        self.in_flight += 1
        if self._writing or self._outbox or self._written:
            self._enqueue(slot)
        else:
            await self._write_now(slot)
        if slot.result is None:
            slot.task = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                slot.task = None
                slot.abandoned = True  # the FIFO keeps the slot; nobody gets its ack
                return trio.lowlevel.Abort.SUCCEEDED

            ack: bytes = await trio.lowlevel.wait_task_rescheduled(abort)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            ack = slot.result.unwrap()
        stats = self._stats
        stats.latency_total += trio.current_time() - slot.queued_at
        stats.latency_count += 1
        return ack

    async def _write_now(self, slot: _Slot) -> None:
        """Write one frame on an idle connection, from the caller's own task.

        Usually the kernel takes the whole frame at once and this needs no
        checkpoint at all (the caller checkpoints while it waits for the ack);
        a remainder is written shielded, bounded by the ack deadline. When nothing
        went out (a full kernel buffer, or a channel with no such fast path, like
        WebSocket) the writer task sends the frame: that costs one task switch,
        cheaper than a shielded cancel scope (about 5 µs each in Trio).
        """
        try:
            sent = self._channel.send_nowait(slot.frame)
        except TrioplaneError as exc:
            self._joined([slot])
            self._fail(exc)
            return
        if sent == 0:
            self._enqueue(slot)
            return
        self._joined([slot])
        if sent == len(slot.frame):
            return
        with trio.CancelScope(shield=True, deadline=slot.deadline) as scope:
            await self._send([slot.frame[sent:]])
        if scope.cancelled_caught:
            self._fail(ConnectionLost(f"{self.name}: write stalled past the ack timeout"))

    def _enqueue(self, slot: _Slot) -> None:
        """Queue ``slot`` for the writer task (which sends the queue in one write)."""
        self._outbox.append(slot)
        self._wake_writer()

    def _joined(self, slots: list[_Slot]) -> None:
        """Slots join the FIFO (and the counters) before their bytes leave."""
        self._written.extend(slots)
        stats = self._stats
        stats.requests_sent += len(slots)
        stats.bytes_sent += sum(len(slot.frame) for slot in slots)

    async def _send(self, frames: list[bytes]) -> None:
        self._writing = True
        self._write_started = trio.current_time()
        try:
            await self._channel.send_frames(frames)
        except TrioplaneError as exc:
            self._fail(exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._fail(ConnectionLost(f"{self.name}: write failed: {exc!r}"))
        finally:
            self._writing = False
            if self._outbox:
                self._wake_writer()

    def _wake_writer(self) -> None:
        if self._parked_writer is not None:
            trio.lowlevel.reschedule(self._parked_writer)
            self._parked_writer = None

    def _release(self) -> None:
        self.in_flight -= 1
        if self.in_flight == self.max_in_flight - 1 or self.in_flight == 0:
            self._on_capacity()
            if self._retired and self.in_flight == 0:
                self.close()

    async def run(self) -> None:
        """Drive the connection until it fails or is cancelled; then fail what it owes."""
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop)
                    nursery.start_soon(self._read_loop)
                    nursery.start_soon(self._timeout_loop)
        finally:
            self._shut(ClientClosed(f"client closed before {self.name} answered"))
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + CLOSE_TIMEOUT
                await self._channel.aclose()
            self.closed.set()

    def close(self) -> None:
        """Stop now; requests still waiting fail with :class:`ClientClosed`."""
        self._cancel_scope.cancel()

    def _fail(self, error: TrioplaneError) -> None:
        if self._error is None:
            self._error = error
            log.debug("connection %s failed: %s", self.name, error)
        self._cancel_scope.cancel()

    def _shut(self, default: TrioplaneError) -> None:
        if self._error is None:
            self._error = default
        pending = list(self._written) + self._outbox
        self._written.clear()
        self._outbox = []
        for slot in pending:
            slot.resolve(outcome.Error(fresh_error(self._error)))
            self._release()
        self._on_capacity()

    async def _park(self, attribute: str) -> None:
        """Sleep until a caller reschedules the task stored in ``attribute``."""
        setattr(self, attribute, trio.lowlevel.current_task())

        def abort(_: object) -> trio.lowlevel.Abort:
            setattr(self, attribute, None)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def _write_loop(self) -> None:
        while self._error is None:
            if self._writing or not self._outbox:
                await self._park("_parked_writer")
                continue
            # At most half of what is in flight goes in one write, so the peer always
            # has a batch to work on while the next one is prepared: one big write
            # of everything would make the two sides take turns instead of overlapping.
            cap = max(1, self.in_flight // 2)
            batch, self._outbox = self._outbox[:cap], self._outbox[cap:]
            live = []
            for slot in batch:
                if slot.waiting:
                    live.append(slot)
                else:  # its caller left (or timed out) before it was written
                    self._release()
            if live:
                self._joined(live)
                await self._send([slot.frame for slot in live])

    async def _read_loop(self) -> None:
        stats = self._stats
        written = self._written
        while True:
            try:
                acks = await self._channel.receive_acks()
            except TrioplaneError as exc:
                self._fail(exc)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._fail(ConnectionLost(f"{self.name}: read failed: {exc!r}"))
                return
            for ack in acks:
                if not written:
                    self._fail(ProtocolError(f"{self.name}: ack with no request waiting"))
                    return
                slot = written.popleft()
                stats.responses_received += 1
                stats.bytes_received += 4 + len(ack)
                slot.resolve(outcome.Value(ack))
                self._release()

    def _waiting_slots(self) -> Iterator[_Slot]:
        """Slots whose callers still wait, oldest (earliest deadline) first."""
        for queue in (self._written, self._outbox):
            for slot in queue:
                if slot.waiting:
                    yield slot

    async def _timeout_loop(self) -> None:
        """Fail callers whose ack is overdue with :class:`AckTimeout` (Dynamo keeps the
        connection: a late ack is read and dropped), and the connection itself when
        a write has been stuck for an ``ack_timeout`` (the peer stopped reading).

        With nothing waiting it sleeps one ``ack_timeout``: every request sent
        meanwhile has a later deadline, so no request ever needs to wake it.
        """
        while True:
            oldest = next(self._waiting_slots(), None)
            if oldest is None:
                wake = trio.current_time() + max(self.ack_timeout, MIN_TIMER_SLEEP)
            else:
                wake = oldest.deadline
            if self._writing:
                wake = min(wake, self._write_started + self.ack_timeout)
            await trio.sleep_until(wake)
            now = trio.current_time()
            overdue = []
            for slot in self._waiting_slots():
                if slot.deadline > now:
                    break  # deadlines grow along the FIFO
                overdue.append(slot)
            for slot in overdue:
                timeout = AckTimeout(f"no ack from {self.name} within {self.ack_timeout:g} s")
                slot.resolve(outcome.Error(timeout))
            if self._writing and now - self._write_started >= self.ack_timeout:
                self._fail(ConnectionLost(f"{self.name}: write stalled past the ack timeout"))
                return


K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class PoolOptions:
    """Limits of a :class:`ConnectionPool` (defaults are Dynamo's)."""

    max_connections_per_host: int = 100
    max_in_flight_per_connection: int = 1024
    connect_timeout: float = 5.0
    ack_timeout: float = 5.0
    close_grace_period: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_connections_per_host", "max_in_flight_per_connection"):
            check_count(getattr(self, name), name)
        for name in ("connect_timeout", "ack_timeout", "close_grace_period"):
            check_seconds(getattr(self, name), name)


class _ConnectAttempt:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: TrioplaneError | None = None


class _HostPool:
    """The connections to one peer."""

    __slots__ = ("attempt", "capacity", "connections", "next_index")

    def __init__(self) -> None:
        self.connections: list[PipelinedConnection] = []
        self.next_index = 0
        self.attempt: _ConnectAttempt | None = None
        self.capacity = trio.lowlevel.ParkingLot()

    def wake(self) -> None:
        """Wake every caller waiting for spare capacity (cheap when nobody waits)."""
        if self.capacity:
            self.capacity.unpark_all()

    def pick(self) -> PipelinedConnection | None:
        """Round robin over connections with spare capacity (as Dynamo's pool)."""
        conns = self.connections
        n = len(conns)
        for i in range(n):
            conn = conns[(self.next_index + i) % n]
            if conn.has_capacity:
                self.next_index = (self.next_index + i + 1) % n
                return conn
        return None


class ConnectionPool(Generic[K]):
    """Persistent pipelined connections per peer, owned by one nursery.

    ``connect(key)`` opens a :class:`FrameChannel` to a peer; connects run as
    tasks of the pool's nursery, so a caller that gives up while waiting does not
    abort the connect for the others, and concurrent callers share one attempt.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        connect: Callable[[K], Awaitable[FrameChannel]],
        options: PoolOptions,
        stats: StatsRecorder,
        name: Callable[[K], str] = str,
    ) -> None:
        self._nursery = nursery
        self._connect = connect
        self._name = name  # of a peer, in errors: "127.0.0.1:8080", "ws://..."
        self.options = options
        self._stats = stats
        self._hosts: dict[K, _HostPool] = {}
        self.closed = False

    def connections(self) -> list[PipelinedConnection]:
        return [conn for host in self._hosts.values() for conn in host.connections]

    async def request(self, key: K, frame: bytes) -> bytes:
        """Send ``frame`` to the peer ``key`` on a pooled connection; return its ack."""
        host = self._hosts.get(key)
        conn = host.pick() if host is not None and not self.closed else None
        if conn is None:
            conn = await self._acquire(key)
        return await conn.request(frame)

    async def _acquire(self, key: K) -> PipelinedConnection:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self.closed:
                raise ClientClosed("client is closed")
            host = self._hosts.get(key)
            if host is None:
                host = self._hosts[key] = _HostPool()
            conn = host.pick()
            if conn is not None:
                return conn
            if host.attempt is not None:
                attempt = host.attempt
                await attempt.done.wait()
                if attempt.error is not None:
                    raise fresh_error(attempt.error)
            elif len(host.connections) < self.options.max_connections_per_host:
                attempt = self._start_connect(key, host)
                await attempt.done.wait()
                if attempt.error is not None:
                    raise fresh_error(attempt.error)
            else:
                await host.capacity.park()

    def warm(self, key: K) -> None:
        """Open a connection to ``key`` in the background unless one exists."""
        if self.closed:
            return
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _HostPool()
        if not host.connections and host.attempt is None:
            self._start_connect(key, host)

    def drop(self, key: K) -> None:
        """Forget the peer ``key``: close its idle connections, retire busy ones."""
        host = self._hosts.pop(key, None)
        if host is None:
            return
        for conn in host.connections:
            conn.retire()
        host.connections = []
        host.wake()

    def _start_connect(self, key: K, host: _HostPool) -> _ConnectAttempt:
        attempt = host.attempt = _ConnectAttempt()
        self._nursery.start_soon(self._connect_task, key, host, attempt)
        return attempt

    async def _connect_task(self, key: K, host: _HostPool, attempt: _ConnectAttempt) -> None:
        timeout = self.options.connect_timeout
        try:
            with trio.fail_after(timeout):
                channel = await self._connect(key)
        except trio.TooSlowError:
            attempt.error = ConnectError(
                f"connect to {self._name(key)} timed out after {timeout:g} s"
            )
        except OSError as exc:
            attempt.error = ConnectError(f"cannot connect to {self._name(key)}: {exc}")
        except TrioplaneError as exc:
            attempt.error = exc
        else:
            conn = PipelinedConnection(
                channel,
                name=self._name(key),
                max_in_flight=self.options.max_in_flight_per_connection,
                ack_timeout=self.options.ack_timeout,
                stats=self._stats,
                on_capacity=host.wake,
            )
            host.connections.append(conn)
            self._nursery.start_soon(self._run_connection, host, conn)
            if self._hosts.get(key) is not host:  # dropped while connecting
                conn.retire()
        finally:
            if attempt.error is None and not host.connections:
                attempt.error = ClientClosed("client closed while connecting")
            if host.attempt is attempt:
                host.attempt = None
            attempt.done.set()
            if attempt.error is not None:
                log.debug("connect to %s failed: %s", key, attempt.error)

    async def _run_connection(self, host: _HostPool, conn: PipelinedConnection) -> None:
        try:
            await conn.run()
        finally:
            if conn in host.connections:
                host.connections.remove(conn)
            host.wake()

    def close(self) -> None:
        """Take no more requests and wake every caller waiting for a connection."""
        self.closed = True
        for host in self._hosts.values():
            host.wake()

    async def close_connections(self) -> None:
        """Close every connection and wait until they are closed (the caller bounds it).

        A connection's own close may talk to the peer (a WebSocket close handshake),
        so this runs before the nursery that hosts the protocol's tasks is cancelled.
        """
        connections = self.connections()
        for conn in connections:
            conn.close()
        for conn in connections:
            await conn.closed.wait()

    async def watch_instances(
        self,
        updates: AsyncIterable[Sequence[Instance]],
        key_of: Callable[[Instance], K | None],
    ) -> None:
        """Warm-up: connect to each new peer in each instance list, drop vanished ones."""
        known: set[K] = set()
        async for instances in updates:
            current = {k for k in map(key_of, instances) if k is not None}
            for key in current - known:
                self.warm(key)
            for key in known - current:
                self.drop(key)
            known = current
