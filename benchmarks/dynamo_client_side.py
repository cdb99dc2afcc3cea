"""Dynamo's own Python client, measured for ``endpoint_vs_dynamo.py``.

Runs under the Dynamo virtual environment's Python (asyncio, not trioplane's):

    python dynamo_client_side.py ENDPOINT SECONDS CASE... [--worker-pid PID]

where each CASE is ``name:op_n:concurrency`` (e.g. ``unary:1:16``). Prints one
JSON line per case: requests, items, seconds, per-request latencies and the
process's CPU seconds (``time.process_time()``: every thread, Dynamo's runtime's too);
with ``--worker-pid``, the worker process's CPU seconds over the measurement too.
"""

import argparse
import asyncio
import json
import time
from typing import Any

from cpu_clock import process_cpu_seconds
from dynamo.runtime import DistributedRuntime


async def measure(
    client: Any, n: int, concurrency: int, seconds: float, worker_pid: int | None = None
) -> dict[str, Any]:
    latencies: list[float] = []
    items = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal items
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            async for _ in await client.round_robin({"op": "count", "n": n}):
                items += 1
            latencies.append(time.perf_counter() - start)

    worker = None if worker_pid is None else process_cpu_seconds(worker_pid)
    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    result = {"requests": len(latencies), "items": items,
              "seconds": time.perf_counter() - start, "latencies": latencies,
              "cpu_seconds": time.process_time() - cpu}  # fmt: skip
    if worker_pid is not None and worker is not None:
        result["worker_cpu_seconds"] = process_cpu_seconds(worker_pid) - worker
    return result


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("seconds", type=float)
    parser.add_argument("cases", nargs="+", help="name:op_n:concurrency")
    parser.add_argument("--worker-pid", type=int, help="also measure this process's CPU")
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    runtime = DistributedRuntime(loop, "file", "tcp")
    client = await runtime.endpoint(args.endpoint).client()
    await client.wait_for_instances()
    for case in args.cases:
        name, n, concurrency = case.split(":")
        await measure(client, int(n), int(concurrency), 0.5)  # warm up
        result = await measure(client, int(n), int(concurrency), args.seconds, args.worker_pid)
        print(json.dumps({"case": name, **result}), flush=True)
    runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
