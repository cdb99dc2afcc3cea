"""Scale: 10,000 calls in flight from one client, and 1 MiB requests and items.

**Part 1, in flight.** A trioplane worker in a process of its own serves a handler
that holds each call open: ``{"op": "hold", "i": i}`` yields ``{"i": i, "phase":
"held"}``, waits for a ``{"op": "release"}`` call, then yields ``{"i": i, "phase":
"done"}`` and ends. One trioplane endpoint client starts N calls (``--calls``,
default 10,000), a task each, and waits until every one is acked and has its first
item: N calls in flight. It does so in passes (each in a fresh client process with a
fresh worker, so that memory one pass freed does not hide the next one's growth):
the N started at once, then started evenly over ``--ramp`` seconds (default
``0 20``), and with ``--tracemalloc`` once more, traced. Each pass reports:

* the time until all N were acked, and until all N had their first item; the CPU
  time the client and the worker spent meanwhile, and how much of it went to the
  cyclic garbage collector (and its longest pause);
* latencies, p50/p99/max: from a call's start (its task calling
  ``client.generate(...)``) to its ack (``async with client.generate(...)`` entered:
  the worker's accepting ack has arrived) and to its first item; and the ack latency
  of probe calls made one at a time (``--probes``) before, and while the N are held;
* memory per call in flight: VmRSS (``/proc/<pid>/status``) with N in flight minus
  before, divided by N, for the client process (one benchmark task per call
  included) and for the worker; traced, also the client's Python heap per call and
  where it goes;
* the file descriptors each process holds, and the kernel's listen-queue overflows
  meanwhile (``TcpExt: ListenOverflows``, for the whole network namespace);
* that every call then completes with exactly its own two items (failures by kind).

The limits N needs are raised and printed: RLIMIT_NOFILE's soft limit (up to the
hard one; the worker inherits it), the worker's ``max_concurrency`` (1024), the
endpoint client's TCP ``ack_timeout`` (5 s: the worker acks a burst in order, and
the last of 10,000 acks took longer). ``--gc-off`` runs part 1 with the cyclic GC
off in both processes, to show what it costs.

**Part 2, 1 MiB rows.** A real Dynamo 1.6.1 worker (its virtual environment is
created once and cached, see ``tests/dynamo``; TCP plane, file discovery) and a
trioplane worker serve ``{"op": "blob", "size": n}`` (one item carrying an n-byte
string) and ``{"op": "size", "blob": <n-byte string>}`` (an n-byte request; a small
item back); n is ``--size`` (1 MiB). trioplane's endpoint client and Dynamo's own
Python client (``DistributedRuntime``, ``client.round_robin``, in Dynamo's venv) call
the Dynamo worker, and the trioplane client calls the trioplane worker, in
interleaved rounds (``--rounds``, 5; the order rotates each round), each case
``--seconds`` per round after ``--warmup``, at each ``--concurrency`` (1 and 8).
Every call's items are checked. Reported per case: calls/s and the client's CPU
time per call (``time.process_time()`` of the client's process, every thread:
Dynamo's runtime threads too), the medians over the rounds; and the median (and
range) of the per-round ratios trioplane / Dynamo. The machine may be shared: CPU
per call is the steadier figure.

    python benchmarks/scale.py                      # both parts, about 3.5 minutes
    python benchmarks/scale.py --only inflight --calls 1000 --ramp 0 --tracemalloc
    python benchmarks/scale.py --only rows --rounds 7 --seconds 3 --concurrency 1 4
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trioplane
from tests.dynamo import dynamo_python, interrupt, run_dynamo_worker, worker_env
from trioplane.servers import ServerLimits
from trioplane.wire.tcp import DEFAULT_MAX_FRAME_SIZE
from trioplane.wire.twopart import DEFAULT_MAX_BODY_SIZE
from trioplane.worker import RequestContext, Worker, open_worker

ENDPOINT = "bench.scale.generate"
MIB = 1 << 20
#: Descriptors a process needs besides one per call in flight (listeners, pooled
#: request-plane connections, epoll, pipes, the interpreter's own files).
FD_MARGIN = 256
#: Calls on the worker besides the held ones (the probes, the release call).
CONCURRENCY_MARGIN = 64


# -- the trioplane worker (this file, run with --serve) ------------------------------------


class GcClock:
    """CPU time (of the collecting thread) spent in the cyclic garbage collector."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self.longest = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.thread_time()
        else:
            took = time.thread_time() - self._began
            self.seconds += took
            self.longest = max(self.longest, took)
            self.collections += 1


