"""Dynamo's typed errors on the wire, both ways (no I/O).

A handler's failure travels as an item ``{"event": "error", "error": {...}}`` whose
error object is ``error_type, class, reason, message, diagnostic[, public]`` in
that order. What a Dynamo 1.6.1 worker sends for each exception was captured
against real processes (docs/errors.rst has the table); :func:`error_object` sends
the same for the same exception, so Dynamo's client raises for a trioplane worker
exactly what it raises for a Dynamo worker. :func:`remote_error` is the other
way: the :class:`~trioplane.RemoteError` subclass for an error object.

When the handler cannot even start a stream (it is no async generator, or calling
it raised), a Dynamo worker sends a failed prologue instead:
:func:`prologue_error`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trioplane._errors import REMOTE_ERRORS, RemoteError, RemoteUnknown

__all__ = [
    "error_object",
    "prologue_error",
    "remote_error",
    "type_name",
    "unencodable_item_error",
]

#: Built-in exceptions and the Dynamo type a Dynamo worker reports them as (most
#: specific first); anything else is ``Unknown``.
_BUILTINS: tuple[tuple[type[BaseException], str], ...] = (
    (ConnectionRefusedError, "CannotConnect"),
    (ConnectionError, "Disconnected"),
    (TimeoutError, "ConnectionTimeout"),
    (ValueError, "InvalidArgument"),
    (TypeError, "InvalidArgument"),
)


def _builtin_type(exc: BaseException) -> str:
    for cls, name in _BUILTINS:
        if isinstance(exc, cls):
            return name
    if type(exc).__name__ == "TooSlowError" and type(exc).__module__.startswith("trio"):
        return "ConnectionTimeout"  # a Trio handler's timeout is Dynamo's
    if type(exc).__name__ == "CancelledError":  # asyncio's, raised by hand
        return "Cancelled"
    return "Unknown"


def error_object(exc: BaseException) -> dict[str, Any]:
    """The error object a Dynamo 1.6.1 worker sends when its handler raises ``exc``.

    A :class:`~trioplane.RemoteError` (raised by the handler, or received from a
    downstream call and re-raised) is sent as it is; another exception by its kind,
    with the message ``"ClassName: message"`` (``ValueError`` and ``TypeError`` are
    ``InvalidArgument``, connection errors ``CannotConnect``/``Disconnected``,
    timeouts ``ConnectionTimeout``, anything else ``Unknown``).
    """
    if isinstance(exc, RemoteError):
        return dict(exc.error)
    message = f"{type(exc).__name__}: {exc}"
    error_type, error_class, reason = REMOTE_ERRORS[_builtin_type(exc)].wire
    return {
        "error_type": error_type,
        "class": error_class,
        "reason": reason,
        "message": message,
        "diagnostic": message,
    }


def type_name(error_type: object) -> str | None:
    """Dynamo's type name in an ``error_type``: ``{"Backend": "X"}`` or a bare ``"X"``."""
    if isinstance(error_type, Mapping) and len(error_type) == 1:
        (value,) = error_type.values()
        return value if isinstance(value, str) else None
    return error_type if isinstance(error_type, str) else None


def remote_error(error: object) -> RemoteError:
    """The :class:`~trioplane.RemoteError` subclass for an error object as received
    (an unknown type name gives the base class, with every field kept)."""
    if not isinstance(error, Mapping):
        return RemoteUnknown({"message": str(error) if error is not None else "remote error"})
    if "error_type" not in error:
        return RemoteUnknown(error)
    return REMOTE_ERRORS.get(type_name(error["error_type"]) or "", RemoteError)(error)


def prologue_error(exc: BaseException) -> dict[str, Any]:
    """The failed prologue a Dynamo 1.6.1 worker sends when its handler cannot start
    a stream (always ``Unknown``/``Internal``/``runtime.unclassified``)."""
    name = exc.dynamo_type if isinstance(exc, RemoteError) else type(exc).__name__
    message = f"{name}: {exc}"
    return {
        "error": f"Generate Error: {message}",
        "typed_error": {
            "error_type": "Unknown",
            "class": "Internal",
            "reason": "runtime.unclassified",
            "message": message,
            "diagnostic": message,
        },
    }


def unencodable_item_error(codec_name: str, exc: BaseException) -> dict[str, Any]:
    """The error item a Dynamo 1.6.1 worker sends, and ends the stream with, when its
    handler yields something the codec cannot encode."""
    message = f"critical error: failed serializing Python response as {codec_name}: {exc}"
    return {
        "event": "error",
        "error": {
            "error_type": "Unknown",
            "class": "Internal",
            "reason": "runtime.unclassified",
            "message": message,
            "diagnostic": message,
        },
    }
