"""Routing modes with one slow worker and three fast ones: latency percentiles per mode.

Four trioplane workers serve one endpoint in one process (in-memory discovery). Each
runs ``--capacity`` calls at a time (an engine with a few slots; more calls queue);
three take ``--fast`` ms a call, one takes ``--slow`` ms (a worker on a busy machine).
The same client load (``--calls`` calls from ``--concurrency`` tasks) runs with each
router mode in turn, for ``--rounds`` rounds; each mode reports its calls/s and the
p50, p90, p99 and max latency, medians over the rounds, and the p99 ratio against
round robin.

    python benchmarks/routing.py [--calls 2000] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trioplane
from trioplane.routing import ROUTER_MODES, RouterMode

ENDPOINT = "bench.route.generate"


def handler(delay: float, capacity: int) -> Any:
    slots = trio.CapacityLimiter(capacity)

    async def answer(request: Any, context: trioplane.RequestContext) -> AsyncIterator[Any]:
        async with slots:
            await trio.sleep(delay)
        yield request

    return answer


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(mode: RouterMode, discovery: Any, calls: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    async with trioplane.open_endpoint_client(ENDPOINT, discovery, router_mode=mode) as client:
        await client.wait_for_instances()
        left = calls

        async def caller() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                start = time.perf_counter()
                await client.call("x")
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(caller)
        took = time.perf_counter() - start
    return {
        "calls/s": calls / took,
        "p50": percentile(latencies, 0.50) * 1000,
        "p90": percentile(latencies, 0.90) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "max": max(latencies) * 1000,
    }


async def main(args: argparse.Namespace) -> None:
    discovery = trioplane.StaticDiscovery()
    delays = [args.slow / 1000] + [args.fast / 1000] * 3
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in ROUTER_MODES}
    async with trio.open_nursery() as nursery:
        for delay in delays:
            serve = functools.partial(trioplane.serve_endpoint, discovery=discovery)
            await nursery.start(serve, ENDPOINT, handler(delay, args.capacity))
        for _ in range(args.rounds):
            for mode in ROUTER_MODES:
                results[mode].append(await load(mode, discovery, args.calls, args.concurrency))
        nursery.cancel_scope.cancel()
    print(
        f"{args.calls} calls from {args.concurrency} tasks; workers run {args.capacity} calls at"
        f" a time, one taking {args.slow:g} ms a call, three {args.fast:g} ms"
        f" (medians of {args.rounds} rounds; latencies in ms)\n"
    )
    print(
        f"{'mode':<14}{'calls/s':>9}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}   p99 vs round robin"
    )
    base = statistics.median(r["p99"] for r in results["round_robin"])
    for name, rounds in results.items():
        m = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        print(
            f"{name:<14}{m['calls/s']:>9,.0f}{m['p50']:>8.1f}{m['p90']:>8.1f}{m['p99']:>8.1f}"
            f"{m['max']:>8.1f}   {base / m['p99']:.2f}x lower"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fast", type=float, default=20.0, help="ms")
    parser.add_argument("--slow", type=float, default=200.0, help="ms")
    parser.add_argument("--capacity", type=int, default=2, help="calls at a time per worker")
    trio.run(main, parser.parse_args())