GC_CLOCK = GcClock()
gc.callbacks.append(GC_CLOCK)


class WorkerState:
    release = trio.Event()  # replaced in the worker's own trio.run
    worker: Worker | None = None
    blobs: dict[int, str] = {}  # noqa: RUF012


def blob(size: int) -> str:
    """An ASCII string of ``size`` bytes (made once per size)."""
    text = WorkerState.blobs.get(size)
    if text is None:
        text = WorkerState.blobs[size] = "x" * size
    return text


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` (every thread), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (KiB) and the descriptors held, from ``/proc``."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    found["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return found


async def handler(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    op = request.get("op")
    if op == "hold":
        release = WorkerState.release
        yield {"i": request["i"], "phase": "held"}
        await release.wait()
        yield {"i": request["i"], "phase": "done"}
    elif op == "release":
        status = process_status()  # before anything is let go
        WorkerState.release.set()
        WorkerState.release = trio.Event()  # for the next burst
        assert WorkerState.worker is not None
        stats = WorkerState.worker.statistics()
        yield {
            "gc_ms": round(GC_CLOCK.seconds * 1000),
            "longest_gc_ms": round(GC_CLOCK.longest * 1000),
            "calls_in_flight": stats.calls_in_flight,
            "calls_accepted": stats.calls_accepted,
            "calls_refused": stats.calls_refused,
            "call_home_failures": stats.call_home_failures,
            "handler_errors": stats.handler_errors,
            **status,
        }
    elif op == "status":
        yield {
            "gc_ms": round(GC_CLOCK.seconds * 1000),
            "longest_gc_ms": round(GC_CLOCK.longest * 1000),
            **process_status(),
        }
    elif op == "count":
        for i in range(request["n"]):
            yield {"i": i}
    elif op == "blob":
        yield {"blob": blob(request["size"])}
    elif op == "size":
        yield {"size": len(request["blob"])}
    else:
        raise ValueError(f"unknown op {op!r}")


async def serve(kv: str, max_concurrency: int) -> None:
    WorkerState.release = trio.Event()
    async with open_worker(
        {ENDPOINT: handler}, discovery_root=kv, max_concurrency=max_concurrency
    ) as worker:
        WorkerState.worker = worker
        print("serving", flush=True)
        await trio.sleep_forever()


@contextlib.contextmanager
def trioplane_worker(kv: Path, max_concurrency: int, gc_off: bool = False) -> Iterator[int]:
    """This file's worker in a process of its own, registered under ``kv``; its pid."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(kv), "--max-concurrency", str(max_concurrency),
         *(["--gc-off"] if gc_off else [])],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "serving"
        yield process.pid
    finally:
        interrupt(process, 30)


# -- Dynamo's worker and client (in Dynamo's venv) -------------------------------------------

DYNAMO_WORKER = """
import asyncio, contextlib, sys
from dynamo.runtime import DistributedRuntime

BLOBS = {}

async def handler(request, context):
    op = request.get("op")
    if op == "blob":
        size = request["size"]
        text = BLOBS.get(size)
        if text is None:
            text = BLOBS[size] = "x" * size
        yield {"blob": text}
    elif op == "size":
        yield {"size": len(request["blob"])}
    elif op == "count":
        for i in range(request["n"]):
            yield {"i": i}
    else:
        raise ValueError(f"unknown op {op!r}")

async def main():
    runtime = DistributedRuntime(asyncio.get_running_loop(), "file", "tcp")
    await runtime.endpoint(sys.argv[1]).serve_endpoint(handler)

with contextlib.suppress(KeyboardInterrupt):
    asyncio.run(main())
"""

DYNAMO_CLIENT = """
import asyncio, json, sys, time
from dynamo.runtime import DistributedRuntime

def plain(item):
    data = getattr(item, "data", None)
    return data() if callable(data) else item

def check(op, size, items):
    if op == "item":
        ok = len(items) == 1 and len(items[0]["blob"]) == size
    else:
        ok = items == [{"size": size}]
    if not ok:
        raise AssertionError(f"wrong items for {op} {size}: {str(items)[:200]}")

async def measure(client, op, size, request, concurrency, seconds):
    latencies = []
    deadline = time.perf_counter() + seconds

    async def caller():
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            items = [plain(item) async for item in await client.round_robin(request)]
            check(op, size, items)
            latencies.append(time.perf_counter() - start)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return {"calls": len(latencies), "seconds": time.perf_counter() - start,
            "cpu": time.process_time() - cpu, "latencies": latencies}

async def main():
    endpoint, seconds, warmup, cases = sys.argv[1:]
    seconds, warmup, cases = float(seconds), float(warmup), json.loads(cases)
    runtime = DistributedRuntime(asyncio.get_running_loop(), "file", "tcp")
    client = await runtime.endpoint(endpoint).client()
    await client.wait_for_instances()
    for name, op, size, concurrency in cases:
        if op == "item":
            request = {"op": "blob", "size": size}
        else:
            request = {"op": "size", "blob": "x" * size}
        await measure(client, op, size, request, concurrency, warmup)
        result = await measure(client, op, size, request, concurrency, seconds)
        print(json.dumps({"case": name, **result}), flush=True)
    runtime.shutdown()

asyncio.run(main())
"""


@contextlib.contextmanager
def dynamo_worker(kv: Path) -> Iterator[tuple[int, trioplane.Instance]]:
    """A real Dynamo 1.6.1 worker serving :data:`DYNAMO_WORKER`'s handler; its pid and
    instance."""
    with run_dynamo_worker(kv, [ENDPOINT], code=DYNAMO_WORKER) as worker:
        yield worker.process.pid, worker.instances[ENDPOINT]


# -- part 1: calls in flight ------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``, in ms."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1] * 1000


def listen_overflows() -> int:
    """The kernel's ``TcpExt: ListenOverflows`` (connections a full accept queue refused;
    counted for this network namespace: other jobs' too)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return 0


@dataclass
class InFlight:
    calls: int
    ack_seconds: float = math.nan  # until all acked
    held_seconds: float = math.nan  # until all had their first item
    done_seconds: float = math.nan  # from the release until all ended
    acks: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)  # call start -> first item
    probes_idle: list[float] = field(default_factory=list)
    probes_loaded: list[float] = field(default_factory=list)
    client_before: dict[str, int] = field(default_factory=dict)
    client_held: dict[str, int] = field(default_factory=dict)
    client_after: dict[str, int] = field(default_factory=dict)
    worker_before: dict[str, int] = field(default_factory=dict)
    worker_held: dict[str, int] = field(default_factory=dict)
    worker_after: dict[str, int] = field(default_factory=dict)
    worker_stats: dict[str, int] = field(default_factory=dict)
    client_stats: trioplane.EndpointStatistics | None = None
    traced_bytes: int | None = None
    top_sites: list[str] = field(default_factory=list)
    overflows: int = 0
    completed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    cpu_burst: float = 0.0
    gc_burst: float = 0.0
    gc_longest: float = 0.0
    worker_gc_burst: float = math.nan
    worker_cpu_burst: float = 0.0
    worker_drained_seconds: float = math.nan


async def probe(
    client: trioplane.EndpointClient, count: int, failures: Counter[str] | None = None
) -> list[float]:
    """Ack latencies of ``count`` small calls, one at a time; the first failure ends them
    (counted in ``failures``, or raised without)."""
    acks = []
    for _ in range(count):
        start = time.perf_counter()
        try:
            async with client.generate({"op": "count", "n": 1}) as stream:
                acked = time.perf_counter() - start
                items = [item async for item in stream]
        except Exception as exc:
            if failures is None:
                raise
            failures[f"probe: {type(exc).__name__}: {str(exc)[:120]}"] += 1
            break
        if items != [{"i": 0}]:
            raise AssertionError(f"a probe got {items}")
        acks.append(acked)
    return acks


async def worker_call(
    client: trioplane.EndpointClient, op: str, failures: Counter[str]
) -> dict[str, int]:
    """The one item of the worker's ``op`` call; ``{}`` (and a failure) if it fails
    within 10 s."""
    try:
        with trio.fail_after(10):
            (item,) = await client.call({"op": op})
    except Exception as exc:
        failures[f"{op} call: {type(exc).__name__}: {str(exc)[:120]}"] += 1
        return {}
    return dict(item)


@dataclass
class Setup:
    """One pass of part 1."""

    calls: int
    probes: int
    options: trioplane.EndpointClientOptions
    #: Seconds over which the calls are started (0: all at once).
    ramp: float = 0.0
    traced: bool = False
    #: Bound on the whole pass, s.
    bound: float = 300.0

    @property
    def label(self) -> str:
        how = f"started over {self.ramp:g} s" if self.ramp else "started at once"
        return f"{self.calls:,} calls {how}" + (", traced" if self.traced else "")


async def in_flight(kv: Path, worker_pid: int, setup: Setup) -> InFlight:
    calls, traced = setup.calls, setup.traced
    result = InFlight(calls)
    acks = [math.nan] * calls
    firsts = [math.nan] * calls
    counts = {"acked": 0, "held": 0, "settled": 0}
    all_acked, all_held, all_settled = trio.Event(), trio.Event(), trio.Event()

    def settle(stage: str) -> None:
        counts[stage] += 1
        if counts[stage] == calls:
            {"acked": all_acked, "held": all_held, "settled": all_settled}[stage].set()

    async def one(i: int) -> None:
        start = time.perf_counter()
        stages = ["acked", "held", "settled"]
        try:
            async with client.generate({"op": "hold", "i": i}) as stream:
                acks[i] = time.perf_counter() - start
                settle(stages.pop(0))
                first = await stream.__anext__()
                firsts[i] = time.perf_counter() - start
                settle(stages.pop(0))
                items = [first, *[item async for item in stream]]
        except Exception as exc:
            result.failures[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
        else:
            if items == [{"i": i, "phase": "held"}, {"i": i, "phase": "done"}]:
                result.completed += 1
            else:
                result.failures[f"wrong items, e.g. {items!r:.120}"] += 1
        for stage in stages:  # a failed call counts as past every stage it did not reach
            settle(stage)

    async with trioplane.open_endpoint_client(ENDPOINT, kv, **setup.options) as client:
        await client.wait_for_instances()
        await probe(client, 50)  # warm up
        result.probes_idle = await probe(client, setup.probes)
        gc.collect()
        result.client_before = process_status()
        result.worker_before = process_status(worker_pid)
        if traced:
            tracemalloc.start()
            traced_before = tracemalloc.take_snapshot()
        overflows = listen_overflows()
        with trio.fail_after(setup.bound):
            async with trio.open_nursery() as nursery:
                worker_gc = await worker_call(client, "status", result.failures)
                worker_cpu = cpu_seconds(worker_pid)
                gc_seconds, GC_CLOCK.longest = GC_CLOCK.seconds, 0.0
                begin, cpu = time.perf_counter(), time.process_time()
                for i in range(calls):
                    nursery.start_soon(one, i)
                    if setup.ramp:
                        await trio.sleep(max(0.0, begin + (i + 1) * setup.ramp / calls
                                             - time.perf_counter()))  # fmt: skip
                await all_acked.wait()
                result.ack_seconds = time.perf_counter() - begin
                await all_held.wait()
                result.held_seconds = time.perf_counter() - begin
                result.cpu_burst = time.process_time() - cpu
                result.worker_cpu_burst = cpu_seconds(worker_pid) - worker_cpu
                result.gc_burst = GC_CLOCK.seconds - gc_seconds
                result.gc_longest = GC_CLOCK.longest
                status = await worker_call(client, "status", result.failures)
                if "gc_ms" in status and "gc_ms" in worker_gc:
                    result.worker_gc_burst = (status["gc_ms"] - worker_gc["gc_ms"]) / 1000
                result.overflows = listen_overflows() - overflows
                gc.collect()
                if traced:
                    snapshot = tracemalloc.take_snapshot()
                    tracemalloc.stop()
                    diff = snapshot.compare_to(traced_before, "lineno")
                    result.traced_bytes = sum(stat.size_diff for stat in diff)
                    result.top_sites = [
                        f"{stat.size_diff / calls:8.0f} B/call  {stat.traceback}"
                        for stat in diff[:8]
                    ]
                result.client_held = process_status()
                result.worker_held = process_status(worker_pid)
                result.client_stats = client.statistics()
                if not traced:
                    result.probes_loaded = await probe(client, setup.probes, result.failures)
                release_start = time.perf_counter()
                result.worker_stats = await worker_call(client, "release", result.failures)
                if result.worker_stats:
                    await all_settled.wait()
                    result.done_seconds = time.perf_counter() - release_start
                else:  # nothing will release the calls: cancel them
                    nursery.cancel_scope.cancel()
        drained = time.perf_counter()
        for _ in range(300):  # the worker closes each call home once the caller has
            if process_status(worker_pid)["fds"] <= result.worker_before["fds"] + 16:
                result.worker_drained_seconds = time.perf_counter() - drained
                break
            await trio.sleep(0.1)
        gc.collect()
        result.client_after = process_status()
        result.worker_after = process_status(worker_pid)
    result.acks = [a for a in acks if not math.isnan(a)]
    result.firsts = [f for f in firsts if not math.isnan(f)]
    return result


def raise_nofile(needed: int) -> str:
    """Raise RLIMIT_NOFILE's soft limit towards ``needed`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return f"RLIMIT_NOFILE soft {soft} (hard {hard}): enough for {needed}, left as it is"
    new = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    line = f"RLIMIT_NOFILE soft {soft} -> {new} (hard {hard}), needed about {needed}"
    if new < needed:
        line += "  ** the hard limit is too low: calls will fail for lack of descriptors **"
    return line


