"""A real Dynamo worker for trioplane's interop tests.

Runs under the Dynamo virtual environment's Python (not trioplane's): serves the
endpoints named on the command line with an echo handler, file discovery.
"""

import asyncio
import sys

from dynamo.runtime import DistributedRuntime


async def echo(request, context):  # type: ignore[no-untyped-def]
    yield {"echo": request}


async def main() -> None:
    loop = asyncio.get_running_loop()
    runtime = DistributedRuntime(loop, "file", "tcp")
    endpoints = [runtime.endpoint(name) for name in sys.argv[1:]]
    print("serving", flush=True)
    await asyncio.gather(*(endpoint.serve_endpoint(echo) for endpoint in endpoints))


if __name__ == "__main__":
    asyncio.run(main())
