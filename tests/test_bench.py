"""``trioplane bench``: its statistics (sans-io, against simple references) and the
command itself, run as a user runs it, against ``--demo`` and a separate worker."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trioplane
from trioplane.bench import (
    BenchStats,
    Latencies,
    format_table,
    parse_duration,
    progress_line,
    report,
)
from trioplane.worker import RequestContext, open_worker

#: The command under test. ``python -m trioplane.bench`` runs the subcommand on its own;
#: once ``trioplane`` wires it in, ``[sys.executable, "-m", "trioplane", "bench"]``.
BENCH = [sys.executable, "-m", "trioplane", "bench"]

# -- the sans-io part ---------------------------------------------------------------------


def nearest_rank(values: list[float], p: int) -> float:
    """The reference: the smallest value that at least p % of the values are at or below."""
    return min(v for v in values if sum(w <= v for w in values) * 100 >= p * len(values))


latency_lists = st.lists(
    st.one_of(
        st.floats(min_value=0, max_value=1e4, allow_nan=False),
        st.sampled_from([0.0, 1e-9, 1e-6, 0.001, 0.0015, 1.0]),  # ties and edges
    ),
    min_size=1,
    max_size=300,
)


@given(values=latency_lists, p=st.integers(min_value=1, max_value=100))
def test_percentiles_are_within_the_relative_error_of_the_exact_ones(
    values: list[float], p: int
) -> None:
    latencies = Latencies()
    for value in values:
        latencies.add(value)
    exact = nearest_rank(values, p)
    # The bucket bound, a clock tick for values that small, and float rounding.
    slack = Latencies.RELATIVE_ERROR * exact + Latencies.RESOLUTION + 1e-12 * exact
    assert abs(latencies.percentile(p) - exact) <= slack
    assert latencies.percentile(100) == max(values)  # the maximum is exact
    assert latencies.min <= latencies.percentile(p) <= latencies.max


@given(values=latency_lists)
def test_percentiles_rise_with_p_and_the_summary_is_exact_where_it_says(
    values: list[float],
) -> None:
    latencies = Latencies()
    for value in values:
        latencies.add(value)
    cuts = [latencies.percentile(p) for p in range(1, 101)]
    assert cuts == sorted(cuts)
    summary = latencies.summary()
    assert summary["count"] == len(values)
    assert summary["max"] == max(values)
    assert summary["mean"] == pytest.approx(statistics.fmean(values))
    assert (summary["p50"], summary["p90"], summary["p99"]) == (cuts[49], cuts[89], cuts[98])


def test_a_single_value_is_every_percentile_and_no_value_is_none() -> None:
    latencies = Latencies()
    assert latencies.summary() == {
        "count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None
    }  # fmt: skip
    with pytest.raises(ValueError, match="no values"):
        latencies.percentile(50)
    latencies.add(0.0123)
    assert {latencies.percentile(p) for p in (1, 50, 99, 100)} == {0.0123}
    with pytest.raises(ValueError, match="from 1 to 100"):
        latencies.percentile(0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("2m", 120), ("500ms", 0.5), ("10", 10), ("1.5", 1.5), (".25s", 0.25),
     ("1h", 3600), (" 3 s ", 3)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "abc", "-1s", "0", "0ms", "3 days", "1m30s", "1e3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10**9))
def test_milliseconds_are_thousandths(ms: int) -> None:
    assert parse_duration(f"{ms}ms") == pytest.approx(parse_duration(str(ms)) / 1000)


def test_report_counts_add_up_and_the_table_shows_them() -> None:
    stats = BenchStats()
    stats.started = 7
    for _ in range(3):
        stats.latencies["ack"].add(0.001)
        stats.succeeded(items=4, seconds=0.002)
    stats.failed("RemoteUnknown", "ValueError: boom", items=1)
    stats.failed("Timeout", "the call took longer than 1 s", items=0)
    stats.failed("RemoteUnknown", "ValueError: other", items=0)
    figures = report(
        stats, elapsed=2.0, cpu=1.0, endpoint="ns.comp.ep", request={"n": 4}, concurrency=2,
        requests=None, duration=10.0, timeout=1.0,
    )  # fmt: skip
    assert figures["requests"] == 6 == figures["successes"] + figures["errors"]
    assert figures["unfinished"] == 1
    assert figures["items"] == 13
    assert figures["requests_per_s"] == 3.0
    assert figures["errors_by_kind"] == {
        "RemoteUnknown": {"count": 2, "example": "ValueError: boom"},
        "Timeout": {"count": 1, "example": "the call took longer than 1 s"},
    }
    assert figures["latency_s"]["total"]["count"] == 3
    assert figures["latency_s"]["first_item"]["p50"] is None
    table = format_table(figures)
    assert "6 requests, 2 at a time, in 2.00 s (1 unfinished, not counted)" in table
    assert re.search(r"errors +3  \(50\.0%\)", table)
    assert re.search(r"RemoteUnknown +2  ValueError: boom", table)
    assert re.search(r"ack +1\.00 +1\.00 +1\.00 +1\.00", table)
    assert re.search(r"first item +- +- +- +-", table)
    json.dumps(figures)  # --json can print it


@pytest.mark.parametrize(
    ("done", "elapsed", "requests", "duration", "filled"),
    [(50, 1.0, 100, None, 5), (10, 5.0, 100, 10.0, 5), (0, 0.0, None, None, 0),
     (100, 20.0, 100, 10.0, 10)],
)  # fmt: skip
def test_the_progress_bar_follows_the_nearer_limit(
    done: int, elapsed: float, requests: int | None, duration: float | None, filled: int
) -> None:
    line = progress_line(done, 2, elapsed, requests, duration, width=10)
    assert line.startswith(f"[{'#' * filled}{'.' * (10 - filled)}] {done}")
    assert line.endswith(" 2 errors")


# -- the command --------------------------------------------------------------------------


async def bench(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(120):
        return await trio.run_process(
            [*BENCH, *args], capture_stdout=True, capture_stderr=True, check=False
        )


def assert_counts_add_up(figures: dict[str, Any]) -> None:
    kinds = figures["errors_by_kind"]
    assert figures["requests"] == figures["successes"] + figures["errors"]
    assert figures["errors"] == sum(kind["count"] for kind in kinds.values())


async def test_demo_json_counts_every_call_and_item() -> None:
    result = await bench("--demo", '{"n": 7}', "-n", "300", "-c", "8", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""  # no progress bar: stderr is not a terminal
    figures = json.loads(result.stdout)
    assert_counts_add_up(figures)
    assert (figures["requests"], figures["successes"], figures["errors"]) == (300, 300, 0)
    assert figures["items"] == 300 * 7
    assert figures["unfinished"] == 0
    assert figures["demo"] is True
    assert figures["endpoint"] == "demo.loop.generate"
    latency = figures["latency_s"]
    assert [latency[m]["count"] for m in ("ack", "first_item", "inter_item", "total")] == [
        300, 300, 300 * 6, 300
    ]  # fmt: skip
    for moment in latency.values():
        assert 0 <= moment["p50"] <= moment["p90"] <= moment["p99"] <= moment["max"]
    # One call's parts come in order: acked, then its first item, then done.
    assert latency["ack"]["max"] <= latency["total"]["max"]
    assert latency["first_item"]["p50"] <= latency["total"]["p50"]
    assert figures["requests_per_s"] == pytest.approx(300 / figures["elapsed_s"])


async def test_demo_table() -> None:
    result = await bench("--demo", "-n", "40", "-c", "4")  # the demo's request: {"n": 10}
    assert result.returncode == 0, result.stderr
    table = result.stdout.decode()
    assert table.startswith('demo.loop.generate {"n": 10}  (an in-process demo worker)\n')
    assert "40 requests, 4 at a time, in " in table
    assert re.search(r"items +400\n", table)
    assert re.search(r"errors +0\n", table)
    assert re.search(r"latency ms +p50 +p90 +p99 +max\n", table)
    for label in ("ack", "first item", "inter-item", "total"):
        assert re.search(rf"\n  {label} +(\d+\.\d\d +){{3}}\d+\.\d\d(\n|$)", table), label


async def test_duration_stops_an_unbounded_run() -> None:
    result = await bench("--demo", '{"n": 2}', "--duration", "1500ms", "-c", "4", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert_counts_add_up(figures)
    assert figures["limits"] == {"requests": None, "duration_s": 1.5, "timeout_s": None}
    assert 1.5 <= figures["elapsed_s"] < 10
    assert figures["requests"] > 0
    assert figures["unfinished"] <= 4  # the calls in flight at the end
    assert figures["items"] == 2 * figures["requests"]


async def test_calls_failing_at_once_still_end_at_the_deadline() -> None:
    # No instance 1: each call fails before it awaits anything.
    result = await bench("--demo", "--instance-id", "1", "--duration", "1s", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert_counts_add_up(figures)
    assert figures["successes"] == 0
    assert figures["errors"] > 0
    assert list(figures["errors_by_kind"]) == ["InstanceNotFound"]
    assert figures["errors_by_kind"]["InstanceNotFound"]["example"].startswith(
        "no instance 1 of demo.loop.generate"
    )
    assert figures["latency_s"]["ack"]["count"] == 0


def call_outcome(k: int) -> str:
    """What the worker below does with its k-th call (from 1)."""
    if k % 4 == 0:
        return "fail after an item"
    if k % 5 == 0:
        return "fail at once"
    if k % 7 == 0:
        return "hang"
    return "ok"


async def test_a_separate_worker_errors_by_kind(tmp_path: Path) -> None:
    calls = 0

    async def flaky(request: Any, context: RequestContext) -> AsyncIterator[Any]:
        nonlocal calls
        calls += 1
        outcome = call_outcome(calls)
        if outcome == "fail at once":
            raise trioplane.InvalidArgument("bad request")
        yield {"i": 0}
        if outcome == "fail after an item":
            raise RuntimeError("boom")
        if outcome == "hang":
            with trio.move_on_after(5):
                await context.wait_stopped()
            return
        for i in range(1, request["n"]):
            yield {"i": i}

    async with open_worker({"ns.bench.flaky": flaky}, discovery_root=tmp_path):
        result = await bench(
            "ns.bench.flaky", '{"n": 3}', "-n", "40", "-c", "8", "--timeout", "700ms",
            "--discovery-dir", str(tmp_path), "--json",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert_counts_add_up(figures)
    outcomes = [call_outcome(k) for k in range(1, 41)]
    assert figures["requests"] == 40 == calls
    assert figures["successes"] == outcomes.count("ok")
    kinds = {kind: error["count"] for kind, error in figures["errors_by_kind"].items()}
    assert kinds == {
        "RemoteUnknown": outcomes.count("fail after an item"),
        "InvalidArgument": outcomes.count("fail at once"),
        "Timeout": outcomes.count("hang"),
    }
    assert figures["errors_by_kind"]["RemoteUnknown"]["example"] == "RuntimeError: boom"
    assert figures["errors_by_kind"]["Timeout"]["example"] == ("the call took longer than 0.7 s")
    # Items of failed calls count too: 3 per success, the one sent before an error or hang.
    assert figures["items"] == 3 * outcomes.count("ok") + outcomes.count(
        "fail after an item"
    ) + outcomes.count("hang")
    assert figures["latency_s"]["total"]["count"] == outcomes.count("ok")
    assert figures["latency_s"]["ack"]["count"] == 40


async def test_no_instances_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = await bench("ns.comp.ep", "{}", "--discovery-dir", str(tmp_path), "--wait", "0.2")
    assert result.returncode == 1
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith("trioplane: NoInstances: no instances of ns.comp.ep found in")
    assert result.stdout == b""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ns.comp.ep", "{not json"], "not valid JSON"),
        (["ns.comp.ep"], "give the endpoint and the request"),
        ([], "give the endpoint and the request"),
        (["nodots", "{}"], "endpoint must be"),
        (["--demo", "-n", "0"], "argument -n/--requests: must be at least 1"),
        (["--demo", "-c", "many"], "argument -c/--concurrency: not a whole number"),
        (["--demo", "--duration", "soon"], "not a duration: 'soon'"),
        (["--demo", "--timeout", "0s"], "more than zero"),
        (["--demo", '{"items": 3}'], 'the demo worker takes {"n": ITEMS}'),
        (["--demo", "a.b.c", "{}"], "with --demo, give the request only"),
        (["--demo", "--discovery-dir", "."], "--demo serves its own worker"),
        (["a.b.c", "{}", "--instance-id", "xyz"], "not an instance id"),
        (["a.b.c", "{}", "--discovery", "zk://x:1"], "zk://x:1"),
        (["a.b.c", "{}", "--router-mode", "best"], "invalid choice: 'best'"),
        (["a.b.c", "{}", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
async def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = await bench(*args)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith("trioplane bench: error: ")
    assert message in line
    assert result.stdout == b""


def test_a_closed_stdout_ends_quietly() -> None:
    process = subprocess.Popen(
        [*BENCH, "--demo", '{"n": 1}', "-n", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    process.stdout.close()  # as `| head` that has read enough
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 141  # as the other commands: 128 + SIGPIPE
    assert stderr == b""


async def test_ctrl_c_prints_the_partial_figures_and_exits_130() -> None:
    """On a terminal, stderr shows a progress bar, redrawn at most ~10 times a second;
    SIGINT then ends the run with the figures so far."""
    controller, terminal = os.openpty()
    process = await trio.lowlevel.open_process(
        [*BENCH, "--demo", '{"n": 3}', "--duration", "2m", "-c", "4", "--json"],
        stdout=subprocess.PIPE, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    assert process.stdout is not None
    shown = b""
    try:
        async with trio.lowlevel.FdStream(controller) as bar:
            with trio.fail_after(60):
                # Until the bar counts a finished request.
                while not re.search(rb"\] [1-9][\d,]* requests", shown):
                    shown += await bar.receive_some()
                process.send_signal(signal.SIGINT)
                stdout = await process.stdout.receive_some(1 << 20)
                while chunk := await process.stdout.receive_some(1 << 20):
                    stdout += chunk
                assert await process.wait() == 130
                try:
                    while chunk := await bar.receive_some():
                        shown += chunk
                except (trio.BrokenResourceError, OSError):
                    pass  # EIO: the terminal's other side closed
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    figures = json.loads(stdout)
    assert figures["interrupted"] is True
    assert_counts_add_up(figures)
    assert figures["requests"] > 0
    assert figures["unfinished"] <= 4
    assert figures["items"] == 3 * figures["requests"]
    assert figures["elapsed_s"] < 60
    shown = shown.replace(b"\r\n", b"\n")  # the terminal's end of line
    draws = shown.count(b"\r")
    assert 1 <= draws <= figures["elapsed_s"] * 10 + 3, (draws, figures["elapsed_s"])
    last = shown.decode().rsplit("\r", 1)[-1]  # the final draw
    assert re.match(rf"\[[#.]{{30}}\] {figures['requests']:,} requests ", last), last
    assert math.isfinite(figures["requests_per_s"])
