"""Handlers for ``trioplane serve`` tests (imported by the command as tests.handlers:NAME)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import trio

from trioplane import RequestContext


async def ticks(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    """``request["n"]`` items, ``request["interval"]`` seconds apart, each with this pid."""
    for i in range(request["n"]):
        yield {"i": i, "pid": os.getpid()}
        await trio.sleep(request.get("interval", 0.0))


async def worker_ops(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    """tests/dynamo/worker_script.py's ops, in Trio: ``count`` (``n`` items),
    ``error_after`` (one item, then ``ValueError``), ``slow`` (an item each
    ``interval`` seconds, default 0.01, until stopped)."""
    op = request.get("op")
    if op == "count":
        for i in range(request["n"]):
            yield {"i": i}
    elif op == "error_after":
        yield {"i": 0}
        raise ValueError("boom")
    elif op == "slow":
        i = 0
        while not context.is_stopped():
            yield {"i": i}
            i += 1
            await trio.sleep(request.get("interval", 0.01))
