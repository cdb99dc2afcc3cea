"""The endpoint client's CPU per call, A/B: two source trees, rounds interleaved.

A trioplane worker runs in a process of its own (as in ``worker_vs_dynamo.py``);
each tree given gets an endpoint client process of its own (``PYTHONPATH`` set to
the tree), and the clients take turns, a short slice each, case by case, round
after round (the order alternating), driving unary calls at concurrency 1 and 16
and 100-item streams at concurrency 1. A client reports its own process's CPU
time (``time.process_time()``) per call, and per item for the streams. The first
tree is the baseline; the others report, per case, the median over the rounds of
their ratio to it, with the quartiles and the extremes. On a shared machine
(2 cores, other loads) single slices vary a lot: trust the median of many
short interleaved rounds, not one long run.

    git worktree add /tmp/base_client HEAD
    python benchmarks/client_cpu.py /tmp/base_client . [--rounds 25] [--seconds 0.5]
        [--worker-tree /tmp/base_client]

``--profile FILE`` instead runs one client of this tree in this process under
cProfile and writes the statistics to FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENDPOINT = "bench.workers.generate"
#: (name, items per call, concurrency)
CASES = [("unary c=1", 1, 1), ("unary c=16", 1, 16), ("stream100 c=1", 100, 1)]
HERE = Path(__file__).resolve().parent


async def measure(client: Any, n: int, concurrency: int, seconds: float) -> dict[str, float]:
    import trio

    calls = items = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal calls, items
        while time.perf_counter() < deadline:
            async with client.generate({"n": n}) as responses:
                async for _ in responses:
                    items += 1
            calls += 1

    cpu = time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller)
    cpu = time.process_time() - cpu
    return {"calls": calls, "items": items, "cpu": cpu}


async def client_side(root: str, commands: Any, out: Any) -> None:
    """Serve the coordinator: each line ``CASE SECONDS`` measures one case, answered
    with a JSON line (the client stays open between them, as a service's does)."""
    import trioplane

    async with trioplane.open_endpoint_client(ENDPOINT, root) as client:
        await client.wait_for_instances()
        for _, n, concurrency in CASES:
            await measure(client, n, concurrency, 0.2)  # warm up
        print("ready", file=out, flush=True)
        for line in commands:  # blocking between measurements: the client is idle then
            case, seconds = line.split()
            _, n, concurrency = CASES[int(case)]
            print(json.dumps(await measure(client, n, concurrency, float(seconds))), file=out,
                  flush=True)  # fmt: skip


@contextlib.contextmanager
def worker(tree: Path, root: Path) -> Iterator[None]:
    """``worker_vs_dynamo.py``'s trioplane worker (its ``trioplane_worker_side.py``),
    from ``tree``: a tree that stays put while another is being edited."""
    script = tree / "benchmarks" / "trioplane_worker_side.py"
    process = subprocess.Popen(
        [sys.executable, script, str(root), ENDPOINT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "serving"
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Client:
    """A client process of one source tree, driven line by line."""

    def __init__(self, tree: str, root: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--client", root], env=env, cwd="/",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        assert self.process.stdin is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        assert self.stdout.readline().strip() == "ready"

    def measure(self, case: int, seconds: float) -> dict[str, float]:
        self.stdin.write(f"{case} {seconds}\n")
        self.stdin.flush()
        result: dict[str, float] = json.loads(self.stdout.readline())
        return result

    def close(self) -> None:
        self.stdin.close()
        self.process.wait(30)


def per_unit(result: dict[str, float], name: str) -> float:
    """µs of client CPU per call (unary) or per item (streams)."""
    units = result["items"] if name.startswith("stream") else result["calls"]
    return result["cpu"] / units * 1e6


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trees", nargs="*", help="source trees; the first is the baseline")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=0.5, help="per case, tree and round")
    parser.add_argument("--client", help=argparse.SUPPRESS)  # a client process: its root
    parser.add_argument("--profile", metavar="FILE")
    parser.add_argument(
        "--worker-tree", default=str(HERE.parent), help="the tree whose worker serves (this one)"
    )
    args = parser.parse_args()
    import trio

    if args.client:
        trio.run(client_side, args.client, sys.stdin, sys.stdout)
        return
    trees = args.trees or [str(HERE.parent)]
    with tempfile.TemporaryDirectory() as tmp, worker(Path(args.worker_tree), Path(tmp)):
        if args.profile:
            import cProfile

            with cProfile.Profile(time.process_time) as profile:  # CPU, not wall time
                trio.run(profile_side, tmp, args.seconds)
            profile.dump_stats(args.profile)
            return
        clients = [Client(tree, tmp) for tree in trees]
        try:
            # rounds[case][round][tree]: the trees take turns, slice by slice, in an
            # order that alternates (ABBA...) so a drift in the machine's load hits all.
            rounds: list[list[list[float]]] = [[] for _ in CASES]
            for r in range(args.rounds):
                for c, (name, _, _) in enumerate(CASES):
                    order = list(range(len(trees)))
                    if r % 2:
                        order.reverse()
                    got = {t: clients[t].measure(c, args.seconds) for t in order}
                    rounds[c].append([per_unit(got[t], name) for t in range(len(trees))])
        finally:
            for client in clients:
                client.close()
        report(trees, rounds, args)


def report(trees: list[str], rounds: list[list[list[float]]], args: argparse.Namespace) -> None:
    print(
        f"client CPU, µs per call (unary) or per item (stream100): median of {args.rounds}"
        f" interleaved rounds of {args.seconds:g} s; ratio to the first tree: median"
        " [quartiles] (min..max)"
    )
    for c, (name, _, _) in enumerate(CASES):
        cells = []
        for t, tree in enumerate(trees):
            label = Path(tree).resolve().name
            cells.append(f"{label}: {statistics.median(r[t] for r in rounds[c]):7.1f}")
            if t:
                ratios = sorted(r[t] / r[0] for r in rounds[c])
                q1, median, q3 = quartiles(ratios)
                cells.append(
                    f"ratio {median:.3f} [{q1:.3f}, {q3:.3f}] ({ratios[0]:.3f}..{ratios[-1]:.3f})"
                )
        print(f"{name:<15}" + "   ".join(cells))


async def profile_side(root: str, seconds: float) -> None:
    """Every case once, in this process (for ``--profile``)."""
    import trioplane

    async with trioplane.open_endpoint_client(ENDPOINT, root) as client:
        await client.wait_for_instances()
        for _, n, concurrency in CASES:
            await measure(client, n, concurrency, seconds)


if __name__ == "__main__":
    main()
