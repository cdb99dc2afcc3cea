"""trioplane: a Trio structured-concurrency client for Dynamo's request plane.

``send_request(address, payload, headers) -> ack`` over Dynamo's wire, with
transports as async context managers whose nurseries own their connections.
"""

from trioplane._errors import (
    AckTimeout,
    CallHomeTimeout,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    FrameTooLarge,
    InstanceNotFound,
    MalformedStream,
    MaxPayloadExceeded,
    NatsServerError,
    NoInstances,
    NoResponders,
    ProtocolError,
    RemoteError,
    StreamError,
    StreamIncomplete,
    TrioplaneError,
    WorkerOverloaded,
    WorkerRejected,
    WorkerUnavailable,
)
from trioplane._types import ClientStats, Instance, RequestPlaneClient
from trioplane._version import __version__
from trioplane.discovery import Discovery, FileDiscovery, StaticDiscovery
from trioplane.endpoint import (
    EndpointClient,
    EndpointClientOptions,
    ResponseStream,
    open_endpoint_client,
)
from trioplane.nats import NatsConnection, NatsOptions, open_nats_connection
from trioplane.transports.nats import NatsClient, open_nats_client, start_nats_client
from trioplane.transports.tcp import TcpClient, TcpClientOptions, open_tcp_client, start_tcp_client
from trioplane.wire.codecs import CodecError

__all__ = [
    "AckTimeout",
    "CallHomeTimeout",
    "ClientClosed",
    "ClientStats",
    "CodecError",
    "ConnectError",
    "ConnectionLost",
    "Discovery",
    "EndpointClient",
    "EndpointClientOptions",
    "FileDiscovery",
    "FrameTooLarge",
    "Instance",
    "InstanceNotFound",
    "MalformedStream",
    "MaxPayloadExceeded",
    "NatsClient",
    "NatsConnection",
    "NatsOptions",
    "NatsServerError",
    "NoInstances",
    "NoResponders",
    "ProtocolError",
    "RemoteError",
    "RequestPlaneClient",
    "ResponseStream",
    "StaticDiscovery",
    "StreamError",
    "StreamIncomplete",
    "TcpClient",
    "TcpClientOptions",
    "TrioplaneError",
    "WorkerOverloaded",
    "WorkerRejected",
    "WorkerUnavailable",
    "__version__",
    "open_endpoint_client",
    "open_nats_client",
    "open_nats_connection",
    "open_tcp_client",
    "start_nats_client",
    "start_tcp_client",
]