def in_flight_part(args: argparse.Namespace) -> None:
    """Print the limits raised, then run each pass in a process of its own (with a worker
    of its own): memory a pass freed stays with its process and would hide the next
    pass's growth."""
    calls = args.calls
    print(f"== Part 1: {calls:,} calls in flight from one trioplane endpoint client ==")
    print("limits raised for this run:")
    print("  " + raise_nofile(calls + FD_MARGIN) + " (the worker process inherits it)")
    print(
        f"  worker max_concurrency 1024 -> {calls + CONCURRENCY_MARGIN} "
        "(open_worker(max_concurrency=...))"
    )
    for line in client_limits(args, {}):
        print("  " + line)
    passes = [["--ramp", str(ramp)] for ramp in args.ramp]
    if args.tracemalloc:
        passes.append(["--ramp", "0", "--tracemalloc"])
    common = ["--calls", str(calls), "--probes", str(args.probes), "--bound", str(args.bound),
              "--ack-timeout", str(args.ack_timeout)]  # fmt: skip
    if args.client_defaults:
        common.append("--client-defaults")
    if args.gc_off:
        common.append("--gc-off")
    for extra in passes:
        sys.stdout.flush()
        subprocess.run([sys.executable, __file__, "--one-pass", *common, *extra], check=True)


