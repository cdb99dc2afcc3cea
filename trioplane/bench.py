"""``trioplane bench``: put a Dynamo endpoint under load and sum up what came back.

``trioplane bench ns.comp.ep '{"n": 10}' -n 10000 -c 16 [--duration 30s]`` makes
``-n`` calls, ``-c`` at a time, with the endpoint client (stopping at ``--duration``
if that comes first), then prints requests/s, items/s, the errors by kind and the
latency percentiles of four moments of a call: the ack (the worker accepted the
request), the first item, the gaps between items, and the whole call. ``--json``
prints the same figures as one JSON object. ``--demo`` serves the endpoint from an
in-process trioplane worker, so the command runs on a machine with nothing else.

The module has two parts. The first is sans-io (no Trio): :func:`parse_duration`,
:class:`Latencies` (percentiles in bounded memory), :class:`BenchStats` (what the
calls did), :func:`report` (the figures) and :func:`format_table`. The second is
the thin Trio load loop and the command: :func:`add_bench_parser` and
:func:`run_bench`, which ``trioplane`` wires in as its ``bench`` subcommand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack, suppress
from typing import Any, NoReturn, TextIO

import trio

import trioplane
from trioplane._demo import ENDPOINT as DEMO_ENDPOINT
from trioplane._demo import generate as demo_handler
from trioplane._util import collapse_groups
from trioplane.addresses import parse_endpoint
from trioplane.discovery import describe
from trioplane.routing import ROUTER_MODES

__all__ = [
    "BenchStats",
    "Latencies",
    "add_bench_parser",
    "format_table",
    "parse_duration",
    "progress_line",
    "report",
    "run_bench",
]

# -- the sans-io part: no Trio below, until the load loop ---------------------------------

_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?")


def parse_duration(text: str) -> float:
    """``"30s"``, ``"2m"``, ``"500ms"``, ``"1h"`` or plain seconds (``"1.5"``) -> seconds.

    ``ValueError`` for anything else, and for zero.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 30s, 2m, 500ms, 10)")
    seconds = float(match[1]) * _UNITS[match[2] or "s"]
    if seconds <= 0:
        raise ValueError(f"a duration must be more than zero, not {text!r}")
    return seconds


