"""trioplane's endpoint client vs Dynamo's own Python client, on one real worker.

Starts a real Dynamo 1.6.1 worker (file discovery, TCP plane; its virtual
environment is created once and cached, see ``tests/dynamo``), then in the same
run measures unary requests at concurrency 1 and 16 and streams of 100 items at
concurrency 1 and 8, first with trioplane, then with Dynamo's client (in the
worker's environment). Prints req/s, items/s, p50/p99 latency and the ratios.

    python benchmarks/endpoint_vs_dynamo.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trioplane
from tests.dynamo import dynamo_python, run_dynamo_worker, worker_env

ENDPOINT = "bench.stream.generate"
#: (name, items per request, concurrency)
CASES = [("unary c=1", 1, 1), ("unary c=16", 1, 16), ("stream100 c=1", 100, 1),
         ("stream100 c=8", 100, 8)]  # fmt: skip


@dataclass
class Result:
    requests: int
    items: int
    seconds: float
    latencies: list[float]

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds

    def percentile(self, q: int) -> float:
        """Latency percentile in ms."""
        return statistics.quantiles(self.latencies, n=100)[q - 1] * 1000


async def measure(
    client: trioplane.EndpointClient, n: int, concurrency: int, seconds: float
) -> Result:
    latencies: list[float] = []
    items = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal items
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            async with client.generate({"op": "count", "n": n}) as responses:
                async for _ in responses:
                    items += 1
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    return Result(len(latencies), items, time.perf_counter() - start, latencies)


async def trioplane_side(kv: Path, seconds: float) -> dict[str, Result]:
    results = {}
    async with trioplane.open_endpoint_client(ENDPOINT, kv) as client:
        await client.wait_for_instances()
        for name, n, concurrency in CASES:
            await measure(client, n, concurrency, 0.5)  # warm up
            results[name] = await measure(client, n, concurrency, seconds)
    return results


def dynamo_side(kv: Path, seconds: float) -> dict[str, Result]:
    env = worker_env(kv)
    del env["DYN_TCP_RPC_PORT"]  # a client process must not bind the worker's port
    script = Path(__file__).with_name("dynamo_client_side.py")
    cases = [f"{name.split()[0]}:{n}:{c}" for name, n, c in CASES]
    output = subprocess.run(
        [dynamo_python(), script, ENDPOINT, str(seconds), *cases],
        env=env, capture_output=True, text=True, check=True, timeout=600,
    ).stdout  # fmt: skip
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return {
        name: Result(line["requests"], line["items"], line["seconds"], line["latencies"])
        for (name, _, _), line in zip(CASES, lines, strict=True)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, run_dynamo_worker(Path(tmp), [ENDPOINT]):
        ours = trio.run(trioplane_side, Path(tmp), args.seconds)
        theirs = dynamo_side(Path(tmp), args.seconds)
    print(f"real Dynamo 1.6.1 worker, {args.seconds:g} s per case, {os.cpu_count()} cores")
    print(f"{'case':<15}{'client':<11}{'req/s':>9}{'items/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, _, _ in CASES:
        for label, result in (("trioplane", ours[name]), ("dynamo", theirs[name])):
            print(
                f"{name:<15}{label:<11}{result.req_per_s:>9,.0f}{result.items_per_s:>10,.0f}"
                f"{result.percentile(50):>9.2f}{result.percentile(99):>9.2f}"
            )
        ratio = ours[name].items_per_s / theirs[name].items_per_s
        print(f"{name:<15}{'ratio':<11}{ratio:>9.2f}x  (trioplane / dynamo, items/s)")


if __name__ == "__main__":
    main()