def one_pass(args: argparse.Namespace) -> None:
    """One pass of part 1 (``--one-pass``: the first ``--ramp``), with a worker of its own."""
    raise_nofile(args.calls + FD_MARGIN)
    options: trioplane.EndpointClientOptions = {}
    client_limits(args, options)
    setup = Setup(
        args.calls,
        0 if args.tracemalloc else args.probes,
        options,
        args.ramp[0],
        traced=args.tracemalloc,
        bound=args.bound,
    )
    max_concurrency = args.calls + CONCURRENCY_MARGIN
    if args.gc_off:
        gc.disable()
    with (
        tempfile.TemporaryDirectory() as tmp,
        trioplane_worker(Path(tmp), max_concurrency, args.gc_off) as pid,
    ):
        report_in_flight(setup, trio.run(in_flight, Path(tmp), pid, setup))


def client_limits(args: argparse.Namespace, options: trioplane.EndpointClientOptions) -> list[str]:
    """The endpoint client's options this run changes (``--client-defaults``: none)."""
    if args.client_defaults:
        return ["endpoint client: every option at its default (--client-defaults)"]
    options["tcp"] = {"ack_timeout": args.ack_timeout}
    return [
        f"endpoint client tcp ack_timeout 5 s -> {args.ack_timeout:g} s (open_endpoint_client("
        "tcp={'ack_timeout': ...})): the worker acks a burst in order, and the last of "
        "10,000 came after 9 s"
    ]


