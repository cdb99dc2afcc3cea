"""What every request-plane server shares: replies, limits, the FIFO loop, the accept loop.

A request-plane server decodes request frames and answers each as its *policy*
says (:class:`Reply`). The answering lives once, in :func:`serve_frame_link`,
which talks to a connection only through a :class:`FrameLink`: a byte stream
(TCP, frames may span reads) or a message transport (WebSocket, one frame per
message). :class:`PlaneServer` is the listening half: it accepts connections up
to ``max_connections``, runs the TLS handshake if asked, and hands each
connection to its transport. Every wait has a deadline and every per-peer
resource a cap (:class:`ServerLimits`).
"""

from __future__ import annotations

import abc
import dataclasses
import errno
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol

import trio

from trioplane._checks import check_count, check_seconds
from trioplane._errors import BadArgument, ProtocolError
from trioplane._logging import RateLimitedLog
from trioplane._network import open_tcp_listeners, peek
from trioplane._sockets import close_socket_under
from trioplane._util import reason
from trioplane.addresses import format_host_port
from trioplane.wire.rejections import read_error
from trioplane.wire.sniff import TLS_DECODE_ERROR_ALERT, foreign_protocol, not_tls
from trioplane.wire.tcp import (
    ACK_ACCEPTED,
    DEFAULT_MAX_FRAME_SIZE,
    RequestFrame,
    RequestFrameDecoder,
    encode_ack,
)

__all__ = [
    "ACCEPT",
    "FrameLink",
    "PlaneServer",
    "Policy",
    "Reply",
    "ServerLimits",
    "ServerStatistics",
    "accept_all",
    "serve_frame_link",
]

log = logging.getLogger("trioplane.server")
_peer_errors = RateLimitedLog(log)

#: Pause before accepting again after the system refused a connection (e.g. no fds).
ACCEPT_BACKOFF = 0.1
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@dataclass(frozen=True)
class Reply:
    """How a server answers one request. Build with the class methods.

    ``kind`` is ``"ack"`` (``data`` is the ack text: empty = accepted), ``"raw"``
    (``data`` is sent as it is, in place of an ack) or ``"drop"`` (close the
    connection instead). ``delay`` holds this reply, and the ones after it on the
    same connection (acks are FIFO), for that many seconds.
    """

    kind: str = "ack"
    data: bytes = b""
    delay: float = 0.0

    @classmethod
    def accept(cls, *, delay: float = 0.0) -> Reply:
        return cls("ack", b"", delay)

    @classmethod
    def reject(cls, text: str | bytes, *, delay: float = 0.0) -> Reply:
        return cls("ack", text.encode() if isinstance(text, str) else text, delay)

    @classmethod
    def drop(cls, *, delay: float = 0.0) -> Reply:
        """Close the connection instead of acking (and everything after it)."""
        return cls("drop", b"", delay)

    @classmethod
    def garbage(cls, data: bytes = b"\xff\xff\xff\xffgarbage", *, delay: float = 0.0) -> Reply:
        """Send these raw bytes where the ack should be."""
        return cls("raw", data, delay)

    @property
    def accepted(self) -> bool:
        return self.kind == "ack" and not self.data

    def ack_frame(self) -> bytes:
        """The bytes this reply puts on a TCP or WebSocket connection."""
        if self.kind == "raw":
            return self.data
        return encode_ack(self.data) if self.data else ACK_ACCEPTED


#: The reply to an accepted request (shared: replies are immutable).
ACCEPT = Reply.accept()

#: Decides the reply to each request frame.
Policy = Callable[[RequestFrame], Reply]


def accept_all(frame: RequestFrame) -> Reply:
    return ACCEPT


@dataclass(frozen=True)
class ServerLimits:
    """A request-plane server's deadlines and caps (defaults are production ones).

    * ``max_connections`` (1024): connections held at once, per listening plane;
      past it a new connection is closed at once (and counted).
    * ``idle_timeout`` (300 s): a connection with no request for this long is closed
      (callers reconnect; Dynamo's and trioplane's clients do so on their own).
    * ``frame_timeout`` (30 s): a request frame begun must be complete within this
      (a peer trickling bytes is cut off).
    * ``write_timeout`` (30 s): an ack write blocked this long (the peer stopped
      reading) closes the connection.
    * ``handshake_timeout`` (10 s): TLS and WebSocket handshakes.
    * ``max_frame_size`` (32 MiB, Dynamo's): a larger frame is a read error.

    ``math.inf`` turns a deadline off.
    """

    max_connections: int = 1024
    idle_timeout: float = 300.0
    frame_timeout: float = 30.0
    write_timeout: float = 30.0
    handshake_timeout: float = 10.0
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE

    def __post_init__(self) -> None:
        check_count(self.max_connections, "max_connections")
        if check_count(self.max_frame_size, "max_frame_size") < 8:
            raise BadArgument("max_frame_size is too small for any request frame")
        for name in ("idle_timeout", "frame_timeout", "write_timeout", "handshake_timeout"):
            check_seconds(getattr(self, name), name, zero=False)


