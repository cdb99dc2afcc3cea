"""TCP acks/s: trioplane's client vs a raw Trio socket sending the same frames.

Both talk to the trioplane test worker running in its own process, in the same
run, at concurrency 1 (one request at a time) and 64 (pipelined on one
connection). Prints acks/s and the ratio trioplane/raw.

    python benchmarks/tcp_acks.py [--seconds 3] [--rounds 3]

Each case reports its best round (the machine is shared: the best round is the
least disturbed one); raw and trioplane take turns.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Awaitable, Callable

import trio

import trioplane
from trioplane.wire.tcp import AckDecoder, encode_request_frame

PATH = "0/bench/worker/generate"
PAYLOAD = b"x" * 100
HEADERS = {"request-id": "00000000-0000-0000-0000-000000000000"}
FRAME = encode_request_frame(PATH, HEADERS, PAYLOAD)


def start_worker() -> tuple[subprocess.Popen[str], str, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "trioplane.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().split()
    if line[:1] != ["listening"]:
        process.kill()
        raise RuntimeError(f"worker did not start: {line}")
    host, _, port = line[1].rpartition(":")
    return process, host, int(port)


async def raw_serial(host: str, port: int, seconds: float) -> int:
    """One request at a time: write a frame, read its ack."""
    stream = await trio.open_tcp_stream(host, port)
    decoder = AckDecoder()
    count = 0
    deadline = trio.current_time() + seconds
    async with stream:
        while trio.current_time() < deadline:
            await stream.send_all(FRAME)
            while decoder.next_ack() is None:
                decoder.feed(await stream.receive_some(65536))
            count += 1
    return count


async def raw_pipelined(host: str, port: int, seconds: float, window: int) -> int:
    """``window`` requests outstanding; each read's acks are answered by as many frames."""
    stream = await trio.open_tcp_stream(host, port)
    decoder = AckDecoder()
    count = 0
    deadline = trio.current_time() + seconds
    async with stream:
        await stream.send_all(FRAME * window)
        outstanding = window
        while outstanding:
            decoder.feed(await stream.receive_some(65536))
            got = sum(1 for _ in decoder.acks())
            count += got
            outstanding -= got
            if trio.current_time() < deadline and got:
                await stream.send_all(FRAME * got)
                outstanding += got
    return count


async def trioplane_run(host: str, port: int, seconds: float, concurrency: int) -> int:
    address = f"{host}:{port}/{PATH}"
    count = 0
    async with trioplane.open_tcp_client() as client:
        await client.send_request(address, PAYLOAD, HEADERS)  # connect outside the window
        deadline = trio.current_time() + seconds

        async def caller() -> None:
            nonlocal count
            while trio.current_time() < deadline:
                ack = await client.send_request(address, PAYLOAD, HEADERS)
                assert ack == b""
                count += 1

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(caller)
        stats = client.stats()
        assert stats.active_connections + stats.idle_connections == 1
    return count


def measure(run: Callable[..., Awaitable[int]], *args: object) -> float:
    """Acks/s of ``run``, which counts acks over a window of ``seconds`` after connecting."""
    seconds = args[2]
    assert isinstance(seconds, float)
    return trio.run(run, *args) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="raw and trioplane alternate")
    args = parser.parse_args()
    seconds = args.seconds
    process, host, port = start_worker()
    try:
        print(f"best of {args.rounds} alternating rounds of {seconds:g} s")
        print(f"{'concurrency':>11} {'raw acks/s':>12} {'trioplane acks/s':>17} {'ratio':>6}")
        for concurrency in (1, 64):
            raw, ours = 0.0, 0.0
            for _ in range(args.rounds):
                if concurrency == 1:
                    raw = max(raw, measure(raw_serial, host, port, seconds))
                else:
                    raw = max(raw, measure(raw_pipelined, host, port, seconds, concurrency))
                ours = max(ours, measure(trioplane_run, host, port, seconds, concurrency))
            print(f"{concurrency:>11} {raw:>12,.0f} {ours:>17,.0f} {ours / raw:>6.2f}")
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
