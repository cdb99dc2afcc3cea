"""Shared fixtures: a real TCP test worker, echo policies, leak checks, bare httpx clients.

Tests marked ``dynamo`` run real Dynamo processes from a virtual environment per Dynamo
version (1.6.1, about 270 MB; 1.2.1 for the HTTP plane, about 160 MB), created by the
first test that needs it and reused by later runs. Where they live (details in
``tests/dynamo/__init__.py``):

* ``TRIOPLANE_DYNAMO_VENV_1_6_1``, ``TRIOPLANE_DYNAMO_VENV_1_2_1``: one version's venv;
* ``TRIOPLANE_DYNAMO_VENV``: the 1.6.1 venv (as before; no longer also the 1.2.1 one);
* ``TRIOPLANE_DYNAMO_CACHE``: a folder holding ``dynamo-<version>`` for each version;
* by default ``~/.cache/trioplane/dynamo-<version>``.

While a venv is created, its progress goes to the terminal, past pytest's capture. If it
cannot be created (no package index), those tests are skipped with the reason; with
``TRIOPLANE_REQUIRE_DYNAMO=1`` (as in ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
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

from . import dynamo
from .pki import Pki, make_pki

# Shared, noisy machines: no per-example deadline (speed lives in benchmarks/).
settings.register_profile("trioplane", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("trioplane")


def pytest_configure(config: pytest.Config) -> None:
    """Progress of a Dynamo venv being created goes to the terminal, past the capture."""

    def say(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            print(line, file=sys.__stderr__, flush=True)
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(line)
            reporter.flush()

    dynamo.use_output(say)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``dynamo`` gets the default Dynamo version's venv before its fixtures
    start workers: made here once, or the test is skipped saying why it could not be."""
    if item.get_closest_marker("dynamo") is not None:
        dynamo.dynamo_python()


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
