"""Endpoint-client calls/s against a worker: on the virtual network vs over loopback.

One process, one worker, one client, one item per call, calls one at a time and
``--concurrency`` at once. Reports calls/s (wall) and CPU time per call
(``time.process_time()``: the virtual network spends CPU, not syscalls), for
loopback sockets, the virtual network, and the virtual network logging every send
(``record_bytes=True``, the default in tests).

    python benchmarks/virtual_network.py [--seconds 2] [--rounds 3] [--concurrency 16]

Each case reports its best round (the machine is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import trio

import trioplane
from trioplane.testing import VirtualNetwork

ENDPOINT = "bench.virtual.generate"


async def one_item(request: Any, context: trioplane.RequestContext) -> AsyncIterator[Any]:
    yield request


async def measure(network: str, seconds: float, concurrency: int) -> tuple[float, float]:
    """(calls/s, CPU µs per call) for one round."""
    if network == "loopback":
        net: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()
    else:
        net = VirtualNetwork(record_bytes=network == "virtual+log")
    discovery = trioplane.StaticDiscovery()
    async with (
        net,
        trioplane.open_worker({ENDPOINT: one_item}, discovery=discovery, tls=trioplane.TcpTls()),
        trioplane.open_endpoint_client(ENDPOINT, discovery, tls=trioplane.TcpTls()) as client,
    ):
        await client.wait_for_instances()
        for _ in range(50):  # warm up: connections, caches
            await client.call({"x": 1})
        calls = 0
        wall, cpu = time.perf_counter(), time.process_time()
        deadline = wall + seconds

        async def caller() -> None:
            nonlocal calls
            while time.perf_counter() < deadline:
                await client.call({"x": 1})
                calls += 1

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(caller)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return calls / wall, cpu / calls * 1e6


async def main(seconds: float, rounds: int, concurrency: int) -> None:
    cases = ["loopback", "virtual", "virtual+log"]
    for width in (1, concurrency):
        best: dict[str, tuple[float, float]] = {}
        for _ in range(rounds):
            for case in cases:  # take turns
                rate, cpu = await measure(case, seconds, width)
                if case not in best or rate > best[case][0]:
                    best[case] = (rate, cpu)
        for case in cases:
            rate, cpu = best[case]
            print(f"concurrency {width:3}  {case:12} {rate:9.0f} calls/s  {cpu:7.1f} µs CPU/call")
        ratio = best["virtual"][0] / best["loopback"][0]
        print(f"concurrency {width:3}  virtual/loopback: {ratio:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    trio.run(main, args.seconds, args.rounds, args.concurrency)
