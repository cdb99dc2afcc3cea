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

This shared machine is noisy: runs of the same code a minute apart differ by
15-20%. So both clients are measured in the same process, in turns (``--slices``
per client, in alternating order: bare, trioplane, trioplane, bare, ...), so that
a slow spell slows both alike; a process that has pushed 1 MiB bodies stays
slower for a while, which the turns share out too. Each round runs in a fresh
process; the ratio (trioplane / bare, 1.0 = no cost) is the median of the rounds'
ratios, the req/s columns medians too.

    python benchmarks/http_ws.py [--seconds 2] [--slices 4] [--rounds 5] [--planes h1,h2,...]
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

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

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
IMPLS = ("bare", "ours")
#: Per request, both clients: 64 bodies of 1 MiB share one h2 connection's window, and
#: on a slow spell of this machine one of them can wait longer than the default 5 s.
TIMEOUT = 30.0


async def count_for(send: Send, body: bytes, concurrency: int, seconds: float) -> tuple[int, float]:
    """``concurrency`` tasks calling ``send`` for ``seconds``: requests done, time taken."""
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
    return count, trio.current_time() - start


async def interleaved_rates(
    senders: dict[str, Send], body: bytes, concurrency: int, seconds: float, slices: int
) -> dict[str, float]:
    """Requests/s of each sender over ``seconds``, taken in ``slices`` turns in
    alternating order (A B, B A, ...), so that a slow spell slows both alike."""
    for send in senders.values():
        await send(body)  # connect and warm up outside the window
    done = dict.fromkeys(senders, 0)
    took = dict.fromkeys(senders, 0.0)
    names = list(senders)
    for turn in range(slices):
        for name in names if turn % 2 == 0 else names[::-1]:
            count, elapsed = await count_for(senders[name], body, concurrency, seconds / slices)
            done[name] += count
            took[name] += elapsed
    return {name: done[name] / took[name] for name in names}


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


@contextlib.asynccontextmanager
async def ws_sender(impl: str, url: str, path: str) -> AsyncIterator[Send]:
    """A send function for the WebSocket test worker at ``url``."""
    if impl == "bare":
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.connect_websocket_url(
                nursery, url, message_queue_size=64, max_message_size=8 * 1024 * 1024
            )
            pipeline = BarePipeline(ws)
            nursery.start_soon(pipeline.reader)
            yield lambda data: pipeline.send(encode_request_frame(path, None, data))
            await ws.aclose()
            nursery.cancel_scope.cancel()
        return
    async with trioplane.open_websocket_client(max_message_size=8 * 1024 * 1024) as client:

        async def ours(data: bytes) -> object:
            return await client.send_request(url, data)

        yield ours


class ClientFailed(Exception):
    """A request of one client failed: the round says which and ends."""

    def __init__(self, impl: str, error: Exception) -> None:
        super().__init__(f"{impl}: {error!r}")
        self.impl = impl


def failing_as(impl: str, send: Send) -> Send:
    async def call(data: bytes) -> object:
        try:
            return await send(data)
        except Exception as exc:
            raise ClientFailed(impl, exc) from exc

    return call


async def pair_rates(
    plane: str, body: bytes, concurrency: int, seconds: float, slices: int, url: str | None
) -> dict[str, float]:
    """Both clients' requests/s, in one process, interleaved (see :func:`interleaved_rates`)."""
    async with contextlib.AsyncExitStack() as stack:
        senders: dict[str, Send] = {}
        if plane == "ws":
            worker = await stack.enter_async_context(
                open_websocket_test_worker(keep_received=False)
            )
            path = "0/bench/ws/generate"
            for impl in IMPLS:
                senders[impl] = await stack.enter_async_context(
                    ws_sender(impl, worker.address(path), path)
                )
        else:
            assert url is not None, "an HTTP plane needs --url"
            for impl in IMPLS:
                senders[impl] = await stack.enter_async_context(
                    http_sender(plane.endswith("h2"), impl, url)
                )
        senders = {impl: failing_as(impl, send) for impl, send in senders.items()}
        return await interleaved_rates(senders, body, concurrency, seconds, slices)


def run_round(args: argparse.Namespace) -> None:
    """``--one``: print both clients' rates, or ``failed IMPL...`` (exit status 3)."""
    plane, size, concurrency = args.one
    body = b"x" * int(size)
    try:
        rates = trio.run(
            pair_rates, plane, body, int(concurrency), args.seconds, args.slices, args.url
        )
    except BaseException as exc:
        failures = set()
        stack: list[BaseException] = [exc]
        seen: set[int] = set()
        while stack:  # through exception groups, causes and contexts
            error = stack.pop()
            if id(error) in seen:
                continue
            seen.add(id(error))
            if isinstance(error, ClientFailed):
                failures.add(error.impl)
                print(error, file=sys.stderr)
            elif isinstance(error, BaseExceptionGroup):
                stack.extend(error.exceptions)
            else:
                stack += [e for e in (error.__cause__, error.__context__) if e is not None]
        if not failures:
            raise
        print("failed", *sorted(failures))
        sys.exit(3)
    print(*(rates[impl] for impl in IMPLS))


def measure(
    plane: str, size: int, concurrency: int, args: argparse.Namespace, url: str | None
) -> dict[str, float] | None:
    """One round in a fresh process (a process that has pushed 1 MiB bodies stays slower);
    ``None`` if bare httpx failed (httpcore's h2 upload stall, see docs/http.rst)."""
    command = [sys.executable, __file__, "--one", plane, str(size), str(concurrency)]
    command += ["--seconds", str(args.seconds), "--slices", str(args.slices)]
    if url is not None:
        command += ["--url", url]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 3 and done.stdout.split() == ["failed", "bare"]:
        print(f"  (a round dropped: {done.stderr.strip().splitlines()[-1]})", flush=True)
        return None
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{done.stderr}")
    rates = [float(word) for word in done.stdout.split()]
    return dict(zip(IMPLS, rates, strict=True))


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
    parser.add_argument("--seconds", type=float, default=2.0, help="per client and round")
    parser.add_argument("--slices", type=int, default=4, help="turns per client and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--planes", default=",".join(PLANES), help="a comma-separated subset")
    parser.add_argument("--one", nargs=3, metavar=("PLANE", "SIZE", "CONC"), help="one round")
    parser.add_argument("--url", help="with --one: the HTTP worker's URL")
    parser.add_argument("--serve-http", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_http:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(serve_http)
        return
    if args.one:
        run_round(args)
        return
    print(
        f"{args.rounds} rounds, each in a fresh process: {args.seconds:g} s per client in"
        f" {args.slices} alternating turns. Medians; ratio = trioplane / bare (its lowest and"
        " highest round in brackets)"
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
            rates: dict[str, list[float]] = {impl: [] for impl in IMPLS}
            for _ in range(args.rounds):
                measured = measure(plane, size, concurrency, args, url)
                for impl, value in (measured or {}).items():
                    rates[impl].append(value)
            ratios = [ours / bare for bare, ours in zip(rates["bare"], rates["ours"], strict=True)]
            bare, ours = statistics.median(rates["bare"]), statistics.median(rates["ours"])
            print(
                f"{label:<13}{size_label:>7}{concurrency:>6}{bare:>12,.0f}{ours:>11,.0f}"
                f"{statistics.median(ratios):>7.2f}  [{min(ratios):.2f}-{max(ratios):.2f}]",
                flush=True,
            )


if __name__ == "__main__":
    main()
