"""Shared fixtures: a real TCP test worker, echo policies, leak checks, bare httpx clients."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings

from trioplane.testing import Reply, TcpTestWorker, open_tcp_test_worker, serve_request_stream
from trioplane.testing.worker import Policy
from trioplane.wire.tcp import RequestFrame

from .pki import Pki, make_pki

# Shared, noisy machines: no per-example deadline (speed lives in benchmarks/).
settings.register_profile("trioplane", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("trioplane")

#: Bare httpx client options: HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
PROTOCOLS: dict[str, dict[str, Any]] = {
    "h1": {},
    "h2c": {"http1": False, "http2": True},
}
HTTP_VERSIONS = {"h1": "HTTP/1.1", "h2c": "HTTP/2"}


@pytest.fixture(params=sorted(PROTOCOLS))
def protocol(request: pytest.FixtureRequest) -> str:
    """Each of :data:`PROTOCOLS` in turn."""
    name: str = request.param
    return name


def bare_client(protocol: str) -> httpx.AsyncClient:
    """A bare httpx client speaking ``protocol``."""
    return httpx.AsyncClient(timeout=10, **PROTOCOLS[protocol])


def echo(frame: RequestFrame) -> Reply:
    """Answer each request with its own payload, so a caller can check it got *its* ack."""
    return Reply.reject(frame.payload)


@pytest.fixture
async def worker() -> AsyncIterator[TcpTestWorker]:
    async with open_tcp_test_worker(echo) as running:
        yield running


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def all_tasks() -> list[trio.lowlevel.Task]:
    """Every task of this Trio run (walks the task tree from the root)."""
    found: list[trio.lowlevel.Task] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        assert task is not None
        found.append(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found


Connector = Callable[[str, int], Awaitable[trio.abc.Stream]]


def memory_connector(nursery: trio.Nursery, policy: Policy) -> Connector:
    """A connector whose 'connections' are memory streams served by the test worker code."""

    async def connect(host: str, port: int) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        nursery.start_soon(serve_request_stream, server, policy)
        await trio.lowlevel.checkpoint()
        return client

    return connect


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` for up to 5 s (for state owned by a socket peer)."""
    with trio.fail_after(5):
        while not condition():  # noqa: ASYNC110 - no event exists for a peer's state
            await trio.sleep(0.01)


def split_at(blob: bytes, cuts: list[int]) -> list[bytes]:
    """``blob`` cut at every offset in ``cuts`` (duplicates give empty chunks)."""
    bounds = [0, *sorted(cuts), len(blob)]
    return [blob[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, server, client, wrong-name and expired certificates, as PEM files."""
    return make_pki(tmp_path_factory.mktemp("pki"))