class Latencies:
    """Durations in seconds, kept in buckets :data:`RELATIVE_ERROR` wide, so memory stays
    bounded however many calls and items a run sees.

    :meth:`percentile` is within :data:`RELATIVE_ERROR` of the exact value (nearest
    rank); ``count``, ``total``, ``min`` and ``max`` (the 100th percentile) are exact.
    Each bucket holds the values in ``(g**(k-1), g**k]`` for ``g = (1+e)/(1-e)`` and
    is reported as ``2*g**k/(g+1)``, at most ``e`` away from any of them (DDSketch's
    mapping).
    Values up to :data:`RESOLUTION` (a clock's tick) share one bucket.
    """

    RELATIVE_ERROR = 0.01
    RESOLUTION = 1e-9
    _GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
    _LOG_GAMMA = math.log(_GAMMA)

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self._ticks = 0  # values up to RESOLUTION
        self._buckets: dict[int, int] = {}

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds
        if seconds <= self.RESOLUTION:
            self._ticks += 1
        else:
            key = math.ceil(math.log(seconds) / self._LOG_GAMMA)
            self._buckets[key] = self._buckets.get(key, 0) + 1

    def percentile(self, p: int) -> float:
        """The ``p``-th percentile (``1 <= p <= 100``): the smallest value that at least
        ``p`` % of the values are at or below (nearest rank). ``ValueError`` if empty."""
        if not 1 <= p <= 100:
            raise ValueError(f"a percentile is from 1 to 100, not {p}")
        if not self.count:
            raise ValueError("no values")
        rank = -(-p * self.count // 100)  # ceil, in integers
        if rank == self.count:
            return self.max
        seen = self._ticks
        value = self.min
        if seen < rank:
            for key in sorted(self._buckets):
                seen += self._buckets[key]
                if seen >= rank:
                    value = 2 * self._GAMMA**key / (self._GAMMA + 1)
                    break
        return min(max(value, self.min), self.max)

    def summary(self) -> dict[str, float | int | None]:
        """``count``, then ``p50``, ``p90``, ``p99``, ``max`` and ``mean`` in seconds
        (``None`` without values)."""
        figures: dict[str, float | int | None] = {"count": self.count}
        for p in (50, 90, 99):
            figures[f"p{p}"] = self.percentile(p) if self.count else None
        figures["max"] = self.max if self.count else None
        figures["mean"] = self.total / self.count if self.count else None
        return figures


#: The four moments of a call whose latencies are kept, and their labels.
MOMENTS = {
    "ack": "ack",
    "first_item": "first item",
    "inter_item": "inter-item",
    "total": "total",
}


class BenchStats:
    """What the calls of a run did; fed by the load loop, read by :func:`report`.

    ``started`` counts calls begun; a call ends in :meth:`succeeded` or
    :meth:`failed` (calls cut off by the end of the run do neither). Latencies:
    ``ack`` from the call's start to the worker accepting the request, ``first_item``
    to its first item, ``inter_item`` between consecutive items, ``total`` to the end
    of a successful call's stream.
    """

    def __init__(self) -> None:
        self.started = 0
        self.successes = 0
        self.items = 0
        self.errors: dict[str, int] = {}
        #: The first message seen of each kind of error.
        self.error_examples: dict[str, str] = {}
        self.latencies = {moment: Latencies() for moment in MOMENTS}

    @property
    def failures(self) -> int:
        return sum(self.errors.values())

    @property
    def finished(self) -> int:
        return self.successes + self.failures

    def succeeded(self, items: int, seconds: float) -> None:
        self.successes += 1
        self.items += items
        self.latencies["total"].add(seconds)

    def failed(self, kind: str, message: str, items: int) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.error_examples.setdefault(kind, message)
        self.items += items


def report(
    stats: BenchStats,
    *,
    elapsed: float,
    cpu: float,
    endpoint: str,
    request: Any,
    concurrency: int,
    requests: int | None,
    duration: float | None,
    timeout: float | None,
    demo: bool = False,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The figures of a run, as ``--json`` prints them (latencies in seconds).

    ``requests`` (the calls that ended) is always ``successes + errors``;
    ``unfinished`` calls were cut off by ``--duration`` or Ctrl-C and are not counted.
    """
    done = stats.finished
    return {
        "endpoint": endpoint,
        "request": request,
        "demo": demo,
        "concurrency": concurrency,
        "limits": {"requests": requests, "duration_s": duration, "timeout_s": timeout},
        "interrupted": interrupted,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "requests": done,
        "successes": stats.successes,
        "errors": stats.failures,
        "errors_by_kind": {
            kind: {"count": count, "example": stats.error_examples[kind]}
            for kind, count in sorted(stats.errors.items(), key=lambda kv: (-kv[1], kv[0]))
        },
        "unfinished": stats.started - done,
        "items": stats.items,
        "requests_per_s": done / elapsed if elapsed > 0 else None,
        "items_per_s": stats.items / elapsed if elapsed > 0 else None,
        "latency_s": {moment: stats.latencies[moment].summary() for moment in MOMENTS},
    }


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(figures: dict[str, Any]) -> str:
    """The human-readable table of a :func:`report`."""
    request = json.dumps(figures["request"], ensure_ascii=False)
    where = "  (an in-process demo worker)" if figures["demo"] else ""
    lines = [f"{figures['endpoint']} {_shorten(request, 60)}{where}"]
    done, elapsed = figures["requests"], figures["elapsed_s"]
    ran = f"{done:,} requests, {figures['concurrency']} at a time, in {elapsed:.2f} s"
    if figures["interrupted"]:
        ran = f"interrupted: {ran}"
    if figures["unfinished"]:
        ran += f" ({figures['unfinished']} unfinished, not counted)"
    lines += [ran, ""]
    errors = figures["errors"]
    share = f"  ({errors / done:.1%})" if errors and done else ""
    core = f" ({figures['cpu_s'] / elapsed:.0%} of one core)" if elapsed > 0 else ""
    lines += [
        f"  {'requests/s':<16}{_rate(figures['requests_per_s']):>12}",
        f"  {'items/s':<16}{_rate(figures['items_per_s']):>12}",
        f"  {'items':<16}{figures['items']:>12,}",
        f"  {'successes':<16}{figures['successes']:>12,}",
        f"  {'errors':<16}{errors:>12,}{share}",
    ]
    for kind, error in figures["errors_by_kind"].items():
        example = _shorten(error["example"], 50)
        lines.append(f"    {kind:<18}{error['count']:>8,}  {example}")
    lines += [
        f"  {'CPU (process)':<16}{figures['cpu_s']:>10.2f} s{core}",
        "",
        f"  {'latency ms':<14}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}",
    ]
    for moment, label in MOMENTS.items():
        latency = figures["latency_s"][moment]
        cells = "".join(f"{_ms(latency[k]):>9}" for k in ("p50", "p90", "p99", "max"))
        lines.append(f"  {label:<14}{cells}")
    return "\n".join(lines)


def progress_line(
    done: int,
    errors: int,
    elapsed: float,
    requests: int | None,
    duration: float | None,
    width: int = 30,
) -> str:
    """One line of the progress bar: how far along the nearer limit, and the rate so far."""
    fraction = 0.0
    if requests:
        fraction = done / requests
    if duration:
        fraction = max(fraction, elapsed / duration)
    filled = min(width, int(width * fraction))
    of = f"/{requests:,}" if requests else ""
    rate = done / elapsed if elapsed > 0 else 0.0
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {done:,}{of} requests  {elapsed:.1f} s  "
        f"{rate:,.0f} req/s  {errors:,} errors"
    )


# -- the Trio part: the load loop and the command -----------------------------------------

#: How often the progress bar is redrawn (on a terminal only).
PROGRESS_INTERVAL = 0.1
#: ``-n`` when neither ``-n`` nor ``--duration`` is given.
DEFAULT_REQUESTS = 1000
#: The exit statuses, the same as the other ``trioplane`` commands'.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE, what a shell reports for `yes | head -1`
EXIT_STATUS_HELP = """\
exit status:
  0    the run ended (-n calls made, or --duration passed), whatever the share
       of failed calls: they are counted, not fatal
  1    the run could not start: no instances, discovery unreachable
  2    bad arguments (one line on stderr says which)
  130  interrupted by SIGINT (Ctrl-C), after the figures so far
  141  stdout closed before the output ended (e.g. piped into head): the
       command stops quietly, as a Unix tool killed by SIGPIPE does"""


class _BadArgument(Exception):
    """An argument found wrong once the run began (exit status 2)."""


class _Load:
    """``concurrency`` tasks calling the endpoint until the run's limits, into ``stats``."""

    def __init__(
        self, client: trioplane.EndpointClient, request: Any, args: argparse.Namespace
    ) -> None:
        self.client = client
        self.request = request
        self.instance_id: int | None = args.instance_id
        self.requests: int | None = args.requests
        self.duration: float | None = args.duration
        self.timeout: float | None = args.timeout
        self.concurrency: int = args.concurrency
        self.stats = BenchStats()
        self.began = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    async def run(self) -> None:
        """Until ``requests`` calls ended or ``duration`` passed (calls then in flight are
        cancelled and left uncounted)."""
        self.began = time.perf_counter()
        deadline = trio.current_time() + (self.duration or math.inf)
        with trio.move_on_at(deadline):
            async with trio.open_nursery() as nursery:
                for _ in range(self.concurrency):
                    nursery.start_soon(self._caller)

    async def _caller(self) -> None:
        stats = self.stats
        while self.requests is None or stats.started < self.requests:
            stats.started += 1
            await self._call()

    async def _call(self) -> None:
        stats = self.stats
        ack, first, gaps = (stats.latencies[m] for m in ("ack", "first_item", "inter_item"))
        items = 0
        start = last = time.perf_counter()
        try:
            with trio.fail_after(self.timeout or math.inf):
                async with self.client.generate(
                    self.request, instance_id=self.instance_id
                ) as responses:
                    ack.add(time.perf_counter() - start)
                    async for _ in responses:
                        now = time.perf_counter()
                        if items:
                            gaps.add(now - last)
                        else:
                            first.add(now - start)
                        last = now
                        items += 1
        except trio.TooSlowError:
            stats.failed("Timeout", f"the call took longer than {self.timeout:g} s", items)
        except Exception as exc:  # a failed call is counted, by kind, not fatal
            stats.failed(type(exc).__name__, str(exc) or type(exc).__name__, items)
            # Some calls fail without awaiting anything (no such instance): let the
            # deadline, Ctrl-C and the progress bar in before the next one.
            await trio.lowlevel.checkpoint()
        else:
            stats.succeeded(items, time.perf_counter() - start)

    async def show_progress(self, out: TextIO) -> None:
        """Redraw the progress bar on ``out`` every :data:`PROGRESS_INTERVAL` until
        cancelled, then once more and end its line. A terminal gone stops it quietly."""
        try:
            while True:
                self._draw(out)
                await trio.sleep(PROGRESS_INTERVAL)
        finally:
            self._draw(out, "\n")

    def _draw(self, out: TextIO, end: str = "") -> None:
        stats = self.stats
        line = progress_line(
            stats.finished, stats.failures, self.elapsed(), self.requests, self.duration
        )
        with suppress(OSError, ValueError):  # a closed terminal (or file)
            out.write(f"\r{line}\x1b[K{end}")
            out.flush()


async def _bench(args: argparse.Namespace, request: Any) -> tuple[dict[str, Any], bool]:
    """Open the client (and the demo worker), run the load; the figures, and whether
    it was interrupted (SIGINT)."""
    from trioplane.cli import chosen_discovery  # here: trioplane.cli imports this module

    endpoint = DEMO_ENDPOINT if args.demo else args.endpoint
    options: trioplane.EndpointClientOptions = {
        "codec": args.codec,
        "router_mode": args.router_mode,
    }
    if args.nats_server:
        options["nats_servers"] = args.nats_server
    async with AsyncExitStack() as stack:
        discovery: Any
        if args.demo:
            root = stack.enter_context(tempfile.TemporaryDirectory())
            worker = await stack.enter_async_context(
                trioplane.open_worker({DEMO_ENDPOINT: demo_handler}, discovery_root=root)
            )
            discovery = worker.instances
        else:
            try:
                discovery = chosen_discovery(args)
            except ValueError as exc:
                raise _BadArgument(str(exc)) from None
        client = await stack.enter_async_context(
            trioplane.open_endpoint_client(endpoint, discovery, **options)
        )
        with trio.move_on_after(args.wait):
            await client.wait_for_instances()
        if not client.instances():
            raise trioplane.NoInstances(
                f"no instances of {client.endpoint_path} found in "
                f"{describe(client.discovery)} within {args.wait:g} s"
            )
        load = _Load(client, request, args)
        interrupted = False
        cpu = time.process_time()
        with trio.open_signal_receiver(signal.SIGINT) as signals, collapse_groups():
            async with trio.open_nursery() as nursery:

                async def interrupt() -> None:
                    nonlocal interrupted
                    async for _ in signals:
                        interrupted = True
                        nursery.cancel_scope.cancel()

                nursery.start_soon(interrupt)
                if sys.stderr.isatty():
                    nursery.start_soon(load.show_progress, sys.stderr)
                await load.run()
                nursery.cancel_scope.cancel()
        figures = report(
            load.stats,
            elapsed=load.elapsed(),
            cpu=time.process_time() - cpu,
            endpoint=client.endpoint_path,
            request=request,
            concurrency=args.concurrency,
            requests=args.requests,
            duration=args.duration,
            timeout=args.timeout,
            demo=args.demo,
            interrupted=interrupted,
        )
    return figures, interrupted


def _usage_error(message: str) -> int:
    print(f"trioplane bench: error: {message} (see trioplane bench --help)", file=sys.stderr)
    return EXIT_USAGE


def _print_figures(text: str) -> bool:
    """Print ``text`` on stdout; ``False`` if its reader went away (``| head``): then
    quietly, with stdout pointed at /dev/null so the flush at exit cannot fail again."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        with suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, sys.stdout.fileno())
            finally:
                os.close(devnull)
        return False
    return True


def run_bench(args: argparse.Namespace) -> int:
    """Run ``trioplane bench`` with parsed arguments; the exit status (see
    :data:`EXIT_STATUS_HELP`): 0 when the run ended (failed calls are counted, not
    fatal), 1 when it could not run (no instances...), 2 for a bad argument, 130 when
    interrupted (after the partial figures), 141 when stdout's reader went away."""
    import logging

    logging.getLogger("trioplane").addHandler(logging.NullHandler())
    if args.demo and (args.discovery or args.discovery_dir or args.nats_server):
        return _usage_error("--demo serves its own worker: no discovery or NATS options")
    if args.demo and args.request is not None:
        return _usage_error("with --demo, give the request only (the endpoint is the demo's)")
    text = args.endpoint if args.demo else args.request
    if not args.demo:
        if args.endpoint is None or args.request is None:
            return _usage_error("give the endpoint and the request (or --demo)")
        try:
            parse_endpoint(args.endpoint)
        except ValueError as exc:
            return _usage_error(str(exc))
    if text is None:
        request: Any = {"n": 10}
    else:
        try:
            request = json.loads(text)
        except ValueError as exc:
            return _usage_error(f"the request is not valid JSON: {exc}")
    if args.demo:
        n = request.get("n") if isinstance(request, dict) else None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return _usage_error('the demo worker takes {"n": ITEMS} (ITEMS >= 0)')
    if args.requests is None and args.duration is None:
        args.requests = DEFAULT_REQUESTS
    try:
        figures, interrupted = trio.run(_bench, args, request)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except _BadArgument as exc:
        return _usage_error(str(exc))
    except (trioplane.TrioplaneError, ValueError, OSError) as exc:
        print(f"trioplane: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_FAILED
    text = json.dumps(figures, ensure_ascii=False) if args.json else format_table(figures)
    if not _print_figures(text):
        return EXIT_STDOUT_CLOSED
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` report a usage error in one line (not the usage, then the error),
    unknown options included (which argparse leaves to the top-level parser)."""
    parse_known_args = parser.parse_known_args

    def error(message: str) -> NoReturn:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")

    def parse_all(
        args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, unknown = parse_known_args(args, namespace)
        if unknown:
            error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed, unknown

    parser.error = error  # type: ignore[method-assign]
    parser.parse_known_args = parse_all  # type: ignore[method-assign,assignment]


def add_bench_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Define the ``bench`` subcommand and its options (run it with :func:`run_bench`)."""
    from trioplane.cli import add_call_options, add_discovery_options  # (see _bench)

    parser = commands.add_parser(
        "bench",
        help="call an endpoint many times, concurrently; print rates, errors and latencies",
        description=textwrap.fill(
            "Call a Dynamo endpoint -n times, -c calls at a time (until --duration if that "
            "comes first), with trioplane's endpoint client; then print requests/s, "
            "items/s, the errors by kind and latency percentiles (ack, first item, "
            "inter-item, total), or with --json the same as one JSON object. A progress "
            "bar is drawn on stderr when it is a terminal. With --demo, an in-process "
            "worker serves the endpoint: nothing else is needed.",
            79,
        ),
        usage="%(prog)s ENDPOINT REQUEST [options]\n       %(prog)s --demo [REQUEST] [options]",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _one_line_errors(parser)
    parser.add_argument(
        "endpoint", nargs="?", metavar="ENDPOINT", help="namespace.component.endpoint"
    )
    parser.add_argument(
        "request",
        nargs="?",
        metavar="REQUEST",
        help='the request sent on every call, as JSON (with --demo: {"n": ITEMS}, '
        'default {"n": 10})',
    )
    parser.add_argument(
        "-n",
        "--requests",
        type=_positive_int,
        help=f"calls to make in all (default {DEFAULT_REQUESTS:,}, or no limit with --duration)",
    )
    parser.add_argument(
        "-c", "--concurrency", type=_positive_int, default=1, help="calls at a time (1)"
    )
    parser.add_argument(
        "--duration",
        type=_duration,
        help="stop after this long, e.g. 30s, 2m, 500ms or seconds; calls in flight then "
        "are not counted (with -n: whichever comes first)",
    )
    parser.add_argument(
        "--timeout",
        type=_duration,
        help="a call not ended after this long fails as a Timeout (e.g. 2s; default: none)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the figures as one JSON object on stdout"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve demo.loop.generate from a trioplane worker in this process (it yields "
        'n items for {"n": n}) and load that: needs nothing else installed or running',
    )
    add_discovery_options(parser)
    add_call_options(parser)
    parser.add_argument(
        "--router-mode",
        choices=ROUTER_MODES,
        default="round_robin",
        help="how each call picks an instance (round_robin)",
    )
    parser.add_argument(
        "--wait",
        type=_duration,
        default=10.0,
        help="how long to wait for a first instance before giving up (10s)",
    )
    parser.add_argument(
        "--nats-server", help="NATS server URL for instances on NATS (default: $NATS_SERVER)"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m trioplane.bench ...``: the ``bench`` subcommand on its own."""
    parser = argparse.ArgumentParser(prog="trioplane")
    commands = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(commands)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
