"""trioplane's worker vs a real Dynamo 1.6.1 worker, called by the same trioplane client.

Both serve an equivalent handler (``{"op": "count", "n": n}`` yields ``n`` items)
over the TCP request plane with file discovery; in the same run, alternating, the
trioplane endpoint client measures unary calls and 100-item streams against each.
Each case reports its best round (the machine is shared).

    python benchmarks/worker_vs_dynamo.py [--seconds 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from endpoint_vs_dynamo import Result, measure

import trioplane
from tests.dynamo import run_dynamo_worker

ENDPOINT = "bench.workers.generate"
CASES = [("unary c=1", 1, 1), ("unary c=16", 1, 16), ("stream100 c=1", 100, 1),
         ("stream100 c=8", 100, 8)]  # fmt: skip


async def run_cases(kv: Path, seconds: float) -> dict[str, Result]:
    results = {}
    async with trioplane.open_endpoint_client(ENDPOINT, kv) as client:
        await client.wait_for_instances()
        for name, n, concurrency in CASES:
            await measure(client, n, concurrency, 0.3)
            results[name] = await measure(client, n, concurrency, seconds)
    return results


@contextlib.contextmanager
def trioplane_worker(kv: Path, endpoint: str = ENDPOINT) -> Iterator[subprocess.Popen[str]]:
    """The trioplane worker in its own process, as the Dynamo worker is, serving
    ``endpoint`` with discovery under ``kv``."""
    script = Path(__file__).with_name("trioplane_worker_side.py")
    process = subprocess.Popen(
        [sys.executable, script, str(kv), endpoint], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "serving"
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ours: dict[str, Result] = {}
    theirs: dict[str, Result] = {}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp, trioplane_worker(Path(tmp)):
            round_ours = trio.run(run_cases, Path(tmp), args.seconds)
        with tempfile.TemporaryDirectory() as tmp, run_dynamo_worker(Path(tmp), [ENDPOINT]):
            round_theirs = trio.run(run_cases, Path(tmp), args.seconds)
        for name, _, _ in CASES:
            if name not in ours or round_ours[name].items_per_s > ours[name].items_per_s:
                ours[name] = round_ours[name]
            if name not in theirs or round_theirs[name].items_per_s > theirs[name].items_per_s:
                theirs[name] = round_theirs[name]
    print(f"trioplane client; {os.cpu_count()} cores; best of {args.rounds} rounds")
    print(f"{'case':<15}{'worker':<11}{'req/s':>9}{'items/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, _, _ in CASES:
        for label, result in (("trioplane", ours[name]), ("dynamo", theirs[name])):
            print(
                f"{name:<15}{label:<11}{result.req_per_s:>9,.0f}{result.items_per_s:>10,.0f}"
                f"{result.percentile(50):>9.2f}{result.percentile(99):>9.2f}"
            )
        ratio = ours[name].items_per_s / theirs[name].items_per_s
        print(f"{name:<15}{'ratio':<11}{ratio:>9.2f}x  (trioplane worker / Dynamo worker)")


if __name__ == "__main__":
    main()