def status_value(stats: dict[str, int], key: str = "longest_gc_ms") -> str:
    return str(stats[key]) if key in stats else "?"


def report_in_flight(setup: Setup, result: InFlight) -> None:
    n = result.calls
    print(f"\n-- {setup.label} --")
    print(
        f"all acked {result.ack_seconds:.2f} s after the first started; all had their first "
        f"item at {result.held_seconds:.2f} s"
    )
    print(
        f"CPU until then: client {result.cpu_burst:.2f} s ({result.cpu_burst / n * 1e6:.0f} us "
        f"per call; {result.gc_burst:.2f} s in the cyclic GC), worker "
        f"{result.worker_cpu_burst:.2f} s ({result.worker_cpu_burst / n * 1e6:.0f} us per call; "
        f"{result.worker_gc_burst:.2f} s in the cyclic GC); the longest GC pause: client "
        f"{result.gc_longest * 1000:.0f} ms, worker {status_value(result.worker_stats)} ms"
    )
    if not setup.traced:
        print(f"{'latency, ms':<44}{'calls':>7}{'p50':>9}{'p99':>9}{'max':>9}")
        rows = [
            ("call start -> ack", result.acks),
            ("call start -> first item", result.firsts),
            ("probe call -> ack, 0 in flight", result.probes_idle),
            (f"probe call -> ack, {n:,} in flight", result.probes_loaded),
        ]
        for label, values in rows:
            print(
                f"{label:<44}{len(values):>7}{percentile(values, 50):>9.2f}"
                f"{percentile(values, 99):>9.2f}{percentile(values, 100):>9.2f}"
            )
    print(f"{'process':<10}{'RSS before':>12}{'RSS held':>12}{'per call':>11}"
          f"{'RSS after':>12}{'fds before':>12}{'fds held':>10}{'fds after':>11}")  # fmt: skip
    for label, before, held, after in (
        ("client", result.client_before, result.client_held, result.client_after),
        ("worker", result.worker_before, result.worker_held, result.worker_after),
    ):
        per_call = (held["VmRSS"] - before["VmRSS"]) * 1024 / n
        print(
            f"{label:<10}{before['VmRSS'] / 1024:>9.1f} MB{held['VmRSS'] / 1024:>9.1f} MB"
            f"{per_call:>9,.0f} B{after['VmRSS'] / 1024:>9.1f} MB"
            f"{before['fds']:>12,}{held['fds']:>10,}{after['fds']:>11,}"
        )
    if result.traced_bytes is not None:
        print(
            f"client Python heap (tracemalloc): {result.traced_bytes / n:,.0f} B per call in "
            "flight; the largest sites:"
        )
        for line in result.top_sites:
            print("  " + line)
    stats = result.client_stats
    if stats is not None:
        plane = stats.request_plane
        print(
            f"client with {n:,} held: calls_in_flight {stats.calls_in_flight:,}, call-home "
            f"connections {stats.response_plane.open_connections:,}, dropped "
            f"{stats.response_plane.dropped_connections}, request-plane connections "
            f"{(plane.active_connections + plane.idle_connections) if plane else 0}"
        )
        if stats.response_plane.last_drop:
            print(f"  the response plane's last drop: {stats.response_plane.last_drop}")
    print(f"worker at release: {result.worker_stats}")
    print(f"kernel ListenOverflows meanwhile: {result.overflows}")
    ok = result.completed == n
    print(
        f"completed correctly: {result.completed:,} of {n:,} ({'all' if ok else 'NOT all'}), "
        f"{result.done_seconds:.2f} s after the release; the worker's descriptors were back "
        f"down {result.worker_drained_seconds:.1f} s later"
    )
    for what, count in result.failures.most_common(10):
        print(f"  failed: {count:,} x {what}")


