"""The server side of each plane, shared by the worker and the test kit.

* :mod:`~trioplane.servers.tcp`, :mod:`~trioplane.servers.websocket`: request-plane
  servers that accept connections (capped, with deadlines, optionally TLS),
  decode request frames, admit each by a *policy* and ack in FIFO order;
* :mod:`~trioplane.servers.nats`: the NATS request plane (the reply is the ack);
* :mod:`~trioplane.servers.http`: Dynamo 1.2.1's HTTP plane, on hypercorn;
* :mod:`~trioplane.servers.callhome`: the call-home sender of the response plane.

:class:`trioplane.Worker` puts handlers behind them; :mod:`trioplane.testing`
puts fault policies behind them. The WebSocket and HTTP servers need their
extras and are imported from their modules.
"""

from trioplane.servers._base import (
    ACCEPT,
    FrameLink,
    PlaneServer,
    Policy,
    Reply,
    ServerLimits,
    ServerStatistics,
    accept_all,
    serve_frame_link,
)
from trioplane.servers.callhome import (
    CallHomeLimits,
    CallHomeSender,
    CallHomeWatch,
    open_call_home,
)
from trioplane.servers.nats import NatsPlaneServer
from trioplane.servers.tcp import StreamLink, TcpPlaneServer, serve_request_stream

__all__ = [
    "ACCEPT",
    "CallHomeLimits",
    "CallHomeSender",
    "CallHomeWatch",
    "FrameLink",
    "NatsPlaneServer",
    "PlaneServer",
    "Policy",
    "Reply",
    "ServerLimits",
    "ServerStatistics",
    "StreamLink",
    "TcpPlaneServer",
    "accept_all",
    "open_call_home",
    "serve_frame_link",
    "serve_request_stream",
]
