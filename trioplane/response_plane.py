"""The caller's response plane: the TCP listener that workers call home to.

Each call registers a fresh subject *before* its request is sent
(:meth:`ResponsePlane.register`). A worker connects, sends the handshake naming
the subject, and the connection is handed to the call that registered it.
Connections with an unknown subject, a bad handshake, or no handshake within
``handshake_timeout`` (10 s, as Dynamo) are closed without touching other streams.

Every call opens one connection and reads every item off it, so this path is
lean: plain non-blocking sockets driven by ``trio.lowlevel.wait_readable``, a
handshake that has already arrived is routed by the accept loop itself, and a
finished connection is closed synchronously. A handshake still on its way (the
usual case: a worker's connection is accepted before its first bytes arrive) is
waited for by the accept loop too, on Linux: the listener and the connections
waiting for their handshake share a private epoll set, which the loop waits on as
one descriptor, and one timer task drops those silent past ``handshake_timeout``.
Elsewhere, and over TLS, each such connection waits in a task of its own; a task
is spawned too for a stream whose sentinel is still to come.

At most ``max_pending_handshakes`` connections may wait for their handshake at
once; past that a new one is dropped at once (a peer opening connections and
saying nothing holds no more than that many descriptors, each for at most
``handshake_timeout``).

With an ``ssl_context`` the plane serves TLS, as a Dynamo caller with
``DYN_TCP_TLS_CERT_PATH`` does: each connection's TLS handshake runs in a task
(within ``tls_handshake_timeout``). A worker whose TLS setting does not match
(plain text on a TLS plane, or TLS on a plain one) is recognised by its first
bytes, dropped at once, and named in :attr:`ResponsePlaneStatistics.last_drop`
(and in the :class:`~trioplane.CallHomeTimeout` of the call it leaves waiting).
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from trioplane._checks import check_count, check_port, check_seconds
from trioplane._errors import BadArgument, ProtocolError
from trioplane._logging import RateLimitedLog
from trioplane._network import current_network, open_tcp_listeners, peek
from trioplane._sockets import SocketIO, StreamIO
from trioplane._util import reason
from trioplane.addresses import format_host_port
from trioplane.tls import DEFAULT_HANDSHAKE_TIMEOUT
from trioplane.wire.response import Handshake, ResponseStreamDecoder
from trioplane.wire.sniff import TLS_DECODE_ERROR_ALERT, foreign_protocol, not_tls
from trioplane.wire.twopart import DEFAULT_MAX_BODY_SIZE

__all__ = ["CallHome", "ResponsePlane", "ResponsePlaneStatistics", "receive_into"]

logger = logging.getLogger(__name__)

PLAIN_ON_TLS = (
    "a worker called home in plain text, but this response plane serves TLS"
    " (the worker needs DYN_TCP_TLS_CA_CERT_PATH or DYN_TCP_TLS_INSECURE)"
)
TOO_MANY_PENDING = "too many connections waiting for their handshake (max_pending_handshakes)"
TLS_ON_PLAIN = (
    "a worker called home with TLS, but this response plane is plain text (give the"
    " client a certificate: tls=TcpTls(cert_path=..., key_path=...) or DYN_TCP_TLS_CERT_PATH)"
)


class Connection(Protocol):
    """A call-home connection: :class:`~trioplane._sockets.SocketIO` (plain text; with
    no receive buffer of its own, so a call waiting for its next item holds none: a
    64 KiB buffer each was 0.7 GB for 10,000 calls in flight, ``benchmarks/scale.py``)
    or :class:`~trioplane._sockets.StreamIO` (TLS)."""

    def receive_nowait(self) -> memoryview | None: ...

    async def receive(self) -> bytes | bytearray | memoryview: ...

    def send_nowait(self, data: bytes | memoryview) -> int: ...

    async def send_all(self, data: bytes | memoryview) -> None: ...

    def close(self) -> None: ...


#: How long a finished stream's connection waits for the worker's sentinel.
LINGER_TIMEOUT = 2.0
#: Pause before accepting again after the system refused a connection (e.g. no fds).
ACCEPT_BACKOFF = 0.1
BACKLOG = 1024
_WILDCARDS = ("", "0.0.0.0", "::")
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
#: Whether the accept loop can wait for handshakes itself (a private epoll set).
_EPOLL = hasattr(select, "epoll")


async def receive_into(connection: Connection, decoder: ResponseStreamDecoder) -> bool:
    """Read more bytes of a call-home connection into ``decoder``; ``False`` at EOF."""
    data = await connection.receive()
    if not data:
        return False
    decoder.feed(data)
    return True


@dataclass(frozen=True)
class ResponsePlaneStatistics:
    """A snapshot of a response plane (trio-style ``statistics()``; no I/O).

    ``waiting_subjects``: calls registered whose worker has not called home yet;
    ``open_connections``: call-home connections held (streams being read, or
    lingering for their sentinel); ``dropped_connections``: closed for a bad or
    missing handshake or an unknown subject.
    """

    address: str
    waiting_subjects: int
    open_connections: int
    connections_accepted: int
    dropped_connections: int
    #: Why the last connection was dropped (``None``: none was).
    last_drop: str | None = None


class _Unnamed:
    """A connection the accept loop waits on for its handshake."""

    __slots__ = ("connection", "deadline", "decoder")

    def __init__(
        self, connection: Connection, decoder: ResponseStreamDecoder, deadline: float
    ) -> None:
        self.connection = connection
        self.decoder = decoder
        self.deadline = deadline


class CallHome:
    """One registered subject: waits for the worker's connection, then owns it."""

    def __init__(self, plane: ResponsePlane, subject: str, max_item_size: int) -> None:
        self.subject = subject
        self.connection: Connection | None = None
        self.decoder = ResponseStreamDecoder(max_item_size=max_item_size)
        self._plane = plane
        self._arrived = trio.Event()
        self._closed = False

    async def wait_connected(self) -> None:
        """Until the worker has called home or the plane closed (check ``connection``).

        The caller's cancel scope bounds the wait.
        """
        await self._arrived.wait()

    @property
    def closed(self) -> bool:
        """True once the call or the whole plane let go of this subject."""
        return self._closed or self._plane.closed

    def _deliver(self, connection: Connection, decoder: ResponseStreamDecoder) -> bool:
        if self._closed or self.connection is not None:
            return False
        decoder.codec = self.decoder.codec
        self.connection, self.decoder = connection, decoder
        self._arrived.set()
        return True

    def close(self, *, linger: bool = False) -> None:
        """Unregister and release the connection; ``linger`` lets the worker finish first.

        With ``linger`` a finished stream's connection stays open until the
        worker's sentinel (bounded by ``LINGER_TIMEOUT``), so the worker is not
        cut off mid-write; otherwise it closes now.
        """
        if self._closed:
            return
        self._closed = True
        self._plane._unregister(self)
        self._arrived.set()  # wake a task still waiting for the call home
        connection = self.connection
        if connection is None:
            return
        if linger and not self.decoder.done and self._plane._linger(connection, self.decoder):
            return
        self._plane._forget(connection)


