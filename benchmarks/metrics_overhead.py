"""What recording metrics costs the endpoint client: metrics on vs off, same run.

A trioplane worker runs in a process of its own; this process runs three endpoint
clients of it, one with ``metrics=Metrics(registry)`` and two without, and rotates
their order from round to round; the second one without metrics gives the noise
floor (an off/off ratio, measured the same way). Each round makes unary calls (one
task, then 16 concurrent tasks) and 20-item streams; the figure is this process's CPU time per
call (``time.process_time()``: the worker's CPU is not in it, and the noise of a
shared machine disturbs it far less than rates): the best of the rounds, and the
median of the rounds' on/off ratios (each round measures both, back to back). The
cost of the recording alone, and of one scrape, come last.

    python benchmarks/metrics_overhead.py [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry, generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from worker_vs_dynamo import ENDPOINT, trioplane_worker

import trioplane
from trioplane.endpoint import _Timing
from trioplane.metrics import CallerMetrics, Metrics

CASES = [("unary c=1", 1, 1), ("unary c=16", 1, 16), ("stream20 c=1", 20, 1)]


async def cpu_per_call(
    client: trioplane.EndpointClient, n: int, concurrency: int, calls: int
) -> float:
    """This process's CPU seconds per call for ``calls`` calls of ``n`` items."""
    per_task = calls // concurrency

    async def caller() -> None:
        for _ in range(per_task):
            async with client.generate({"n": n}) as items:
                async for _ in items:
                    pass

    start = time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    return (time.process_time() - start) / (per_task * concurrency)


async def main(kv: Path, calls: int, rounds: int) -> None:
    metrics = Metrics(CollectorRegistry())
    discovery = trioplane.FileDiscovery(kv)
    async with (
        trioplane.open_endpoint_client(ENDPOINT, discovery) as off,
        trioplane.open_endpoint_client(ENDPOINT, discovery) as off2,
        trioplane.open_endpoint_client(ENDPOINT, discovery, metrics=metrics) as on,
    ):
        for client in (off, off2, on):
            await client.wait_for_instances()
        ratios: dict[str, list[float]] = {name: [] for name, _, _ in CASES}
        noise: dict[str, list[float]] = {name: [] for name, _, _ in CASES}
        best: dict[tuple[str, str], float] = {}
        for round_ in range(rounds):
            for name, n, concurrency in CASES:
                costs = {}
                trio_ = [("off", off), ("on", on), ("off2", off2)]
                for label, client in trio_[round_ % 3 :] + trio_[: round_ % 3]:  # rotate order
                    await cpu_per_call(client, n, concurrency, calls // 10)  # warm
                    costs[label] = await cpu_per_call(client, n, concurrency, calls)
                    best[name, label] = min(best.get((name, label), math.inf), costs[label])
                ratios[name].append(costs["on"] / costs["off"])
                noise[name].append(costs["off2"] / costs["off"])
        scrape_start = time.process_time()
        text = generate_latest(metrics.registry)
        scrape_cost = time.process_time() - scrape_start
    print(
        f"{'case':<14} {'off µs/call':>12} {'on µs/call':>12} {'median on/off':>14}"
        f" {'median off/off (noise)':>23}"
    )
    for name, _, _ in CASES:
        cost_off, cost_on = best[name, "off"], best[name, "on"]
        ratio, aa = statistics.median(ratios[name]), statistics.median(noise[name])
        print(
            f"{name:<14} {cost_off * 1e6:>12.1f} {cost_on * 1e6:>12.1f} {ratio:>14.3f} {aa:>23.3f}"
        )
    print(f"recording alone: {recording_cost() * 1e6:.2f} µs CPU per call")
    print(f"one scrape: {scrape_cost * 1e3:.2f} ms CPU, {len(text):,} bytes")


def recording_cost(calls: int = 100_000) -> float:
    """CPU seconds per call of what a call records (three histogram samples, timing)."""
    samples = CallerMetrics()
    start = time.process_time()
    for _ in range(calls):
        timing = _Timing(time.perf_counter())
        timing.sending(samples)
        timing.sent_now(samples)
        samples.first_item.observe(time.perf_counter() - timing.sent)
    return (time.process_time() - start) / calls


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root, trioplane_worker(Path(root)):
        trio.run(main, Path(root), args.calls, args.rounds)
