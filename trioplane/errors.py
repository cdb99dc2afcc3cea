"""Dynamo's typed errors under Dynamo's own names.

A handler raises one to send that error type to the caller; a call raises the one
the worker sent. Each is a :class:`trioplane.RemoteError`. ``StreamIncomplete``,
``WorkerUnavailable`` and ``Unknown`` are named ``RemoteStreamIncomplete``,
``RemoteWorkerUnavailable`` and ``RemoteUnknown`` at the package's top level, where
:class:`trioplane.StreamIncomplete` and :class:`trioplane.WorkerUnavailable` are the
client's own errors (a broken stream, a rejecting ack)::

    from trioplane import errors

    async def generate(request, context):
        if "prompt" not in request:
            raise errors.InvalidArgument("prompt is required")
        ...
"""

from trioplane._errors import (
    REMOTE_ERRORS,
    Cancelled,
    CannotConnect,
    ConnectionTimeout,
    Disconnected,
    EngineShutdown,
    InvalidArgument,
    RemoteError,
)
from trioplane._errors import RemoteStreamIncomplete as StreamIncomplete
from trioplane._errors import RemoteUnknown as Unknown
from trioplane._errors import RemoteWorkerUnavailable as WorkerUnavailable

__all__ = [
    "REMOTE_ERRORS",
    "Cancelled",
    "CannotConnect",
    "ConnectionTimeout",
    "Disconnected",
    "EngineShutdown",
    "InvalidArgument",
    "RemoteError",
    "StreamIncomplete",
    "Unknown",
    "WorkerUnavailable",
]
