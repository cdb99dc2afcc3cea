"""The speed tables: trioplane's client and worker against Dynamo's, in one run.

Two workers, each in a process of its own, serve ``{"op": "count", "n": n}`` (``n``
items) on the TCP request plane with file discovery: a real Dynamo 1.6.1 worker (its
venv made once, see ``tests/dynamo``) and a trioplane worker
(``trioplane_worker_side.py``). Five runs take turns, each once per round, the order
rotating from round to round:

* trioplane's endpoint client (in this process) calling the Dynamo worker;
* Dynamo's Python client (``dynamo_client_side.py``, a process in Dynamo's venv) calling
  the Dynamo worker;
* the floor: the minimal blocking-socket client of ``endpoint_vs_dynamo.py`` (this
  process, concurrency 1 only) calling the Dynamo worker;
* trioplane's client calling the trioplane worker (unary c=1 and c=16, stream100 c=1);
* Dynamo's client calling the trioplane worker (unary c=16).

Every case is measured for ``--seconds`` after 0.5 s of warm-up (none for the floor).
Each figure printed is the median over the rounds with its min-max range; each ratio
the median, with the range, of the ratios measured within each round. CPU is counted
over each measurement only: the client process's ``time.process_time()`` (every
thread, Dynamo's runtime's too) and the worker process's CPU time (``cpu_clock.py``:
what ``/proc/PID/stat``'s utime + stime count). The targets are checked on the median
ratios.

    python benchmarks/speed.py [--rounds 5] [--seconds 2] [--json out.json]
    python benchmarks/speed.py --plots        # also the Performance page's files

``--sweep 1 4 16 64`` (the default) also measures the clients at these concurrencies,
for the plots; ``--sweep`` alone measures only the tables' cases. ``--plots [DIR]``
writes the plots, tables and ``figures.json`` (the ``--json`` document) into DIR
(``docs/_static/performance``) through ``performance_plots.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from endpoint_vs_dynamo import ENDPOINT, Result, dynamo_side, floor_side, trioplane_side
from worker_vs_dynamo import trioplane_worker

import trioplane
from tests.dynamo import DYNAMO_VERSION, run_dynamo_worker

#: (name, items per call, concurrency)
Case = tuple[str, int, int]
#: One case of one run in one round: calls, items, seconds, CPU seconds, latencies.
Record = dict[str, float]
#: One round: run -> case name -> record.
Round = dict[str, dict[str, Record]]

KINDS = {"unary": 1, "stream100": 100}


def case(kind: str, concurrency: int) -> Case:
    return (f"{kind} c={concurrency}", KINDS[kind], concurrency)


#: The runs, "client->worker", in the order of the first round.
RUNS = (
    "trioplane->dynamo",
    "dynamo->dynamo",
    "floor->dynamo",
    "trioplane->trioplane",
    "dynamo->trioplane",
)
CLIENT_CASES = [case("unary", 1), case("unary", 16), case("stream100", 1), case("stream100", 8)]
WORKER_CASES = [case("unary", 1), case("unary", 16), case("stream100", 1)]
DYNAMO_CALLER_CASES = [case("unary", 16)]
SWEEP = [1, 4, 16, 64]
METHOD = (
    f"two workers in processes of their own, a Dynamo {DYNAMO_VERSION} worker and a trioplane "
    "worker (file discovery, TCP plane); five runs (client->worker) each once per round, the "
    "order rotating; each case measured for the given seconds after a warm-up (none for the "
    "floor); figures the median over the rounds with min-max, ratios the median of the "
    "per-round ratios; client CPU: the client process's time.process_time(), every thread; "
    "worker CPU: the worker process's CPU clock (utime + stime), over each measurement only"
)
WARM_UP = 0.5  # endpoint_vs_dynamo's, per case, for trioplane's and Dynamo's clients

#: What each figure is, from one record.
METRICS: dict[str, Callable[[Record], float]] = {
    "calls/s": lambda r: r["calls"] / r["seconds"],
    "items/s": lambda r: r["items"] / r["seconds"],
    "client CPU µs/call": lambda r: r["cpu_seconds"] / r["calls"] * 1e6,
    "client CPU µs/item": lambda r: r["cpu_seconds"] / r["items"] * 1e6,
    "worker CPU µs/call": lambda r: r["worker_cpu_seconds"] / r["calls"] * 1e6,
    "p50 ms": lambda r: r["p50_ms"],
    "p99 ms": lambda r: r["p99_ms"],
}


def client_cases(sweep: Iterable[int]) -> list[Case]:
    """The tables' client cases and the sweep's, unary first, by concurrency."""
    wanted = set(CLIENT_CASES) | {case(kind, c) for kind in KINDS for c in sweep}
    return sorted(wanted, key=lambda c: (c[1], c[2]))


def record(result: Result) -> Record:
    ms = sorted(latency * 1000 for latency in result.latencies)
    fields = {
        "calls": result.requests,
        "items": result.items,
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
        "p50_ms": result.percentile(50) if len(ms) > 1 else ms[0],
        "p99_ms": result.percentile(99) if len(ms) > 1 else ms[0],
    }
    if result.worker_cpu_seconds is not None:
        fields["worker_cpu_seconds"] = result.worker_cpu_seconds
    return fields


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model or platform.processor(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "trioplane": trioplane.__version__,
        "dynamo": DYNAMO_VERSION,
    }


def source() -> dict[str, Any]:
    """The commit measured and how many of trioplane/'s files differ from it (read-only
    git: ``GIT_OPTIONAL_LOCKS=0`` keeps ``git status`` from writing the index)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    root = Path(__file__).resolve().parent.parent
    try:
        commit, changed = (
            subprocess.run(
                ["git", *command], cwd=root, env=env, capture_output=True, text=True, check=True
            ).stdout
            for command in (
                ["rev-parse", "--short", "HEAD"],
                ["status", "--porcelain", "trioplane"],
            )
        )
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": commit.strip(), "trioplane_files_modified": len(changed.splitlines())}


