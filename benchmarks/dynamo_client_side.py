"""Dynamo's own Python client, measured for ``endpoint_vs_dynamo.py``.

Runs under the Dynamo virtual environment's Python (asyncio, not trioplane's):

    python dynamo_client_side.py ENDPOINT SECONDS CASE...

where each CASE is ``name:op_n:concurrency`` (e.g. ``unary:1:16``). Prints one
JSON line per case: requests, items, seconds, per-request latencies and the
process's CPU seconds (``time.process_time()``: every thread, Dynamo's runtime's too).
"""

import asyncio
import json
import sys
import time
from typing import Any

from dynamo.runtime import DistributedRuntime


async def measure(client: Any, n: int, concurrency: int, seconds: float) -> dict[str, Any]:
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

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return {"requests": len(latencies), "items": items,
            "seconds": time.perf_counter() - start, "latencies": latencies,
            "cpu_seconds": time.process_time() - cpu}  # fmt: skip


async def main() -> None:
    endpoint, seconds, *cases = sys.argv[1:]
    loop = asyncio.get_running_loop()
    runtime = DistributedRuntime(loop, "file", "tcp")
    client = await runtime.endpoint(endpoint).client()
    await client.wait_for_instances()
    for case in cases:
        name, n, concurrency = case.split(":")
        await measure(client, int(n), int(concurrency), 0.5)  # warm up
        result = await measure(client, int(n), int(concurrency), float(seconds))
        print(json.dumps({"case": name, **result}), flush=True)
    runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
