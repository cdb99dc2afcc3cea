"""Trio test workers for Dynamo's request plane, and the request handling they share.

A worker decodes request frames with the same codec the client uses, records
what it received, and answers each request as its *policy* says: accept, reject
with a text, delay, drop the connection or send garbage. Acks go back in
request order (FIFO), as Dynamo's do.

That handling lives once, in :func:`serve_frame_link`, and talks to the
connection only through a :class:`FrameLink`, so every transport shares it:
:class:`StreamLink` is the TCP request plane (a byte stream: frames may span
reads, the replies of one batch go out in one write); the WebSocket request
plane's link is in :mod:`trioplane.testing.websocket` (one frame per message).

:class:`TcpTestWorker` listens on 127.0.0.1 (port 0 by default). Run it alone
(for benchmarks): ``python -m trioplane.testing --port 0`` prints
``listening HOST:PORT`` and serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from trioplane._errors import ProtocolError
from trioplane._util import serving
from trioplane.wire.tcp import (
    ACK_ACCEPTED,
    DEFAULT_MAX_FRAME_SIZE,
    RequestFrame,
    RequestFrameDecoder,
    encode_ack,
)

__all__ = [
    "FrameLink",
    "Reply",
    "StreamLink",
    "TcpTestWorker",
    "open_tcp_test_worker",
    "serve_frame_link",
    "serve_request_stream",
]

RECEIVE_SIZE = 64 * 1024


@dataclass(frozen=True)
class Reply:
    """How the test worker answers one request. Build with the class methods."""

    kind: str = "ack"
    ack: bytes = ACK_ACCEPTED
    delay: float = 0.0

    @classmethod
    def accept(cls, *, delay: float = 0.0) -> Reply:
        return cls("ack", ACK_ACCEPTED, delay)

    @classmethod
    def reject(cls, text: str | bytes, *, delay: float = 0.0) -> Reply:
        return cls("ack", encode_ack(text), delay)

    @classmethod
    def drop(cls, *, delay: float = 0.0) -> Reply:
        """Close the connection instead of acking (and everything after it)."""
        return cls("drop", b"", delay)

    @classmethod
    def garbage(cls, data: bytes = b"\xff\xff\xff\xffgarbage", *, delay: float = 0.0) -> Reply:
        """Send these raw bytes where the ack should be."""
        return cls("raw", data, delay)


#: Decides the reply to each request frame.
Policy = Callable[[RequestFrame], Reply]


def accept_all(frame: RequestFrame) -> Reply:
    return Reply.accept()


class FrameLink(Protocol):
    """One worker-side connection, as :func:`serve_frame_link` sees it.

    The transport-neutral seam between the shared request handling and a
    transport: a link moves bytes and knows its framing; it never decodes,
    answers or orders anything.
    """

    @property
    def one_frame_per_message(self) -> bool:
        """True if each :meth:`receive` must be exactly one whole request frame
        (a message transport); False for a byte stream, whose frames may span reads."""
        ...

    async def receive(self) -> bytes:
        """The next bytes or message; ``b""`` once the peer has left.

        Raise :class:`~trioplane.ProtocolError` for input that cannot carry a
        frame (it gets the ``Read error`` ack, then the link is closed).
        """
        ...

    async def send_replies(self, replies: Sequence[bytes]) -> None:
        """Send a batch of replies (ack frames or garbage) in order.

        Raise ``trio.BrokenResourceError`` (or ``ClosedResourceError``/``OSError``)
        if the peer is gone.
        """
        ...

    async def aclose(self) -> None:
        """Close the connection; called once when serving ends (also on a drop).

        As ``trio.abc.AsyncResource.aclose``: if cancelled (the worker is shutting
        down), it must still close the connection, abruptly.
        """
        ...


class StreamLink:
    """A :class:`FrameLink` over a byte stream (the TCP request plane)."""

    one_frame_per_message = False

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def receive(self) -> bytes:
        return bytes(await self.stream.receive_some(RECEIVE_SIZE))

    async def send_replies(self, replies: Sequence[bytes]) -> None:
        """All in one write, as a worker answering a read's frames together does."""
        await self.stream.send_all(b"".join(replies))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def _decode(
    decoder: RequestFrameDecoder, data: bytes, *, one_frame_per_message: bool
) -> Iterable[RequestFrame]:
    """The request frames ``data`` completes; :class:`ProtocolError` if it is bad.

    On a stream, frames come lazily, so those before a bad one are still served.
    A message must be exactly one frame: it is checked whole before any is served.
    """
    decoder.feed(data)
    if not one_frame_per_message:
        return decoder.frames()
    frames = list(decoder.frames())
    if len(frames) != 1 or decoder.buffered:
        raise ProtocolError(
            f"a message must hold exactly one request frame, this one holds {len(frames)}"
            f" whole frames and {decoder.buffered} more bytes"
        )
    return frames