DEFAULT_LIMITS = ServerLimits()


@dataclass
class ServerStatistics:
    """A request-plane server's counters; :meth:`PlaneServer.statistics` returns a copy.

    ``connections_refused`` were closed at once past ``max_connections``;
    ``handshake_failures`` failed their TLS or WebSocket handshake; ``timeouts``
    counts connections closed by ``idle_timeout``, ``frame_timeout`` or
    ``write_timeout``; ``read_errors`` frames that could not be decoded;
    ``rejected`` requests answered with anything but an accepting ack.
    """

    connections_accepted: int = 0
    connections_refused: int = 0
    open_connections: int = 0
    handshake_failures: int = 0
    requests: int = 0
    rejected: int = 0
    read_errors: int = 0
    timeouts: int = 0


class FrameLink(Protocol):
    """One server-side connection, as :func:`serve_frame_link` sees it.

    The transport-neutral seam between the shared request handling and a
    transport: a link moves bytes and knows its framing; it never decodes,
    answers or orders anything.
    """

    @property
    def one_frame_per_message(self) -> bool:
        """True if each :meth:`receive` must be exactly one whole request frame
        (a message transport); False for a byte stream, whose frames may span reads."""
        ...

    async def receive(self) -> bytes | bytearray | memoryview:
        """The next bytes or message; empty once the peer has left.

        Raise :class:`~trioplane.ProtocolError` for input that cannot carry a
        frame (it gets the ``Read error`` ack, then the link is closed).
        """
        ...

    async def send_replies(self, replies: Sequence[bytes]) -> None:
        """Send a batch of replies (ack frames or raw bytes) in order.

        A link may also have ``send_replies_nowait(replies) -> bytes``: write what the
        kernel takes now and return the rest (empty: all written). Then a batch written
        at once needs no write deadline (:class:`StreamLink` over a plain socket).

        Raise ``trio.BrokenResourceError`` (or ``ClosedResourceError``/``OSError``)
        if the peer is gone.
        """
        ...

    async def aclose(self) -> None:
        """Close the connection; called once when serving ends (also on a drop).

        As ``trio.abc.AsyncResource.aclose``: if cancelled (the server is shutting
        down), it must still close the connection, abruptly.
        """
        ...


def _decode(
    decoder: RequestFrameDecoder, data: bytes | bytearray | memoryview, *, one_per_message: bool
) -> Iterable[RequestFrame]:
    """The request frames ``data`` completes; :class:`ProtocolError` if it is bad.

    On a stream, frames come lazily, so those before a bad one are still served.
    A message must be exactly one frame: it is checked whole before any is served.
    """
    decoder.feed(data)
    if not one_per_message:
        return decoder.frames()
    frames = list(decoder.frames())
    if len(frames) != 1 or decoder.buffered:
        raise ProtocolError(
            f"a message must hold exactly one request frame, this one holds {len(frames)}"
            f" whole frames and {decoder.buffered} more bytes"
        )
    return frames


