"""Test kit: workers that speak Dynamo's wire, for tests of trioplane and of its users."""

from trioplane.testing.worker import (
    Reply,
    TcpTestWorker,
    open_tcp_test_worker,
    serve_request_stream,
)

__all__ = ["Reply", "TcpTestWorker", "open_tcp_test_worker", "serve_request_stream"]
