"""trioplane's endpoint client vs Dynamo's own Python client, on one real worker.

Starts a real Dynamo 1.6.1 worker (file discovery, TCP plane; its virtual
environment is created once and cached, see ``tests/dynamo``), then in the same
run measures unary requests at concurrency 1 and 16 and streams of 100 items at
concurrency 1 and 8, first with trioplane, then with Dynamo's client (in the
worker's environment). Prints req/s, items/s, p50/p99 latency and the ratios.

For the one-at-a-time cases it also measures a *floor*: a minimal client on
blocking sockets (no framework, no checks beyond decoding) doing the same calls.
At concurrency 1 nothing runs while a call waits, so no client can beat the
floor by much: it shows what the worker itself allows.

    python benchmarks/endpoint_vs_dynamo.py [--seconds 3] [--rounds 3]

The clients take turns, round after round, and each case reports its best
round: the machine is shared, so the best round is the least disturbed one.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_clock import process_cpu_seconds

import trioplane
from tests.dynamo import dynamo_python, run_dynamo_worker, worker_env
from trioplane.wire import (
    MSGPACK,
    AckDecoder,
    CallHomeInfo,
    ControlMessage,
    encode_request_frame,
    encode_request_payload,
)
from trioplane.wire.response import ResponseStreamDecoder

ENDPOINT = "bench.stream.generate"
#: (name, items per request, concurrency)
CASES = [("unary c=1", 1, 1), ("unary c=16", 1, 16), ("stream100 c=1", 100, 1),
         ("stream100 c=8", 100, 8)]  # fmt: skip


@dataclass
class Result:
    requests: int
    items: int
    seconds: float
    latencies: list[float]
    #: The client process's CPU time (``time.process_time()``) over the measurement.
    cpu_seconds: float = 0.0
    #: The worker process's CPU time over the measurement, when its pid was given.
    worker_cpu_seconds: float | None = None

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds

    def percentile(self, q: int) -> float:
        """Latency percentile in ms."""
        return statistics.quantiles(self.latencies, n=100)[q - 1] * 1000

    @property
    def cpu_ms_per_request(self) -> float:
        """The client's CPU time per call, in ms: steadier than rates on a shared machine."""
        return self.cpu_seconds / self.requests * 1000


async def measure(
    client: trioplane.EndpointClient,
    n: int,
    concurrency: int,
    seconds: float,
    worker_pid: int | None = None,
) -> Result:
    """``concurrency`` callers of ``n`` items each, for ``seconds``; with ``worker_pid``,
    the worker process's CPU time over it too."""
    latencies: list[float] = []
    items = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal items
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            async with client.generate({"op": "count", "n": n}) as responses:
                async for _ in responses:
                    items += 1
            latencies.append(time.perf_counter() - start)

    worker = WorkerCpu(worker_pid)
    start, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Result(len(latencies), items, elapsed, latencies, cpu, worker.spent())


class WorkerCpu:
    """The CPU time a worker process (``pid``; None: not measured) spends from now on."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.start = None if pid is None else process_cpu_seconds(pid)

    def spent(self) -> float | None:
        if self.pid is None or self.start is None:
            return None
        return process_cpu_seconds(self.pid) - self.start


async def trioplane_side(
    kv: Path,
    seconds: float,
    cases: list[tuple[str, int, int]] = CASES,
    worker_pid: int | None = None,
) -> dict[str, Result]:
    """trioplane's endpoint client, in this process (``worker_pid``: see :func:`measure`)."""
    results = {}
    async with trioplane.open_endpoint_client(ENDPOINT, kv) as client:
        await client.wait_for_instances()
        for name, n, concurrency in cases:
            await measure(client, n, concurrency, 0.5)  # warm up
            results[name] = await measure(client, n, concurrency, seconds, worker_pid)
    return results


