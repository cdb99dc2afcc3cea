"""A Trio test worker for Dynamo's WebSocket request plane (needs trio-websocket).

The WebSocket plane carries the TCP plane's frames, one per binary message: a
request message is one request frame, an ack message one ack frame, in request
order. So this worker is the TCP test worker's request handling
(:func:`~trioplane.testing.worker.serve_frame_link`) on a :class:`WebSocketLink`:
a message that is not exactly one whole frame is a decode error (``Read error``
ack, then close), each reply is its own binary message, and a drop closes the
WebSocket. It accepts a connection on any URL path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio

from trioplane._errors import ProtocolError
from trioplane._util import serving
from trioplane.testing.worker import Policy, _LinkServer, accept_all
from trioplane.wire.tcp import DEFAULT_MAX_FRAME_SIZE, RequestFrame

try:
    import trio_websocket
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the WebSocket test worker needs trio-websocket: pip install 'trioplane[websocket]'"
    ) from exc

__all__ = ["WebSocketLink", "WebSocketTestWorker", "open_websocket_test_worker"]

#: How long closing waits for the peer's half of the closing handshake.
CLOSE_TIMEOUT = 1.0


class WebSocketLink:
    """A :class:`~trioplane.testing.worker.FrameLink` over a WebSocket: one frame per message."""

    one_frame_per_message = True

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def receive(self) -> bytes:
        """The next binary message; ``b""`` once the connection is closed."""
        try:
            message = await self.ws.get_message()
        except trio_websocket.ConnectionClosed:
            return b""
        if isinstance(message, str):
            raise ProtocolError("a request must be a binary message, got a text message")
        if not message:  # b"" would read as "peer left"; it is a frame cut short
            raise ProtocolError("a request must be a binary message, got an empty one")
        return message

    async def send_replies(self, replies: Sequence[bytes]) -> None:
        """Each reply as its own binary message (garbage too: one message, as it is)."""
        try:
            for reply in replies:
                await self.ws.send_message(reply)
        except trio_websocket.ConnectionClosed as exc:
            raise trio.BrokenResourceError(f"WebSocket closed: {exc.reason}") from None

    async def aclose(self) -> None:
        """Close the WebSocket and its TCP connection.

        With the closing handshake (bounded by ``CLOSE_TIMEOUT``) unless cancelled:
        a worker shutting down has stopped reading, so it closes abruptly at once.
        """
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self.ws.aclose()


@dataclass
class WebSocketTestWorker(_LinkServer):
    """A running WebSocket test worker: its address, what it received, and its policy.

    ``max_message_size`` caps a message, hence a request frame (one per message).
    """

    host: str = "127.0.0.1"
    port: int = 0
    policy: Policy = accept_all
    max_message_size: int = DEFAULT_MAX_FRAME_SIZE
    #: Every request frame, in arrival order (when ``keep_received``).
    received: list[RequestFrame] = field(default_factory=list)
    #: False: keep nothing in ``received`` (a long run's memory stays flat).
    keep_received: bool = True
    connections_accepted: int = 0
    open_connections: int = 0

    def address(self, path: str = "") -> str:
        """The ``ws://host:port/path`` a client connects to."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/{path}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``port`` is set before ``started``."""
        serve = partial(
            trio_websocket.serve_websocket,
            self._handle,
            self.host,
            self.port,
            None,
            max_message_size=self.max_message_size,
        )
        async with trio.open_nursery() as nursery:
            server: trio_websocket.WebSocketServer = await nursery.start(serve)
            self.port = server.port
            task_status.started()

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await self._serve_link(WebSocketLink(ws), max_frame_size=self.max_message_size)


@asynccontextmanager
async def open_websocket_test_worker(
    policy: Policy = accept_all,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_message_size: int = DEFAULT_MAX_FRAME_SIZE,
    keep_received: bool = True,
) -> AsyncIterator[WebSocketTestWorker]:
    """Run a :class:`WebSocketTestWorker` for the duration of the block."""
    worker = WebSocketTestWorker(
        host=host,
        port=port,
        policy=policy,
        max_message_size=max_message_size,
        keep_received=keep_received,
    )
    async with serving(worker.serve):
        yield worker
