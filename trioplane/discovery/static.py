"""A list of instances you give (and may change): for tests and fixed deployments.

It is a registry too: a worker registering in it adds its instances to the list,
and withdrawing removes them, so a worker and a client in one process find each
other with no file system or etcd (an in-memory discovery backend).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import trio

from trioplane._types import Instance
from trioplane.discovery._base import RegistrationStatistics, random_instance_id

__all__ = ["StaticDiscovery"]


class StaticDiscovery:
    """A fixed list of instances; :meth:`set` replaces it and notifies watchers."""

    def __init__(self, instances: Iterable[Instance] = ()) -> None:
        self._instances = list(instances)
        self._version = 0
        self._changed = trio.Event()

    def set(self, instances: Iterable[Instance]) -> None:
        """Replace the list (watchers see the new one)."""
        self._instances = list(instances)
        self._version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def instances(self) -> list[Instance]:
        await trio.lowlevel.checkpoint()
        return list(self._instances)

    async def changes(self) -> AsyncIterator[list[Instance]]:
        while True:
            changed = self._changed
            yield list(self._instances)
            await changed.wait()

    @asynccontextmanager
    async def open_registration(self) -> AsyncIterator[_StaticRegistration]:
        registration = _StaticRegistration(self)
        try:
            yield registration
        finally:
            await registration.withdraw()


class _StaticRegistration:
    def __init__(self, discovery: StaticDiscovery) -> None:
        self._discovery = discovery
        self._mine: list[Instance] = []

    async def new_instance_id(self) -> int:
        await trio.lowlevel.checkpoint()
        return random_instance_id()

    async def publish(self, instances: Sequence[Instance]) -> None:
        self._mine += instances
        self._discovery.set([*self._discovery._instances, *instances])
        await trio.lowlevel.checkpoint()

    async def withdraw(self) -> None:
        mine, self._mine = self._mine, []
        if mine:
            self._discovery.set(i for i in self._discovery._instances if i not in mine)
        with trio.CancelScope(shield=True):
            await trio.lowlevel.checkpoint()

    def statistics(self) -> RegistrationStatistics:
        return RegistrationStatistics(registered=bool(self._mine), records=len(self._mine))
