"""Non-blocking socket I/O for the hot paths, driven by ``trio.lowlevel``.

``trio.SocketStream`` pays a scheduler round trip on every call, even when the
kernel could answer at once, plus two context managers. The request plane and
the response plane read and write many small frames, so they do their socket
I/O here: try the system call; only if it would block, wait with
``trio.lowlevel.wait_readable``/``wait_writable``. Cancellation is still
checked on every read, and a real checkpoint comes every few reads that found
data waiting, so a peer that floods a socket cannot starve other tasks.
"""

from __future__ import annotations

import socket

import trio

__all__ = ["ByteLink", "SocketIO", "StreamIO", "close_socket_under"]

#: Reads served from data already waiting before a real checkpoint (fairness).
READS_PER_CHECKPOINT = 16
RECEIVE_SIZE = 64 * 1024


class SocketIO:
    """Reads and writes on one non-blocking socket.

    ``owned`` sockets are closed by :meth:`close`; a socket that merely shares a
    descriptor with another object (a ``trio.SocketStream``) is detached instead,
    and its owner closes the descriptor. :meth:`close` wakes any task blocked on
    the socket with ``trio.ClosedResourceError``; I/O errors are raised as
    ``trio.BrokenResourceError``.
    """

    __slots__ = (
        "_buffer",
        "_buffered",
        "_ready_reads",
        "_sock",
        "_view",
        "closed",
        "owned",
        "waited",
    )

    def __init__(self, sock: socket.socket, *, owned: bool = True, buffered: bool = True) -> None:
        sock.setblocking(False)
        self._sock = sock
        #: Read into a buffer of its own (made on the first read: many sockets never
        #: read), or, ``buffered=False``, into new bytes each time: nothing held while
        #: idle (one of many connections each waiting for a little data).
        self._buffered = buffered
        self._buffer: bytearray | None = None
        self._view = memoryview(b"")
        self._ready_reads = 0
        self.owned = owned
        self.closed = False
        #: Whether Trio's I/O manager has seen the socket (a task waited on it): only
        #: then does closing need ``trio.lowlevel.notify_closing`` (which costs a
        #: failing system call for a socket it has never seen).
        self.waited = False

    @classmethod
    def sharing(cls, stream: trio.SocketStream) -> SocketIO:
        """I/O on the descriptor of ``stream``, which keeps owning (and closes) it."""
        return cls(socket.socket(fileno=stream.socket.fileno()), owned=False)

    def receive_nowait(self) -> memoryview | None:
        """Bytes waiting now (empty at EOF), or ``None`` if there are none yet.

        The view is valid until the next read.
        """
        if self.closed:
            raise trio.ClosedResourceError("socket is closed")
        try:
            if not self._buffered:
                return memoryview(self._sock.recv(RECEIVE_SIZE))
            if self._buffer is None:
                self._buffer = bytearray(RECEIVE_SIZE)
                self._view = memoryview(self._buffer)
            n = self._sock.recv_into(self._buffer)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(f"receive failed: {exc!r}") from exc
        return self._view[:n]

    async def receive(self) -> memoryview:
        """The next bytes (empty at EOF); valid until the next read. A cancellation point."""
        await trio.lowlevel.checkpoint_if_cancelled()
        data = self.receive_nowait()
        if data is not None:
            self._ready_reads += 1
            if self._ready_reads >= READS_PER_CHECKPOINT:
                self._ready_reads = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        self._ready_reads = 0
        self.waited = True
        while True:
            await trio.lowlevel.wait_readable(self._sock)
            data = self.receive_nowait()
            if data is not None:
                return data

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Write what the kernel takes now; the number of bytes written (maybe 0)."""
        if self.closed:
            raise trio.ClosedResourceError("socket is closed")
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"send failed: {exc!r}") from exc

    async def send_all(self, data: bytes | memoryview) -> None:
        """Write all of ``data``. A checkpoint. Cancelled midway, part of it may be sent."""
        view = memoryview(data)
        sent = self.send_nowait(view)
        if sent == len(view):
            await trio.lowlevel.checkpoint()
            return
        view = view[sent:]
        self.waited = True
        while view:
            await trio.lowlevel.wait_writable(self._sock)
            view = view[self.send_nowait(view) :]

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        """Close (or detach) the socket; blocked tasks get ``trio.ClosedResourceError``."""
        if self.closed:
            return
        self.closed = True
        if self.owned:
            if self.waited:
                trio.lowlevel.notify_closing(self._sock)
            self._sock.close()
        else:
            self._sock.detach()

    close_now = close  # :class:`ByteLink`'s name: either can carry a call home


class StreamIO:
    """:class:`SocketIO`'s interface over any Trio stream (a TLS one): no fast paths.

    :meth:`close` is synchronous, as :class:`SocketIO`'s: it closes the socket
    underneath (no TLS ``close_notify``), waking any task blocked on it.
    """

    __slots__ = ("closed", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.closed = False

    def receive_nowait(self) -> None:
        """Never anything without waiting (the stream has no such path)."""
        if self.closed:
            raise trio.ClosedResourceError("stream is closed")

    async def receive(self) -> bytes | bytearray:
        if self.closed:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError("stream is closed")
        return await self.stream.receive_some(RECEIVE_SIZE)

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Nothing without waiting (the stream has no such path): 0."""
        if self.closed:
            raise trio.ClosedResourceError("stream is closed")
        return 0

    async def send_all(self, data: bytes | memoryview) -> None:
        await self.stream.send_all(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            close_socket_under(self.stream)


def close_socket_under(stream: trio.abc.Stream) -> None:
    """Close the socket beneath ``stream`` (through a TLS layer) without a checkpoint
    (a virtual network's stream: its ``close_now``)."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()  # wakes any task blocked on it
    elif (close_now := getattr(stream, "close_now", None)) is not None:
        close_now()  # a VirtualNetwork's stream


class ByteLink:
    """A byte stream for the protocol loops: :class:`SocketIO` fast paths over a
    plain socket, the ``trio.abc.Stream`` methods over anything else (TLS, memory
    streams in tests). Closing it closes the stream.
    """

    __slots__ = ("_io", "closed", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._io = SocketIO.sharing(stream) if isinstance(stream, trio.SocketStream) else None
        #: True once :meth:`aclose` or :meth:`close_now` was called.
        self.closed = False

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Write what the kernel takes now (0 if nothing, or not a plain socket)."""
        return 0 if self._io is None else self._io.send_nowait(data)

    async def send_all(self, data: bytes | memoryview) -> None:
        if self._io is None:
            await self.stream.send_all(data)
        else:
            await self._io.send_all(data)

    async def receive(self) -> bytes | bytearray | memoryview:
        """The next bytes (empty at EOF); a memoryview is valid until the next read."""
        if self._io is None:
            return await self.stream.receive_some(RECEIVE_SIZE)
        return await self._io.receive()

    async def aclose(self) -> None:
        self.closed = True
        if self._io is not None:
            self._io.close()  # detaches: the stream owns the descriptor
        await self.stream.aclose()

    def close_now(self) -> None:
        """Close the underlying socket without a checkpoint (TLS: no close_notify)."""
        self.closed = True
        if self._io is not None:
            self._io.close()
        close_socket_under(self.stream)
