"""A worker served by N processes vs one process vs a Dynamo 1.6.1 worker, same caller.

Each worker serves the same handler (``{"op": "count", "n": n}`` yields ``n``
items) over the TCP plane with file discovery, in processes of its own:

* ``dynamo``: a real Dynamo 1.6.1 worker (``tests/dynamo``);
* ``trioplane``: one trioplane worker process (``worker_vs_dynamo.py``'s);
* ``procs=N``: ``trioplane serve ... --processes N`` (a supervisor
  and N children; ``procs=1`` shows what the supervisor's hop costs).

The trioplane endpoint client in this process measures concurrent unary calls
(c=16, c=64) and 100-item streams against each; with ``--dynamo-client``, Dynamo's
own client (one pipelined connection per worker address, as trioplane's) also
measures unary c=16. Then a handler that computes (``--cpu-ms`` of CPU per call,
:func:`burn`) is served by one trioplane process and by N: the case processes are
for. Rounds are interleaved (every worker once per round, the order rotating); each
case reports its best round, the median and range of the per-round ratios (to
Dynamo's worker; to one process for the computing handler), and the CPU the
worker's processes used (cores, summed over the supervisor and its children) and
the caller's, and the worker's CPU time per request (median over the rounds: the
figure the machine's load disturbs least). The machine may be shared: the spread of
the ratios is the noise.

    python benchmarks/processes.py [--seconds 3] [--rounds 3] [--processes 1 2]
        [--dynamo-client] [--cpu-ms 5]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from endpoint_vs_dynamo import Result, measure
from worker_vs_dynamo import ENDPOINT, trioplane_worker

import trioplane
from tests.dynamo import dynamo_python, run_dynamo_worker, worker_env
from trioplane.worker import RequestContext

HERE = Path(__file__).resolve().parent
#: (name, items per call, concurrency)
CASES = [("unary c=16", 1, 16), ("unary c=64", 1, 64), ("stream100 c=1", 100, 1),
         ("stream100 c=8", 100, 8)]  # fmt: skip
DYNAMO_CLIENT_CASE = "dynamo client unary c=16"
CPU_CASES = [("unary c=16", 1, 16)]

Worker = Callable[[Path], contextlib.AbstractContextManager[int]]
Measured = tuple[Result, float, float]  # the result, the worker's cores, the caller's
Round = dict[str, dict[str, Measured]]  # worker -> case -> measured


async def burn(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    """``$BURN_MS`` of CPU (the event loop held, as a computing handler holds it), then
    ``request["n"]`` items."""
    end = time.thread_time() + float(os.environ.get("BURN_MS", "1")) / 1000
    while time.thread_time() < end:
        pass
    for i in range(request["n"]):
        yield {"i": i}


def cpu_seconds(pid: int) -> float:
    """User and system CPU of ``pid`` and every descendant alive now (from /proc)."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():  # trio spawns from threads
                todo.extend(int(child) for child in (task / "children").read_text().split())
    return total


