"""The worker's side of the response plane: call the caller home and stream back.

:func:`open_call_home` connects to the address a request's control message
names (within ``connect_timeout``; over TLS when given a context), sends the
handshake naming the caller's subject, and hands back a :class:`CallHomeSender`
for the rest of the stream (prologue, items, end, sentinel: the frames of
:mod:`trioplane.wire.response`). A task reads what the caller sends back:
``"stop"`` and ``"kill"``, or its leaving; ``on_cancel`` hears each at once. A
write the caller does not take within ``write_timeout`` counts as the caller
being gone for good (``"stalled"``), so a caller that stops reading cannot hold
a worker's slot. The worker and the fake endpoint worker of
:mod:`trioplane.testing` both call home through here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from trioplane._checks import check_seconds
from trioplane._errors import ConnectError, ProtocolError
from trioplane._network import open_stream, open_tcp_stream
from trioplane._sockets import ByteLink
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
    "open_call_home",
]

log = logging.getLogger(__name__)

#: Frames the kernel took at once before a send yields to the scheduler (fairness: a
#: handler that never waits still lets other tasks run; cancellation is checked on each).
SENDS_PER_CHECKPOINT = 16

#: ``on_cancel`` reasons: the caller sent ``"stop"`` or ``"kill"``, left, or stopped reading.
STOP, KILL, GONE, STALLED = "stop", "kill", "gone", "stalled"


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
        link: ByteLink,
        limits: CallHomeLimits,
        on_cancel: Callable[[str], object] | None,
    ) -> None:
        self._link = link
        self.limits = limits
        self.on_cancel = on_cancel
        self.cancels: list[str] = []
        #: Why the caller cannot be streamed to, if it is known (a TLS mismatch).
        self.failure: str | None = None
        #: Bytes written to the caller so far (whole frames).
        self.bytes_sent = 0
        self._gone = False
        self._stopped = trio.Event()
        self._quick_sends = 0
        self._closed = False

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
            link.close_now()  # a half-written frame: nothing more can go on this connection
            self._cancelled(STALLED)

    async def finish(self, codec: PayloadCodec | None) -> None:
        """End the stream (``complete_final``, then the sentinel; after a failed prologue,
        ``codec=None``: the sentinel alone) and wait, up to ``sentinel_wait``, for the
        caller to close, as Dynamo's worker does."""
        end = encode_end(codec) if codec is not None else b""
        await self.send(end + encode_sentinel())
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Until the caller closes, stops or kills the call, or ``sentinel_wait`` passes."""
        with trio.move_on_after(self.limits.sentinel_wait):
            await self._stopped.wait()

    async def _read_cancels(self) -> None:
        decoder = TwoPartDecoder()
        first = True
        try:
            while data := await self._link.receive():
                if first and foreign_protocol(data) == "TLS":
                    self.failure = (
                        "the caller's response plane serves TLS and this worker calls home in"
                        " plain text (set DYN_TCP_TLS_CA_CERT_PATH, or TcpTls(ca_path=...))"
                    )
                    break
                first = False
                decoder.feed(data)
                for message in decoder.messages():
                    self._cancelled(decode_cancel(message.header))
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        self._cancelled(GONE)  # nobody reads the items any more

    async def _read_cancels_detached(self) -> None:
        """:meth:`_read_cancels` in a nursery that outlives the block: closing the
        connection ends it. A failure of its own is logged and counts as the caller
        gone (this call ends; the nursery, the worker's, serves on)."""
        try:
            await self._read_cancels()
        except Exception:
            log.exception("reading the caller's stop and kill failed; the caller is gone")
            self._cancelled(GONE)


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
    nursery: trio.Nursery | None = None,
) -> AsyncIterator[CallHomeSender]:
    """Call the caller home at ``info.address``, send the handshake, and stream.

    With ``tls`` that dials (a CA, ``insecure`` or a client identity), the call
    home is TLS, as a Dynamo worker's: checked against the address's host or
    ``tls.server_name``, within ``tls.handshake_timeout``. Raises
    :class:`~trioplane.ConnectError` when the caller cannot be reached in
    ``limits.connect_timeout`` (or its TLS fails). Leaving the block closes the
    connection.

    ``nursery``: where the task that hears the caller runs, one that outlives the
    block (the worker's calls): no nursery is opened per call. Closing the
    connection as the block ends ends that task (``on_cancel`` is not called after).
    """
    host, port = split_host_port(info.address)
    timeout = limits.connect_timeout
    with trio.move_on_after(timeout) as scope:
        try:
            stream = await open_stream(
                host,
                port,
                ssl_context=tls.client_context if tls is not None else None,
                server_hostname=tls.server_name if tls is not None else None,
                handshake_timeout=tls.handshake_timeout if tls is not None else 0.0,
                connector=_connect,
            )
        except ConnectError as exc:
            raise ConnectError(f"call home: {exc}") from exc
    if scope.cancelled_caught:
        raise ConnectError(f"call home to {info.address} timed out after {timeout:g} s")
    link = ByteLink(stream)
    sender = CallHomeSender(link, limits, on_cancel)
    try:
        if nursery is not None:
            nursery.start_soon(sender._read_cancels_detached)
            await sender.send(encode_handshake(info.subject))
            yield sender
        else:
            async with trio.open_nursery() as own:
                own.start_soon(sender._read_cancels)
                await sender.send(encode_handshake(info.subject))
                try:
                    yield sender
                finally:
                    own.cancel_scope.cancel()
    finally:
        sender._closed = True
        link.close_now()  # wakes a detached reader: it ends
