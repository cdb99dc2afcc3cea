"""The exception tree of trioplane.

Every error a public call raises is a :class:`TrioplaneError` (or a ``ValueError``
for bad arguments, raised before any I/O). Public calls never raise a bare
``ExceptionGroup``: failures inside a client's nursery are unwrapped or chained.
This module imports nothing from Trio, so the sans-io ``wire`` package may use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AckTimeout",
    "CallHomeTimeout",
    "ClientClosed",
    "ConnectError",
    "ConnectionLost",
    "FrameTooLarge",
    "InstanceNotFound",
    "MalformedStream",
    "MaxPayloadExceeded",
    "NatsServerError",
    "NoResponders",
    "NoInstances",
    "ProtocolError",
    "RemoteError",
    "StreamError",
    "StreamIncomplete",
    "TrioplaneError",
    "WorkerOverloaded",
    "WorkerRejected",
    "WorkerUnavailable",
]


class TrioplaneError(Exception):
    """Base class of every error raised by trioplane."""


class ConnectError(TrioplaneError):
    """A connection to a peer could not be opened (refused, unreachable, timed out)."""


class ConnectionLost(TrioplaneError):
    """The connection carrying a request closed or failed before its ack arrived."""


class AckTimeout(TrioplaneError):
    """The worker did not acknowledge a request within the ack timeout."""


class ProtocolError(TrioplaneError):
    """Bytes on the wire do not follow Dynamo's framing (malformed, truncated, garbage)."""


class FrameTooLarge(ProtocolError):
    """A frame, or one of its length fields, exceeds the configured limit."""


class ClientClosed(TrioplaneError):
    """The client is closed or closing, so it takes no new requests."""


class WorkerRejected(TrioplaneError):
    """The worker answered a request with a non-empty ack: it will not serve it.

    ``text`` is the worker's ack text, ``instance_id`` the instance that sent it
    (``None`` when not known).
    """

    def __init__(self, text: str, instance_id: int | None = None) -> None:
        where = f"instance {instance_id:x}" if instance_id is not None else "worker"
        super().__init__(f"{where} rejected the request: {text}")
        self.text = text
        self.instance_id = instance_id


class WorkerOverloaded(WorkerRejected):
    """The worker is at capacity (``Server overloaded: ...``): try again later or elsewhere."""


class WorkerUnavailable(WorkerRejected):
    """The worker cannot serve this endpoint (``Server unavailable: ...`` and other texts)."""


class NoInstances(TrioplaneError):
    """Discovery knows no instance of the endpoint (or none this client can reach)."""


class InstanceNotFound(NoInstances):
    """The instance id asked for is not (or no longer) among the endpoint's instances."""


class StreamError(TrioplaneError):
    """The response stream of a call failed after the worker accepted the request."""


class StreamIncomplete(StreamError):
    """The response stream ended before the worker marked it complete (worker died, link cut)."""


class MalformedStream(StreamError, ProtocolError):
    """The response stream broke Dynamo's rules (bad frame, data after the end...)."""


class CallHomeTimeout(StreamError):
    """The worker acked the request but never called home within the deadline.

    A Dynamo worker acks a body it cannot decode and then never calls home, so
    this is also what a codec mismatch looks like.
    """


class RemoteError(TrioplaneError):
    """The worker's handler failed; ``error`` is Dynamo's error object as sent.

    ``message`` is its human-readable message, ``error_type`` its type (for a
    Python handler's ``ValueError``: ``{"Backend": "InvalidArgument"}``).
    """

    def __init__(self, error: Mapping[str, Any] | str) -> None:
        self.error: Mapping[str, Any] = error if isinstance(error, Mapping) else {"message": error}
        message = self.error.get("message")
        self.message: str = message if isinstance(message, str) else str(dict(self.error))
        self.error_type: Any = self.error.get("error_type")
        super().__init__(self.message)


class MaxPayloadExceeded(TrioplaneError):
    """A NATS message is bigger than the server's ``max_payload`` (from its INFO)."""


class NoResponders(TrioplaneError):
    """Nobody is subscribed to the subject of a NATS request (the server's 503 status)."""


class NatsServerError(TrioplaneError):
    """The NATS server sent ``-ERR`` (authorization violation, bad subject, ...)."""