def measure(rounds: int, seconds: float, sweep: list[int]) -> dict[str, Any]:
    """Every run once per round, the order rotating; the document ``--json`` writes."""
    cases = client_cases(sweep)
    tree = source()  # now: the workers and this process import trioplane as it is now
    load_before = os.getloadavg()
    began = time.perf_counter()
    data: list[Round] = []
    with (
        tempfile.TemporaryDirectory() as dynamo_kv,
        tempfile.TemporaryDirectory() as own_kv,
        run_dynamo_worker(Path(dynamo_kv), [ENDPOINT]) as dynamo_worker,
        trioplane_worker(Path(own_kv), ENDPOINT) as own_worker,
    ):
        theirs, ours = Path(dynamo_kv), Path(own_kv)
        instance = dynamo_worker.instances[ENDPOINT]
        their_pid, our_pid = dynamo_worker.process.pid, own_worker.pid
        runs: dict[str, Callable[[], dict[str, Result]]] = {
            "trioplane->dynamo": lambda: trio.run(
                trioplane_side, theirs, seconds, cases, their_pid
            ),
            "dynamo->dynamo": lambda: dynamo_side(theirs, seconds, cases, their_pid),
            "floor->dynamo": lambda: floor_side(instance, seconds, cases, their_pid),
            "trioplane->trioplane": lambda: trio.run(
                trioplane_side, ours, seconds, WORKER_CASES, our_pid
            ),
            "dynamo->trioplane": lambda: dynamo_side(ours, seconds, DYNAMO_CALLER_CASES, our_pid),
        }
        for index in range(rounds):
            started = time.perf_counter()
            order = RUNS[index % len(RUNS) :] + RUNS[: index % len(RUNS)]
            data.append(
                {run: {name: record(r) for name, r in runs[run]().items()} for run in order}
            )
            print(
                f"round {index + 1}/{rounds} ({', '.join(order)}): "
                f"{time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    return {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "source": tree,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "rounds": rounds,
        "seconds": seconds,
        "warm_up_seconds": WARM_UP,
        "sweep": sweep,
        "client_cases": cases,
        "run_seconds": round(time.perf_counter() - began),
        "method": METHOD,
        "data": data,
    }


# -- the figures ----------------------------------------------------------------------------


def values(document: dict[str, Any], run: str, name: str, metric: str) -> list[float]:
    """One figure per round."""
    return [METRICS[metric](r[run][name]) for r in document["data"] if name in r.get(run, {})]


