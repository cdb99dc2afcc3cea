"""The worker's side of the response plane: call the caller home and stream back.

:func:`open_call_home` connects to the address a request's control message
names (within ``connect_timeout``; over TLS when given a context), sends the
handshake naming the caller's subject, and hands back a :class:`CallHomeSender`
for the rest of the stream (prologue, items, end, sentinel: the frames of
:mod:`trioplane.wire.response`). A task reads what the caller sends back:
``"stop"`` and ``"kill"``, or its leaving; ``on_cancel`` hears each at once (a
worker's :class:`CallHomeWatch` hears all its callers in one task instead). A
write the caller does not take within ``write_timeout`` counts as the caller
being gone for good (``"stalled"``), so a caller that stops reading cannot hold
a worker's slot. The worker and the fake endpoint worker of
:mod:`trioplane.testing` both call home through here.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import select
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import trio

from trioplane._checks import check_seconds
from trioplane._errors import ConnectError, ProtocolError
from trioplane._network import current_network, open_stream, open_tcp_stream
from trioplane._sockets import ByteLink, SocketIO
from trioplane._util import reason
from trioplane.addresses import format_host_port, split_host_port
from trioplane.tls import TcpTls
from trioplane.wire.codecs import PayloadCodec
from trioplane.wire.control import CallHomeInfo, encode_handshake
from trioplane.wire.response import decode_cancel, encode_end, encode_sentinel
from trioplane.wire.sniff import foreign_protocol
from trioplane.wire.twopart import TwoPartDecoder

__all__ = [
    "CallHomeLimits",
    "CallHomeSender",
    "CallHomeWatch",
    "open_call_home",
]

log = logging.getLogger(__name__)

#: Frames the kernel took at once before a send yields to the scheduler (fairness: a
#: handler that never waits still lets other tasks run; cancellation is checked on each).
SENDS_PER_CHECKPOINT = 16

#: ``on_cancel`` reasons: the caller sent ``"stop"`` or ``"kill"``, left, or stopped reading.
STOP, KILL, GONE, STALLED = "stop", "kill", "gone", "stalled"

#: Whether a :class:`CallHomeWatch` can hear plain sockets itself (a private epoll set).
_EPOLL = hasattr(select, "epoll")
#: Reads of one caller's socket per wake-up of the watch (fairness: a caller that
#: floods its connection cannot hold the watch; the epoll set reports it again).
_READS_PER_WAKE = 16


@dataclass(frozen=True)
class CallHomeLimits:
    """Deadlines of a call home (defaults are production ones; ``math.inf``: none).

    * ``connect_timeout`` (10 s): TCP connect and TLS handshake to the caller.
    * ``write_timeout`` (30 s): a frame the caller does not take within this ends
      the call (``"stalled"``): a caller that stops reading frees the worker's slot.
    * ``sentinel_wait`` (10 s, Dynamo's): after the sentinel, how long to wait for
      the caller to close.
    """

    connect_timeout: float = 10.0
    write_timeout: float = 30.0
    sentinel_wait: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "write_timeout", "sentinel_wait"):
            check_seconds(getattr(self, name), name)


DEFAULT_CALL_HOME_LIMITS = CallHomeLimits()


class CallHomeSender:
    """One open call-home connection: send the stream's frames, hear the caller.

    ``cancels`` lists the ``"stop"``/``"kill"`` frames the caller sent;
    :attr:`stopped` is true once the caller stopped or killed the call, left, or
    stopped reading. Made by :func:`open_call_home`.
    """

    def __init__(
        self,
        link: ByteLink | SocketIO,
        limits: CallHomeLimits,
        on_cancel: Callable[[str], object] | None,
        on_failure: Callable[[str], object] | None = None,
    ) -> None:
        self._link = link
        self.limits = limits
        self.on_cancel = on_cancel
        self.on_failure = on_failure
        self.cancels: list[str] = []
        #: Why the caller cannot be streamed to, if it is known (a TLS mismatch).
        self.failure: str | None = None
        #: Bytes written to the caller so far (whole frames).
        self.bytes_sent = 0
        self._gone = False
        self._stopped = trio.Event()
        self._quick_sends = 0
        #: The block has ended: nobody to tell of a cancel any more.
        self._closed = False
        #: The watch that hears the caller (and closes the connection after the sentinel).
        self._watch: CallHomeWatch | None = None
        #: Its key in the watch (the socket's descriptor in the epoll set).
        self._key = 0
        #: The stream is over and the watch owns the connection until the caller closes it.
        self._handed_off = False
        self._decoder: TwoPartDecoder | None = None
        self._first_read = True
        #: Bytes to write before the next frame (the handshake, until the first frame).
        self._unsent = b""

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def _cancelled(self, why: str) -> None:
        if self._closed:  # the block has ended: there is nobody to tell
            return
        if why in (STOP, KILL):
            self.cancels.append(why)
        else:
            if self._gone:
                return
            self._gone = True
        self._stopped.set()
        if self.on_cancel is not None:
            self.on_cancel(why)

    async def send(self, data: bytes) -> None:
        """Write ``data`` (frames); a no-op once the caller is gone. A cancellation
        point; when the kernel takes the frame at once, a scheduling point only every
        ``SENDS_PER_CHECKPOINT`` frames (as reads from a socket with data waiting).

        A write the caller does not take within ``write_timeout`` ends the call:
        the connection is closed and ``on_cancel("stalled")`` is called.
        """
        link = self._link
        if self._gone:
            await trio.lowlevel.checkpoint()
            return
        if self._unsent:  # the handshake goes with the first frame: one write fewer
            data = self._unsent + data
            self._unsent = b""
        self.bytes_sent += len(data)
        try:
            sent = link.send_nowait(data)  # the usual case: the kernel takes it all now
            if sent == len(data):
                self._quick_sends += 1
                if self._quick_sends < SENDS_PER_CHECKPOINT:
                    await trio.lowlevel.checkpoint_if_cancelled()  # no scheduler round trip
                else:
                    self._quick_sends = 0
                    await trio.lowlevel.checkpoint()
                return
            with trio.move_on_after(self.limits.write_timeout) as scope:
                await link.send_all(memoryview(data)[sent:])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._cancelled(GONE)
            return
        if scope.cancelled_caught:
            self._close()  # a half-written frame: nothing more can go on this connection
            self._cancelled(STALLED)

    async def finish(self, codec: PayloadCodec | None) -> None:
        """End the stream (``complete_final``, then the sentinel; after a failed prologue,
        ``codec=None``: the sentinel alone) and wait, up to ``sentinel_wait``, for the
        caller to close, as Dynamo's worker does. With a :class:`CallHomeWatch`, the
        watch does that waiting (and the closing) and this returns at once."""
        end = encode_end(codec) if codec is not None else b""
        await self.send(end + encode_sentinel())
        if self._watch is not None and not self._gone and not self._link.closed:
            self._handed_off = True
            self._watch._linger(self)
            return
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Until the caller closes, stops or kills the call, or ``sentinel_wait`` passes."""
        with trio.move_on_after(self.limits.sentinel_wait):
            await self._stopped.wait()

    def _heard(self, data: bytes | bytearray | memoryview) -> bool:
        """Take bytes the caller sent (its stop or kill); False when the stream cannot
        go on (the caller speaks TLS). ``ProtocolError`` for garbage."""
        if self._first_read:
            self._first_read = False
            if foreign_protocol(data) == "TLS":
                self.failure = (
                    "the caller's response plane serves TLS and this worker calls home in"
                    " plain text (set DYN_TCP_TLS_CA_CERT_PATH, or TcpTls(ca_path=...))"
                )
                if self.on_failure is not None:
                    self.on_failure(self.failure)
                return False
        if self._decoder is None:
            self._decoder = TwoPartDecoder()
        self._decoder.feed(data)
        for message in self._decoder.messages():
            self._cancelled(decode_cancel(message.header))
        return True

    def _caller_left(self) -> None:
        """The caller closed, broke or garbled its end: nobody reads the items any more;
        a stream already over is closed now."""
        self._cancelled(GONE)
        if self._handed_off:
            self._close()

    def _close(self) -> None:
        if self._watch is not None:
            self._watch._forget(self, closing=True)
        self._link.close_now()

    async def _read_cancels(self) -> None:
        try:
            while data := await self._link.receive():
                if not self._heard(data):
                    break
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        self._caller_left()

    async def _read_cancels_detached(self) -> None:
        """:meth:`_read_cancels` in a nursery that outlives the block: closing the
        connection ends it. A failure of its own is logged and counts as the caller
        gone (this call ends; the nursery, the worker's, serves on)."""
        try:
            await self._read_cancels()
        except Exception:
            log.exception("reading the caller's stop and kill failed; the caller is gone")
            self._caller_left()

    def _readable(self) -> None:
        """The watch's epoll set says the caller sent something (or left): read what
        is there, without waiting."""
        link = self._link
        assert isinstance(link, SocketIO)
        try:
            for _ in range(_READS_PER_WAKE):
                data = link.receive_nowait()
                if data is None:
                    return  # all read
                if not data or not self._heard(data):
                    break
            else:
                return  # more waiting: the epoll set reports it again
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("reading the caller's stop and kill failed; the caller is gone")
        if self._watch is not None and not self._handed_off:
            self._watch._forget(self, closing=False)  # the call closes it when it ends
        self._caller_left()


class CallHomeWatch:
    """Hears the callers of many call homes at once, one per worker: pass it as
    ``open_call_home(watch=...)`` and run :meth:`run` in a nursery that outlives
    the calls (the worker's).

    On Linux, plain-socket call homes share one private epoll set that one task
    waits on: no task per call, and one wake-up for every caller that spoke or left
    since the last. Other call homes (TLS, a virtual network's) get a reader task in
    the watch's nursery. After the sentinel the watch, not the call, waits (up to
    ``sentinel_wait``) for the caller to close, and closes the connection: the call
    is over as soon as its last frame is written. Cancelling :meth:`run` closes every
    connection it holds.
    """

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self._epoll: Any = None  # select.epoll, where the platform has it
        self._watched: dict[int, CallHomeSender] = {}
        #: Streams over, waiting for their callers to close, oldest first: key ->
        #: (deadline, sender).
        self._lingering: dict[int, tuple[float, CallHomeSender]] = {}
        self._timer: trio.CancelScope | None = None

    @property
    def watching(self) -> int:
        """Call homes heard now (in the epoll set or by a task of their own)."""
        return len(self._watched)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hear callers until cancelled; then close every connection the watch holds."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if _EPOLL:
                    self._epoll = select.epoll()
                task_status.started()
                await self._wait()
        finally:
            self._nursery = None
            for sender in list(self._watched.values()):
                sender._close()
            self._lingering.clear()
            if self._epoll is not None:
                trio.lowlevel.notify_closing(self._epoll.fileno())
                self._epoll.close()
                self._epoll = None

    async def _wait(self) -> None:
        while True:
            deadline = next(iter(self._lingering.values()))[0] if self._lingering else math.inf
            with trio.CancelScope(deadline=deadline) as self._timer:
                if self._epoll is not None:
                    await trio.lowlevel.wait_readable(self._epoll.fileno())
                else:
                    await trio.sleep_forever()
            self._timer = None
            if self._epoll is not None:
                for fd, _ in self._epoll.poll(0):
                    sender = self._watched.get(fd)
                    if sender is not None:
                        sender._readable()
            self._expire(trio.current_time())

    def _expire(self, now: float) -> None:
        """Close the lingering connections whose caller did not close within
        ``sentinel_wait``: the oldest first, only those (no copy of the rest per wake)."""
        while self._lingering:
            key, (deadline, sender) = next(iter(self._lingering.items()))
            if deadline > now:
                return
            del self._lingering[key]
            sender._close()

    def _add(self, sender: CallHomeSender) -> None:
        """Hear ``sender``'s caller from now on."""
        if self._nursery is None:
            raise trio.ClosedResourceError("the call-home watch is not running")
        sender._watch = self
        link = sender._link
        if self._epoll is not None and isinstance(link, SocketIO):
            sender._key = link.fileno()
            self._epoll.register(sender._key, select.EPOLLIN)
        else:
            sender._key = -id(sender)  # never a descriptor
            self._nursery.start_soon(sender._read_cancels_detached)
        self._watched[sender._key] = sender

    def _forget(self, sender: CallHomeSender, *, closing: bool) -> None:
        """Stop hearing ``sender``; ``closing``: its connection closes next (which
        takes it out of the epoll set: the descriptor is its own)."""
        key = sender._key
        if self._watched.get(key) is sender:
            del self._watched[key]
            if key >= 0 and not closing and self._epoll is not None:
                self._epoll.unregister(key)
        if sender._handed_off and self._lingering.get(key, (0, None))[1] is sender:
            del self._lingering[key]

    def _linger(self, sender: CallHomeSender) -> None:
        """``sender``'s stream is over: close it when the caller does, or at
        ``sentinel_wait`` (streams close in the order they ended)."""
        deadline = trio.current_time() + sender.limits.sentinel_wait
        self._lingering[sender._key] = (deadline, sender)
        if self._timer is not None and deadline < self._timer.deadline:
            self._timer.deadline = deadline


async def _dial(host: str, port: int, connect_timeout: float) -> SocketIO | None:
    """A plain connection to a numeric address, with no Trio socket around it (a hot
    path: one per call; on loopback the connection is up when ``connect`` returns, and
    then no deadline is set up either); ``None`` for a host name. ``OSError`` if it
    fails, ``trio.TooSlowError`` after ``connect_timeout``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.inet_pton(family, host)
    except OSError:
        return None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        error, waited = await _connect_socket(sock, host, port, connect_timeout)
    except BaseException:
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise
    if error:
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise OSError(error, os.strerror(error))
    link = SocketIO(sock, buffered=False)  # it reads only a stop, a kill or the end
    link.waited = waited  # then Trio must hear of its closing
    return link


async def _connect_socket(
    sock: socket.socket, host: str, port: int, connect_timeout: float
) -> tuple[int, bool]:
    """Connect the new ``sock``: 0 or the error number, and whether Trio waited on it."""
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await trio.lowlevel.checkpoint_if_cancelled()
    error = sock.connect_ex((host, port))
    waited = False
    if error == errno.EINPROGRESS:
        try:
            sock.getpeername()  # connected already (loopback, as a rule)
        except OSError:  # not yet, or refused: wait for the outcome
            waited = True
            with trio.fail_after(connect_timeout):
                await trio.lowlevel.wait_writable(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return error, waited


async def _connect(host: str, port: int) -> trio.abc.Stream:
    """Dial the caller (a numeric address, the usual call home, with one socket and no
    resolver: a hot path, one connection per call). ``ConnectError`` if it fails."""
    try:
        return await open_tcp_stream(host, port, numeric=True)
    except OSError as exc:
        peer = format_host_port(host, port)
        raise ConnectError(f"cannot connect to {peer}: {reason(exc)}") from exc


@asynccontextmanager
async def open_call_home(
    info: CallHomeInfo,
    *,
    limits: CallHomeLimits = DEFAULT_CALL_HOME_LIMITS,
    tls: TcpTls | None = None,
    on_cancel: Callable[[str], object] | None = None,
    on_failure: Callable[[str], object] | None = None,
    watch: CallHomeWatch | None = None,
) -> AsyncIterator[CallHomeSender]:
    """Call the caller home at ``info.address``, send the handshake, and stream.

    With ``tls`` that dials (a CA, ``insecure`` or a client identity), the call
    home is TLS, as a Dynamo worker's: checked against the address's host or
    ``tls.server_name``, within ``tls.handshake_timeout``. Raises
    :class:`~trioplane.ConnectError` when the caller cannot be reached in
    ``limits.connect_timeout`` (or its TLS fails). Leaving the block closes the
    connection.

    ``on_failure`` hears why the stream could not reach the caller, when that is
    known only from what the caller sent (it serves TLS): maybe after the block,
    with a ``watch``. (A connect that fails raises instead.)

    ``watch``: a running :class:`CallHomeWatch` that hears the caller instead of a
    task per call, and after :meth:`CallHomeSender.finish` keeps the connection until
    the caller closes it (the block ends at once). ``on_cancel`` is not called after
    the block.
    """
    host, port = split_host_port(info.address)
    timeout = limits.connect_timeout
    link: ByteLink | SocketIO | None = None
    timed_out = False
    if (tls is None or tls.client_context is None) and current_network() is None:
        try:
            link = await _dial(host, port, timeout)
        except OSError as exc:
            peer = format_host_port(host, port)
            raise ConnectError(f"call home: cannot connect to {peer}: {reason(exc)}") from exc
        except trio.TooSlowError:
            timed_out = True
    if link is None and not timed_out:
        with trio.move_on_after(timeout):
            try:
                link = ByteLink(
                    await open_stream(
                        host,
                        port,
                        ssl_context=tls.client_context if tls is not None else None,
                        server_hostname=tls.server_name if tls is not None else None,
                        handshake_timeout=tls.handshake_timeout if tls is not None else 0.0,
                        connector=_connect,
                    )
                )
            except ConnectError as exc:
                raise ConnectError(f"call home: {exc}") from exc
    if link is None:
        raise ConnectError(f"call home to {info.address} timed out after {timeout:g} s")
    sender = CallHomeSender(link, limits, on_cancel, on_failure)
    try:
        sender._unsent = encode_handshake(info.subject)
        if watch is not None:
            watch._add(sender)
            yield sender
        else:
            async with trio.open_nursery() as own:
                own.start_soon(sender._read_cancels)
                try:
                    yield sender
                finally:
                    own.cancel_scope.cancel()
    finally:
        sender._closed = True
        if sender._unsent and not link.closed:  # no frame went: the caller still learns
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):  # whose it is
                link.send_nowait(sender._unsent)
        if not sender._handed_off:
            sender._close()  # wakes a detached reader: it ends
