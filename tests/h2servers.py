"""What the hand-built HTTP/2 test servers share: a loopback listener and a URL."""

from __future__ import annotations

import abc

import trio


class LoopbackH2Server(abc.ABC):
    """Serves each connection to 127.0.0.1 (a free port) with :meth:`_handle`."""

    port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/rpc/generate"

    @abc.abstractmethod
    async def _handle(self, stream: trio.SocketStream) -> None: ...
