"""Quickstart: send requests over Dynamo's TCP request plane to an in-process test worker."""

from __future__ import annotations

import trio

import trioplane
from trioplane.testing import Reply, open_tcp_test_worker
from trioplane.wire import RequestFrame

# A Dynamo worker advertises HOST:PORT/PATH; the path goes back to it verbatim.
PATH = "1a2b/demo/backend/generate"


def overloaded(frame: RequestFrame) -> Reply:
    """Test-worker policy: reject every request, as a Dynamo worker does when full."""
    return Reply.reject("Server overloaded: worker at capacity")


async def send(client: trioplane.TcpClient, address: str, n: int) -> None:
    ack = await client.send_request(address, f"request {n}".encode())
    print(f"request {n}: ack={ack!r}")


async def main() -> None:
    async with (
        open_tcp_test_worker() as worker,
        trioplane.open_tcp_client(ack_timeout=2.0) as client,
    ):
        address = worker.address(PATH)

        # Accepted: the ack is empty.
        ack = await client.send_request(address, b"hello", {"request-id": "req-1"})
        print(f"accepted: ack={ack!r}")

        # Concurrent requests are pipelined on the pooled connection.
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(send, client, address, n)

        # Your own cancel scope bounds the whole call.
        with trio.fail_after(1.0):
            ack = await client.send_request(address, b"bounded")
        print(f"bounded: ack={ack!r}")

        # Rejected: a non-empty ack is the worker's reason.
        worker.policy = overloaded
        ack = await client.send_request(address, b"one more")
        print(f"rejected: ack={ack!r}")

        print(f"worker: {len(worker.received)} requests, {worker.connections_accepted} connection")
        print(client.stats())


if __name__ == "__main__":
    trio.run(main)
