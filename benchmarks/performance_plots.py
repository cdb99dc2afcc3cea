"""The plots of the documentation's Performance page (``docs/performance.rst``).

One real Dynamo 1.6.1 worker (file discovery, TCP plane; see ``tests/dynamo``) is
called, at each concurrency, with unary calls and with 100-item streams by three
clients, the ones ``endpoint_vs_dynamo.py`` measures (its functions are reused):

* trioplane's endpoint client, in this process;
* Dynamo's own Python client (``dynamo_client_side.py``, in Dynamo's venv);
* the floor: a minimal client on blocking sockets, at concurrency 1 only (with
  nothing running while a call waits, it shows what the worker itself allows).

The clients take turns within each round (the order rotating), so every ratio is
measured in the same run. Throughput and latency are those of each case's best
round (the most items/s: the least disturbed, on a shared machine); the client's CPU
time per call (``time.process_time()``) is the median over the rounds, and the ratios
the median of the per-round ratios. Writes into ``docs/_static/performance``:
``throughput.png``, ``latency.png``, ``cpu.png``, ``figures.json`` (every number,
the method and the machine) and ``figures.csv`` (the page's table).

    python benchmarks/performance_plots.py            # about 5 minutes
    python benchmarks/performance_plots.py --full     # more concurrencies, longer rounds
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from endpoint_vs_dynamo import ENDPOINT, Result, dynamo_side, floor_side, trioplane_side
from matplotlib import ticker

import trioplane
from tests.dynamo import DYNAMO_VERSION, run_dynamo_worker

OUT = Path(__file__).resolve().parent.parent / "docs" / "_static" / "performance"
CLIENTS = ("trioplane", "dynamo", "floor")
LABELS = {
    "trioplane": "trioplane endpoint client",
    "dynamo": f"Dynamo {DYNAMO_VERSION} Python client",
    "floor": "floor: minimal blocking client",
}
STYLES: dict[str, dict[str, Any]] = {
    "trioplane": {"color": "tab:blue", "marker": "o"},
    "dynamo": {"color": "tab:orange", "marker": "s"},
    "floor": {"color": "0.35", "marker": "D", "linestyle": "none", "markersize": 8},
}
#: (kind, items per call): the panels of each figure.
KINDS = (("unary", 1), ("stream100", 100))
Case = tuple[str, int, int]


def cases_for(concurrencies: list[int]) -> list[Case]:
    return [(f"{kind} c={c}", n, c) for kind, n in KINDS for c in concurrencies]


def one_round(
    kv: Path, worker: trioplane.Instance, cases: list[Case], seconds: float, index: int
) -> dict[str, dict[str, Result]]:
    """Each client once, starting with a different one each round."""
    runs = {
        "trioplane": lambda: trio.run(trioplane_side, kv, seconds, cases),
        "dynamo": lambda: dynamo_side(kv, seconds, cases),
        "floor": lambda: floor_side(worker, seconds, cases),
    }
    order = CLIENTS[index % 3 :] + CLIENTS[: index % 3]
    return {client: runs[client]() for client in order}


def summarize(rounds: list[dict[str, dict[str, Result]]], cases: list[Case]) -> dict[str, Any]:
    """Per case and client: the best round's rates and latencies, the median CPU per
    call; per case: the median of the per-round trioplane/Dynamo ratios."""
    figures: dict[str, Any] = {}
    for name, n, concurrency in cases:
        case: dict[str, Any] = {"items_per_call": n, "concurrency": concurrency}
        for client in CLIENTS:
            results = [r[client][name] for r in rounds if name in r[client]]
            if not results:
                continue
            best = max(results, key=lambda result: result.items_per_s)
            case[client] = {
                "requests_per_s": best.req_per_s,
                "items_per_s": best.items_per_s,
                "p50_ms": best.percentile(50),
                "p99_ms": best.percentile(99),
                "cpu_ms_per_call": statistics.median(r.cpu_ms_per_request for r in results),
                "calls_measured": sum(r.requests for r in results),
            }
        pairs = [(r["trioplane"][name], r["dynamo"][name]) for r in rounds]
        case["ratio_items_per_s"] = statistics.median(
            ours.items_per_s / theirs.items_per_s for ours, theirs in pairs
        )
        case["ratio_cpu_per_call"] = statistics.median(
            ours.cpu_ms_per_request / theirs.cpu_ms_per_request for ours, theirs in pairs
        )
        figures[name] = case
    return figures


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


def panels(figures: dict[str, Any], ylabel: str) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for ax, (_, n) in zip(axes, KINDS, strict=True):
        ax.set_title("unary calls (1 item)" if n == 1 else f"streams of {n} items")
        ax.set_xscale("log", base=2)
        concurrencies = sorted({case["concurrency"] for case in figures.values()})
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.set_xlabel("concurrent calls")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    return fig, list(axes)


def series(
    figures: dict[str, Any], kind: str, client: str, key: str
) -> tuple[list[int], list[float]]:
    points = [
        (case["concurrency"], case[client][key])
        for name, case in figures.items()
        if name.startswith(f"{kind} ") and client in case
    ]
    points.sort()
    return [c for c, _ in points], [v for _, v in points]


def plot(figures: dict[str, Any], out: Path, cores: int, rounds: int) -> None:
    best = f"{cores} cores (shared), best of {rounds} rounds"
    median = f"{cores} cores (shared), median of {rounds} rounds"
    fig, axes = panels(figures, "items/s (higher is better)")
    for ax, (kind, _) in zip(axes, KINDS, strict=True):
        for client in CLIENTS:
            xs, ys = series(figures, kind, client, "items_per_s")
            ax.plot(xs, ys, label=LABELS[client], **STYLES[client])
        ax.set_ylim(bottom=0)
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(f"Throughput by concurrency — {best}", fontsize="medium")
    fig.savefig(out / "throughput.png", dpi=100)
    plt.close(fig)

    fig, axes = panels(figures, "latency per call, ms (lower is better)")
    for ax, (kind, _) in zip(axes, KINDS, strict=True):
        for client in CLIENTS:
            style = STYLES[client]
            xs, p50 = series(figures, kind, client, "p50_ms")
            _, p99 = series(figures, kind, client, "p99_ms")
            ax.plot(xs, p50, label=f"{LABELS[client]}, p50", **style)
            dashed = {**style, "linestyle": "--" if client != "floor" else "none"}
            ax.plot(xs, p99, label=f"{LABELS[client]}, p99", alpha=0.6, **dashed)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    axes[0].legend(loc="best", fontsize="x-small")
    fig.suptitle(f"Latency by concurrency (p50 solid, p99 dashed) — {best}", fontsize="medium")
    fig.savefig(out / "latency.png", dpi=100)
    plt.close(fig)

    fig, axes = panels(figures, "client CPU ms per call (lower is better)")
    for ax, (kind, _) in zip(axes, KINDS, strict=True):
        for client in CLIENTS:
            xs, ys = series(figures, kind, client, "cpu_ms_per_call")
            ax.plot(xs, ys, label=LABELS[client], **STYLES[client])
        ax.set_ylim(bottom=0)
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(f"Client CPU time per call (process_time) — {median}", fontsize="medium")
    fig.savefig(out / "cpu.png", dpi=100)
    plt.close(fig)


def write_table(figures: dict[str, Any], out: Path) -> None:
    """``figures.csv``: one row per case and client, for the page's csv-table."""
    with open(out / "figures.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["case", "client", "items/s", "p50 ms", "p99 ms", "CPU ms/call", "trioplane / Dynamo"]
        )
        for name, case in figures.items():
            for client in CLIENTS:
                if client not in case:
                    continue
                row = case[client]
                ratio = ""
                if client == "trioplane":
                    items, cpu = case["ratio_items_per_s"], case["ratio_cpu_per_call"]
                    ratio = f"{items:.2f}x items/s, {cpu:.2f}x CPU"
                writer.writerow(
                    [
                        name,
                        client,
                        f"{row['items_per_s']:,.0f}",
                        f"{row['p50_ms']:.2f}",
                        f"{row['p99_ms']:.2f}",
                        f"{row['cpu_ms_per_call']:.3f}",
                        ratio,
                    ]
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, help="per case, client and round (2; --full: 3)")
    parser.add_argument("--rounds", type=int, help="rounds, clients interleaved (5; --full: 7)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", help="concurrencies (1 4 16 64; --full: 1 to 64)"
    )
    parser.add_argument("--full", action="store_true", help="a longer, finer run (~20 min)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the files go")
    parser.add_argument(
        "--replot", action="store_true", help="redraw from --out's figures.json, measuring nothing"
    )
    args = parser.parse_args()
    if args.replot:
        document = json.loads((args.out / "figures.json").read_text())
        write_table(document["cases"], args.out)
        plot(document["cases"], args.out, document["machine"]["cores"], document["rounds"])
        return
    seconds = args.seconds or (3.0 if args.full else 2.0)
    rounds_wanted = args.rounds or (7 if args.full else 5)
    concurrencies = args.concurrency or ([1, 2, 4, 8, 16, 32, 64] if args.full else [1, 4, 16, 64])
    cases = cases_for(concurrencies)
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    began = time.perf_counter()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp, run_dynamo_worker(Path(tmp), [ENDPOINT]) as worker:
        instance = worker.instances[ENDPOINT]
        for index in range(rounds_wanted):
            rounds.append(one_round(Path(tmp), instance, cases, seconds, index))
            print(f"round {index + 1}/{rounds_wanted} done", file=sys.stderr)
    figures = summarize(rounds, cases)
    about = machine()
    method = (
        f"one Dynamo {DYNAMO_VERSION} worker (file discovery, TCP plane) in its own process; "
        f"each client in turn, {seconds:g} s per case after a 0.5 s warm-up, the order "
        f"rotating, {rounds_wanted} rounds; rates and latencies from each case's best round "
        "(most items/s), client CPU per call (time.process_time) the median over rounds, "
        "ratios the median of the per-round ratios; the floor at concurrency 1 only"
    )
    document = {
        "date": datetime.date.today().isoformat(),
        "machine": {
            **about,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "method": method,
        "seconds": seconds,
        "rounds": rounds_wanted,
        "concurrencies": concurrencies,
        "run_seconds": round(time.perf_counter() - began),
        "cases": figures,
    }
    (args.out / "figures.json").write_text(json.dumps(document, indent=1) + "\n")
    write_table(figures, args.out)
    plot(figures, args.out, about["cores"], rounds_wanted)
    print(f"wrote {args.out} in {document['run_seconds']} s")
    for name, case in figures.items():
        print(
            f"{name:<16} trioplane/dynamo {case['ratio_items_per_s']:.2f}x items/s, "
            f"{case['ratio_cpu_per_call']:.2f}x CPU per call"
        )


if __name__ == "__main__":
    main()