# -- part 2: 1 MiB rows -------------------------------------------------------------------------


@dataclass
class Row:
    calls: int
    seconds: float
    cpu: float
    latencies: list[float]

    @property
    def per_s(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.cpu / self.calls * 1000 if self.calls else math.nan


#: (name, op, size, concurrency); op "item" (a size-byte item) or "request" (a size-byte request)
Case = tuple[str, str, int, int]


def check(op: str, size: int, items: list[Any]) -> None:
    """The same check as Dynamo's client script makes."""
    if op == "item":
        ok = len(items) == 1 and len(items[0]["blob"]) == size
    else:
        ok = items == [{"size": size}]
    if not ok:
        raise AssertionError(f"wrong items for {op} {size}: {str(items)[:200]}")


def request_for(op: str, size: int) -> dict[str, Any]:
    return {"op": "blob", "size": size} if op == "item" else {"op": "size", "blob": "x" * size}


async def measure_row(
    client: trioplane.EndpointClient,
    op: str,
    size: int,
    request: Any,
    concurrency: int,
    seconds: float,
) -> Row:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            async with client.generate(request) as stream:
                items = [item async for item in stream]
            check(op, size, items)
            latencies.append(time.perf_counter() - start)

    start, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    return Row(len(latencies), time.perf_counter() - start, time.process_time() - cpu, latencies)


async def trioplane_rows(kv: Path, cases: list[Case], seconds: float, warmup: float) -> list[Row]:
    rows = []
    async with trioplane.open_endpoint_client(ENDPOINT, kv) as client:
        await client.wait_for_instances()
        for _, op, size, concurrency in cases:
            request = request_for(op, size)
            await measure_row(client, op, size, request, concurrency, warmup)
            rows.append(await measure_row(client, op, size, request, concurrency, seconds))
    return rows


def dynamo_rows(kv: Path, cases: list[Case], seconds: float, warmup: float) -> list[Row]:
    env = worker_env(kv)
    del env["DYN_TCP_RPC_PORT"]  # a client process must not bind the worker's port
    output = subprocess.run(
        [dynamo_python(), "-c", DYNAMO_CLIENT, ENDPOINT, str(seconds), str(warmup),
         json.dumps(cases)],
        env=env, capture_output=True, text=True, check=True, timeout=600,
    ).stdout  # fmt: skip
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert [line["case"] for line in lines] == [case[0] for case in cases], output[-2000:]
    return [Row(line["calls"], line["seconds"], line["cpu"], line["latencies"]) for line in lines]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def rows_part(args: argparse.Namespace) -> None:
    size = args.size
    label = f"{size / MIB:g} MiB" if size % MIB == 0 else f"{size:,} B"
    cases: list[Case] = [
        (f"{label} {what} c={c}", what, size, c)
        for what in ("item", "request")
        for c in args.concurrency
    ]
    print(f"\n== Part 2: {label} items and requests; {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s per case, {os.cpu_count()} cores ==")  # fmt: skip
    print(f"size limits (defaults): trioplane client request frame {DEFAULT_MAX_FRAME_SIZE // MIB} "
          f"MiB (tcp max_frame_size), item {DEFAULT_MAX_BODY_SIZE // MIB} MiB (max_item_size); "
          f"trioplane worker request frame {ServerLimits().max_frame_size // MIB} MiB "
          f"(max_frame_size); Dynamo 1.6.1 DYN_TCP_MAX_MESSAGE_SIZE 32 MiB")  # fmt: skip
    sides = ("trioplane", "dynamo", "trioplane->trioplane worker")
    runs: dict[str, list[list[Row]]] = {side: [] for side in sides}
    with (
        tempfile.TemporaryDirectory() as dyn_kv,
        tempfile.TemporaryDirectory() as our_kv,
        dynamo_worker(Path(dyn_kv)) as (_, instance),
        trioplane_worker(Path(our_kv), 1024),
    ):
        print(f"Dynamo worker's instance codec: {instance.request_plane_codec!r}")
        for r in range(args.rounds):
            order = sides[r % 3 :] + sides[: r % 3]
            for side in order:
                if side == "dynamo":
                    rows = dynamo_rows(Path(dyn_kv), cases, args.seconds, args.warmup)
                else:
                    kv = Path(dyn_kv if side == "trioplane" else our_kv)
                    rows = trio.run(trioplane_rows, kv, cases, args.seconds, args.warmup)
                runs[side].append(rows)
            print(f"  round {r + 1}/{args.rounds} done (order: {', '.join(order)})", flush=True)
    print(f"\n{'case':<22}{'client -> worker':<30}{'calls/s':>9}{'MB/s':>8}"
          f"{'CPU ms/call':>13}{'p50 ms':>9}")  # fmt: skip
    names = {"trioplane": "trioplane -> Dynamo", "dynamo": "Dynamo -> Dynamo",
             "trioplane->trioplane worker": "trioplane -> trioplane"}  # fmt: skip
    for k, (name, _, case_size, _) in enumerate(cases):
        for side in sides:
            rows = [run[k] for run in runs[side]]
            per_s = statistics.median(row.per_s for row in rows)
            cpu = statistics.median(row.cpu_ms for row in rows)
            p50 = statistics.median(percentile(row.latencies, 50) for row in rows)
            print(f"{name:<22}{names[side]:<30}{per_s:>9,.0f}{per_s * case_size / 1e6:>8,.0f}"
                  f"{cpu:>13.2f}{p50:>9.2f}")  # fmt: skip
        ours, theirs = [run[k] for run in runs["trioplane"]], [run[k] for run in runs["dynamo"]]
        rate = [a.per_s / b.per_s for a, b in zip(ours, theirs, strict=True)]
        cpu_ratio = [a.cpu_ms / b.cpu_ms for a, b in zip(ours, theirs, strict=True)]
        print(f"{name:<22}{'trioplane / Dynamo client':<30} calls/s {spread(rate)}, "
              f"CPU/call {spread(cpu_ratio)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("inflight", "rows"), help="run one part only")
    parser.add_argument("--calls", type=int, default=10_000, help="calls held in flight at once")
    parser.add_argument("--probes", type=int, default=200, help="probe calls, idle and loaded")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="one more pass, traced: the Python heap per call")  # fmt: skip
    parser.add_argument("--client-defaults", action="store_true",
                        help="leave the endpoint client's options at their defaults")  # fmt: skip
    parser.add_argument("--ramp", type=float, nargs="+", default=[0.0, 20.0],
                        help="seconds to start the calls over, a pass each (0: all)")  # fmt: skip
    parser.add_argument("--bound", type=float, default=300.0, help="bound on one pass, s")
    parser.add_argument("--ack-timeout", type=float, default=60.0,
                        help="the endpoint client's tcp ack_timeout, s (default 5)")  # fmt: skip
    parser.add_argument("--size", type=int, default=MIB, help="bytes of the item and request")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (part 2)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per case and round")
    parser.add_argument("--warmup", type=float, default=0.5, help="per case and round")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--serve", metavar="KV", help=argparse.SUPPRESS)
    parser.add_argument("--max-concurrency", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--one-pass", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gc-off", action="store_true",
                        help="part 1 with the cyclic GC off (client and worker)")  # fmt: skip
    args = parser.parse_args()
    if args.serve:
        if args.gc_off:
            gc.disable()
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(serve, args.serve, args.max_concurrency)
        return
    if args.one_pass:
        one_pass(args)
        return
    started = time.perf_counter()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"ulimit -n {resource.getrlimit(resource.RLIMIT_NOFILE)}")  # fmt: skip
    if args.only in (None, "inflight"):
        in_flight_part(args)
    if args.only in (None, "rows"):
        rows_part(args)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
