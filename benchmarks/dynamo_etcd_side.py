"""Dynamo's own Python client, measured for ``etcd_discovery.py``.

Runs under the Dynamo virtual environment's Python (asyncio, not trioplane's):

    python dynamo_etcd_side.py ENDPOINT

Watches the endpoint through etcd (``DYN_DISCOVERY_BACKEND=etcd``, ``ETCD_ENDPOINTS``),
prints ``watching``, then for each instance id read from stdin waits for it to
appear (polling every millisecond), calls it directly, and prints the wall-clock
time the call's stream ended.
"""

import asyncio
import sys
import time

from dynamo.runtime import DistributedRuntime


async def main() -> None:
    endpoint = sys.argv[1]
    loop = asyncio.get_running_loop()
    runtime = DistributedRuntime(loop, "etcd", "tcp")
    client = await runtime.endpoint(endpoint).client()
    print("watching", flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        instance_id = int(line)
        while instance_id not in client.instance_ids():  # noqa: ASYNC110
            await asyncio.sleep(0.001)  # as the trioplane side polls
        async for _ in await client.direct("ping", instance_id):
            pass
        print(time.time(), flush=True)
    runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
