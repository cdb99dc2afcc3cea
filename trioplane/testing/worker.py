"""A Trio test worker for Dynamo's TCP request plane.

It listens on 127.0.0.1 (port 0 by default), decodes request frames with the
same codec the client uses, records what it received, and answers each request
as its *policy* says: accept, reject with a text, delay, drop the connection or
send garbage. Acks go back in request order (FIFO), as Dynamo's do.

Run it alone (for benchmarks): ``python -m trioplane.testing --port 0``
prints ``listening HOST:PORT`` and serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from trioplane._errors import ProtocolError
from trioplane._util import collapse_groups
from trioplane.wire.tcp import (
    ACK_ACCEPTED,
    DEFAULT_MAX_FRAME_SIZE,
    RequestFrame,
    RequestFrameDecoder,
    encode_ack,
)

__all__ = ["Reply", "TcpTestWorker", "open_tcp_test_worker", "serve_request_stream"]

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


async def serve_request_stream(
    stream: trio.abc.Stream,
    policy: Policy,
    *,
    on_frame: Callable[[RequestFrame], None] = lambda frame: None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> None:
    """Serve one connection: decode request frames, answer each in order.

    Immediate replies to the frames of one read go out in one write; a delayed
    reply holds back the ones after it (FIFO). A frame that cannot be decoded
    gets Dynamo's ``Read error: ...`` ack and the connection is closed.
    """
    decoder = RequestFrameDecoder(max_frame_size=max_frame_size)
    send, receive = trio.open_memory_channel[list[Reply]](math.inf)

    async def reader() -> None:
        async with send:
            while True:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:  # the caller left: its pending acks have nowhere to go
                    nursery.cancel_scope.cancel()
                    return
                decoder.feed(data)
                replies: list[Reply] = []
                try:
                    for frame in decoder.frames():
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
                            await stream.send_all(b"".join(out))
                            out = []
                        await trio.sleep(reply.delay)
                    if reply.kind == "drop":
                        if out:
                            await stream.send_all(b"".join(out))
                        nursery.cancel_scope.cancel()
                        return
                    out.append(reply.ack)
                if out:
                    await stream.send_all(b"".join(out))
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
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)


@dataclass
class TcpTestWorker:
    """A running test worker: its address, what it received, and its policy."""

    host: str = "127.0.0.1"
    port: int = 0
    policy: Policy = accept_all
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    received: list[RequestFrame] = field(default_factory=list)
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
        self.connections_accepted += 1
        self.open_connections += 1
        try:
            await serve_request_stream(
                stream,
                lambda frame: self.policy(frame),
                on_frame=self.received.append,
                max_frame_size=self.max_frame_size,
            )
        finally:
            self.open_connections -= 1


@asynccontextmanager
async def open_tcp_test_worker(
    policy: Policy = accept_all,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> AsyncIterator[TcpTestWorker]:
    """Run a :class:`TcpTestWorker` for the duration of the block."""
    worker = TcpTestWorker(host=host, port=port, policy=policy, max_frame_size=max_frame_size)
    with collapse_groups():
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            try:
                yield worker
            finally:
                nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the trioplane TCP test worker.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    async def run() -> None:
        async with open_tcp_test_worker(host=args.host, port=args.port) as worker:
            print(f"listening {worker.host}:{worker.port}", flush=True)
            await trio.sleep_forever()

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run)


if __name__ == "__main__":
    main()
