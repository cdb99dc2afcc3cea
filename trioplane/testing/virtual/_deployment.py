"""A whole deployment on a :class:`VirtualNetwork`: workers, their discovery, clients."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from trioplane._errors import BadArgument
from trioplane._util import collapse_groups
from trioplane.discovery import StaticDiscovery
from trioplane.discovery.static import _StaticRegistration
from trioplane.testing.virtual._network import VirtualNetwork
from trioplane.tls import TcpTls
from trioplane.worker import Handler, Worker, open_worker

if TYPE_CHECKING:
    from trioplane.endpoint import EndpointClient

__all__ = ["VirtualDeployment", "VirtualDiscovery", "open_virtual_deployment"]

#: The endpoint a deployment serves unless told otherwise.
DEFAULT_ENDPOINT = "test.virtual.generate"


class VirtualDiscovery(StaticDiscovery):
    """:class:`~trioplane.discovery.StaticDiscovery` (workers register in it, clients
    watch it) whose instance ids come from a seeded generator: the same every run."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.random = random.Random(f"{seed}:instance ids")

    @asynccontextmanager
    async def open_registration(self) -> AsyncIterator[_StaticRegistration]:
        registration = _SeededRegistration(self, self.random)
        try:
            yield registration
        finally:
            await registration.withdraw()


class _SeededRegistration(_StaticRegistration):
    def __init__(self, discovery: StaticDiscovery, generator: random.Random) -> None:
        super().__init__(discovery)
        self._random = generator

    async def new_instance_id(self) -> int:
        await trio.lowlevel.checkpoint()
        return self._random.getrandbits(63)


class VirtualDeployment:
    """Workers serving one endpoint on a virtual network (worker ``i`` on host
    ``10.0.0.{i+1}``), registered in ``discovery``; :meth:`client` opens
    endpoint clients (on ``127.0.0.1`` by default). Made by
    :func:`open_virtual_deployment` (or the ``virtual_deployment`` fixture)."""

    def __init__(
        self,
        network: VirtualNetwork,
        handlers: Mapping[str, Handler],
        count: int,
        worker_options: Mapping[str, Any],
    ) -> None:
        self.network = network
        self.handlers = dict(handlers)
        self.endpoint = next(iter(self.handlers))
        self.discovery = VirtualDiscovery(network.seed)
        self.worker_options = dict(worker_options)
        self.hosts = [f"10.0.0.{i + 1}" for i in range(count)]
        #: The running workers (``None``: killed or stopped).
        self.workers: list[Worker | None] = [None] * count
        self._scopes: list[trio.CancelScope | None] = [None] * count
        self._nursery: trio.Nursery | None = None

    def host(self, index: int) -> str:
        """Worker ``index``'s host (``10.0.0.{index+1}``)."""
        return self.hosts[index]

    def worker(self, index: int) -> Worker:
        """Worker ``index`` (``LookupError`` if it is not running)."""
        worker = self.workers[index]
        if worker is None:
            raise LookupError(f"worker {index} is not running")
        return worker

    async def start(self, index: int) -> Worker:
        """Start worker ``index`` (again, after :meth:`kill` or :meth:`stop`)."""
        if self.workers[index] is not None:
            raise BadArgument(f"worker {index} is running")
        assert self._nursery is not None
        worker: Worker = await self._nursery.start(self._run_worker, index)
        return worker

    async def _run_worker(
        self, index: int, *, task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED
    ) -> None:
        host = self.hosts[index]
        options = {"tls": TcpTls(), "status": False, **self.worker_options}
        with trio.CancelScope() as scope, self.network.node(host):
            self._scopes[index] = scope
            try:
                async with open_worker(
                    self.handlers, host=host, discovery=self.discovery, **options
                ) as worker:
                    self.workers[index] = worker
                    task_status.started(worker)
                    await trio.sleep_forever()
            finally:
                self.workers[index] = None
                self._scopes[index] = None

    def busy(self) -> list[int]:
        """The workers with calls in flight (to kill the one serving a stream)."""
        return [i for i, w in enumerate(self.workers) if w and w.statistics().calls_in_flight > 0]

    def kill(self, index: int) -> None:
        """Crash worker ``index`` now: every connection to or from its host is reset,
        its task cancelled (no draining; its discovery record is withdrawn, as an
        expired lease's would be). Callable from :meth:`VirtualNetwork.at`."""
        scope = self._scopes[index]
        if scope is None:
            raise LookupError(f"worker {index} is not running")
        self.network.reset(self.hosts[index])
        scope.cancel()
        self.workers[index] = None

    async def stop(self, index: int) -> None:
        """Close worker ``index`` gracefully (deregister, drain, then stop)."""
        await self.worker(index).aclose()

    @asynccontextmanager
    async def client(
        self, endpoint: str | None = None, *, host: str = "127.0.0.1", **options: Any
    ) -> AsyncIterator[EndpointClient]:
        """An endpoint client of this deployment's endpoint, on ``host`` (its calls
        dial from there and its response plane listens there), plain text."""
        from trioplane.endpoint import open_endpoint_client

        options.setdefault("tls", TcpTls())
        options.setdefault("response_host", host)
        with self.network.node(host):
            async with open_endpoint_client(
                endpoint or self.endpoint, self.discovery, **options
            ) as client:
                yield client


@asynccontextmanager
async def open_virtual_deployment(
    network: VirtualNetwork,
    handler: Handler | Mapping[str, Handler],
    *,
    workers: int = 2,
    endpoint: str = DEFAULT_ENDPOINT,
    **worker_options: Any,
) -> AsyncIterator[VirtualDeployment]:
    """Run ``workers`` workers serving ``handler`` at ``endpoint`` (or a mapping of
    endpoints to handlers) on ``network`` (entered already) for the block.

    ``worker_options`` go to :func:`~trioplane.open_worker` (plain text and no
    status server unless they say otherwise).
    """
    if workers < 1:
        raise BadArgument("a deployment needs at least one worker")
    handlers = handler if isinstance(handler, Mapping) else {endpoint: handler}
    deployment = VirtualDeployment(network, handlers, workers, worker_options)
    with collapse_groups():
        async with trio.open_nursery() as nursery:
            deployment._nursery = nursery
            for index in range(workers):
                await deployment.start(index)
            try:
                yield deployment
            finally:
                nursery.cancel_scope.cancel()
