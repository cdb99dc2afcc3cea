"""The exception tree of trioplane.

Every error a public call raises is a :class:`TrioplaneError`. A mistake in the
calling code is a :class:`UsageError`, raised before any I/O, and also the builtin
error Python raises for the same mistake (``ValueError``, ``TypeError``); a missing
optional dependency is a :class:`MissingExtra` (also an ``ImportError``). Public
calls never raise a bare ``ExceptionGroup``: failures inside a client's nursery
are unwrapped or chained.
This module imports nothing from Trio, so the sans-io ``wire`` package may use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "REMOTE_ERRORS",
    "AckTimeout",
    "BadArgument",
    "BadArgumentType",
    "Cancelled",
    "CannotConnect",
    "ConnectionTimeout",
    "Disconnected",
    "EngineShutdown",
    "InvalidArgument",
    "RemoteStreamIncomplete",
    "RemoteUnknown",
    "RemoteWorkerUnavailable",
    "CallHomeTimeout",
    "ClientClosed",
    "ConnectError",
    "ConnectionLost",
    "FrameTooLarge",
    "InstanceNotFound",
    "MalformedStream",
    "MaxPayloadExceeded",
    "MissingExtra",
    "NatsServerError",
    "NoResponders",
    "NoInstances",
    "ProtocolError",
    "RemoteError",
    "StreamError",
    "StreamIncomplete",
    "TrioplaneError",
    "UsageError",
    "WorkerOverloaded",
    "WorkerRejected",
    "WorkerUnavailable",
    "WrongIdiom",
    "WrongProtocol",
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


class WrongProtocol(ConnectError, ProtocolError):
    """The peer answered in another protocol than the plane dialled: a wrong port or scheme.

    ``protocol`` says what it looks like (``"HTTP"``, ``"HTTP/2"``, ``"TLS"``,
    ``"NATS"``, ``"SSH"`` or ``"text"``), ``peer`` is its address. Also a
    :class:`ConnectError` (nothing reached a worker) and a :class:`ProtocolError`.
    """

    def __init__(self, message: str, protocol: str = "", peer: str = "") -> None:
        super().__init__(message)
        self.protocol = protocol
        self.peer = peer


class UsageError(TrioplaneError):
    """The calling code used trioplane wrongly: raised before any I/O, and retrying
    will not help. Each subclass is also the builtin error Python raises for the same
    mistake, so ``except ValueError`` (or ``TypeError``) catches it too."""


class BadArgument(UsageError, ValueError):
    """An argument's value is wrong: a malformed address, an option out of range, a
    header name the client sets itself... Also a ``ValueError``."""


class BadArgumentType(UsageError, TypeError):
    """An argument has the wrong type (a ``str`` payload where bytes are needed,
    headers that are not a mapping of ``str`` to ``str``), or an option is unknown.
    Also a ``TypeError``."""


class WrongIdiom(UsageError, TypeError):
    """An object was used with the wrong idiom, e.g. ``await client.generate(req)``
    instead of ``async with client.generate(req) as stream``. Also a ``TypeError``."""


class MissingExtra(TrioplaneError, ImportError):
    """An optional dependency is not installed; the message names the extra that
    brings it (``pip install 'trioplane[http-worker]'``). Also an ``ImportError``.

    ``feature`` is what needs it, ``package`` the missing package, ``extra`` the extra.
    """

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(f"{feature} needs {package}: pip install 'trioplane[{extra}]'")
        self.feature = feature
        self.package = package
        self.extra = extra

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.feature, self.package, self.extra)


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

    Dynamo types its errors; each type is a subclass here, named as Dynamo's
    (:class:`InvalidArgument`, :class:`EngineShutdown`...; :mod:`trioplane.errors`
    has them under Dynamo's own names). The fields are kept: ``error_type`` (e.g.
    ``{"Backend": "InvalidArgument"}``), ``error_class`` (Dynamo's ``class``, e.g.
    ``"InvalidRequest"``), ``reason`` (e.g. ``"backend.invalid_argument"``),
    ``message``, ``diagnostic`` and, for invalid arguments, ``public``.

    A handler raises them too: ``raise trioplane.EngineShutdown("draining")`` sends
    the error a Dynamo worker sends for that type, and re-raising one received from
    a downstream call forwards it as it came.
    """

    #: Dynamo's name of the type (``error_type``), its class and reason, as a Dynamo
    #: worker sends them for an exception of this type.
    dynamo_type: ClassVar[str] = "Unknown"
    wire: ClassVar[tuple[Any, str, str]] = ({"Backend": "Unknown"}, "Internal", "backend.unknown")

    def __init__(self, error: Mapping[str, Any] | str = "") -> None:
        if isinstance(error, Mapping):
            self.error: Mapping[str, Any] = error
        else:
            error_type, error_class, reason = self.wire
            self.error = {
                "error_type": error_type,
                "class": error_class,
                "reason": reason,
                "message": error,
                "diagnostic": error,
            }
        message = self.error.get("message")
        if not isinstance(message, str):
            message = self.error.get("diagnostic")
        self.message: str = message if isinstance(message, str) else str(dict(self.error))
        self.error_type: Any = self.error.get("error_type")
        self.error_class: str | None = _str_or_none(self.error.get("class"))
        self.reason: str | None = _str_or_none(self.error.get("reason"))
        self.diagnostic: str | None = _str_or_none(self.error.get("diagnostic"))
        self.public: Any = self.error.get("public")
        super().__init__(self.message)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


