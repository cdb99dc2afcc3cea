"""Small Trio helpers shared by every transport."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, Protocol, TypeVar

import trio

from trioplane._errors import BadArgumentType, ClientClosed, ConnectionLost, TrioplaneError

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "AsyncResource",
    "Latest",
    "check_options",
    "collapse_groups",
    "iter_causes",
    "iter_leaves",
    "reason",
    "running",
    "serving",
    "unwrap_group",
]


def iter_leaves(exc: BaseException) -> Iterator[BaseException]:
    """The non-group exceptions inside ``exc`` (or ``exc`` itself)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from iter_leaves(inner)
    else:
        yield exc


def iter_causes(exc: BaseException, limit: int = 8) -> Iterator[BaseException]:
    """``exc``, then what it was raised from (its cause, else its context), and so on:
    at most ``limit`` of them, so a long or looping chain ends."""
    seen: BaseException | None = exc
    for _ in range(limit):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def reason(exc: BaseException) -> str:
    """The first non-empty message along ``exc``'s causes (httpcore and trio often wrap
    an ``ssl`` or ``OSError`` message in an exception that has none)."""
    return next((str(e) for e in iter_causes(exc) if str(e)), repr(exc))


def unwrap_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a public call should raise for a nursery's group.

    A lone error is itself; a ``KeyboardInterrupt``-style error wins over others;
    only ``Cancelled`` means cancelled; several real errors become one
    :class:`TrioplaneError` chained from the group.
    """
    leaves = list(iter_leaves(group))
    real = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    if not real:
        return leaves[0]
    fatal = [e for e in real if not isinstance(e, Exception)]
    if fatal:
        return fatal[0]
    if len(real) == 1:
        return real[0]
    # A connection failing makes its callers fail too: their ConnectionLost or
    # ClientClosed is a consequence; the one other error is the cause.
    causes = [e for e in real if not isinstance(e, (ConnectionLost, ClientClosed))]
    if len(causes) == 1 and all(isinstance(e, TrioplaneError) for e in real):
        return causes[0]
    summary = "; ".join(f"{type(e).__name__}: {e}" for e in real)
    error = TrioplaneError(f"{len(real)} concurrent errors: {summary}")
    error.__cause__ = group
    return error


@contextmanager
def collapse_groups() -> Iterator[None]:
    """Re-raise an exception group from a nursery as the plain exception it stands for."""
    try:
        yield
    except BaseExceptionGroup as group:
        exc = unwrap_group(group)
        raise exc from exc.__cause__


T = TypeVar("T")


class Latest(Generic[T]):
    """An async iterable of the latest value only: a slow reader skips stale ones.

    For instance lists fed to warm-ups: bounded by construction, never a queue.
    """

    def __init__(self) -> None:
        self._value: T | None = None
        self._changed = trio.Event()

    def set(self, value: T) -> None:
        self._value = value
        self._changed.set()

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            assert self._value is not None
            yield self._value


R = TypeVar("R", bound="AsyncResource")


class AsyncResource:
    """Base of the clients: ``async with`` returns the object and ends with :meth:`aclose`."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: R) -> R:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _Service(Protocol):
    async def run(self, *, task_status: Any = ...) -> None: ...

    async def aclose(self) -> None: ...


S = TypeVar("S", bound=_Service)


@asynccontextmanager
async def running(service: S) -> AsyncIterator[S]:
    """Run ``service.run`` in a nursery of its own for the block; ``aclose`` it on the way out.

    The ``open_*`` functions are this; a nursery's exception group comes out as the
    one exception it stands for.
    """
    with collapse_groups():
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            try:
                yield service
            finally:
                await service.aclose()


@asynccontextmanager
async def serving(serve: Callable[..., Awaitable[object]]) -> AsyncIterator[None]:
    """Run a server's ``serve`` (started: it listens) in a nursery of its own for the
    block; cancel it on the way out. The test workers' ``open_*`` functions are this."""
    with collapse_groups():
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()


def check_options(options: Mapping[str, object], known: type, what: str) -> None:
    """``TypeError`` naming any key of ``options`` that the TypedDict ``known`` lacks."""
    unknown = set(options) - set(known.__annotations__)
    if unknown:
        raise BadArgumentType(f"unknown {what} options: {', '.join(sorted(unknown))}")
