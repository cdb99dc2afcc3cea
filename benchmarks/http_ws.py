"""trioplane's HTTP and WebSocket clients vs the bare libraries they are built on.

Same servers, same run. The HTTP servers run in a process of their own, as a
real server would: trioplane's test worker (hypercorn's Trio server, HTTP/1.1
and h2c) for the ``h1``/``h2`` rows, a real Dynamo 1.2.1 worker's HTTP plane
(Rust, hyper) for the ``dyn-*`` rows. The WebSocket server (trio-websocket's)
runs in the client's process. Concurrency 1 and 64, bodies of 100 B and 1 MiB.
The baselines:

* HTTP: a bare ``httpx.AsyncClient`` posting the same bodies (same limits, same
  HTTP version, same content-type header);
* WebSocket: bare trio-websocket on one connection, requests pipelined with the
  least glue that works (a reader task handing acks back in FIFO order).

Each measurement runs in a fresh process (a process that has just pushed
1 MiB bodies is measurably slower at the next run, whichever client it was). A
round measures both clients back to back, in alternating order; the ratio
(trioplane / bare, 1.0 = no cost) is the median of the rounds' ratios, so that a
slow spell of this shared machine (runs of the same code differ by 15-20%) moves
both sides of a ratio alike. The req/s columns are medians too.

    python benchmarks/http_ws.py [--seconds 2] [--rounds 5] [--planes h1,h2,ws,dyn-h1,dyn-h2]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trioplane
from trioplane.testing.http import open_http_test_worker
from trioplane.testing.websocket import open_websocket_test_worker
from trioplane.wire.tcp import AckDecoder, encode_request_frame

#: The header trioplane sends with every request (the wire's), so bare httpx sends it too.
OCTETS = {"content-type": "application/octet-stream"}
SIZES = {"100 B": 100, "1 MiB": 1024 * 1024}
PLANES = {
    "h1": "http/1.1",
    "h2": "h2c",
    "ws": "websocket",
    "dyn-h1": "dyn http/1.1",
    "dyn-h2": "dyn h2c",
}
Send = Callable[[bytes], Awaitable[object]]
#: Per request, both clients: 64 bodies of 1 MiB share one h2 connection's window, and
#: on a slow spell of this machine one of them can wait longer than the default 5 s.
TIMEOUT = 30.0


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


@contextlib.asynccontextmanager
async def http_sender(h2: bool, impl: str, url: str) -> AsyncIterator[Send]:
    """A send function posting to ``url``."""
    async with contextlib.AsyncExitStack() as stack:
        if impl == "bare":
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
            bare = await stack.enter_async_context(
                httpx.AsyncClient(http1=not h2, http2=h2, limits=limits, timeout=TIMEOUT)
            )

            async def bare_send(data: bytes) -> object:
                response = await bare.post(url, content=data, headers=OCTETS)
                assert response.status_code == 202
                return response

            yield bare_send
            return
        client = await stack.enter_async_context(
            trioplane.open_http_client(
                http2=h2,
                max_keepalive_connections=100,
                max_body_size=2 * 1024 * 1024,
                ack_timeout=TIMEOUT,
            )
        )

        async def ours(data: bytes) -> object:
            return await client.send_request(url, data)

        yield ours


async def http_rate(
    h2: bool, impl: str, body: bytes, concurrency: int, seconds: float, url: str
) -> float:
    async with http_sender(h2, impl, url) as send:
        return await rate(send, body, concurrency, seconds)


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


async def ws_rate(impl: str, body: bytes, concurrency: int, seconds: float) -> float:
    async with open_websocket_test_worker() as worker:
        path = "0/bench/ws/generate"
        url = worker.address(path)
        if impl == "bare":
            async with trio.open_nursery() as nursery:
                ws = await trio_websocket.connect_websocket_url(
                    nursery, url, message_queue_size=64, max_message_size=8 * 1024 * 1024
                )
                bare = BarePipeline(ws)
                nursery.start_soon(bare.reader)
                result = await rate(
                    lambda data: bare.send(encode_request_frame(path, None, data)),
                    body,
                    concurrency,
                    seconds,
                )
                await ws.aclose()
                nursery.cancel_scope.cancel()
            return result
        async with trioplane.open_websocket_client(max_message_size=8 * 1024 * 1024) as client:

            async def ours(data: bytes) -> object:
                return await client.send_request(url, data)

            return await rate(ours, body, concurrency, seconds)


def measure(
    plane: str, impl: str, size: int, concurrency: int, seconds: float, url: str | None
) -> float:
    """One measurement in a fresh process, so neither side inherits the other's heap."""
    command = [sys.executable, __file__, "--one", plane, impl, str(size), str(concurrency)]
    command += ["--seconds", str(seconds)]
    if url is not None:
        command += ["--url", url]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{done.stderr}")
    return float(done.stdout)


