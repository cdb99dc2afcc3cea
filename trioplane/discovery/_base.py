"""What every discovery backend offers: the client's view, and the worker's records.

A backend is a :class:`Discovery` for the endpoint client (a snapshot, and the
full list again each time it changes) and, for the worker, opens a
:class:`Registration`: the instance ids, the records, keeping them alive, and
withdrawing them. No backend-specific code lives here.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import trio

from trioplane._types import Instance

__all__ = [
    "Discovery",
    "Registration",
    "RegistrationStatistics",
    "Registry",
    "random_instance_id",
    "registered",
]


@runtime_checkable
class Discovery(Protocol):
    """Where an endpoint client learns about instances."""

    async def instances(self) -> list[Instance]:
        """The instances known now (every endpoint's)."""
        ...

    def changes(self) -> AsyncIterator[list[Instance]]:
        """The current list, then the full list again each time it changes."""
        ...


@dataclass(frozen=True)
class RegistrationStatistics:
    """A snapshot of a worker's registration.

    ``registered``: every record is published (false before, after withdrawing,
    and while a lost etcd lease is being restored); ``losses``: how many times the
    backend lost the records (an etcd lease that expired while etcd was away) and
    they were published again; ``records``: records published.
    """

    registered: bool = False
    losses: int = 0
    records: int = 0


class Registration(Protocol):
    """A worker's records in one backend, while its ``open_registration`` block runs."""

    async def new_instance_id(self) -> int:
        """An id for a group of instances (etcd: a lease's id, as Dynamo's)."""
        ...

    async def publish(self, instances: Sequence[Instance]) -> None:
        """Make these instances discoverable (and keep them so)."""
        ...

    async def withdraw(self) -> None:
        """Remove every record now, so callers stop routing here (idempotent).

        Shielded and bounded: it completes even inside a cancelled scope.
        """
        ...

    def statistics(self) -> RegistrationStatistics: ...


@runtime_checkable
class Registry(Protocol):
    """A backend a worker can register in."""

    def open_registration(self) -> AbstractAsyncContextManager[Registration]:
        """Register for the duration of the block (records withdrawn on the way out)."""
        ...


def random_instance_id() -> int:
    """A 63-bit random id, as for backends that do not hand out ids."""
    return random.getrandbits(63)


R = TypeVar("R", bound=Registration)


@asynccontextmanager
async def registered(
    registration: R, keep_alive: Callable[[], Awaitable[None]]
) -> AsyncIterator[R]:
    """A backend's ``open_registration``: ``keep_alive`` runs for the block (a lease's
    keep-alive, a file's refresh); the records are withdrawn on the way out."""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_alive)
            yield registration
            nursery.cancel_scope.cancel()
    finally:
        await registration.withdraw()