class _LinkSession:
    """One connection being served: a reader that answers, and a writer for the late.

    Replies due at once are written by the reader itself (no task switch) when
    nothing is queued before them; a batch holding a delay or a drop, and every
    batch after it until the queue is empty, goes through the writer task, so the
    acks stay in request order. Either task ending ends the session.
    """

    def __init__(
        self,
        link: FrameLink,
        policy: Policy,
        on_frame: Callable[[RequestFrame], None] | None,
        limits: ServerLimits,
        counters: ServerStatistics,
        log: RateLimitedLog,
    ) -> None:
        self.link = link
        self.log = log
        self.policy = policy
        self.on_frame = on_frame
        self.limits = limits
        self.counters = counters
        self.queue: deque[list[Reply]] = deque()
        self.writer_busy = False
        self.wake_writer = trio.Event()
        self.broken = False
        self.scope = trio.CancelScope()
        #: A link that can write without waiting (a plain socket's): then a batch of acks
        #: the kernel takes at once needs no deadline of its own.
        self.send_nowait: Callable[[Sequence[bytes]], bytes] | None = getattr(
            link, "send_replies_nowait", None
        )

    async def run(self) -> None:
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.guarded, self.write_loop)
                    await self.guarded(self.read_loop)
        finally:
            await self.link.aclose()  # abruptly if we are cancelled (shutting down)

    async def guarded(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one of the two loops; when it ends, for whatever reason, end the session."""
        try:
            await loop()
        except _PEER_GONE:
            pass  # nothing left to answer
        except trio.TooSlowError:
            self.counters.timeouts += 1
        except Exception:  # a policy's bug: this connection ends, the server serves on
            self.log.exception("policy", "request handling failed; closing the connection")
        self.scope.cancel()

    def refuse(self, exc: ProtocolError) -> list[Reply]:
        """Dynamo's ``Read error`` ack for input that cannot be decoded, then close."""
        self.broken = True
        self.counters.read_errors += 1
        self.log.warning("read-error", "bad request frame, closing the connection: %s", exc)
        return [Reply.reject(read_error(exc)), Reply.drop()]

    def check_protocol(self, data: bytes | bytearray | memoryview) -> list[Reply]:
        """A connection that opens with TLS or HTTP is not a caller of this plane: it
        is told so (a TLS client gets a TLS alert, failing at once) and closed."""
        protocol = foreign_protocol(data)
        if protocol is None:
            return []
        self.broken = True
        self.counters.read_errors += 1
        self.log.warning(
            f"foreign-{protocol}", "a %s client on a plain-text request plane; closing", protocol
        )
        alert = [Reply.garbage(TLS_DECODE_ERROR_ALERT)] if protocol == "TLS" else []
        return [*alert, Reply.drop()]

    def answer(
        self, decoder: RequestFrameDecoder, data: bytes | bytearray | memoryview
    ) -> list[Reply]:
        """The policy's reply to each frame ``data`` completes (a bad one ends the list)."""
        replies = []
        counters = self.counters
        on_frame, policy = self.on_frame, self.policy
        try:
            for frame in _decode(decoder, data, one_per_message=self.link.one_frame_per_message):
                counters.requests += 1
                if on_frame is not None:
                    on_frame(frame)
                reply = policy(frame)
                if reply is not ACCEPT and not reply.accepted:
                    counters.rejected += 1
                replies.append(reply)
        except ProtocolError as exc:
            replies += self.refuse(exc)
        return replies

    async def read_loop(self) -> None:
        link, limits = self.link, self.limits
        decoder = RequestFrameDecoder(max_frame_size=limits.max_frame_size)
        frame_started = 0.0
        first = True
        while True:
            if decoder.buffered:  # a frame has begun: it must end in time
                deadline = frame_started + limits.frame_timeout
            else:
                frame_started = trio.current_time()
                deadline = frame_started + limits.idle_timeout
            try:
                with trio.fail_at(deadline):
                    data = await link.receive()
            except ProtocolError as exc:
                replies = self.refuse(exc)
            else:
                if not data:
                    return  # the peer left
                if first:  # the first bytes of a stream tell TLS and HTTP apart from frames
                    first = False
                    replies = [] if link.one_frame_per_message else self.check_protocol(data)
                if not self.broken:
                    replies = self.answer(decoder, data)
                if not replies:
                    continue
            if (
                self.queue
                or self.writer_busy
                or not all(r.kind == "ack" and not r.delay for r in replies)
            ):
                self.queue.append(replies)
                self.wake_writer.set()
            else:
                await self.send([reply.ack_frame() for reply in replies])
            if self.broken:  # nothing more to read: the writer closes after the Read error
                await trio.sleep_forever()

    async def send(self, frames: list[bytes]) -> None:
        if self.send_nowait is not None:
            rest = self.send_nowait(frames)
            if not rest:
                await trio.lowlevel.checkpoint_if_cancelled()
                return
            frames = [rest]
        with trio.fail_after(self.limits.write_timeout):
            await self.link.send_replies(frames)

    async def write_loop(self) -> None:
        while True:
            await self.wake_writer.wait()
            self.wake_writer = trio.Event()
            while self.queue:
                self.writer_busy = True
                out: list[bytes] = []
                for reply in self.queue.popleft():
                    if reply.delay:
                        if out:
                            await self.send(out)
                            out = []
                        await trio.sleep(reply.delay)
                    if reply.kind == "drop":
                        if out:
                            await self.send(out)
                        return  # closes the connection (and ends the reader)
                    out.append(reply.ack_frame())
                if out:
                    await self.send(out)
            self.writer_busy = False


async def serve_frame_link(
    link: FrameLink,
    policy: Policy,
    *,
    on_frame: Callable[[RequestFrame], None] | None = None,
    limits: ServerLimits = DEFAULT_LIMITS,
    counters: ServerStatistics | None = None,
    log: RateLimitedLog | None = None,
) -> None:
    """Serve one connection of any transport: decode request frames, answer each in order.

    The replies to the frames of one receive go out as one batch; a delayed
    reply holds back the ones after it (FIFO). A drop closes the link. A frame
    that cannot be decoded gets Dynamo's ``Read error: ...`` ack and the link is
    closed. ``limits`` bound the waits (idle, a frame begun, a write). Returns
    when the peer leaves or the link is closed; always closes it.
    """
    session = _LinkSession(
        link, policy, on_frame, limits, counters or ServerStatistics(), log or _peer_errors
    )
    await session.run()


class PlaneServer(abc.ABC):
    """The listening half of a request-plane server (TCP, WebSocket).

    It listens on ``host:port`` (port 0: a free one, known once started), accepts
    up to ``limits.max_connections`` connections at once (a connection past that
    is closed at once), runs the TLS handshake when given an ``ssl_context``
    (within ``limits.handshake_timeout``), and serves each connection with its
    transport's ``_serve_stream()``. ``policy`` is looked up for every frame, so
    assigning a new one applies at once; ``on_frame`` sees every frame decoded.
    """

    def __init__(
        self,
        policy: Policy = accept_all,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: ServerLimits = DEFAULT_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
        on_frame: Callable[[RequestFrame], None] | None = None,
    ) -> None:
        self.policy = policy
        self.host = host
        self.port = port
        self.limits = limits
        self.ssl_context = ssl_context
        self.on_frame = on_frame
        self.counters = ServerStatistics()
        #: Peer errors are logged a few times a minute per kind, never per request.
        self.log = RateLimitedLog(log)

    def statistics(self) -> ServerStatistics:
        """A snapshot of the server's counters."""
        return dataclasses.replace(self.counters)

    @property
    def host_port(self) -> str:
        """``host:port`` as a caller dials it (the port is known once started)."""
        return format_host_port(self.host, self.port)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``port`` is set before ``started``."""
        listeners, self.port = await open_tcp_listeners(self.host, self.port)
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started()

    def _answer(self, frame: RequestFrame) -> Reply:
        return self.policy(frame)

    async def _serve_link(self, link: FrameLink) -> None:
        await serve_frame_link(
            link,
            self._answer,
            on_frame=self.on_frame,
            limits=self.limits,
            counters=self.counters,
            log=self.log,
        )

    async def _accept_loop(
        self, listener: trio.abc.Listener[trio.abc.Stream], nursery: trio.Nursery
    ) -> None:
        counters, limits = self.counters, self.limits
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    self.log.warning("accept", "cannot accept connections: %s", exc)
                    await trio.sleep(ACCEPT_BACKOFF)
                    continue
                if counters.open_connections >= limits.max_connections:
                    counters.connections_refused += 1
                    self.log.warning(
                        "max-connections",
                        "refusing a connection to %s: %d open (max_connections)",
                        self.host_port,
                        counters.open_connections,
                    )
                    close_socket_under(stream)
                    continue
                counters.connections_accepted += 1
                counters.open_connections += 1
                nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.abc.Stream) -> None:
        conn: trio.abc.Stream = stream
        try:
            if self.ssl_context is not None:
                conn = await self._tls_handshake(stream, self.ssl_context)
            await self._serve_stream(conn)
        except _HandshakeFailed:
            pass
        finally:
            self.counters.open_connections -= 1
            await trio.aclose_forcefully(conn)

    async def _tls_handshake(
        self, stream: trio.abc.Stream, context: ssl.SSLContext
    ) -> trio.SSLStream[trio.abc.Stream]:
        """The TLS handshake within ``handshake_timeout``; a peer whose first bytes are
        no TLS record (a plain-text caller) is told so with a TLS alert and closed."""
        tls = trio.SSLStream(stream, context, server_side=True)
        try:
            with trio.fail_after(self.limits.handshake_timeout):
                first = await peek(stream, 8)
                if not_tls(first):
                    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await stream.send_all(TLS_DECODE_ERROR_ALERT)
                    self.handshake_failed("TLS", "a plain-text peer on a TLS port")
                    raise _HandshakeFailed
                await tls.do_handshake()
        except (
            trio.TooSlowError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
        ) as exc:
            self.handshake_failed("TLS", exc)
            raise _HandshakeFailed from None
        return tls

    def handshake_failed(self, what: str, why: BaseException | str) -> None:
        """Count and (rate-limited) log a peer whose handshake failed."""
        self.counters.handshake_failures += 1
        text = why if isinstance(why, str) else reason(why)
        self.log.warning(
            f"handshake-{what}", "%s handshake on %s failed: %s", what, self.host_port, text
        )

    @abc.abstractmethod
    async def _serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one accepted connection (after TLS, if any) until it ends."""


class _HandshakeFailed(Exception):
    """A peer's handshake failed (counted and logged); its connection is closed."""
