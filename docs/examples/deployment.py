"""A worker and a client that find each other as Dynamo processes do.

Run it with etcd on localhost:2379 (Dynamo's default), or set ETCD_ENDPOINTS, or
DYN_DISCOVERY_BACKEND=file to share a folder instead.
"""

from collections.abc import AsyncIterator
from typing import Any

import trio

import trioplane


async def generate(request: Any, context: trioplane.RequestContext) -> AsyncIterator[Any]:
    yield {"echo": request}


async def main() -> None:
    # Both read DYN_DISCOVERY_BACKEND, ETCD_*, DYN_FILE_KV, DYN_TCP_TLS_*, NATS_SERVER.
    async with (
        trioplane.open_worker({"dynamo.echo.generate": generate}),
        trioplane.open_endpoint_client("dynamo.echo.generate") as client,
    ):
        with trio.fail_after(10):
            await client.wait_for_instances()
        print(await client.call("hello"))


if __name__ == "__main__":
    trio.run(main)