class ResponsePlane:
    """The call-home listener of one client; run it with ``nursery.start(plane.run)``.

    ``host``/``port`` are where it listens (default ``127.0.0.1``, port 0);
    ``advertise_host`` is the host workers are told to connect to (needed when
    listening on a wildcard address). ``address`` is known once started.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise_host: str | None = None,
        handshake_timeout: float = 10.0,
        max_item_size: int = DEFAULT_MAX_BODY_SIZE,
        ssl_context: ssl.SSLContext | None = None,
        tls_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_pending_handshakes: int = 2048,
    ) -> None:
        if advertise_host is None and host in _WILDCARDS:
            raise BadArgument(f"listening on {host!r} needs advertise_host, the host workers dial")
        check_seconds(handshake_timeout, "handshake_timeout", zero=False)
        check_seconds(tls_handshake_timeout, "tls_handshake_timeout")
        check_count(max_item_size, "max_item_size")
        self.host = host
        self.port = check_port(port, "response_port")
        self.advertise_host = advertise_host or host
        self.handshake_timeout = handshake_timeout
        self.max_item_size = max_item_size
        self.ssl_context = ssl_context
        self.tls_handshake_timeout = tls_handshake_timeout
        check_count(max_pending_handshakes, "max_pending_handshakes")
        self.max_pending_handshakes = max_pending_handshakes
        self._pending_handshakes = 0
        self.address = ""
        self.dropped_connections = 0
        self.last_drop: str | None = None
        self._log = RateLimitedLog(logger)
        self.connections_accepted = 0
        self.closed = False
        self._waiting: dict[str, CallHome] = {}
        self._connections: set[Connection] = set()
        self._nursery: trio.Nursery | None = None
        #: Connections whose handshake the accept loop waits for, by descriptor, in
        #: the order they came (so their deadlines grow along the dict).
        self._unnamed: dict[int, _Unnamed] = {}
        self._epoll: Any = None  # select.epoll, where the platform has it

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; ``address`` is set before ``started``.

        On exit every connection still open is closed (readers of those streams
        get ``trio.ClosedResourceError``).
        """
        listener: socket.socket | None = None
        virtual: trio.abc.Listener[trio.abc.Stream] | None = None
        if current_network() is not None:  # a VirtualNetwork: its streams, no sockets
            (virtual,), self.port = await open_tcp_listeners(self.host, self.port)
        else:
            family, kind, proto, _, sockaddr = (
                await trio.socket.getaddrinfo(
                    self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )
            )[0]
            listener = socket.socket(family, kind, proto)
        try:
            if listener is not None:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(sockaddr)
                listener.listen(BACKLOG)
                listener.setblocking(False)
                self.port = listener.getsockname()[1]
            self.address = format_host_port(self.advertise_host, self.port)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                if listener is not None and _EPOLL:
                    self._epoll = select.epoll()
                    nursery.start_soon(self._expire_unnamed)
                    await self._accept_and_wait(listener, self._epoll)
                elif listener is not None:
                    await self._accept_loop(listener)
                else:
                    assert virtual is not None
                    await self._accept_streams(virtual)
        finally:
            self._nursery = None
            self.closed = True
            for call_home in self._waiting.values():
                call_home._arrived.set()  # wake the waiters: nobody will call home now
            if listener is not None:
                trio.lowlevel.notify_closing(listener)
                listener.close()
            if virtual is not None:
                with trio.CancelScope(shield=True):
                    await virtual.aclose()
            if self._epoll is not None:
                trio.lowlevel.notify_closing(self._epoll.fileno())
                self._epoll.close()
                self._epoll = None
            self._unnamed.clear()
            for connection in list(self._connections):
                connection.close()
            self._connections.clear()

    def statistics(self) -> ResponsePlaneStatistics:
        """A snapshot of the plane's state and counters."""
        return ResponsePlaneStatistics(
            address=self.address,
            waiting_subjects=len(self._waiting),
            open_connections=len(self._connections),
            connections_accepted=self.connections_accepted,
            dropped_connections=self.dropped_connections,
            last_drop=self.last_drop,
        )

    def register(self) -> CallHome:
        """A fresh subject for one call; register it before sending the request."""
        if not self.address or self.closed:
            raise RuntimeError("the response plane is not listening")
        call_home = CallHome(self, uuid.uuid4().hex, self.max_item_size)
        self._waiting[call_home.subject] = call_home
        return call_home

    def _unregister(self, call_home: CallHome) -> None:
        if self._waiting.get(call_home.subject) is call_home:
            del self._waiting[call_home.subject]

    def _forget(self, connection: Connection) -> None:
        self._connections.discard(connection)
        connection.close()

    async def _accept_and_wait(self, listener: socket.socket, epoll: Any) -> None:
        """The accept loop that also waits for handshakes: one epoll set holds the
        listener and every connection still to say its subject, so a call home costs
        no task (a task per connection was a spawn, a cancel scope and an exit)."""
        listening = listener.fileno()
        epoll.register(listening, select.EPOLLIN)
        while True:
            await trio.lowlevel.wait_readable(epoll.fileno())
            for fd, _ in epoll.poll(0):
                if fd == listening:
                    await self._accept_waiting(listener)
                else:
                    self._handshake_readable(fd)

    def _handshake_readable(self, fd: int) -> None:
        """Bytes (or EOF) on a connection waiting for its handshake: route it once the
        handshake is complete, drop it if it is bad (as :meth:`_await_handshake`)."""
        unnamed = self._unnamed.get(fd)
        if unnamed is None:
            return  # left meanwhile (dropped by the timer)
        connection, decoder = unnamed.connection, unnamed.decoder
        try:
            data = connection.receive_nowait()
            if data is None:
                return  # nothing after all: keep waiting
            if not data:
                self._leave_unnamed(fd)
                self._drop(connection, "no handshake")
                return
            if foreign_protocol(data) == "TLS":
                self._leave_unnamed(fd)
                self._drop(connection, TLS_ON_PLAIN)
                return
            decoder.feed(data)
            event = decoder.next_event()
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._leave_unnamed(fd)
            self._drop(connection, f"bad handshake: {exc}")
            return
        if isinstance(event, Handshake):
            self._leave_unnamed(fd)
            self._route(connection, decoder, event.subject)

    def _leave_unnamed(self, fd: int) -> None:
        del self._unnamed[fd]
        self._pending_handshakes -= 1
        self._epoll.unregister(fd)

    async def _expire_unnamed(self) -> None:
        """Drop the connections that said nothing within ``handshake_timeout``.

        With none waiting it sleeps one ``handshake_timeout``: every connection
        accepted meanwhile has a later deadline, so none needs to wake it.
        """
        while True:
            oldest = next(iter(self._unnamed.values()), None)
            if oldest is None:
                await trio.sleep(self.handshake_timeout)
                continue
            await trio.sleep_until(oldest.deadline)
            now = trio.current_time()
            overdue = []
            for fd, unnamed in self._unnamed.items():
                if unnamed.deadline > now:
                    break  # deadlines grow along the dict
                overdue.append((fd, unnamed.connection))
            for fd, connection in overdue:
                self._leave_unnamed(fd)
                self._drop(connection, "no handshake")

    async def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            await self._accept_waiting(listener)

    async def _accept_waiting(self, listener: socket.socket) -> None:
        """Take every connection waiting on ``listener`` (both accept loops' part)."""
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                logger.warning("response plane cannot accept: %s", exc)
                await trio.sleep(ACCEPT_BACKOFF)
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections_accepted += 1
            if self.ssl_context is not None:
                if self._pending_handshakes >= self.max_pending_handshakes:
                    self._drop(SocketIO(sock), TOO_MANY_PENDING)
                else:
                    self._wait_in_task(self._accept_tls, sock, self.ssl_context)
                continue
            connection = SocketIO(sock, buffered=False)
            self._connections.add(connection)
            self._route_or_wait(connection, sock)

    async def _accept_streams(self, listener: trio.abc.Listener[trio.abc.Stream]) -> None:
        """The accept loop on a virtual network's listener (no socket fast paths)."""
        while True:
            stream = await listener.accept()
            self.connections_accepted += 1
            if self.ssl_context is not None:
                if self._pending_handshakes >= self.max_pending_handshakes:
                    self._drop(StreamIO(stream), TOO_MANY_PENDING)
                else:
                    self._wait_in_task(self._accept_tls_stream, stream, self.ssl_context)
                continue
            connection = StreamIO(stream)
            self._connections.add(connection)
            self._route_or_wait(connection)

    def _route_or_wait(self, connection: Connection, sock: socket.socket | None = None) -> None:
        """Route a connection whose handshake is already here; else wait for it: in the
        accept loop's epoll set (given its plain ``sock``), else in a task."""
        decoder = ResponseStreamDecoder(max_item_size=self.max_item_size)
        try:
            data = connection.receive_nowait()
            if data:
                if foreign_protocol(data) == "TLS":
                    self._drop(connection, TLS_ON_PLAIN)
                    return
                decoder.feed(data)
            event = decoder.next_event()
        except (ProtocolError, trio.BrokenResourceError) as exc:
            self._drop(connection, f"bad handshake: {exc}")
            return
        if isinstance(event, Handshake):
            self._route(connection, decoder, event.subject)
        elif self._pending_handshakes >= self.max_pending_handshakes:
            self._drop(connection, TOO_MANY_PENDING)
        elif sock is not None and self._epoll is not None:
            fd = sock.fileno()
            deadline = trio.current_time() + self.handshake_timeout
            self._unnamed[fd] = _Unnamed(connection, decoder, deadline)
            self._pending_handshakes += 1
            self._epoll.register(fd, select.EPOLLIN)
        else:
            self._wait_in_task(self._await_handshake, connection, decoder)

    def _wait_in_task(self, wait: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run a handshake wait in a task, counted against ``max_pending_handshakes``."""

        async def counted() -> None:
            self._pending_handshakes += 1
            try:
                await wait(*args)
            finally:
                self._pending_handshakes -= 1

        assert self._nursery is not None
        self._nursery.start_soon(counted)

    async def _accept_tls(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        """The TLS handshake of one call-home connection, then its call-home handshake."""
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        await self._accept_tls_stream(stream, context)

    async def _accept_tls_stream(self, stream: trio.abc.Stream, context: ssl.SSLContext) -> None:
        tls = trio.SSLStream(stream, context, server_side=True)
        connection = StreamIO(tls)
        self._connections.add(connection)
        try:
            with trio.fail_after(self.tls_handshake_timeout):
                first = await peek(stream, 8)
                if not_tls(first):
                    await stream.send_all(TLS_DECODE_ERROR_ALERT)
                    self._drop(connection, PLAIN_ON_TLS)
                    return
                await tls.do_handshake()
        except trio.TooSlowError:
            self._drop(connection, f"no TLS handshake within {self.tls_handshake_timeout:g} s")
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._drop(connection, f"TLS handshake failed: {reason(exc)}")
            return
        except BaseException:
            self._forget(connection)
            raise
        await self._await_handshake(
            connection, ResponseStreamDecoder(max_item_size=self.max_item_size)
        )

    async def _await_handshake(
        self, connection: Connection, decoder: ResponseStreamDecoder
    ) -> None:
        try:
            with trio.move_on_after(self.handshake_timeout):
                while True:
                    event = decoder.next_event()
                    if isinstance(event, Handshake):
                        self._route(connection, decoder, event.subject)
                        return
                    data = await connection.receive()
                    if not data:
                        break
                    if self.ssl_context is None and foreign_protocol(data) == "TLS":
                        self._drop(connection, TLS_ON_PLAIN)
                        return
                    decoder.feed(data)
            self._drop(connection, "no handshake")
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._drop(connection, f"bad handshake: {exc}")
        except BaseException:
            self._forget(connection)
            raise

    def _route(self, connection: Connection, decoder: ResponseStreamDecoder, subject: str) -> None:
        call_home = self._waiting.pop(subject, None)
        if call_home is None or not call_home._deliver(connection, decoder):
            self._drop(connection, f"unknown subject {subject!r}")

    def _drop(self, connection: Connection, why: str) -> None:
        self.dropped_connections += 1
        self.last_drop = why
        if why in (PLAIN_ON_TLS, TLS_ON_PLAIN, TOO_MANY_PENDING):
            self._log.warning(why, "dropping a call-home connection: %s", why)
        else:
            logger.debug("dropping call-home connection: %s", why)
        self._forget(connection)

    def _linger(self, connection: Connection, decoder: ResponseStreamDecoder) -> bool:
        if self._nursery is None:
            return False
        self._nursery.start_soon(self._drain, connection, decoder)
        return True

    async def _drain(self, connection: Connection, decoder: ResponseStreamDecoder) -> None:
        """Read a finished stream up to the worker's sentinel (or its close), then close."""
        try:
            with trio.move_on_after(LINGER_TIMEOUT):
                while not decoder.done:
                    if decoder.next_event() is None and not await receive_into(connection, decoder):
                        return
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._forget(connection)
