"""Fault scripts for the fake endpoint worker: what a misbehaving Dynamo worker does.

Each function returns a script for :func:`~trioplane.testing.open_fake_endpoint_worker`
(or assign it to ``worker.script``). ``items(call)`` is the list of items the
well-behaved part sends; by default the request itself, once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from trioplane.testing.endpoint import Action, FakeCall, Script, stream_frames
from trioplane.testing.worker import Reply
from trioplane.wire.rejections import WORKER_AT_CAPACITY
from trioplane.wire.response import encode_item, encode_prologue

__all__ = [
    "corrupt_after",
    "delay_ack",
    "drop_after",
    "never_call_home",
    "reject",
    "slow_items",
    "stall_after",
]

Items = Callable[[FakeCall], Sequence[Any]]


def _request_once(call: FakeCall) -> Sequence[Any]:
    return [call.request]


def _head(call: FakeCall, items: Items, n: int) -> list[Action]:
    return [encode_prologue(), *(encode_item(call.codec, {"data": x}) for x in items(call)[:n])]


def reject(text: str = WORKER_AT_CAPACITY, *, delay: float = 0.0) -> Script:
    """Refuse every request with this ack text (after ``delay`` seconds)."""
    return lambda call: Reply.reject(text, delay=delay)


def delay_ack(seconds: float, items: Items = _request_once) -> Script:
    """Ack late, then stream normally."""

    def script(call: FakeCall) -> Sequence[Action] | Reply:
        return [seconds, *stream_frames(call.codec, items(call))]

    return script


def never_call_home() -> Script:
    """Ack, then never call home (what a worker that cannot decode the body does)."""
    return lambda call: Reply.accept()


def drop_after(n: int, items: Items = _request_once) -> Script:
    """Send ``n`` items, then close the call-home connection (a worker dying)."""
    return lambda call: _head(call, items, n)


def corrupt_after(n: int, garbage: bytes = b"\xff" * 32, items: Items = _request_once) -> Script:
    """Send ``n`` items, then bytes that are no TwoPart frame."""
    return lambda call: [*_head(call, items, n), garbage]


def stall_after(n: int, seconds: float = 3600.0, items: Items = _request_once) -> Script:
    """Send ``n`` items, then go silent for ``seconds`` (a hung worker)."""
    return lambda call: [*_head(call, items, n), seconds]


def slow_items(interval: float, items: Items = _request_once) -> Script:
    """Stream normally, ``interval`` seconds between items (for slow or cancelled readers)."""

    def script(call: FakeCall) -> Sequence[Action] | Reply:
        frames = stream_frames(call.codec, items(call))
        paced: list[Action] = [frames[0]]
        for frame in frames[1:-2]:
            paced += [interval, frame]
        return [*paced, *frames[-2:]]

    return script
