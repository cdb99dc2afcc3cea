"""The exception tree of trioplane.

Every error a public call raises is a :class:`TrioplaneError` (or a ``ValueError``
for bad arguments, raised before any I/O). Public calls never raise a bare
``ExceptionGroup``: failures inside a client's nursery are unwrapped or chained.
This module imports nothing from Trio, so the sans-io ``wire`` package may use it.
"""

from __future__ import annotations

__all__ = [
    "AckTimeout",
    "ClientClosed",
    "ConnectError",
    "ConnectionLost",
    "FrameTooLarge",
    "ProtocolError",
    "TrioplaneError",
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
