"""trioplane: a Trio structured-concurrency client for Dynamo's request plane.

``send_request(address, payload, headers) -> ack`` over Dynamo's wire, with
transports as async context managers whose nurseries own their connections.
"""

from trioplane._errors import (
    AckTimeout,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    FrameTooLarge,
    ProtocolError,
    TrioplaneError,
)
from trioplane._types import ClientStats, Instance, RequestPlaneClient
from trioplane.transports.tcp import TcpClient, TcpClientOptions, open_tcp_client, start_tcp_client
from trioplane.wire.codecs import CodecError

__version__ = "0.1.0"

__all__ = [
    "AckTimeout",
    "ClientClosed",
    "ClientStats",
    "CodecError",
    "ConnectError",
    "ConnectionLost",
    "FrameTooLarge",
    "Instance",
    "ProtocolError",
    "RequestPlaneClient",
    "TcpClient",
    "TcpClientOptions",
    "TrioplaneError",
    "__version__",
    "open_tcp_client",
    "start_tcp_client",
]
