"""The TCP request-plane server: Dynamo's wire, one listener for every endpoint path.

:class:`TcpPlaneServer` accepts connections (capped, with deadlines: see
:class:`~trioplane.servers.ServerLimits`), optionally over TLS, decodes request
frames as they arrive (a frame may span reads) and answers each as its policy
says; the immediate replies to the frames of one read go out in one write, in
request order, as Dynamo's worker does. The worker serves its TCP plane with
it, and :mod:`trioplane.testing` its TCP test worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from trioplane._sockets import ByteLink
from trioplane.servers._base import (
    DEFAULT_LIMITS,
    PlaneServer,
    Policy,
    ServerLimits,
    ServerStatistics,
    serve_frame_link,
)
from trioplane.wire.tcp import RequestFrame

__all__ = ["StreamLink", "TcpPlaneServer", "serve_request_stream"]


class StreamLink:
    """A :class:`~trioplane.servers.FrameLink` over a byte stream (the TCP request plane).

    A plain socket is read and written without a scheduler round trip when the
    kernel can answer at once (:class:`~trioplane._sockets.ByteLink`).
    """

    one_frame_per_message = False

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._link = ByteLink(stream)

    async def receive(self) -> bytes | bytearray | memoryview:
        return await self._link.receive()

    async def send_replies(self, replies: Sequence[bytes]) -> None:
        """All in one write, as a worker answering a read's frames together does."""
        await self._link.send_all(replies[0] if len(replies) == 1 else b"".join(replies))

    def send_replies_nowait(self, replies: Sequence[bytes]) -> bytes:
        """What the kernel takes now, in one write: the rest (empty if it took all)."""
        data = replies[0] if len(replies) == 1 else b"".join(replies)
        return data[self._link.send_nowait(data) :]

    async def aclose(self) -> None:
        with trio.CancelScope() as scope:
            scope.cancel()  # no TLS close_notify: a closing server does not wait for peers
            await self._link.aclose()


async def serve_request_stream(
    stream: trio.abc.Stream,
    policy: Policy,
    *,
    on_frame: Callable[[RequestFrame], None] | None = None,
    limits: ServerLimits = DEFAULT_LIMITS,
    counters: ServerStatistics | None = None,
) -> None:
    """Serve one TCP-plane connection over any ``trio.abc.Stream`` (a memory stream in tests).

    :func:`~trioplane.servers.serve_frame_link` on a :class:`StreamLink`.
    """
    await serve_frame_link(
        StreamLink(stream), policy, on_frame=on_frame, limits=limits, counters=counters
    )


class TcpPlaneServer(PlaneServer):
    """Dynamo's TCP request plane on ``host:port`` (see :class:`~trioplane.servers.PlaneServer`)."""

    def address(self, path: str = "") -> str:
        """The ``host:port/path`` a caller sends to (the port is known once started)."""
        return f"{self.host_port}/{path}"

    async def _serve_stream(self, stream: trio.abc.Stream) -> None:
        await self._serve_link(StreamLink(stream))