def run_one(
    plane: str, impl: str, size: int, concurrency: int, seconds: float, url: str | None
) -> None:
    body = b"x" * size
    if plane == "ws":
        result = trio.run(ws_rate, impl, body, concurrency, seconds)
    else:
        assert url is not None, "an HTTP plane needs --url"
        h2 = plane.endswith("h2")
        result = trio.run(http_rate, h2, impl, body, concurrency, seconds, url)
    print(result)


async def serve_http() -> None:
    """Run trioplane's HTTP test worker until killed; print its URL when it listens."""
    async with open_http_test_worker(max_body_size=2 * 1024 * 1024, keep_received=False) as worker:
        print(worker.url("generate"), flush=True)
        await trio.sleep_forever()


@contextlib.contextmanager
def hypercorn_http_worker() -> Iterator[str]:
    """trioplane's HTTP test worker (hypercorn) in its own process; yields its URL."""
    command = [sys.executable, __file__, "--serve-http"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url:
            raise RuntimeError(f"the HTTP test worker exited with {process.wait()}")
        yield url
    finally:
        process.terminate()
        process.wait()


@contextlib.contextmanager
def dynamo_http_worker() -> Iterator[str]:
    """A real Dynamo 1.2.1 worker on its HTTP plane (its own process); yields its URL."""
    from tests.dynamo import run_dynamo_worker

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_dynamo_worker(
            Path(tmp),
            ["bench.http.generate"],
            version="1.2.1",
            DYN_REQUEST_PLANE="http",
            DYN_HTTP_RPC_HOST="127.0.0.1",
            DYN_HTTP_RPC_PORT=str(port),
            DYN_LOG="error",  # it logs every body it cannot decode (all of ours) at warn
        ) as worker,
    ):
        yield worker.instances["bench.http.generate"].address


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--planes", default=",".join(PLANES), help="a comma-separated subset")
    parser.add_argument("--one", nargs=4, metavar=("PLANE", "IMPL", "SIZE", "CONC"))
    parser.add_argument("--url", help="with --one: the HTTP worker's URL")
    parser.add_argument("--serve-http", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_http:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(serve_http)
        return
    if args.one:
        plane, impl, size, concurrency = args.one
        run_one(plane, impl, int(size), int(concurrency), args.seconds, args.url)
        return
    print(
        f"medians of {args.rounds} rounds of {args.seconds:g} s each; ratio = trioplane / bare"
        " (its lowest and highest round in brackets)"
    )
    print(f"{'plane':<13}{'body':>7}{'conc':>6}{'bare req/s':>12}{'trioplane':>11}{'ratio':>7}")
    wanted = set(args.planes.split(","))
    if wanted - set(PLANES):
        parser.error(f"unknown planes {sorted(wanted - set(PLANES))}; known: {list(PLANES)}")
    with contextlib.ExitStack() as stack:
        urls: dict[str, str | None] = {"ws": None}
        if wanted & {"h1", "h2"}:
            urls["h1"] = urls["h2"] = stack.enter_context(hypercorn_http_worker())
        if wanted & {"dyn-h1", "dyn-h2"}:
            urls["dyn-h1"] = urls["dyn-h2"] = stack.enter_context(dynamo_http_worker())
        for plane in [plane for plane in PLANES if plane in wanted]:
            report(plane, PLANES[plane], urls[plane], args)


def report(plane: str, label: str, url: str | None, args: argparse.Namespace) -> None:
    for size_label, size in SIZES.items():
        for concurrency in (1, 64):
            rates: dict[str, list[float]] = {"bare": [], "ours": []}
            for round_ in range(args.rounds):
                order = ("bare", "ours") if round_ % 2 == 0 else ("ours", "bare")
                for impl in order:
                    rates[impl].append(measure(plane, impl, size, concurrency, args.seconds, url))
            ratios = [ours / bare for bare, ours in zip(rates["bare"], rates["ours"], strict=True)]
            bare, ours = statistics.median(rates["bare"]), statistics.median(rates["ours"])
            print(
                f"{label:<13}{size_label:>7}{concurrency:>6}{bare:>12,.0f}{ours:>11,.0f}"
                f"{statistics.median(ratios):>7.2f}  [{min(ratios):.2f}-{max(ratios):.2f}]",
                flush=True,
            )


if __name__ == "__main__":
    main()
