"""trioplane's WebSocket request-plane server (needs trio-websocket).

The WebSocket plane carries the TCP plane's frames, one per binary message: a
request message is one request frame, an ack message one ack frame, in request
order. So this server is the TCP server's request handling on a
:class:`WebSocketLink`: a message that is not exactly one whole frame is a read
error (``Read error`` ack, then close), each reply is its own binary message, and
a drop closes the WebSocket. It accepts a connection on any URL path.

The listener is the shared one (connection cap, TLS), and the WebSocket opening
handshake has its deadline: a peer that connects and goes quiet, or leaves at
once, releases its connection within ``handshake_timeout`` (at once if it left).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from trioplane._errors import MissingExtra, ProtocolError
from trioplane.servers._base import PlaneServer

try:
    import trio_websocket
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtra(
        "serving the WebSocket request plane (a worker's transport 'websocket', or"
        " trioplane.testing.websocket)",
        "trio-websocket",
        "websocket",
    ) from exc

__all__ = ["CLOSE_TIMEOUT", "WebSocketLink", "WebSocketPlaneServer"]

#: How long closing waits for the peer's half of the closing handshake.
CLOSE_TIMEOUT = 1.0


class WebSocketLink:
    """A :class:`~trioplane.servers.FrameLink` over a WebSocket: one frame per message."""

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
        a server shutting down has stopped reading, so it closes abruptly at once.
        """
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self.ws.aclose()


class _EofWatch(trio.abc.Stream):
    """A stream that calls ``on_eof`` once its peer has left (EOF or a broken read).

    trio-websocket waits for the opening handshake until its own timeout even
    after the peer has gone; this lets the server stop waiting at once.
    """

    def __init__(self, stream: trio.abc.Stream, on_eof: Callable[[], object]) -> None:
        self.stream = stream
        self.on_eof = on_eof

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.on_eof()
            raise
        if not data:
            self.on_eof()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:  # pragma: no cover - trio-websocket does not use it
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.stream.aclose()


class WebSocketPlaneServer(PlaneServer):
    """trioplane's WebSocket plane on ``host:port`` (``ws://``, or ``wss://`` with TLS).

    ``limits.max_frame_size`` caps a message, hence a request frame (one per message).
    """

    def address(self, path: str = "") -> str:
        """The ``ws://host:port/path`` a caller connects to."""
        scheme = "ws" if self.ssl_context is None else "wss"
        return f"{scheme}://{self.host_port}/{path}"

    async def _serve_stream(self, stream: trio.abc.Stream) -> None:
        handshake = trio.CancelScope(deadline=trio.current_time() + self.limits.handshake_timeout)
        watched = _EofWatch(stream, handshake.cancel)
        async with trio.open_nursery() as nursery:  # the connection's reader task
            with handshake:
                request = await trio_websocket.wrap_server_stream(
                    nursery, watched, max_message_size=self.limits.max_frame_size
                )
                ws = await request.accept()
            if handshake.cancelled_caught:
                self.handshake_failed("WebSocket", trio.TooSlowError("peer left or timed out"))
                nursery.cancel_scope.cancel()
                return
            watched.on_eof = lambda: None
            await self._serve_link(WebSocketLink(ws))
            nursery.cancel_scope.cancel()
