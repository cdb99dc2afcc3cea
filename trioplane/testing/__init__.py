"""Test kit: workers that speak Dynamo's wire, for tests of trioplane and of its users."""

from typing import TYPE_CHECKING

from trioplane.testing.endpoint import (
    FakeCall,
    FakeEndpointWorker,
    open_fake_endpoint_worker,
    stream_frames,
)
from trioplane.testing.virtual import (
    Conditions,
    Fault,
    NetEvent,
    VirtualDeployment,
    VirtualDiscovery,
    VirtualNetwork,
    open_virtual_deployment,
)
from trioplane.testing.worker import (
    FrameLink,
    Reply,
    StreamLink,
    TcpTestWorker,
    open_tcp_test_worker,
    serve_frame_link,
    serve_request_stream,
)

__all__ = [
    "Conditions",
    "FakeCall",
    "FakeEndpointWorker",
    "Fault",
    "FrameLink",
    "NetEvent",
    "Reply",
    "StreamLink",
    "TcpTestWorker",
    "VirtualDeployment",
    "VirtualDiscovery",
    "VirtualNetwork",
    "WebSocketLink",
    "WebSocketTestWorker",
    "open_fake_endpoint_worker",
    "open_tcp_test_worker",
    "open_virtual_deployment",
    "open_websocket_test_worker",
    "serve_frame_link",
    "serve_request_stream",
    "stream_frames",
]

if TYPE_CHECKING:
    from trioplane.testing.websocket import (
        WebSocketLink,
        WebSocketTestWorker,
        open_websocket_test_worker,
    )

# The WebSocket worker needs the optional trio-websocket extra: imported on first
# use, so ``import trioplane.testing`` works without it.
_LAZY = {
    "WebSocketLink": "trioplane.testing.websocket",
    "WebSocketTestWorker": "trioplane.testing.websocket",
    "open_websocket_test_worker": "trioplane.testing.websocket",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trioplane.testing' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