async def serve_frame_link(
    link: FrameLink,
    policy: Policy,
    *,
    on_frame: Callable[[RequestFrame], None] = lambda frame: None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> None:
    """Serve one connection of any transport: decode request frames, answer each in order.

    The replies to the frames of one receive go out as one batch; a delayed
    reply holds back the ones after it (FIFO). A drop closes the link. A frame
    that cannot be decoded gets Dynamo's ``Read error: ...`` ack and the link is
    closed. Returns when the peer leaves or the link is closed; always closes it.
    """
    decoder = RequestFrameDecoder(max_frame_size=max_frame_size)
    send, receive = trio.open_memory_channel[list[Reply]](math.inf)

    async def reader() -> None:
        async with send:
            while True:
                replies: list[Reply] = []
                try:
                    data = await link.receive()
                    if not data:  # the caller left: its pending acks have nowhere to go
                        nursery.cancel_scope.cancel()
                        return
                    frames = _decode(
                        decoder, data, one_frame_per_message=link.one_frame_per_message
                    )
                    for frame in frames:
                        on_frame(frame)
                        replies.append(policy(frame))
                except ProtocolError as exc:
                    replies.append(Reply.reject(f"Read error: {exc}"))
                    replies.append(Reply.drop())
                    await send.send(replies)
                    return
                if replies:
                    await send.send(replies)

    async def writer() -> None:
        async with receive:
            async for replies in receive:
                out: list[bytes] = []
                for reply in replies:
                    if reply.delay:
                        if out:
                            await link.send_replies(out)
                            out = []
                        await trio.sleep(reply.delay)
                    if reply.kind == "drop":
                        if out:
                            await link.send_replies(out)
                        nursery.cancel_scope.cancel()
                        return
                    out.append(reply.ack)
                if out:
                    await link.send_replies(out)
        nursery.cancel_scope.cancel()

    async def until_peer_leaves(task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            nursery.cancel_scope.cancel()  # the peer went away: nothing left to answer

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_peer_leaves, reader)
            nursery.start_soon(until_peer_leaves, writer)
    finally:
        await link.aclose()  # abruptly if we are cancelled (the worker is shutting down)


async def serve_request_stream(
    stream: trio.abc.Stream,
    policy: Policy,
    *,
    on_frame: Callable[[RequestFrame], None] = lambda frame: None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> None:
    """Serve one TCP-plane connection over any ``trio.abc.Stream``.

    :func:`serve_frame_link` on a :class:`StreamLink`: frames may span reads,
    and the immediate replies to the frames of one read go out in one write.
    """
    await serve_frame_link(
        StreamLink(stream), policy, on_frame=on_frame, max_frame_size=max_frame_size
    )


class _LinkServer:
    """What every test worker does with a connection: serve it and count it.

    The policy is looked up per frame, so assigning ``worker.policy`` applies at once.
    """

    policy: Policy
    received: list[RequestFrame]
    keep_received: bool
    connections_accepted: int
    open_connections: int

    def _record(self, frame: RequestFrame) -> None:
        if self.keep_received:
            self.received.append(frame)

    async def _serve_link(self, link: FrameLink, *, max_frame_size: int) -> None:
        self.connections_accepted += 1
        self.open_connections += 1
        try:
            await serve_frame_link(
                link,
                lambda frame: self.policy(frame),
                on_frame=self._record,
                max_frame_size=max_frame_size,
            )
        finally:
            self.open_connections -= 1


@dataclass
class TcpTestWorker(_LinkServer):
    """A running test worker: its address, what it received, and its policy."""

    host: str = "127.0.0.1"
    port: int = 0
    policy: Policy = accept_all
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    #: Every request frame, in arrival order (when ``keep_received``).
    received: list[RequestFrame] = field(default_factory=list)
    #: False: keep nothing in ``received`` (a long run's memory stays flat).
    keep_received: bool = True
    connections_accepted: int = 0
    open_connections: int = 0

    def address(self, path: str = "") -> str:
        """The ``host:port/path`` a client sends to."""
        return f"{self.host}:{self.port}/{path}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``port`` is set before ``started``."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        await self._serve_link(StreamLink(stream), max_frame_size=self.max_frame_size)


@asynccontextmanager
async def open_tcp_test_worker(
    policy: Policy = accept_all,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    keep_received: bool = True,
) -> AsyncIterator[TcpTestWorker]:
    """Run a :class:`TcpTestWorker` for the duration of the block."""
    worker = TcpTestWorker(
        host=host,
        port=port,
        policy=policy,
        max_frame_size=max_frame_size,
        keep_received=keep_received,
    )
    async with serving(worker.serve):
        yield worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the trioplane TCP test worker.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    async def run() -> None:
        async with open_tcp_test_worker(
            host=args.host, port=args.port, keep_received=False
        ) as worker:
            print(f"listening {worker.host}:{worker.port}", flush=True)
            await trio.sleep_forever()

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run)


if __name__ == "__main__":
    main()
