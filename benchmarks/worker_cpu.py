"""The trioplane worker's CPU time per call: two source trees, side by side.

Each tree's worker (``open_worker``, a handler yielding ``n`` items) runs in a
process of its own, importing trioplane from that tree (``PYTHONPATH``); a
trioplane endpoint client in this process drives unary calls (c=1, c=16) and
100-item streams (c=1), each caller taking the workers in turn, call by call
(so both serve under the same load on the machine; the workers share one CPU, the
client has the others, so neither worker is placed better; half the rounds run with
the workers started in the other order). The figure is the worker
process's CPU time (user + system, its ``time.process_time()``) per call; the
report is each case's median ratio of the second tree to the first over the
rounds, with its spread.

    python benchmarks/worker_cpu.py --tree /tmp/base_worker --tree . [--rounds 7]
    python benchmarks/worker_cpu.py --tree . --profile /tmp/worker.prof

``--profile`` runs one tree's worker under cProfile instead and prints its top
entries by tottime and cumtime (CPU time; divide by the calls it prints).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import trio

ENDPOINT = "bench.cpu.generate"
CASES = [("unary c=1", 1, 1), ("unary c=16", 1, 16), ("stream100 c=1", 100, 1)]


# -- the worker process ------------------------------------------------------------------


async def _count(request: Any, context: Any) -> AsyncIterator[Any]:
    for i in range(request["n"]):
        yield {"i": i}


async def _child(root: str) -> None:
    """Serve; answer each line on stdin with this process's CPU time (a ``trio`` task,
    idle between the parent's questions)."""
    import trioplane

    async with trioplane.open_worker({ENDPOINT: _count}, discovery_root=root):
        print("serving", trioplane.__file__, flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buffered = b""
        while data := await stdin.receive_some():
            buffered += data
            while b"\n" in buffered:
                _, buffered = buffered.split(b"\n", 1)
                print(f"{time.process_time():.9f}", flush=True)


def child_main(root: str, profile: str | None) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:  # the workers share the last CPU, the client has the others
        os.sched_setaffinity(0, cpus[-1:])
    if profile is None:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(_child, root)
        return
    import cProfile

    profiler = cProfile.Profile(time.process_time)  # CPU time, not wall time
    profiler.enable()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(_child, root)
    profiler.disable()
    profiler.dump_stats(profile)


class WorkerProcess:
    """A worker from ``tree``, with its discovery root; :meth:`cpu` asks its CPU time."""

    def __init__(self, tree: Path, profile: str | None = None) -> None:
        self.tree = tree
        self._dir = tempfile.TemporaryDirectory()
        self.root = Path(self._dir.name)
        env = dict(os.environ, PYTHONPATH=str(tree))
        command = [sys.executable, __file__, "--child", str(self.root)]
        if profile is not None:
            command += ["--profile", profile]
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        assert line[:1] == ["serving"], line
        imported = Path(line[1]).resolve()
        assert imported.is_relative_to(tree.resolve()), f"{tree} serves {imported}"

    def cpu(self) -> float:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        """End of input: the worker closes (drains, deregisters) and exits."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            print(f"the worker of {self.tree} did not exit; interrupting", file=sys.stderr)
            self.process.send_signal(signal.SIGINT)
            self.process.wait(10)
        self._dir.cleanup()


@contextlib.contextmanager
def workers(trees: list[Path], profile: str | None = None) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    try:
        for tree in trees:
            started.append(WorkerProcess(tree, profile))
        yield started
    finally:
        for worker in started:
            worker.close()


# -- the client (this process) -----------------------------------------------------------


async def drive(clients: list[Any], n: int, concurrency: int, seconds: float) -> list[int]:
    """Calls of ``n`` items, ``concurrency`` at once, for ``seconds``, each caller taking
    the clients in turn (so every worker serves under the same conditions): how many
    calls each client's worker served."""
    calls = [0] * len(clients)
    deadline = time.perf_counter() + seconds

    async def caller(first: int) -> None:
        i = first
        while time.perf_counter() < deadline:
            async with clients[i].generate({"n": n}) as responses:
                async for _ in responses:
                    pass
            calls[i] += 1
            i = (i + 1) % len(clients)

    async with trio.open_nursery() as nursery:
        for c in range(concurrency):
            nursery.start_soon(caller, c % len(clients))
    return calls


async def run_rounds(
    procs: list[WorkerProcess], rounds: int, seconds: float
) -> dict[str, list[list[float]]]:
    """Each case's worker CPU per call (seconds), per tree, per round."""
    import trioplane

    results: dict[str, list[list[float]]] = {name: [[] for _ in procs] for name, _, _ in CASES}
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for proc in procs:
            client = await stack.enter_async_context(
                trioplane.open_endpoint_client(ENDPOINT, proc.root)
            )
            await client.wait_for_instances()
            clients.append(client)
        for _, n, concurrency in CASES:
            await drive(clients, n, concurrency, 0.3)  # warm up
        for r in range(rounds):
            for name, n, concurrency in CASES:
                before = [proc.cpu() for proc in procs]
                calls = await drive(clients, n, concurrency, seconds)
                for i, proc in enumerate(procs):
                    results[name][i].append((proc.cpu() - before[i]) / calls[i])
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return results


def report(trees: list[Path], results: dict[str, list[list[float]]]) -> None:
    for name, per_tree in results.items():
        medians = "  ".join(
            f"{tree.name or tree}: {statistics.median(v) * 1e6:7.1f} us"
            for tree, v in zip(trees, per_tree, strict=True)
        )
        line = f"{name:14} {medians}"
        if len(per_tree) == 2:
            ratios = sorted(b / a for a, b in zip(*per_tree, strict=True))
            line += (
                f"  ratio {statistics.median(ratios):.3f}"
                f" (min {ratios[0]:.3f}, max {ratios[-1]:.3f})"
            )
        print(line)


def profile(tree: Path, out: str, seconds: float, top: int, cases: list[str] | None) -> None:
    import trioplane

    async def load() -> dict[str, int]:
        calls = {}
        async with trioplane.open_endpoint_client(ENDPOINT, proc.root) as client:
            await client.wait_for_instances()
            for name, n, concurrency in CASES:
                if cases is None or name in cases:
                    (calls[name],) = await drive([client], n, concurrency, seconds)
        return calls

    with workers([tree], out) as (proc,):
        calls = trio.run(load)
    print("calls:", calls, "total", sum(calls.values()))
    for key in ("tottime", "cumtime"):
        pstats.Stats(out).sort_stats(key).print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", type=Path, action="append", default=[])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--profile", help="profile the (one) tree's worker into this file")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--case", action="append", help="profile only this case (repeatable)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child_main(args.child, args.profile)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the client's trioplane
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:  # the same placement for every worker: none shares the client's CPU
        os.sched_setaffinity(0, cpus[:-1])
    trees = [t.resolve() for t in args.tree] or [Path(__file__).resolve().parent.parent]
    if args.profile is not None:
        profile(trees[0], args.profile, args.seconds, args.top, args.case)
        return
    # Half the rounds with the workers started in the given order, half reversed: the
    # first started (and first called) worker measures a little dearer (~2% A/A).
    results: dict[str, list[list[float]]] = {name: [[] for _ in trees] for name, _, _ in CASES}
    for half, order in enumerate((trees, trees[::-1])):
        rounds = (args.rounds + 1 - half) // 2
        if not rounds:
            continue
        with workers(order) as procs:
            got = trio.run(run_rounds, procs, rounds, args.seconds)
        for name, per_proc in got.items():
            for i, values in enumerate(per_proc if half == 0 else per_proc[::-1]):
                results[name][i] += values
    report(trees, results)


if __name__ == "__main__":
    main()
