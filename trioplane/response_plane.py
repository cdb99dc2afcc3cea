"""The caller's response plane: the TCP listener that workers call home to.

Each call registers a fresh subject *before* its request is sent
(:meth:`ResponsePlane.register`). A worker connects, sends the handshake naming
the subject, and the connection is handed to the call that registered it.
Connections with an unknown subject, a bad handshake, or no handshake within
``handshake_timeout`` (10 s, as Dynamo) are closed without touching other streams.
"""

from __future__ import annotations

import logging
import uuid

import trio

from trioplane._errors import ProtocolError
from trioplane.wire.response import Handshake, ResponseStreamDecoder
from trioplane.wire.twopart import DEFAULT_MAX_BODY_SIZE

__all__ = ["CallHome", "ResponsePlane"]

logger = logging.getLogger(__name__)

RECEIVE_SIZE = 64 * 1024
#: How long a finished stream's connection waits for the worker's sentinel.
LINGER_TIMEOUT = 2.0
#: Pause before accepting again after the system refused a connection (e.g. no fds).
ACCEPT_BACKOFF = 0.1
_WILDCARDS = ("", "0.0.0.0", "::")


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class CallHome:
    """One registered subject: waits for the worker's connection, then owns it."""

    def __init__(self, plane: ResponsePlane, subject: str, max_item_size: int) -> None:
        self.subject = subject
        self.stream: trio.SocketStream | None = None
        self.decoder = ResponseStreamDecoder(max_item_size=max_item_size)
        self._plane = plane
        self._arrived = trio.Event()
        self._released = trio.Event()
        self._closed = False
        self._linger = False

    async def wait_connected(self) -> None:
        """Until the worker has called home (the caller's scope bounds the wait)."""
        await self._arrived.wait()

    def _deliver(self, stream: trio.SocketStream, decoder: ResponseStreamDecoder) -> bool:
        if self._closed or self.stream is not None:
            return False
        decoder.codec = self.decoder.codec
        self.stream, self.decoder = stream, decoder
        self._arrived.set()
        return True

    async def aclose(self, *, linger: bool = False) -> None:
        """Unregister and release the connection; ``linger`` lets the worker finish first.

        The connection belongs to the plane's handler task, which waits until the
        call releases it, then closes it. With ``linger`` that task first reads on
        up to the worker's sentinel (bounded by ``LINGER_TIMEOUT``), so a finished
        worker is not cut off mid-write.
        """
        if self._closed:
            return
        self._closed = True
        self._linger = linger
        self._plane._unregister(self)
        self._released.set()
        await trio.lowlevel.checkpoint()


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
    ) -> None:
        if advertise_host is None and host in _WILDCARDS:
            raise ValueError(f"listening on {host!r} needs advertise_host, the host workers dial")
        if handshake_timeout <= 0:
            raise ValueError("handshake_timeout must be positive")
        self.host = host
        self.port = port
        self.advertise_host = advertise_host or host
        self.handshake_timeout = handshake_timeout
        self.max_item_size = max_item_size
        self.address = ""
        self.dropped_connections = 0
        self._waiting: dict[str, CallHome] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; ``address`` is set before ``started``."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        self.address = format_host_port(self.advertise_host, self.port)
        try:
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started()
        finally:
            for listener in listeners:
                listener.socket.close()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        # Not trio.serve_listeners: its per-connection wrapper closes each stream
        # a second time through a cancel scope, a cost paid on every call.
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # out of fds or memory: wait, as trio's server does
                logger.warning("response plane cannot accept: %s", exc)
                await trio.sleep(ACCEPT_BACKOFF)
            else:
                nursery.start_soon(self._handle, stream)

    def register(self) -> CallHome:
        """A fresh subject for one call; register it before sending the request."""
        if not self.address:
            raise RuntimeError("the response plane is not listening")
        call_home = CallHome(self, uuid.uuid4().hex, self.max_item_size)
        self._waiting[call_home.subject] = call_home
        return call_home

    def _unregister(self, call_home: CallHome) -> None:
        if self._waiting.get(call_home.subject) is call_home:
            del self._waiting[call_home.subject]

    async def _handle(self, stream: trio.SocketStream) -> None:
        decoder = ResponseStreamDecoder(max_item_size=self.max_item_size)
        subject = None
        try:
            with trio.move_on_after(self.handshake_timeout):
                while subject is None:
                    event = decoder.next_event()
                    if isinstance(event, Handshake):
                        subject = event.subject
                        break
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        break
                    decoder.feed(data)
        except (ProtocolError, trio.BrokenResourceError, OSError) as exc:
            logger.debug("dropping call-home connection: %s", exc)
            subject = None
        call_home = self._waiting.pop(subject, None) if subject is not None else None
        try:
            if call_home is None or not call_home._deliver(stream, decoder):
                self.dropped_connections += 1
                logger.debug("dropping call-home connection for subject %r", subject)
                return
            await call_home._released.wait()  # the call owns the stream until then
            if call_home._linger:
                with trio.move_on_after(LINGER_TIMEOUT):
                    await self._drain(stream, call_home.decoder)
        finally:
            stream.socket.close()  # synchronous: no checkpoint, safe in any scope

    @staticmethod
    async def _drain(stream: trio.SocketStream, decoder: ResponseStreamDecoder) -> None:
        """Read a finished stream up to the worker's sentinel (or its close)."""
        try:
            while not decoder.done:
                event = decoder.next_event()
                if event is None:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        return
                    decoder.feed(data)
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
