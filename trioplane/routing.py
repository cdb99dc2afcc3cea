"""Which instance takes a call: the endpoint client's router (no I/O, no Trio).

Modes, for calls without an ``instance_id``:

* ``"round_robin"`` (Dynamo's default): each instance in turn;
* ``"random"``: any instance, uniformly;
* ``"least_loaded"``: the instance with the fewest calls in flight from this client
  (ties broken in turn);
* ``"power_of_two"``: two instances at random, the less loaded of the two (nearly
  as good as least-loaded, and it does not herd every client onto one instance).

An instance that answered ``Server overloaded: ...`` is avoided for
``overload_backoff`` seconds, and then tried again: the mark **expires** (Dynamo
1.6.1 keeps such marks until the instance list changes, so an idle worker can stay
shunned). When every instance is marked, the marks are ignored: a hint, never a
reason to fail.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from trioplane._checks import check_seconds
from trioplane._errors import BadArgument
from trioplane._types import Instance

__all__ = ["ROUTER_MODES", "Router", "RouterMode", "RouterStatistics"]

RouterMode = Literal["round_robin", "random", "least_loaded", "power_of_two"]
ROUTER_MODES: tuple[RouterMode, ...] = ("round_robin", "random", "least_loaded", "power_of_two")


@dataclass(frozen=True)
class RouterStatistics:
    """Calls in flight from this client, and the instances avoided now, by instance id."""

    in_flight: dict[int, int]
    avoided: tuple[int, ...]


class Router:
    """Picks instances, counts calls in flight, remembers overloaded instances.

    ``clock`` gives seconds (the endpoint client passes ``trio.current_time``).
    """

    def __init__(
        self,
        mode: RouterMode = "round_robin",
        *,
        overload_backoff: float = 1.0,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        if mode not in ROUTER_MODES:
            raise BadArgument(f"router_mode must be one of {ROUTER_MODES}, not {mode!r}")
        check_seconds(overload_backoff, "overload_backoff")
        self.mode = mode
        self.overload_backoff = overload_backoff
        self._clock = clock
        self._rng = rng or random.Random()
        self._turn = itertools.count()
        self._in_flight: dict[int, int] = {}
        self._avoid_until: dict[int, float] = {}

    def pick(self, candidates: Sequence[Instance]) -> Instance:
        """The instance for the next call (``candidates`` is not empty)."""
        if not candidates:
            raise ValueError("no candidates to pick from")
        now = self._clock()
        usable = [i for i in candidates if self._avoid_until.get(i.instance_id, 0.0) <= now]
        pool = usable or list(candidates)
        if self.mode == "random":
            return self._rng.choice(pool)
        if self.mode == "least_loaded":
            least = min(self.in_flight(i.instance_id) for i in pool)
            pool = [i for i in pool if self.in_flight(i.instance_id) == least]
        elif self.mode == "power_of_two":
            if len(pool) > 1:
                a, b = self._rng.sample(pool, 2)
                return a if self.in_flight(a.instance_id) <= self.in_flight(b.instance_id) else b
            return pool[0]
        return pool[next(self._turn) % len(pool)]

    def in_flight(self, instance_id: int) -> int:
        return self._in_flight.get(instance_id, 0)

    def started(self, instance_id: int) -> None:
        """A call to ``instance_id`` began (counted until :meth:`finished`)."""
        self._in_flight[instance_id] = self._in_flight.get(instance_id, 0) + 1

    def finished(self, instance_id: int) -> None:
        left = self._in_flight.get(instance_id, 0) - 1
        if left > 0:
            self._in_flight[instance_id] = left
        else:
            self._in_flight.pop(instance_id, None)

    def overloaded(self, instance_id: int) -> None:
        """``instance_id`` said it is overloaded: avoid it for ``overload_backoff`` s."""
        self._avoid_until[instance_id] = self._clock() + self.overload_backoff

    def forget(self, keep: set[int]) -> None:
        """Drop what is known of instances that are gone (their marks)."""
        for instance_id in list(self._avoid_until):
            if instance_id not in keep:
                del self._avoid_until[instance_id]

    def statistics(self) -> RouterStatistics:
        now = self._clock()
        avoided = tuple(sorted(i for i, until in self._avoid_until.items() if until > now))
        return RouterStatistics(dict(self._in_flight), avoided)
