"""The texts a worker refuses a request with, as Dynamo's workers write them.

A refusal is an ack text on the TCP and WebSocket planes, a reply payload on
NATS, a response body on HTTP, and (in newer Dynamo) the first frame of a call
home. Its prefix says what the caller should do: ``Server overloaded:`` means
try again later or elsewhere; ``Server unavailable:`` (and any other text) means
this instance cannot serve the request. Every such text trioplane writes or
reads is here, once.
"""

from __future__ import annotations

__all__ = [
    "ENDPOINT_NOT_FOUND",
    "OVERLOADED_PREFIX",
    "REJECTIONS",
    "UNAVAILABLE_PREFIX",
    "WORKER_AT_CAPACITY",
    "bad_request",
    "is_overloaded",
    "read_error",
    "unknown_endpoint",
]

OVERLOADED_PREFIX = "Server overloaded:"
UNAVAILABLE_PREFIX = "Server unavailable:"
#: The prefixes of a refusal (also recognised as a call home's first frame).
REJECTIONS = (OVERLOADED_PREFIX, UNAVAILABLE_PREFIX)
#: Past ``max_concurrency`` calls in flight (Dynamo's text).
WORKER_AT_CAPACITY = f"{OVERLOADED_PREFIX} worker at capacity"
#: Dynamo 1.2.1's HTTP plane: the body of a ``404`` for an endpoint it does not serve.
ENDPOINT_NOT_FOUND = "Endpoint not found"


def unknown_endpoint(path: str) -> str:
    """No handler at ``path`` (Dynamo 1.6.1's text)."""
    return f"{UNAVAILABLE_PREFIX} unknown endpoint {path}"


def bad_request(reason: object) -> str:
    """A request whose control message or body cannot be decoded."""
    return f"{UNAVAILABLE_PREFIX} bad request: {reason}"


def read_error(reason: object) -> str:
    """A request frame that cannot be decoded; the worker then closes the connection."""
    return f"Read error: {reason}"


def is_overloaded(text: str) -> bool:
    """True for a refusal that means "try again later or elsewhere"."""
    return text.startswith(OVERLOADED_PREFIX)