class RemoteUnknown(RemoteError):
    """Dynamo's ``Unknown``: the handler failed for another reason (class ``Internal``)."""


class InvalidArgument(RemoteError):
    """Dynamo's ``InvalidArgument``: the request is invalid (class ``InvalidRequest``).

    Raised in a handler, it also carries Dynamo's ``public`` message, which Dynamo's
    client raises as its own ``InvalidArgument``.
    """

    dynamo_type = "InvalidArgument"
    wire = ({"Backend": "InvalidArgument"}, "InvalidRequest", "backend.invalid_argument")

    def __init__(self, error: Mapping[str, Any] | str = "") -> None:
        if not isinstance(error, Mapping):
            error_type, error_class, reason = self.wire
            error = {
                "error_type": error_type,
                "class": error_class,
                "reason": reason,
                "message": error,
                "diagnostic": error,
                "public": {"type": "message", "message": error},
            }
        super().__init__(error)


class CannotConnect(RemoteError):
    """Dynamo's ``CannotConnect``: the handler could not reach something it needs."""

    dynamo_type = "CannotConnect"
    wire = ({"Backend": "CannotConnect"}, "Unavailable", "backend.cannot_connect")


class Disconnected(RemoteError):
    """Dynamo's ``Disconnected``: a connection the handler used was lost."""

    dynamo_type = "Disconnected"
    wire = ({"Backend": "Disconnected"}, "Unavailable", "backend.disconnected")


class ConnectionTimeout(RemoteError):
    """Dynamo's ``ConnectionTimeout`` (class ``DeadlineExceeded``): the handler timed out."""

    dynamo_type = "ConnectionTimeout"
    wire = ({"Backend": "ConnectionTimeout"}, "DeadlineExceeded", "backend.connection_timeout")


class Cancelled(RemoteError):
    """Dynamo's ``Cancelled``: the handler's work was cancelled (a Dynamo worker stopping
    on SIGINT sends this for the calls in flight)."""

    dynamo_type = "Cancelled"
    wire = ({"Backend": "Cancelled"}, "Cancelled", "backend.cancelled")


class EngineShutdown(RemoteError):
    """Dynamo's ``EngineShutdown``: the worker's engine stopped; the call may be tried
    again elsewhere (Dynamo's frontend migrates such calls, and its client avoids the
    instance for a while). A trioplane worker sends it for the calls it cancels when
    it closes."""

    dynamo_type = "EngineShutdown"
    wire = ({"Backend": "EngineShutdown"}, "Unavailable", "backend.engine_shutdown")


class RemoteStreamIncomplete(RemoteError, StreamIncomplete):
    """Dynamo's ``StreamIncomplete``, reported by the handler (a stream it read broke).

    Also a :class:`StreamIncomplete`: either way the stream was cut short.
    """

    dynamo_type = "StreamIncomplete"
    wire = ({"Backend": "StreamIncomplete"}, "Unavailable", "backend.stream_incomplete")


class RemoteWorkerUnavailable(RemoteError):
    """Dynamo's ``WorkerUnavailable``: no worker on the request's route can serve it yet."""

    dynamo_type = "WorkerUnavailable"
    wire = ("WorkerUnavailable", "Unavailable", "backend.worker_unavailable")


#: Dynamo's error type names, and the class for each.
REMOTE_ERRORS: dict[str, type[RemoteError]] = {
    cls.dynamo_type: cls
    for cls in (
        RemoteUnknown,
        InvalidArgument,
        CannotConnect,
        Disconnected,
        ConnectionTimeout,
        Cancelled,
        EngineShutdown,
        RemoteStreamIncomplete,
        RemoteWorkerUnavailable,
    )
}


class MaxPayloadExceeded(TrioplaneError):
    """A NATS message is bigger than the server's ``max_payload`` (from its INFO)."""


class NoResponders(TrioplaneError):
    """Nobody is subscribed to the subject of a NATS request (the server's 503 status)."""


class NatsServerError(TrioplaneError):
    """The NATS server sent ``-ERR`` (authorization violation, bad subject, ...)."""
