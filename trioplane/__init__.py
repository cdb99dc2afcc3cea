"""trioplane: a Trio structured-concurrency client for Dynamo's request plane.

``send_request(address, payload, headers) -> ack`` over Dynamo's wire, with
transports as async context managers whose nurseries own their connections.
"""

from typing import TYPE_CHECKING

from trioplane._errors import (
    AckTimeout,
    BadArgument,
    BadArgumentType,
    CallHomeTimeout,
    Cancelled,
    CannotConnect,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    ConnectionTimeout,
    Disconnected,
    EngineShutdown,
    FrameTooLarge,
    InstanceNotFound,
    InvalidArgument,
    MalformedStream,
    MaxPayloadExceeded,
    MissingExtra,
    NatsServerError,
    NoInstances,
    NoResponders,
    ProtocolError,
    RemoteError,
    RemoteStreamIncomplete,
    RemoteUnknown,
    RemoteWorkerUnavailable,
    StreamError,
    StreamIncomplete,
    TrioplaneError,
    UsageError,
    WorkerOverloaded,
    WorkerRejected,
    WorkerUnavailable,
    WrongIdiom,
    WrongProtocol,
)
from trioplane._types import ClientStats, Instance, RequestPlaneClient
from trioplane._version import __version__
from trioplane.discovery import Discovery, FileDiscovery, StaticDiscovery, discovery_from_env
from trioplane.endpoint import (
    EndpointClient,
    EndpointClientOptions,
    EndpointStatistics,
    ResponseStream,
    open_endpoint_client,
)
from trioplane.nats import NatsConnection, NatsOptions, NatsStatistics, open_nats_connection
from trioplane.servers import CallHomeLimits, ServerLimits
from trioplane.tls import TcpTls
from trioplane.transports.nats import NatsClient, open_nats_client, start_nats_client
from trioplane.transports.tcp import TcpClient, TcpClientOptions, open_tcp_client, start_tcp_client
from trioplane.transports.unified import (
    RequestPlaneOptions,
    UnifiedClient,
    open_request_plane,
    start_request_plane,
)
from trioplane.wire.codecs import CodecError
from trioplane.wire.response import Annotated
from trioplane.worker import (
    HealthCheck,
    RequestContext,
    Worker,
    WorkerStatistics,
    open_worker,
    serve_endpoint,
)

__all__ = [
    "Annotated",
    "RemoteWorkerUnavailable",
    "RemoteUnknown",
    "RemoteStreamIncomplete",
    "InvalidArgument",
    "EngineShutdown",
    "Disconnected",
    "ConnectionTimeout",
    "CannotConnect",
    "Cancelled",
    "AckTimeout",
    "BadArgument",
    "BadArgumentType",
    "CallHomeLimits",
    "CallHomeTimeout",
    "ClientClosed",
    "ClientStats",
    "CodecError",
    "ConnectError",
    "ConnectionLost",
    "Discovery",
    "EtcdDiscovery",
    "EndpointClient",
    "EndpointClientOptions",
    "EndpointStatistics",
    "FileDiscovery",
    "FrameTooLarge",
    "HealthCheck",
    "HttpClient",
    "HttpClientOptions",
    "HttpStatusError",
    "Instance",
    "InstanceNotFound",
    "MalformedStream",
    "MaxPayloadExceeded",
    "MissingExtra",
    "NatsClient",
    "NatsConnection",
    "NatsOptions",
    "NatsServerError",
    "NatsStatistics",
    "NoInstances",
    "NoResponders",
    "ProtocolError",
    "RemoteError",
    "RequestContext",
    "RequestPlaneClient",
    "RequestPlaneOptions",
    "ResponseStream",
    "ServerLimits",
    "StaticDiscovery",
    "StreamError",
    "StreamIncomplete",
    "TcpClient",
    "TcpClientOptions",
    "TcpTls",
    "TrioplaneError",
    "UnifiedClient",
    "UsageError",
    "WebSocketClient",
    "WebSocketClientOptions",
    "Worker",
    "WorkerOverloaded",
    "WorkerRejected",
    "WorkerStatistics",
    "WorkerUnavailable",
    "WrongIdiom",
    "WrongProtocol",
    "open_endpoint_client",
    "open_http_client",
    "open_nats_client",
    "open_nats_connection",
    "open_request_plane",
    "open_tcp_client",
    "open_websocket_client",
    "open_worker",
    "serve_endpoint",
    "start_http_client",
    "start_nats_client",
    "start_request_plane",
    "start_tcp_client",
    "start_websocket_client",
    "__version__",
    "discovery_from_env",
]


if TYPE_CHECKING:
    from trioplane.discovery.etcd import EtcdDiscovery
    from trioplane.transports.http import (
        HttpClient,
        HttpClientOptions,
        HttpStatusError,
        open_http_client,
        start_http_client,
    )
    from trioplane.transports.websocket import (
        WebSocketClient,
        WebSocketClientOptions,
        open_websocket_client,
        start_websocket_client,
    )

# The HTTP and WebSocket transports and etcd need optional extras (httpx, trio-websocket):
# imported on first use, so ``import trioplane`` works without them.
_LAZY = {
    "EtcdDiscovery": "trioplane.discovery.etcd",
    "HttpClient": "trioplane.transports.http",
    "HttpClientOptions": "trioplane.transports.http",
    "HttpStatusError": "trioplane.transports.http",
    "open_http_client": "trioplane.transports.http",
    "start_http_client": "trioplane.transports.http",
    "WebSocketClient": "trioplane.transports.websocket",
    "WebSocketClientOptions": "trioplane.transports.websocket",
    "open_websocket_client": "trioplane.transports.websocket",
    "start_websocket_client": "trioplane.transports.websocket",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trioplane' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
