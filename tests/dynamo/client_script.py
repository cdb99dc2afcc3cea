"""Dynamo's own Python client, for trioplane's interop tests (runs in Dynamo's venv).

    python client_script.py ENDPOINT REQUEST_JSON [stop_after]

Streams one call from an endpoint found by file discovery and prints one JSON
line per item (``{"item": ...}``), then ``{"done": true}``, or ``{"error": "..."}``
if the stream raised. With ``stop_after`` it stops reading after that many items
(the Dynamo client then stops the call).
"""

import asyncio
import json
import os
import sys
from typing import Any

from dynamo.runtime import DistributedRuntime


def plain(item: Any) -> Any:
    data = getattr(item, "data", None)
    return data() if callable(data) else item


async def main() -> None:
    endpoint, request = sys.argv[1], json.loads(sys.argv[2])
    stop_after = int(sys.argv[3]) if len(sys.argv) > 3 else None
    loop = asyncio.get_running_loop()
    backend = os.environ.get("DYN_DISCOVERY_BACKEND", "file")
    runtime = DistributedRuntime(loop, backend, os.environ.get("DYN_REQUEST_PLANE", "tcp"))
    client = await runtime.endpoint(endpoint).client()
    await client.wait_for_instances()
    try:
        count = 0
        async for item in await client.round_robin(request):
            print(json.dumps({"item": plain(item)}), flush=True)
            count += 1
            if stop_after is not None and count >= stop_after:
                break
        print(json.dumps({"done": True}), flush=True)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
