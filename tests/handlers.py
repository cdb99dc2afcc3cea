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