def ratios(document: dict[str, Any], run: str, base: str, name: str, metric: str) -> list[float]:
    """``run``'s figure over ``base``'s, within each round."""
    pairs = [(r[run][name], r[base][name]) for r in document["data"] if name in r.get(base, {})]
    return [METRICS[metric](ours) / METRICS[metric](theirs) for ours, theirs in pairs]


def spread(figures: list[float]) -> tuple[float, float, float]:
    """Median, min, max."""
    return statistics.median(figures), min(figures), max(figures)


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def cell(figures: list[float]) -> str:
    if not figures:
        return "-"
    median, low, high = spread(figures)
    return f"{number(median)} ({number(low)}-{number(high)})"


def ratio_cell(figures: list[float]) -> str:
    if not figures:
        return "-"
    median, low, high = spread(figures)
    return f"{median:.2f}x ({low:.2f}-{high:.2f})"


@dataclass(frozen=True)
class Target:
    """The median ratio of the row's figure to ``base``'s: at least (or at most) ``ratio``."""

    base: str
    ratio: float
    at_least: bool = True

    def check(self, figures: list[float]) -> str:
        if not figures:
            return "-"
        median = statistics.median(figures)
        met = median >= self.ratio if self.at_least else median <= self.ratio
        sign = "≥" if self.at_least else "≤"
        return f"{sign} {self.ratio:g}x {self.base}: {'PASS' if met else 'MISS'}"


#: Table 1: (case, metric, target), trioplane's client vs Dynamo's and the floor.
CLIENT_ROWS = [
    ("unary c=1", "calls/s", Target("floor", 0.9)),
    ("unary c=1", "client CPU µs/call", Target("floor", 1.5, at_least=False)),
    ("stream100 c=1", "items/s", Target("floor", 0.9)),
    ("stream100 c=1", "client CPU µs/item", Target("floor", 1.5, at_least=False)),
    ("stream100 c=8", "items/s", Target("Dynamo", 1.5)),
    ("unary c=16", "calls/s", Target("Dynamo", 1.0)),
]
#: Table 2: (caller, case, metric, target), the trioplane worker vs Dynamo's.
WORKER_ROWS: list[tuple[str, str, str, Target | None]] = [
    ("trioplane", "unary c=1", "calls/s", None),
    ("trioplane", "unary c=16", "calls/s", Target("Dynamo", 1.3)),
    ("trioplane", "stream100 c=1", "items/s", Target("Dynamo", 3.0)),
    ("dynamo", "unary c=16", "calls/s", Target("Dynamo", 1.3)),
]
CALLERS = {"trioplane": "trioplane", "dynamo": "Dynamo"}


def client_table(document: dict[str, Any]) -> list[list[str]]:
    rows = [["", "trioplane", "Dynamo", "floor", "trioplane/Dynamo", "trioplane/floor",
             "target"]]  # fmt: skip
    for name, metric, target in CLIENT_ROWS:
        against = {
            "Dynamo": ratios(document, "trioplane->dynamo", "dynamo->dynamo", name, metric),
            "floor": ratios(document, "trioplane->dynamo", "floor->dynamo", name, metric),
        }
        rows.append(
            [
                f"{name}, {metric}",
                *(cell(values(document, f"{c}->dynamo", name, metric)) for c in CALLERS),
                cell(values(document, "floor->dynamo", name, metric)),
                ratio_cell(against["Dynamo"]),
                ratio_cell(against["floor"]),
                target.check(against[target.base]),
            ]
        )
    return rows


def worker_table(document: dict[str, Any]) -> list[list[str]]:
    rows = [["", "caller", "Dynamo", "trioplane", "trioplane/Dynamo", "target",
             "CPU µs/call: Dynamo", "trioplane", "trioplane/Dynamo"]]  # fmt: skip
    for caller, name, metric, target in WORKER_ROWS:
        ours, theirs = f"{caller}->trioplane", f"{caller}->dynamo"
        rate = ratios(document, ours, theirs, name, metric)
        rows.append(
            [
                f"{name}, {metric}",
                CALLERS[caller],
                cell(values(document, theirs, name, metric)),
                cell(values(document, ours, name, metric)),
                ratio_cell(rate),
                target.check(rate) if target else "",
                cell(values(document, theirs, name, "worker CPU µs/call")),
                cell(values(document, ours, name, "worker CPU µs/call")),
                ratio_cell(ratios(document, ours, theirs, name, "worker CPU µs/call")),
            ]
        )
    return rows