@contextlib.contextmanager
def command_worker(args: list[str], env: dict[str, str] | None = None) -> Iterator[int]:
    """A worker started by a command (in this folder) that prints ``serving ...`` first;
    its pid. SIGTERM drains it at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", *args], stdout=subprocess.PIPE, text=True, cwd=HERE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("serving ")
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def processes_worker(
    kv: Path,
    processes: int,
    handler: str = "trioplane_worker_side:count",
    env: dict[str, str] | None = None,
) -> contextlib.AbstractContextManager[int]:
    return command_worker(
        ["trioplane", "serve", handler, "--endpoint", ENDPOINT,
         "--processes", str(processes), "--discovery-dir", str(kv)], env,
    )  # fmt: skip


def cpu_single_worker(kv: Path, env: dict[str, str]) -> contextlib.AbstractContextManager[int]:
    """One trioplane worker process serving :func:`burn` (``trioplane serve``)."""
    return command_worker(
        ["trioplane", "serve", "processes:burn", "--endpoint", ENDPOINT,
         "--discovery-dir", str(kv)], env,
    )  # fmt: skip


@contextlib.contextmanager
def single_worker(kv: Path) -> Iterator[int]:
    with trioplane_worker(kv):
        me = os.getpid()  # the worker is this process's newest child
        yield max(int(c) for c in Path(f"/proc/{me}/task/{me}/children").read_text().split())


@contextlib.contextmanager
def dynamo_worker(kv: Path) -> Iterator[int]:
    with run_dynamo_worker(kv, [ENDPOINT]) as worker:
        yield worker.process.pid


async def trioplane_cases(
    kv: Path, seconds: float, pid: int, cases: list[tuple[str, int, int]]
) -> dict[str, Measured]:
    results = {}
    async with trioplane.open_endpoint_client(ENDPOINT, kv) as client:
        await client.wait_for_instances()
        for name, n, concurrency in cases:
            await measure(client, n, concurrency, 0.3)
            worker, caller, start = cpu_seconds(pid), time.process_time(), time.perf_counter()
            result = await measure(client, n, concurrency, seconds)
            elapsed = time.perf_counter() - start
            worker, caller = cpu_seconds(pid) - worker, time.process_time() - caller
            results[name] = (result, worker / elapsed, caller / elapsed)
    return results


def dynamo_client_case(kv: Path, seconds: float, pid: int) -> Measured:
    """Dynamo's own client (``dynamo_client_side.py``, in Dynamo's venv): unary c=16."""
    env = worker_env(kv)
    del env["DYN_TCP_RPC_PORT"]  # a client process must not bind the worker's port
    before = cpu_seconds(pid)
    start = time.perf_counter()
    output = subprocess.run(
        [dynamo_python(), HERE / "dynamo_client_side.py", ENDPOINT, str(seconds), "unary:1:16"],
        env=env, capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    elapsed = time.perf_counter() - start  # includes its start-up and warm-up
    line = next(json.loads(x) for x in output.splitlines() if x.startswith("{"))
    result = Result(line["requests"], line["items"], line["seconds"], line["latencies"])
    return result, (cpu_seconds(pid) - before) / elapsed, float("nan")


def run_rounds(
    workers: dict[str, Worker], rounds: int, measure_one: Callable[[Path, int], dict[str, Measured]]
) -> list[Round]:
    """Every worker once per round, the order rotating from round to round."""
    names = list(workers)
    results = []
    for index in range(rounds):
        this_round: Round = {}
        for label in names[index % len(names) :] + names[: index % len(names)]:
            with tempfile.TemporaryDirectory() as tmp, workers[label](Path(tmp)) as pid:
                this_round[label] = measure_one(Path(tmp), pid)
        results.append(this_round)
        print(f"round {index + 1} of {rounds} done", file=sys.stderr, flush=True)
    return results


def table(rounds: list[Round], cases: list[str], baseline: str, title: str) -> None:
    print(title)
    print(
        f"{'case':<26}{'worker':<11}{'req/s':>8}{'items/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'x ' + baseline:>12}{'(range)':>12}{'worker cpu':>11}{'caller cpu':>11}"
        f"{'worker µs/req':>15}"
    )
    for case in cases:
        for label in rounds[0]:
            best = max((r[label][case] for r in rounds), key=lambda m: m[0].items_per_s)
            ratios = [
                r[label][case][0].items_per_s / r[baseline][case][0].items_per_s for r in rounds
            ]
            # CPU per request: the worker's cores over its requests/s, median over the rounds
            per_request = statistics.median(
                cores / m.req_per_s * 1e6
                for m, cores, _ in (r[label][case] for r in rounds)
                if m.req_per_s
            )
            result, worker_cpu, caller_cpu = best
            print(
                f"{case:<26}{label:<11}{result.req_per_s:>8,.0f}{result.items_per_s:>9,.0f}"
                f"{result.percentile(50):>8.2f}{result.percentile(99):>8.2f}"
                f"{statistics.median(ratios):>11.2f}x {min(ratios):>5.2f}-{max(ratios):<5.2f}"
                f"{worker_cpu:>11.2f}{caller_cpu:>11.2f}{per_request:>15,.0f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dynamo-client", action="store_true")
    parser.add_argument("--cpu-ms", type=float, default=5.0, help="0: no computing handler")
    args = parser.parse_args()

    workers: dict[str, Worker] = {"dynamo": dynamo_worker, "trioplane": single_worker}
    for n in args.processes:
        workers[f"procs={n}"] = functools.partial(processes_worker, processes=n)

    def measure_one(kv: Path, pid: int) -> dict[str, Measured]:
        results = trio.run(trioplane_cases, kv, args.seconds, pid, CASES)
        if args.dynamo_client:
            results[DYNAMO_CLIENT_CASE] = dynamo_client_case(kv, args.seconds, pid)
        return results

    rounds = run_rounds(workers, args.rounds, measure_one)
    cpu_rounds: list[Round] = []
    if args.cpu_ms:
        env = {"BURN_MS": str(args.cpu_ms)}
        cpu_workers: dict[str, Worker] = {
            "trioplane": functools.partial(cpu_single_worker, env=env)
        }
        for n in args.processes:
            cpu_workers[f"procs={n}"] = functools.partial(
                processes_worker, processes=n, handler="processes:burn", env=env
            )

        def measure_cpu(kv: Path, pid: int) -> dict[str, Measured]:
            return trio.run(trioplane_cases, kv, args.seconds, pid, CPU_CASES)

        cpu_rounds = run_rounds(cpu_workers, args.rounds, measure_cpu)

    cases = [name for name, _, _ in CASES] + ([DYNAMO_CLIENT_CASE] if args.dynamo_client else [])
    print(
        f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at the end); "
        f"best of {args.rounds} interleaved rounds of {args.seconds:g} s; x: median of the "
        "per-round ratios of items/s (range: lowest-highest); cpu: cores used"
    )
    table(rounds, cases, "dynamo", "the trioplane endpoint client (unless named) calling 'count'")
    if cpu_rounds:
        print()
        table(
            cpu_rounds,
            [name for name, _, _ in CPU_CASES],
            "trioplane",
            f"a handler that computes {args.cpu_ms:g} ms per call (no Dynamo worker serves it)",
        )


if __name__ == "__main__":
    main()
