"""The files of the documentation's Performance page (``docs/performance.rst``).

They are drawn from ``speed.py``'s measurement (its ``--json`` document), so the page's
tables and plots come from one run of one command:

    python benchmarks/speed.py --plots                     # measure, then write them
    python benchmarks/performance_plots.py                 # redraw from figures.json
    python benchmarks/performance_plots.py --from out.json # from a speed.py --json file

Writes into ``docs/_static/performance`` (``--out``): ``throughput.png``,
``latency.png`` and ``cpu.png`` (the clients on the Dynamo worker, by concurrency:
medians over the rounds, bars from min to max), ``table_client.csv``,
``table_worker.csv`` and ``figures.csv`` (``speed.py``'s three tables),
``header.txt`` (its first line: machine, load, rounds) and ``figures.json`` (the
document: every round's figures, the method and the machine). Needs matplotlib
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker
from speed import KINDS, header, tables, values

from tests.dynamo import DYNAMO_VERSION

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
#: The files of speed.py's tables, in its order.
TABLE_FILES = ("table_client.csv", "table_worker.csv", "figures.csv")


def series(
    document: dict[str, Any], kind: str, client: str, metric: str
) -> tuple[list[int], list[float], list[float], list[float]]:
    """Concurrencies, medians, mins and maxes of one client's ``metric`` for ``kind``."""
    xs, medians, lows, highs = [], [], [], []
    for name, n, concurrency in document["client_cases"]:
        figures = values(document, f"{client}->dynamo", name, metric)
        if n == KINDS[kind] and figures:
            xs.append(concurrency)
            medians.append(statistics.median(figures))
            lows.append(min(figures))
            highs.append(max(figures))
    return xs, medians, lows, highs


def panels(document: dict[str, Any], ylabel: str) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for ax, n in zip(axes, KINDS.values(), strict=True):
        concurrencies = sorted({c for _, items, c in document["client_cases"] if items == n})
        ax.set_title("unary calls (1 item)" if n == 1 else f"streams of {n} items")
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.set_xlabel("concurrent calls")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    return fig, list(axes)


def with_range(document: dict[str, Any], metric: str, ylabel: str, title: str, out: Path) -> None:
    """One figure of medians with min-max bars, a panel per kind."""
    fig, axes = panels(document, ylabel)
    for ax, kind in zip(axes, KINDS, strict=True):
        for client in CLIENTS:
            xs, medians, lows, highs = series(document, kind, client, metric)
            below = [m - low for m, low in zip(medians, lows, strict=True)]
            above = [high - m for m, high in zip(medians, highs, strict=True)]
            ax.errorbar(
                xs, medians, yerr=[below, above], capsize=3, label=LABELS[client], **STYLES[client]
            )
        ax.set_ylim(bottom=0)
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot(document: dict[str, Any], out: Path) -> None:
    about = f"{document['machine']['cores']} cores (shared), {document['rounds']} rounds"
    with_range(
        document,
        "items/s",
        "items/s (higher is better)",
        f"Throughput by concurrency — {about}: median, bars min-max",
        out / "throughput.png",
    )
    with_range(
        document,
        "client CPU µs/item",
        "client CPU µs per item (lower is better)",
        f"Client CPU time per item (process_time) — {about}: median, bars min-max",
        out / "cpu.png",
    )
    fig, axes = panels(document, "latency per call, ms (lower is better)")
    for ax, kind in zip(axes, KINDS, strict=True):
        for client in CLIENTS:
            style = STYLES[client]
            xs, p50, _, _ = series(document, kind, client, "p50 ms")
            _, p99, _, _ = series(document, kind, client, "p99 ms")
            ax.plot(xs, p50, label=f"{LABELS[client]}, p50", **style)
            dashed = {**style, "linestyle": "--" if client != "floor" else "none"}
            ax.plot(xs, p99, label=f"{LABELS[client]}, p99", alpha=0.6, **dashed)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    axes[0].legend(loc="best", fontsize="x-small")
    fig.suptitle(
        f"Latency by concurrency (p50 solid, p99 dashed) — {about}: medians", fontsize="medium"
    )
    fig.savefig(out / "latency.png", dpi=100)
    plt.close(fig)


def write_all(document: dict[str, Any], out: Path) -> None:
    """Every file of the page, from one ``speed.py`` document."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures.json").write_text(json.dumps(document, indent=1) + "\n")
    (out / "header.txt").write_text(header(document) + "\n")
    for filename, (_, rows) in zip(TABLE_FILES, tables(document), strict=True):
        with open(out / filename, "w", newline="") as file:
            csv.writer(file).writerows(rows)
    plot(document, out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--from", dest="source", type=Path, help="a speed.py --json file (--out's figures.json)"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where the files go")
    args = parser.parse_args()
    source = args.source or args.out / "figures.json"
    write_all(json.loads(source.read_text()), args.out)
    print(f"wrote {args.out} from {source}")


if __name__ == "__main__":
    main()
