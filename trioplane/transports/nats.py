"""The NATS request plane, byte-compatible with Dynamo's.

An address is the instance's NATS subject (``{ns}_{comp}.{ep}-{id:x}``, as
discovery advertises it). The payload (Dynamo's TwoPart bytes) goes out as a
NATS request with the headers; the reply's payload is the ack (empty =
accepted). Nobody subscribed -> :class:`~trioplane.NoResponders`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from trioplane._errors import AckTimeout, ClientClosed, TrioplaneError
from trioplane._types import ClientStats, Instance, StatsRecorder
from trioplane._util import AsyncResource, collapse_groups
from trioplane.nats import NatsConnection, NatsOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["NatsClient", "open_nats_client", "start_nats_client"]


class NatsClient(AsyncResource):
    """A :class:`~trioplane.RequestPlaneClient` over one :class:`~trioplane.nats.NatsConnection`.

    ``request_timeout`` (NATS option, default 5 s) is the ack timeout:
    :class:`~trioplane.AckTimeout` when it passes.
    """

    transport_name = "nats"

    def __init__(self, connection: NatsConnection) -> None:
        self.connection = connection
        self._stats = StatsRecorder()
        self._closed = False

    async def send_request(
        self, address: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> bytes:
        """Send ``payload`` to the subject ``address``; the reply payload is the ack."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise ClientClosed("NATS client is closed")
        start = time.perf_counter()
        try:
            msg = await self.connection.request(address, payload, headers=headers)
        except trio.TooSlowError:
            self._stats.errors += 1
            raise AckTimeout(
                f"no reply on {address!r} within {self.connection.request_timeout:g} s"
            ) from None
        except TrioplaneError:
            self._stats.errors += 1
            raise
        finally:
            self._stats.requests_sent += 1
            self._stats.bytes_sent += len(payload)
        self._stats.responses_received += 1
        self._stats.bytes_received += len(msg.payload)
        self._stats.latency_total += time.perf_counter() - start
        self._stats.latency_count += 1
        return msg.payload

    def is_healthy(self) -> bool:
        return not self._closed and self.connection.is_healthy()

    def stats(self) -> ClientStats:
        up = 1 if self.connection.is_healthy() else 0
        in_flight = bool(self.connection._requests)
        return self._stats.snapshot(active=up if in_flight else 0, idle=0 if in_flight else up)

    def start_warmup(self, instance_updates: AsyncIterable[Sequence[Instance]]) -> None:
        """Nothing to warm: one connection to the NATS server serves every instance."""

    async def aclose(self) -> None:
        self._closed = True
        await self.connection.aclose()


async def start_nats_client(
    nursery: trio.Nursery,
    servers: str | Sequence[str] | None = None,
    **options: Unpack[NatsOptions],
) -> NatsClient:
    """Connect in ``nursery``; ``aclose`` the client yourself."""
    connection = NatsConnection(servers, **options)
    await nursery.start(connection.run)
    return NatsClient(connection)


@asynccontextmanager
async def open_nats_client(
    servers: str | Sequence[str] | None = None, **options: Unpack[NatsOptions]
) -> AsyncIterator[NatsClient]:
    """Open a NATS request-plane client (options: :class:`~trioplane.nats.NatsOptions`)."""
    with collapse_groups():
        async with trio.open_nursery() as nursery:
            client = await start_nats_client(nursery, servers, **options)
            try:
                yield client
            finally:
                await client.aclose()
