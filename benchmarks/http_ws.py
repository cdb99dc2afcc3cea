"""trioplane's HTTP and WebSocket clients vs the bare libraries they are built on.

Same servers, same run: the trioplane test workers (hypercorn for HTTP, serving
HTTP/1.1 and h2c; trio-websocket's server for WebSocket). Concurrency 1 and 64,
bodies of 100 B and 1 MiB. The baselines:

* HTTP: a bare ``httpx.AsyncClient`` posting the same bodies (same limits, same
  HTTP version);
* WebSocket: bare trio-websocket on one connection, requests pipelined with the
  least glue that works (a reader task handing acks back in FIFO order).

Each case reports its best of ``--rounds`` alternating rounds; the ratio is
trioplane / bare (1.0 = no cost).

    python benchmarks/http_ws.py [--seconds 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trioplane
from trioplane.testing.http import open_http_test_worker
from trioplane.testing.websocket import open_websocket_test_worker
from trioplane.wire.tcp import AckDecoder, encode_request_frame

SIZES = {"100 B": 100, "1 MiB": 1024 * 1024}
Send = Callable[[bytes], Awaitable[object]]


async def rate(send: Send, body: bytes, concurrency: int, seconds: float) -> float:
    """Requests/s with ``concurrency`` tasks calling ``send`` for ``seconds``."""
    await send(body)  # connect and warm up outside the window
    count = 0
    deadline = trio.current_time() + seconds

    async def caller() -> None:
        nonlocal count
        while trio.current_time() < deadline:
            await send(body)
            count += 1

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    return count / (trio.current_time() - start)


async def http_case(h2: bool, body: bytes, concurrency: int, seconds: float) -> tuple[float, float]:
    async with open_http_test_worker(max_body_size=2 * 1024 * 1024) as worker:
        url = worker.url("generate")
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(http1=not h2, http2=h2, limits=limits) as bare:

            async def bare_send(data: bytes) -> object:
                response = await bare.post(url, content=data)
                assert response.status_code == 202
                return response

            bare_rate = await rate(bare_send, body, concurrency, seconds)
        async with trioplane.open_http_client(
            http2=h2, max_keepalive_connections=100, max_body_size=2 * 1024 * 1024
        ) as client:

            async def ours(data: bytes) -> object:
                return await client.send_request(url, data)

            our_rate = await rate(ours, body, concurrency, seconds)
    return bare_rate, our_rate


class BarePipeline:
    """Bare trio-websocket, pipelined: one reader hands acks back in request order."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.waiting: deque[trio.Event] = deque()

    async def reader(self) -> None:
        while True:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            decoder = AckDecoder()
            decoder.feed(message)  # type: ignore[arg-type]
            assert decoder.next_ack() is not None
            self.waiting.popleft().set()

    async def send(self, frame: bytes) -> object:
        done = trio.Event()
        self.waiting.append(done)
        await self.ws.send_message(frame)
        await done.wait()
        return None


async def ws_case(body: bytes, concurrency: int, seconds: float) -> tuple[float, float]:
    async with open_websocket_test_worker() as worker:
        url = worker.address("0/bench/ws/generate")
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.connect_websocket_url(
                nursery, url, message_queue_size=64, max_message_size=8 * 1024 * 1024
            )
            bare = BarePipeline(ws)
            nursery.start_soon(bare.reader)
            path = "0/bench/ws/generate"
            bare_rate = await rate(
                lambda data: bare.send(encode_request_frame(path, None, data)),
                body,
                concurrency,
                seconds,
            )
            await ws.aclose()
            nursery.cancel_scope.cancel()
        async with trioplane.open_websocket_client(max_message_size=8 * 1024 * 1024) as client:

            async def ours(data: bytes) -> object:
                return await client.send_request(url, data)

            our_rate = await rate(ours, body, concurrency, seconds)
    return bare_rate, our_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"best of {args.rounds} rounds of {args.seconds:g} s; ratio = trioplane / bare")
    print(f"{'plane':<10}{'body':>7}{'conc':>6}{'bare req/s':>12}{'trioplane':>11}{'ratio':>7}")
    planes = [("http/1.1", "h1"), ("h2c", "h2"), ("websocket", "ws")]
    for label, plane in planes:
        for size_label, size in SIZES.items():
            body = b"x" * size
            for concurrency in (1, 64):
                bare = ours = 0.0
                for _ in range(args.rounds):
                    if plane == "ws":
                        b, o = trio.run(ws_case, body, concurrency, args.seconds)
                    else:
                        b, o = trio.run(http_case, plane == "h2", body, concurrency, args.seconds)
                    bare, ours = max(bare, b), max(ours, o)
                print(
                    f"{label:<10}{size_label:>7}{concurrency:>6}{bare:>12,.0f}{ours:>11,.0f}"
                    f"{ours / bare:>7.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