def floor_side(
    instance: trioplane.Instance,
    seconds: float,
    cases: list[tuple[str, int, int]] = CASES,
    worker_pid: int | None = None,
) -> dict[str, Result]:
    """The minimal blocking client, for the concurrency-1 cases."""
    host_port, _, path = instance.address.partition("/")
    host, _, port = host_port.rpartition(":")
    results = {}
    with (
        socket.create_connection((host, int(port))) as plane,
        socket.create_server(("127.0.0.1", 0)) as listener,
    ):
        plane.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        address = f"127.0.0.1:{listener.getsockname()[1]}"

        def call(body: bytes) -> int:
            request_id = str(uuid.uuid4())
            home = CallHomeInfo(address, request_id, request_id)
            control = ControlMessage(id=request_id, call_home=home, payload_codec="msgpack")
            payload = encode_request_payload(control, body)
            plane.sendall(encode_request_frame(path, {"request-id": request_id}, payload))
            acks = AckDecoder()
            while acks.next_ack() is None:
                acks.feed(plane.recv(65536))
            connection, _ = listener.accept()
            with connection:
                stream = ResponseStreamDecoder(MSGPACK)
                items = 0
                while not stream.ended:
                    event = stream.next_event()
                    if event is None:
                        stream.feed(connection.recv(65536))
                    items += type(event).__name__ == "Item"
            return items

        for name, n, concurrency in cases:
            if concurrency != 1:
                continue
            body = MSGPACK.encode({"op": "count", "n": n})
            latencies, items = [], 0
            worker = WorkerCpu(worker_pid)
            start, cpu = time.perf_counter(), time.process_time()
            while time.perf_counter() < start + seconds:
                began = time.perf_counter()
                items += call(body)
                latencies.append(time.perf_counter() - began)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            results[name] = Result(len(latencies), items, elapsed, latencies, cpu, worker.spent())
    return results


def dynamo_side(
    kv: Path,
    seconds: float,
    cases: list[tuple[str, int, int]] = CASES,
    worker_pid: int | None = None,
) -> dict[str, Result]:
    """Dynamo's own client, in a process of its own (``dynamo_client_side.py``, in
    Dynamo's venv), calling the worker found under ``kv``."""
    env = worker_env(kv)
    del env["DYN_TCP_RPC_PORT"]  # a client process must not bind the worker's port
    script = Path(__file__).with_name("dynamo_client_side.py")
    specs = [f"{name.split()[0]}:{n}:{c}" for name, n, c in cases]
    pid = [] if worker_pid is None else ["--worker-pid", str(worker_pid)]
    output = subprocess.run(
        [dynamo_python(), script, ENDPOINT, str(seconds), *specs, *pid],
        env=env, capture_output=True, text=True, check=True, timeout=600,
    ).stdout  # fmt: skip
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    fields = ("requests", "items", "seconds", "latencies", "cpu_seconds", "worker_cpu_seconds")
    return {
        name: Result(*(line.get(field) for field in fields))
        for (name, _, _), line in zip(cases, lines, strict=True)
    }


def best(rounds: list[dict[str, Result]]) -> dict[str, Result]:
    """Per case, the round with the most items/s (the least disturbed by the shared machine)."""
    return {
        name: max((r[name] for r in rounds), key=lambda result: result.items_per_s)
        for name in rounds[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="clients alternate each round")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Result]]] = {"trioplane": [], "dynamo": [], "floor": []}
    with tempfile.TemporaryDirectory() as tmp, run_dynamo_worker(Path(tmp), [ENDPOINT]) as worker:
        for _ in range(args.rounds):
            runs["trioplane"].append(trio.run(trioplane_side, Path(tmp), args.seconds))
            runs["dynamo"].append(dynamo_side(Path(tmp), args.seconds))
            runs["floor"].append(floor_side(worker.instances[ENDPOINT], args.seconds))
    ours, theirs, floor = best(runs["trioplane"]), best(runs["dynamo"]), best(runs["floor"])
    print(
        f"real Dynamo 1.6.1 worker, {os.cpu_count()} cores; best of {args.rounds} alternating "
        f"rounds of {args.seconds:g} s per case"
    )
    print(f"{'case':<15}{'client':<11}{'req/s':>9}{'items/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, _, _ in CASES:
        rows = [("trioplane", ours[name]), ("dynamo", theirs[name])]
        if name in floor:
            rows.append(("floor", floor[name]))
        for label, result in rows:
            print(
                f"{name:<15}{label:<11}{result.req_per_s:>9,.0f}{result.items_per_s:>10,.0f}"
                f"{result.percentile(50):>9.2f}{result.percentile(99):>9.2f}"
            )
        ratio = ours[name].items_per_s / theirs[name].items_per_s
        print(f"{name:<15}{'ratio':<11}{ratio:>9.2f}x  (trioplane / dynamo, items/s)")
        if name in floor:
            share = ours[name].items_per_s / floor[name].items_per_s
            print(f"{name:<15}{'of floor':<11}{share:>9.2f}x  (trioplane / floor)")


if __name__ == "__main__":
    main()
