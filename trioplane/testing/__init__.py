"""Test kit: workers that speak Dynamo's wire, for tests of trioplane and of its users."""

from trioplane.testing.endpoint import (
    FakeCall,
    FakeEndpointWorker,
    open_fake_endpoint_worker,
    stream_frames,
)
from trioplane.testing.worker import (
    Reply,
    TcpTestWorker,
    open_tcp_test_worker,
    serve_request_stream,
)

__all__ = [
    "FakeCall",
    "FakeEndpointWorker",
    "Reply",
    "TcpTestWorker",
    "open_fake_endpoint_worker",
    "open_tcp_test_worker",
    "serve_request_stream",
    "stream_frames",
]
