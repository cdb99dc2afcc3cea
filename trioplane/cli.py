"""The ``trioplane`` command (also ``python -m trioplane``)."""

from __future__ import annotations

import argparse
import sys
import time

import trio

import trioplane
from trioplane.testing import Reply, open_tcp_test_worker
from trioplane.wire.tcp import RequestFrame


async def demo(requests: int, concurrency: int) -> None:
    """Send requests over TCP to an in-process test worker; print acks and stats."""

    def policy(frame: RequestFrame) -> Reply:
        if frame.path.endswith("/busy"):
            return Reply.reject("Server overloaded: worker at capacity")
        return Reply.accept()

    async with (
        open_tcp_test_worker(policy) as worker,
        trioplane.open_tcp_client() as client,
    ):
        print(f"test worker listening on {worker.host}:{worker.port}")
        address = worker.address("0/demo/worker/generate")
        ack = await client.send_request(address, b'{"hello":"dynamo"}', {"request-id": "demo-1"})
        print(f"send_request({address!r}) -> {ack!r} (empty = accepted)")
        busy = worker.address("0/demo/worker/busy")
        ack = await client.send_request(busy, b"{}")
        print(f"send_request({busy!r}) -> {ack!r}")

        sent = 0

        async def caller(n: int) -> None:
            nonlocal sent
            for _ in range(n):
                await client.send_request(address, b"x" * 100)
                sent += 1

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            per_caller, extra = divmod(requests, concurrency)
            for i in range(concurrency):
                nursery.start_soon(caller, per_caller + (i < extra))
        elapsed = time.perf_counter() - start
        print(
            f"{sent} pipelined requests from {concurrency} tasks in {elapsed:.2f} s "
            f"({sent / elapsed:,.0f} acks/s)"
        )
        stats = client.stats()
        print("client stats:")
        for name, value in vars(stats).items():
            print(f"  {name:<20} {value:>12,}")
        received, conns = len(worker.received), worker.connections_accepted
        print(f"worker received {received} requests on {conns} connection(s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trioplane", description=trioplane.__doc__)
    parser.add_argument("--version", action="version", version=trioplane.__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo", help="run the TCP request plane against an in-process test worker"
    )
    demo_parser.add_argument("--requests", type=int, default=20_000)
    demo_parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            if args.requests < 0 or args.concurrency < 1:
                parser.error("--requests must be >= 0 and --concurrency >= 1")
            trio.run(demo, args.requests, args.concurrency)
    except trioplane.TrioplaneError as exc:
        print(f"trioplane: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
