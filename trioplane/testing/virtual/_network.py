"""The virtual network: listeners and connections on ``host:port`` addresses, in memory.

Entering a :class:`VirtualNetwork` (``async with network:``) sets the context
variable that :mod:`trioplane._network` consults wherever trioplane dials or
listens, so every client, worker and server opened *inside* the block (in tasks
spawned after it was entered) uses the network's streams instead of sockets.

Each connection is two one-way pipes. A pipe delivers what was sent after the
link's latency (plus seeded jitter), at its bandwidth, in order; it holds at
most ``buffer_size`` bytes the reader has not taken (then the sender waits, as
with a full socket buffer). Faults are rules over (source, destination)
patterns, added and removed at any time (also by a timeline: :meth:`at`).
Every connect, close, reset, batch of bytes and fault goes to :attr:`events`
with its time since the network was entered, so a run under Trio's
``autojump_clock`` can be compared with another of the same seed.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import inspect
import math
import operator
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass, fields
from typing import Any

import trio

from trioplane._errors import BadArgument
from trioplane._network import _NETWORK, Network
from trioplane._util import collapse_groups
from trioplane.addresses import format_host_port

__all__ = [
    "Conditions",
    "Fault",
    "NetEvent",
    "VirtualListener",
    "VirtualNetwork",
    "VirtualStream",
]

#: The host a task dials from unless :meth:`VirtualNetwork.node` says otherwise.
DEFAULT_NODE = "127.0.0.1"
#: Hosts that mean "every address of this machine" to a listener.
_WILDCARDS = ("", "0.0.0.0", "::", "*")
#: Ports handed out for port 0, counting up from here (the same ports every run).
FIRST_PORT = 30000
#: Bytes a receive returns at most when not told.
RECEIVE_SIZE = 64 * 1024

_NODE: ContextVar[str] = ContextVar("trioplane_virtual_node", default=DEFAULT_NODE)


@dataclass(frozen=True)
class Conditions:
    """How a link carries bytes, one way (every field may be changed by a rule).

    * ``latency``: seconds from a send to its delivery (a connect takes two);
    * ``jitter``: up to this many seconds more, drawn from the network's seeded
      random generator (delivery order is kept, as TCP's);
    * ``bandwidth``: bytes per second the link transmits (``inf``: no limit);
    * ``read_rate``: bytes per second the receiving side takes (a slow reader:
      the sender blocks once ``buffer_size`` bytes are waiting).
    """

    latency: float = 0.0
    jitter: float = 0.0
    bandwidth: float = math.inf
    read_rate: float = math.inf

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise BadArgument(f"{f.name} must be a number >= 0, not {value!r}")
        if self.bandwidth == 0 or self.read_rate == 0:
            raise BadArgument("bandwidth and read_rate must be > 0")


_CONDITION_FIELDS = frozenset(f.name for f in fields(Conditions))


@dataclass(frozen=True)
class NetEvent:
    """One entry of :attr:`~trioplane.testing.VirtualNetwork.events`.

    ``time``: seconds since the network was entered; ``kind``: ``listen``,
    ``unlisten``, ``connect``, ``refused``, ``blackholed``, ``bytes`` (``size``
    bytes sent), ``eof``, ``close``, ``reset``, ``fault``, ``heal`` or ``at``;
    ``connection``: the connection's number (0: none); ``src``/``dst``: the
    ends (``host`` or ``host:port``); ``detail``: what else there is to say.
    """

    time: float
    kind: str
    connection: int = 0
    src: str = ""
    dst: str = ""
    size: int = 0
    detail: str = ""


def _matches(pattern: str, host: str, port: int | None) -> bool:
    """``*`` is any end, ``host`` any end on that host, ``host:port`` a listening end."""
    if pattern == "*":
        return True
    if pattern == host:
        return True
    return port is not None and pattern == format_host_port(host, port)


class Fault:
    """A rule in force on the network until :meth:`heal` (made by the network's methods)."""

    def __init__(
        self,
        network: VirtualNetwork,
        kind: str,
        src: str,
        dst: str,
        *,
        both_ways: bool,
        conditions: dict[str, float] | None = None,
        nbytes: int = 0,
    ) -> None:
        self.network = network
        self.kind = kind
        self.src = src
        self.dst = dst
        self.both_ways = both_ways
        self.conditions = conditions or {}
        self.nbytes = nbytes
        #: Bytes counted per (connection, direction) towards a ``drop_after``.
        self._counted: dict[tuple[int, bool], int] = {}
        self.healed = False

    def __repr__(self) -> str:
        arrow = "<->" if self.both_ways else "->"
        extra = f" {self.conditions}" if self.conditions else ""
        extra += f" after {self.nbytes} bytes" if self.kind == "drop" else ""
        return f"<Fault {self.kind} {self.src}{arrow}{self.dst}{extra}>"

    def applies(self, src: _End, dst: _End) -> bool:
        """Whether the rule covers bytes (or a connect) from ``src`` to ``dst``."""
        if _matches(self.src, src.host, src.port) and _matches(self.dst, dst.host, dst.port):
            return True
        return self.both_ways and (
            _matches(self.src, dst.host, dst.port) and _matches(self.dst, src.host, src.port)
        )

    def heal(self) -> None:
        """Lift the rule (held bytes flow again, waiting connects go on). Idempotent."""
        self.network._remove(self)


@dataclass(frozen=True)
class _End:
    host: str
    port: int | None  # None: the dialling end (its port does not matter)

    def __str__(self) -> str:
        return self.host if self.port is None else format_host_port(self.host, self.port)


class _Pipe:
    """One direction of a connection: segments in flight, and who waits on them."""

    __slots__ = (
        "buffered",
        "connection",
        "dst",
        "eof_at",
        "forward",
        "last_at",
        "read_free_at",
        "reader_closed",
        "readers",
        "reset",
        "segments",
        "src",
        "tx_free_at",
        "writers",
    )

    def __init__(self, connection: _Connection, src: _End, dst: _End, forward: bool) -> None:
        self.connection = connection
        self.src, self.dst, self.forward = src, dst, forward
        self.segments: deque[tuple[float, bytes]] = deque()
        self.buffered = 0  # sent, not yet taken by the reader
        self.last_at = 0.0  # delivery time of the last segment (order is kept)
        self.tx_free_at = 0.0  # when the link has sent what it was given (bandwidth)
        self.read_free_at = 0.0  # when a slow reader takes more
        self.eof_at: float | None = None  # the sender's FIN, delivered at this time
        self.reader_closed = False
        self.reset = False
        self.readers = trio.lowlevel.ParkingLot()
        self.writers = trio.lowlevel.ParkingLot()

    def wake(self) -> None:
        self.readers.unpark_all()
        self.writers.unpark_all()


class _Connection:
    __slots__ = ("client", "down", "id", "open_ends", "server", "up")

    def __init__(self, number: int, client: _End, server: _End) -> None:
        self.id = number
        self.client, self.server = client, server
        self.up = _Pipe(self, client, server, True)
        self.down = _Pipe(self, server, client, False)
        self.open_ends = 2


class VirtualStream(trio.abc.HalfCloseableStream):
    """One end of a virtual connection: a ``trio.abc.HalfCloseableStream``.

    As a TCP socket's: ``send_all`` to a peer that closed, or on a connection
    reset, raises ``trio.BrokenResourceError``; a receive after the peer's
    ``send_eof``/close returns ``b""`` once the bytes before it are read; a reset
    connection's reader gets the bytes delivered before it, then
    ``trio.BrokenResourceError``. :meth:`close_now` closes without a checkpoint
    (what ``socket.close()`` is to a ``trio.SocketStream``).
    """

    def __init__(
        self, network: VirtualNetwork, connection: _Connection, out: _Pipe, into: _Pipe
    ) -> None:
        self._network = network
        self._connection = connection
        self._out = out
        self._in = into
        self._closed = False
        self._sending = False
        self._receiving = False

    @property
    def local(self) -> str:
        """This end, ``host`` (the dialling side) or ``host:port`` (the listening side)."""
        return str(self._out.src)

    @property
    def remote(self) -> str:
        """The other end."""
        return str(self._out.dst)

    @property
    def connection_id(self) -> int:
        """The connection's number in :attr:`~trioplane.testing.VirtualNetwork.events`."""
        return self._connection.id

    def __repr__(self) -> str:
        return f"<VirtualStream #{self._connection.id} {self.local} -> {self.remote}>"

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._closed:
                raise trio.ClosedResourceError("the stream is closed")
            await self._network._send(self._out, bytes(data))
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            pipe = self._out
            while not (self._closed or pipe.reset or pipe.reader_closed):
                if pipe.buffered < self._network.buffer_size:
                    break
                await pipe.writers.park()
            if self._closed:
                raise trio.ClosedResourceError("the stream is closed")
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        self._network._eof(self._out)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = RECEIVE_SIZE
        elif operator.index(max_bytes) < 1:
            raise ValueError("max_bytes must be >= 1")
        return await self._read(max_bytes, consume=True)

    async def peek(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` arrived bytes, left to be read again (a socket's MSG_PEEK)."""
        return await self._read(max_bytes, consume=False)

    async def _read(self, max_bytes: int, *, consume: bool) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            data = await self._network._receive(self, self._in, max_bytes, consume)
        finally:
            self._receiving = False
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    def close_now(self) -> None:
        """Close without a checkpoint: the peer reads EOF (after the bytes in flight)
        and its sends fail; tasks blocked on this end get ``trio.ClosedResourceError``."""
        if self._closed:
            return
        self._closed = True
        self._network._close_end(self)

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()

    @property
    def closed(self) -> bool:
        return self._closed


class VirtualListener(trio.abc.Listener[trio.abc.Stream]):
    """A listening address of the network; ``accept`` hands over each connection."""

    def __init__(self, network: VirtualNetwork, host: str, port: int) -> None:
        self._network = network
        self.host, self.port = host, port
        self._send, self._receive = trio.open_memory_channel[VirtualStream](math.inf)
        self.closed = False

    @property
    def address(self) -> str:
        return format_host_port(self.host, self.port)

    def __repr__(self) -> str:
        return f"<VirtualListener {self.address}>"

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self._receive.receive()
        except (trio.ClosedResourceError, trio.EndOfChannel):
            raise trio.ClosedResourceError("the listener is closed") from None

    def close_now(self) -> None:
        """Stop listening: new connects are refused, connections not yet accepted reset."""
        if self.closed:
            return
        self.closed = True
        self._network._unlisten(self)
        self._send.close()
        while True:
            try:
                stream = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            self._network._reset_connection(stream._connection, "listener closed")
        self._receive.close()

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()


class VirtualNetwork(Network):
    """An in-memory network for tests; see the module doc and :doc:`/virtual-network`.

    ``seed`` seeds the jitter (and, on entering, Trio's own scheduler shuffle, so
    one seed gives one interleaving); ``latency``, ``jitter``, ``bandwidth`` and
    ``read_rate`` are every link's :class:`Conditions` unless a rule says
    otherwise; ``buffer_size`` is how many unread bytes a pipe holds before its
    sender waits; ``record_bytes`` (default True) logs each send in :attr:`events`.

    Enter it (``async with network:``) *before* opening the clients and workers
    that should use it: Trio tasks copy the context when spawned.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: float = 0.0,
        jitter: float = 0.0,
        bandwidth: float = math.inf,
        read_rate: float = math.inf,
        buffer_size: int = 256 * 1024,
        record_bytes: bool = True,
        seed_trio_scheduler: bool = True,
    ) -> None:
        if not isinstance(buffer_size, int) or buffer_size < 1:
            raise BadArgument(f"buffer_size must be an int >= 1, not {buffer_size!r}")
        self.seed = seed
        self.conditions = Conditions(latency, jitter, bandwidth, read_rate)
        self.buffer_size = buffer_size
        self.record_bytes = record_bytes
        self.seed_trio_scheduler = seed_trio_scheduler
        self.random = random.Random(seed)
        #: Everything that happened on the network, in order (see :class:`NetEvent`).
        self.events: list[NetEvent] = []
        self._faults: list[Fault] = []
        self._listeners: dict[tuple[str, int], VirtualListener] = {}
        self._connections: dict[int, _Connection] = {}
        self._next_connection = 1
        self._next_port: dict[str, int] = {}
        self._changed = trio.lowlevel.ParkingLot()
        self._t0 = 0.0
        self._nursery: trio.Nursery | None = None
        self._token: Token[Network | None] | None = None
        self._context: contextlib.AbstractAsyncContextManager[None] | None = None
        self._plain = self.conditions == Conditions()  # no rule, no delays: fast path

    # --- entering -------------------------------------------------------------

    async def __aenter__(self) -> VirtualNetwork:
        if self._context is not None:
            raise RuntimeError("this VirtualNetwork is already entered")
        self._context = self._run()
        await self._context.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        context, self._context = self._context, None
        assert context is not None
        return await context.__aexit__(*exc_info)

    @contextlib.asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        if self.seed_trio_scheduler:
            _seed_trio_scheduler(self.seed)
        self._t0 = trio.current_time()
        self._token = _NETWORK.set(self)
        try:
            with collapse_groups():
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    try:
                        yield
                    finally:
                        nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            _NETWORK.reset(self._token)
            self._token = None
            for connection in list(self._connections.values()):
                self._reset_connection(connection, "network closed")
            for listener in list(self._listeners.values()):
                listener.close_now()

    def activate(self) -> contextlib.AbstractAsyncContextManager[VirtualNetwork]:
        """The same as ``async with network:`` (for a name that reads better)."""
        return self

    @contextlib.contextmanager
    def node(self, host: str) -> Iterator[None]:
        """Connections dialled in this block (and by tasks spawned in it) come from ``host``.

        Open a worker in ``with network.node("10.0.0.2"):`` and its calls home
        come from that host, so faults between hosts (:meth:`partition`) apply.
        Outside any block the source is ``127.0.0.1``.
        """
        token = _NODE.set(host)
        try:
            yield
        finally:
            _NODE.reset(token)

    # --- the timeline ---------------------------------------------------------

    @property
    def now(self) -> float:
        """Seconds since the network was entered."""
        return trio.current_time() - self._t0

    def at(self, time: float, action: Callable[[], object]) -> None:
        """Call ``action()`` (awaited if it returns an awaitable) ``time`` seconds after
        the network was entered (at once if that has passed). An exception it raises
        fails the ``async with network:`` block with that exception."""
        self._schedule(self._t0 + time, action)

    def after(self, delay: float, action: Callable[[], object]) -> None:
        """Call ``action()`` ``delay`` seconds from now (see :meth:`at`)."""
        self._schedule(trio.current_time() + delay, action)

    def _schedule(self, deadline: float, action: Callable[[], object]) -> None:
        if self._nursery is None:
            raise RuntimeError("enter the network (async with network:) before scheduling")
        name = getattr(action, "__qualname__", repr(action))

        async def run() -> None:
            await trio.sleep_until(deadline)
            self._log("at", detail=name)
            result = action()
            if inspect.isawaitable(result):
                await result

        self._nursery.start_soon(run, name=f"VirtualNetwork.at {name}")

    # --- faults ---------------------------------------------------------------

    def set_conditions(
        self, src: str = "*", dst: str = "*", *, both_ways: bool = True, **changes: float
    ) -> Fault:
        """Change :class:`Conditions` fields (``latency=0.05``, ``read_rate=1000``...)
        for bytes from ``src`` to ``dst`` (and back, ``both_ways``). Later rules win."""
        unknown = set(changes) - _CONDITION_FIELDS
        if unknown:
            raise BadArgument(f"unknown conditions: {sorted(unknown)}")
        Conditions(**changes)  # checks the values
        return self._add(
            Fault(self, "conditions", src, dst, both_ways=both_ways, conditions=changes)
        )

    def refuse(self, dst: str, src: str = "*") -> Fault:
        """Connects from ``src`` to ``dst`` are refused (``ConnectionRefusedError``)."""
        return self._add(Fault(self, "refuse", src, dst, both_ways=False))

    def blackhole(self, dst: str, src: str = "*") -> Fault:
        """Connects from ``src`` to ``dst`` get no answer: they wait until the fault
        heals (then connect) or the caller's timeout."""
        return self._add(Fault(self, "blackhole", src, dst, both_ways=False))

    def stall(self, src: str = "*", dst: str = "*", *, both_ways: bool = True) -> Fault:
        """Bytes from ``src`` to ``dst`` are held (none delivered, senders block once
        ``buffer_size`` is waiting) until the fault heals; connections stay open."""
        return self._add(Fault(self, "stall", src, dst, both_ways=both_ways))

    def partition(self, a: str, b: str = "*") -> Fault:
        """``a`` and ``b`` cannot reach each other: bytes either way are held and
        connects between them wait, until the fault heals (as TCP over a network
        that drops every packet for a while)."""
        return self._add(Fault(self, "partition", a, b, both_ways=True))

    def drop_after(
        self, nbytes: int, src: str = "*", dst: str = "*", *, both_ways: bool = False
    ) -> Fault:
        """Reset each connection once ``nbytes`` more bytes went from ``src`` to ``dst``
        (counted per connection from now): the bytes up to the limit arrive, then
        both ends get ``trio.BrokenResourceError``."""
        if not isinstance(nbytes, int) or nbytes < 0:
            raise BadArgument(f"nbytes must be an int >= 0, not {nbytes!r}")
        return self._add(Fault(self, "drop", src, dst, both_ways=both_ways, nbytes=nbytes))

    def reset(self, host: str = "*", peer: str = "*") -> int:
        """Reset every open connection between ``host`` and ``peer`` now (a crash, a
        middlebox's RST); the number reset."""
        probe = Fault(self, "reset", host, peer, both_ways=True)
        hit = [c for c in self._connections.values() if probe.applies(c.client, c.server)]
        self._log("fault", detail=f"reset {host}<->{peer}: {len(hit)} connection(s)")
        for connection in hit:
            self._reset_connection(connection, f"reset {host}<->{peer}")
        return len(hit)

    def heal(self) -> None:
        """Lift every fault."""
        for fault in list(self._faults):
            fault.heal()

    @property
    def faults(self) -> list[Fault]:
        """The rules in force, oldest first."""
        return list(self._faults)

    def _add(self, fault: Fault) -> Fault:
        self._faults.append(fault)
        self._plain = False
        self._log("fault", src=fault.src, dst=fault.dst, detail=repr(fault))
        self._notify()
        return fault

    def _remove(self, fault: Fault) -> None:
        if fault.healed:
            return
        fault.healed = True
        self._faults.remove(fault)
        self._plain = not self._faults and self.conditions == Conditions()
        self._log("heal", src=fault.src, dst=fault.dst, detail=repr(fault))
        self._notify()

    def _notify(self) -> None:
        """Faults changed: every waiter looks again."""
        self._changed.unpark_all()
        for connection in self._connections.values():
            connection.up.wake()
            connection.down.wake()

    def _conditions(self, src: _End, dst: _End) -> Conditions:
        changes: dict[str, float] = {}
        for fault in self._faults:
            if fault.kind == "conditions" and fault.applies(src, dst):
                changes.update(fault.conditions)
        if not changes:
            return self.conditions
        merged = {f.name: getattr(self.conditions, f.name) for f in fields(Conditions)}
        merged.update(changes)
        return Conditions(**merged)

    def _held(self, pipe: _Pipe) -> bool:
        return any(
            fault.kind in ("stall", "partition") and fault.applies(pipe.src, pipe.dst)
            for fault in self._faults
        )

    def _delay(self, conditions: Conditions) -> float:
        delay = conditions.latency
        if conditions.jitter:
            delay += self.random.random() * conditions.jitter
        return delay

    # --- the Network seam -----------------------------------------------------

    async def listen(self, host: str, port: int) -> tuple[trio.abc.Listener[trio.abc.Stream], int]:
        """A :class:`VirtualListener` on ``host:port`` (port 0: the next free one)."""
        await trio.lowlevel.checkpoint()
        key_host = "*" if host in _WILDCARDS else host
        if port == 0:
            port = self._next_port.get(key_host, FIRST_PORT)
            while (key_host, port) in self._listeners:
                port += 1
            self._next_port[key_host] = port + 1
        elif (key_host, port) in self._listeners:
            raise OSError(errno.EADDRINUSE, f"{format_host_port(host, port)} is in use")
        listener = VirtualListener(self, key_host, port)
        self._listeners[key_host, port] = listener
        self._log("listen", dst=listener.address)
        return listener, port

    def _unlisten(self, listener: VirtualListener) -> None:
        if self._listeners.get((listener.host, listener.port)) is listener:
            del self._listeners[listener.host, listener.port]
            self._log("unlisten", dst=listener.address)

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """A :class:`VirtualStream` to the listener at ``host:port`` (from this task's
        :meth:`node`); ``ConnectionRefusedError`` when none listens or a rule refuses."""
        await trio.lowlevel.checkpoint_if_cancelled()
        src, dst = _End(_NODE.get(), None), _End(host, port)
        waited = False
        while True:
            kinds = {f.kind for f in self._faults if f.applies(src, dst)} if self._faults else set()
            if "refuse" in kinds:
                return await self._refused(src, dst, "refused by a fault")
            if not kinds & {"blackhole", "partition"}:
                break
            if not waited:
                waited = True
                self._log("blackholed", src=str(src), dst=str(dst))
            await self._changed.park()
        listener = self._listeners.get((host, port)) or self._listeners.get(("*", port))
        if listener is None or listener.closed:
            return await self._refused(src, dst, "nothing listens there")
        dst = _End(host, port)
        rtt = 0.0 if self._plain else 2 * self._delay(self._conditions(src, dst))
        if rtt:
            await trio.sleep(rtt)
            if listener.closed:
                return await self._refused(src, dst, "nothing listens there")
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        connection = _Connection(self._next_connection, src, dst)
        self._next_connection += 1
        self._connections[connection.id] = connection
        client = VirtualStream(self, connection, connection.up, connection.down)
        server = VirtualStream(self, connection, connection.down, connection.up)
        self._log("connect", connection.id, str(src), str(dst))
        listener._send.send_nowait(server)
        return client

    async def _refused(self, src: _End, dst: _End, why: str) -> trio.abc.Stream:
        if not self._plain:
            rtt = 2 * self._delay(self._conditions(src, dst))
            if rtt:
                await trio.sleep(rtt)
        self._log("refused", src=str(src), dst=str(dst), detail=why)
        await trio.lowlevel.checkpoint()
        raise ConnectionRefusedError(
            errno.ECONNREFUSED, f"connection to {dst} refused (virtual network: {why})"
        )

    # --- moving bytes ---------------------------------------------------------

    async def _send(self, pipe: _Pipe, data: bytes) -> None:
        view = memoryview(data)
        while True:
            if pipe.reset or pipe.reader_closed:
                raise trio.BrokenResourceError("the peer closed or reset the connection")
            if pipe.eof_at is not None:
                raise trio.ClosedResourceError("send_eof was called on this stream")
            if not view:
                break
            room = self.buffer_size - pipe.buffered
            if room <= 0:
                await pipe.writers.park()
                continue
            chunk, view = view[:room], view[room:]
            drop = self._drop_limit(pipe, len(chunk)) if not self._plain else None
            if drop is not None:
                if drop:
                    self._enqueue(pipe, bytes(chunk[:drop]))
                self._reset_connection(pipe.connection, "dropped after a byte count (fault)")
                raise trio.BrokenResourceError("connection reset (virtual network fault)")
            self._enqueue(pipe, bytes(chunk))
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _drop_limit(self, pipe: _Pipe, size: int) -> int | None:
        """Bytes of the next ``size`` that may go before a ``drop_after`` resets, or None."""
        limit: int | None = None
        for fault in self._faults:
            if fault.kind != "drop" or not fault.applies(pipe.src, pipe.dst):
                continue
            key = (pipe.connection.id, pipe.forward)
            counted = fault._counted.get(key, 0)
            left = fault.nbytes - counted
            if size < left:
                fault._counted[key] = counted + size
                continue
            fault._counted[key] = fault.nbytes
            limit = left if limit is None else min(limit, left)
        return limit

    def _enqueue(self, pipe: _Pipe, data: bytes) -> None:
        now = trio.current_time()
        if self._plain:
            at = now
        else:
            conditions = self._conditions(pipe.src, pipe.dst)
            start = max(now, pipe.tx_free_at)
            if conditions.bandwidth != math.inf:
                start += len(data) / conditions.bandwidth
            pipe.tx_free_at = start
            at = max(start + self._delay(conditions), pipe.last_at)
        pipe.last_at = at
        pipe.segments.append((at, data))
        pipe.buffered += len(data)
        if self.record_bytes:
            self._log("bytes", pipe.connection.id, str(pipe.src), str(pipe.dst), len(data))
        pipe.readers.unpark_all()

    def _eof(self, pipe: _Pipe, *, log: bool = True) -> None:
        if pipe.eof_at is not None or pipe.reset:
            return
        now = trio.current_time()
        delay = 0.0 if self._plain else self._delay(self._conditions(pipe.src, pipe.dst))
        pipe.eof_at = max(now + delay, pipe.last_at)
        if log:
            self._log("eof", pipe.connection.id, str(pipe.src), str(pipe.dst))
        pipe.wake()

    async def _receive(
        self, stream: VirtualStream, pipe: _Pipe, max_bytes: int, consume: bool
    ) -> bytes:
        while True:
            if stream._closed:
                raise trio.ClosedResourceError("the stream is closed")
            now = trio.current_time()
            deadline = math.inf
            held = not self._plain and self._held(pipe)
            if pipe.segments:
                first_at = pipe.segments[0][0]
                if held:
                    pass
                elif first_at > now:
                    deadline = first_at
                else:
                    rate = math.inf
                    if not self._plain:
                        rate = self._conditions(pipe.src, pipe.dst).read_rate
                    if rate != math.inf and pipe.read_free_at > now:
                        deadline = pipe.read_free_at
                    else:
                        if rate != math.inf:
                            max_bytes = min(max_bytes, max(1, int(rate * 0.01)))
                        data = self._take(pipe, now, max_bytes, consume)
                        if consume and rate != math.inf:
                            pipe.read_free_at = now + len(data) / rate
                        return data
            elif pipe.reset:
                raise trio.BrokenResourceError("connection reset by peer (virtual network)")
            elif pipe.eof_at is not None and not held:
                if pipe.eof_at <= now:
                    return b""
                deadline = pipe.eof_at
            with trio.move_on_at(deadline):
                await pipe.readers.park()

    def _take(self, pipe: _Pipe, now: float, max_bytes: int, consume: bool) -> bytes:
        parts: list[bytes] = []
        size = 0
        segments = pipe.segments
        if not consume:
            for at, data in segments:
                if at > now or size >= max_bytes:
                    break
                parts.append(data[: max_bytes - size])
                size += len(parts[-1])
            return b"".join(parts)
        while segments and size < max_bytes and segments[0][0] <= now:
            at, data = segments[0]
            want = max_bytes - size
            if len(data) > want:
                segments[0] = (at, data[want:])
                data = data[:want]
            else:
                segments.popleft()
            parts.append(data)
            size += len(data)
        pipe.buffered -= size
        pipe.writers.unpark_all()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _close_end(self, stream: VirtualStream) -> None:
        connection = stream._connection
        out, into = stream._out, stream._in
        if not out.reset:
            self._log("close", connection.id, str(out.src), str(out.dst))
        self._eof(out, log=False)
        into.reader_closed = True
        into.segments.clear()
        into.buffered = 0
        into.wake()
        out.wake()
        connection.open_ends -= 1
        if connection.open_ends <= 0:
            self._connections.pop(connection.id, None)

    def _reset_connection(self, connection: _Connection, why: str) -> None:
        if connection.up.reset:
            return
        self._log(
            "reset", connection.id, str(connection.client), str(connection.server), detail=why
        )
        for pipe in (connection.up, connection.down):
            pipe.reset = True
            pipe.wake()
        self._connections.pop(connection.id, None)

    # --- the log --------------------------------------------------------------

    def _log(
        self,
        kind: str,
        connection: int = 0,
        src: str = "",
        dst: str = "",
        size: int = 0,
        detail: str = "",
    ) -> None:
        self.events.append(
            NetEvent(trio.current_time() - self._t0, kind, connection, src, dst, size, detail)
        )

    def describe(self, events: list[NetEvent] | None = None) -> str:
        """The event log as text, one line per event (for a failing test's message)."""
        lines = []
        for e in self.events if events is None else events:
            ends = f" {e.src} -> {e.dst}" if e.src or e.dst else ""
            conn = f" #{e.connection}" if e.connection else ""
            size = f" {e.size} B" if e.size else ""
            detail = f" ({e.detail})" if e.detail else ""
            lines.append(f"{e.time:10.6f} {e.kind}{conn}{ends}{size}{detail}")
        return "\n".join(lines)

    def open_connections(self) -> int:
        """Connections with at least one end open and not reset."""
        return len(self._connections)


def _seed_trio_scheduler(seed: int) -> None:
    """Seed the random generator Trio's run loop shuffles ready tasks with.

    A Trio internal (``trio._core._run._r``): when a Trio version lacks it the
    interleaving of tasks ready at the same moment may differ between runs.
    """
    run_module = importlib.import_module("trio._core._run")
    generator = getattr(run_module, "_r", None)
    if isinstance(generator, random.Random):
        generator.seed(seed)
