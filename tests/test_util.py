"""Public calls raise one plain exception for a nursery's group."""

from __future__ import annotations

import sys

import pytest
import trio

from trioplane import TrioplaneError
from trioplane._util import collapse_groups, iter_causes, reason, unwrap_group

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup


def test_lone_error_is_itself() -> None:
    error = KeyError("k")
    assert unwrap_group(BaseExceptionGroup("g", [ExceptionGroup("inner", [error])])) is error


def test_fatal_error_wins() -> None:
    interrupt = KeyboardInterrupt()
    group = BaseExceptionGroup("g", [ValueError("v"), interrupt])
    assert unwrap_group(group) is interrupt


def test_several_errors_become_one_trioplane_error_chained_from_the_group() -> None:
    group = ExceptionGroup("g", [ValueError("a"), KeyError("b")])
    error = unwrap_group(group)
    assert isinstance(error, TrioplaneError)
    assert "2 concurrent errors" in str(error)
    assert error.__cause__ is group


async def test_collapse_groups_raises_the_plain_error_from_a_nursery() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"), collapse_groups():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail)


async def test_collapse_groups_lets_cancellation_through() -> None:
    with trio.move_on_after(0) as scope, collapse_groups():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep_forever()
    assert scope.cancelled_caught


def test_reason_is_the_first_message_along_the_causes() -> None:
    inner = OSError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    outer = RuntimeError()  # no message of its own, as trio's BrokenResourceError
    outer.__cause__ = inner
    assert list(iter_causes(outer)) == [outer, inner]
    assert reason(outer) == str(inner)
    assert reason(RuntimeError()) == "RuntimeError()"


def test_iter_causes_ends_on_a_looping_chain() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__cause__, second.__cause__ = second, first
    assert list(iter_causes(first, limit=5)) == [first, second, first, second, first]