def sweep_table(document: dict[str, Any]) -> list[list[str]]:
    """Every client case (the plots' data), each client on the Dynamo worker."""
    rows = [["case", "client", "items/s", "p50 ms", "p99 ms", "client CPU µs/item",
             "trioplane/Dynamo items/s", "trioplane/Dynamo CPU"]]  # fmt: skip
    for name, _, _ in document["client_cases"]:
        for client in ("trioplane", "dynamo", "floor"):
            run = f"{client}->dynamo"
            if not values(document, run, name, "items/s"):
                continue
            ratio = ["", ""]
            if client == "trioplane":
                ratio = [
                    ratio_cell(ratios(document, run, "dynamo->dynamo", name, metric))
                    for metric in ("items/s", "client CPU µs/item")
                ]
            rows.append(
                [
                    name,
                    client,
                    cell(values(document, run, name, "items/s")),
                    number(statistics.median(values(document, run, name, "p50 ms"))),
                    number(statistics.median(values(document, run, name, "p99 ms"))),
                    cell(values(document, run, name, "client CPU µs/item")),
                    *ratio,
                ]
            )
    return rows


def header(document: dict[str, Any]) -> str:
    about, load = document["machine"], document["load_average"]
    loads = [" ".join(f"{x:.2f}" for x in load[when]) for when in ("before", "after")]
    tree = document.get("source", {})
    commit = f" ({tree['commit']})" if tree.get("commit") else ""
    if tree.get("trioplane_files_modified"):
        changed = tree["trioplane_files_modified"]
        commit = f" ({tree['commit']}, {changed} file{'s' * (changed > 1)} of trioplane/ changed)"
    return (
        f"trioplane {about['trioplane']}{commit} vs Dynamo {about['dynamo']}, "
        f"{document['date']}; "
        f"{about['cores']} cores ({about['cpu']}), load average {loads[0]} before, "
        f"{loads[1]} after; {document['rounds']} rounds, {document['seconds']:g} s per case "
        f"after {document['warm_up_seconds']:g} s warm-up, the order rotating; "
        f"run {document['run_seconds']} s"
    )


def tables(document: dict[str, Any]) -> list[tuple[str, list[list[str]]]]:
    """Each table's title and rows (the first: the column heads)."""
    return [
        (
            f"Table 1: trioplane's endpoint client, Dynamo {DYNAMO_VERSION}'s Python client "
            f"and the floor, calling one Dynamo {DYNAMO_VERSION} worker",
            client_table(document),
        ),
        (
            f"Table 2: a Dynamo {DYNAMO_VERSION} worker and a trioplane worker, called by "
            "the same client (the caller); CPU: the worker process's",
            worker_table(document),
        ),
        (
            "Table 3: every client case, on the Dynamo worker (the plots' figures); "
            "latencies: medians",
            sweep_table(document),
        ),
    ]


def aligned(rows: list[list[str]]) -> str:
    """Text columns: the first two left-aligned if the second holds words, else just the
    first; the figures right-aligned."""
    left = 2 if rows[0][1] in ("caller", "client") else 1
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            text.ljust(width) if i < left else text.rjust(width)
            for i, (text, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )


def report(document: dict[str, Any]) -> str:
    parts = [
        header(document),
        "figures: median (min-max) over the rounds; ratios: median (min-max) of the ratios "
        "within each round; targets: on the median ratio",
    ]
    for title, rows in tables(document):
        parts += ["", title, aligned(rows)]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds, runs interleaved (5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per case, run, round (2)")
    parser.add_argument(
        "--sweep", type=int, nargs="*", default=SWEEP, help="client concurrencies (1 4 16 64)"
    )
    parser.add_argument("--json", type=Path, help="write every figure and the method here")
    parser.add_argument(
        "--plots",
        type=Path,
        nargs="?",
        const=Path(__file__).resolve().parent.parent / "docs" / "_static" / "performance",
        help="write the Performance page's files here (docs/_static/performance)",
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    document = measure(args.rounds, args.seconds, args.sweep)
    print(report(document))
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=1) + "\n")
    if args.plots is not None:
        import performance_plots

        performance_plots.write_all(document, args.plots)
        print(f"wrote {args.plots}")


if __name__ == "__main__":
    main()
