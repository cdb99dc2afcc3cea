"""A Trio test worker for trioplane's WebSocket request plane (needs trio-websocket).

The library's WebSocket plane server (:mod:`trioplane.servers.websocket`: one
request frame per binary message, FIFO ack messages) that also remembers every
request frame it decoded, answering as its policy says (see
:mod:`trioplane.testing.worker`). It accepts a connection on any URL path.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from trioplane.servers import Policy, accept_all
from trioplane.servers.websocket import WebSocketLink, WebSocketPlaneServer
from trioplane.testing.worker import TestWorker, TestWorkerOptions, running
from trioplane.wire.tcp import DEFAULT_MAX_FRAME_SIZE

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["WebSocketLink", "WebSocketTestWorker", "open_websocket_test_worker"]


class WebSocketTestWorker(TestWorker, WebSocketPlaneServer):
    """A WebSocket test worker: its address, what it received, and its policy.

    ``max_frame_size`` caps a message, hence a request frame (one per message).
    """

    @property
    def max_message_size(self) -> int:
        return self.limits.max_frame_size


def open_websocket_test_worker(
    policy: Policy = accept_all,
    *,
    max_message_size: int = DEFAULT_MAX_FRAME_SIZE,
    **options: Unpack[TestWorkerOptions],
) -> AbstractAsyncContextManager[WebSocketTestWorker]:
    """Run a :class:`WebSocketTestWorker` for the duration of the block
    (``max_message_size`` is its ``max_frame_size``)."""
    options["max_frame_size"] = max_message_size
    return running(WebSocketTestWorker(policy, **options))
