"""The ``trioplane`` command (also ``python -m trioplane``).

Subcommands: ``demo``, ``call``, ``instances``, ``serve``. Every failure is one line
on stderr, never a traceback: ``trioplane CMD: error: ... (see trioplane CMD
--help)`` for bad arguments, ``trioplane: ErrorName: ...`` for a command that
failed. The exit status is the same for every subcommand (``trioplane --help``
shows this table too):

===  ==========================================================================
0    success (``serve``: drained after SIGTERM or SIGINT; ``instances``: also
     when there are none)
1    the command failed: the worker's error, no instances, a timeout, discovery
     or NATS unreachable, a worker that cannot listen
2    bad arguments: usage, an endpoint that is not namespace.component.endpoint,
     a request that is not JSON, a bad instance id, number, URL or folder
130  interrupted by SIGINT (Ctrl-C), except ``serve``, which drains and exits 0
141  stdout closed before the output ended (``trioplane call ... | head -1``): the
     command stops quietly, as a Unix tool killed by SIGPIPE does (128 + 13)
===  ==========================================================================

Instance ids are hexadecimal everywhere, as Dynamo prints them (``0x`` optional).
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import logging
import math
import os
import re
import signal
import stat
import sys
import tempfile
import textwrap
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, aclosing, contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

import trio

import trioplane
import trioplane.addresses
from trioplane._demo import whole_loop
from trioplane._util import iter_leaves, unwrap_group
from trioplane.bench import add_bench_parser, run_bench
from trioplane.discovery import (
    DiscoverySource,
    FileDiscovery,
    Registry,
    as_discovery,
    describe,
    discovery_from_env,
    discovery_from_url,
)
from trioplane.processes import add_processes_options, serve_processes
from trioplane.testing import Reply, open_tcp_test_worker
from trioplane.wire.rejections import WORKER_AT_CAPACITY
from trioplane.wire.tcp import RequestFrame

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE, what a shell reports for `yes | head -1`

EXIT_STATUS_HELP = """\
exit status:
  0    success (serve: drained after SIGTERM or SIGINT; instances: also when
       there are none)
  1    the command failed: the worker's error, no instances, a timeout,
       discovery or NATS unreachable, a worker that cannot listen
  2    bad arguments (one line on stderr says which)
  130  interrupted by SIGINT (Ctrl-C); serve drains and exits 0 instead
  141  stdout closed before the output ended (e.g. piped into head): the
       command stops quietly, as a Unix tool killed by SIGPIPE does"""

ETCD_DEFAULT_PORT = 2379


def _discovery_help() -> str:
    """Where instances are found with each option, and without any: Dynamo's rules."""
    file_default = Path(tempfile.gettempdir()) / "dynamo_store_kv"
    return f"""\
discovery (where instances are found):
  --discovery etcd://HOST:PORT[,HOST:PORT...]
      etcd (etcds:// for TLS; port {ETCD_DEFAULT_PORT} if omitted); user, password and TLS
      files from ETCD_AUTH_*, as Dynamo
  --discovery file:///DIR, or --discovery-dir DIR
      Dynamo's file backend: the folder DIR
  neither: from the environment, as a Dynamo process:
      DYN_DISCOVERY_BACKEND unset or etcd: etcd at $ETCD_ENDPOINTS (default
      http://localhost:2379); DYN_DISCOVERY_BACKEND=file: the folder
      $DYN_FILE_KV (default $TMPDIR/dynamo_store_kv, here {file_default})"""


def _fill(*paragraphs: str) -> str:
    """Plain help text, wrapped (the parsers keep line breaks, for the tables)."""
    return "\n\n".join(textwrap.fill(p, 79) for p in paragraphs)


# -- output ----------------------------------------------------------------------------


class StdoutClosed(Exception):
    """The reader of stdout went away (``| head``): the command stops quietly."""


class _GuardedStdout:
    """``sys.stdout`` with a ``BrokenPipeError`` turned into :class:`StdoutClosed`, so
    only a write to stdout, never a socket's broken pipe, ends the command quietly."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise StdoutClosed from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise StdoutClosed from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _silence_stdout(stream: TextIO) -> None:
    """Point stdout's file descriptor at /dev/null, so the flush at exit cannot fail
    again (Python's advice for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor: nothing to do
        pass


def fail(message: str) -> None:
    """One line on stderr for a command that failed (exit status 1)."""
    print(f"trioplane: {message}", file=sys.stderr)


# -- argument types: each a clear message for argparse (exit status 2) ---------------------


def _type_error(message: str) -> NoReturn:
    raise argparse.ArgumentTypeError(message)


def endpoint_name(text: str) -> str:
    """``namespace.component.endpoint`` (``dyn://`` allowed), checked."""
    try:
        trioplane.addresses.parse_endpoint(text)
    except ValueError as exc:
        _type_error(str(exc))
    return text


_INSTANCE_ID = re.compile(r"(?:0[xX])?([0-9a-fA-F]{1,16})")


def parse_instance_id(text: str) -> int:
    """An instance id: hexadecimal, as Dynamo and ``trioplane instances`` print it,
    with or without ``0x`` (``1234`` is 0x1234)."""
    match = _INSTANCE_ID.fullmatch(text.strip())
    if match is None:
        _type_error(f"not an instance id: {text!r} (instance ids are hexadecimal, e.g. 7f3a12c9)")
    return int(match.group(1), 16)


def json_request(text: str) -> Any:
    """The request, parsed from JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        _type_error(f"the request is not valid JSON: {exc} (in {text!r})")


def seconds(text: str) -> float:
    """A duration in seconds: >= 0 (``inf``: no limit)."""
    try:
        value = float(text)
    except ValueError:
        _type_error(f"not a number of seconds: {text!r}")
    if math.isnan(value) or value < 0:
        _type_error(f"must be a number of seconds >= 0, not {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """A duration in seconds: > 0 (``inf``: no limit)."""
    value = seconds(text)
    if value == 0:
        _type_error("must be more than 0 seconds")
    return value


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            _type_error(f"not a whole number: {text!r}")
        if value < minimum:
            _type_error(f"must be at least {minimum}, not {value}")
        return value

    return parse


def port_number(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    value = whole_number(0)(text)
    if value > 65535:
        _type_error(f"a port is 0 to 65535, not {value}")
    return value


def nats_server_url(text: str) -> str:
    """One NATS server URL, checked (``nats://host:port``, ``tls://``, or ``host:port``)."""
    from trioplane.nats import parse_server_url

    if "," in text:
        _type_error(f"one NATS server URL, not a list: {text!r}")
    try:
        parse_server_url(text)
    except ValueError as exc:
        _type_error(str(exc))
    return text


TRANSPORTS = ("tcp", "nats", "websocket", "http")


def transport_list(text: str) -> tuple[str, ...]:
    """Comma-separated request planes, each one of :data:`TRANSPORTS`."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in names if t not in TRANSPORTS]
    if unknown or not names:
        _type_error(f"transports are {', '.join(TRANSPORTS)} (comma-separated), not {text!r}")
    return names


def _folder_problem(path: Path, *, write: bool) -> str | None:
    """Why ``path`` cannot be a file discovery folder, or ``None``. It need not exist
    yet (the first worker creates it), but what exists of it must be a folder we may
    read (and, to register, write)."""
    existing = path
    while True:
        try:
            mode = existing.stat().st_mode
            break
        except (FileNotFoundError, NotADirectoryError):
            if existing.parent == existing:
                return f"cannot use {path}: nothing of it exists"
            existing = existing.parent
        except OSError as exc:
            return f"cannot use {existing}: {exc.strerror or exc}"
    if not stat.S_ISDIR(mode):
        return f"{existing} is not a folder"
    if existing == path and not os.access(path, os.R_OK | os.X_OK):
        return f"cannot read the folder {path}: permission denied"
    if write and not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write in the folder {existing}: permission denied"
    return None


def _discovery_folder(write: bool) -> Callable[[str], str]:
    def parse(text: str) -> str:
        path = Path(text).expanduser().absolute()
        problem = _folder_problem(path, write=write)
        if problem is not None:
            _type_error(problem)
        return str(path)

    return parse


def _discovery_url(write: bool) -> Callable[[str], str]:
    def parse(text: str) -> str:
        scheme, sep, rest = text.partition("://")
        if not sep or scheme == "file":
            if sep and not rest.startswith("/"):
                _type_error(f"a file discovery URL is file:///absolute/dir, not {text!r}")
            return "file://" + _discovery_folder(write)(rest if sep else text)
        if scheme not in ("etcd", "etcds"):
            _type_error(f"discovery URLs are etcd://host:port or file:///dir, not {text!r}")
        hosts = []
        for host in rest.removesuffix("/").split(","):
            parts = urllib.parse.urlsplit(f"http://{host.strip()}")
            try:
                port = parts.port
            except ValueError:
                port = 0
            if port == 0 or not parts.hostname or parts.username or parts.path or parts.query:
                _type_error(f"not an etcd host:port: {host.strip()!r} (in {text!r})")
            hosts.append(parts.netloc if port else f"{parts.netloc}:{ETCD_DEFAULT_PORT}")
        return f"{scheme}://{','.join(hosts)}"

    return parse


# -- demo ---------------------------------------------------------------------------------


async def demo(requests: int, concurrency: int, calls: int = 200, items: int = 20) -> None:
    """Send requests over TCP to an in-process test worker; print acks and stats."""

    def policy(frame: RequestFrame) -> Reply:
        if frame.path.endswith("/busy"):
            return Reply.reject(WORKER_AT_CAPACITY)
        return Reply.accept()

    async with (
        open_tcp_test_worker(policy) as worker,
        trioplane.open_tcp_client() as client,
    ):
        print(f"test worker listening on {worker.host}:{worker.port}")
        address = worker.address("0/demo/worker/generate")
        ack = await client.send_request(address, b'{"hello":"dynamo"}', {"request-id": "demo-1"})
        print(f"send_request({address!r}) -> {ack!r} (empty = accepted)")
        busy = worker.address("0/demo/worker/busy")
        ack = await client.send_request(busy, b"{}")
        print(f"send_request({busy!r}) -> {ack!r}")

        sent = 0

        async def caller(n: int) -> None:
            nonlocal sent
            for _ in range(n):
                await client.send_request(address, b"x" * 100)
                sent += 1

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            per_caller, extra = divmod(requests, concurrency)
            for i in range(concurrency):
                nursery.start_soon(caller, per_caller + (i < extra))
        elapsed = time.perf_counter() - start
        print(
            f"{sent} pipelined requests from {concurrency} tasks in {elapsed:.2f} s "
            f"({sent / elapsed:,.0f} acks/s)"
        )
        stats = client.stats()
        print("client stats:")
        for name, value in vars(stats).items():
            print(f"  {name:<20} {value:>12,}")
        received, conns = len(worker.received), worker.connections_accepted
        print(f"worker received {received} requests on {conns} connection(s)")
    if calls:
        await whole_loop(calls, items)


# -- call -----------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray)):
        return base64.b64encode(obj).decode()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def chosen_discovery(args: argparse.Namespace) -> DiscoverySource:
    """``--discovery`` (a URL), ``--discovery-dir``, else Dynamo's environment (None)."""
    if args.discovery:
        return discovery_from_url(args.discovery)
    root: str | None = args.discovery_dir
    return root


def _nats_configured(args: argparse.Namespace) -> bool:
    return bool(args.nats_server or os.environ.get("NATS_SERVER"))


def _nothing_found(path: str, discovery: Any, args: argparse.Namespace, within: str) -> str:
    """No instances of ``path``: where discovery looked, and what the user may not know."""
    text = f"no instances of {path} found in {describe(discovery)}{within}"
    root = getattr(discovery, "root", None)
    if root is not None and not os.path.isdir(root):
        text += " (no such folder yet: no worker registered there)"
    if not (args.discovery or args.discovery_dir):
        text += (
            "; discovery was chosen from the environment (etcd unless"
            " DYN_DISCOVERY_BACKEND=file): choose with --discovery or --discovery-dir"
        )
    return text


NATS_HINT = "pass --nats-server nats://HOST:4222 (or set NATS_SERVER)"


def _unreachable(
    exc: trioplane.NoInstances, client: trioplane.EndpointClient, args: argparse.Namespace
) -> trioplane.NoInstances:
    """``exc``, said for the command line: instances only on NATS need --nats-server."""
    on_nats = [i for i in client.instances() if i.transport_kind == "nats_tcp"]
    if not on_nats or _nats_configured(args) or isinstance(exc, trioplane.InstanceNotFound):
        return exc
    return trioplane.NoInstances(
        f"the instances of {client.endpoint_path} are on the NATS request plane: {NATS_HINT}"
    )


async def call(args: argparse.Namespace, request: Any) -> None:
    """Call an endpoint once; print each item as one JSON line."""
    options: trioplane.EndpointClientOptions = {"codec": args.codec}
    if args.nats_server:
        options["nats_servers"] = args.nats_server
    async with trioplane.open_endpoint_client(
        args.endpoint, chosen_discovery(args), **options
    ) as client:
        with trio.move_on_after(args.wait):
            await client.wait_for_instances()
        if not client.instances():
            raise trioplane.NoInstances(
                _nothing_found(
                    client.endpoint_path, client.discovery, args, f" within {args.wait:g} s"
                )
            )
        if args.instance_id is not None and not _nats_configured(args):
            chosen = [i for i in client.instances() if i.instance_id == args.instance_id]
            if chosen and chosen[0].transport_kind == "nats_tcp":
                raise trioplane.NoInstances(
                    f"instance {args.instance_id:x} of {client.endpoint_path} is on the NATS "
                    f"request plane: {NATS_HINT}"
                )
        timing = CallTiming()
        try:
            with trio.fail_after(args.timeout if args.timeout is not None else math.inf):
                async with client.generate(request, instance_id=args.instance_id) as responses:
                    timing.acked()
                    async for item in responses:
                        timing.item()
                        print(json.dumps(item, ensure_ascii=False, default=_jsonable), flush=True)
        except trioplane.NoInstances as exc:
            raise _unreachable(exc, client, args) from None
        if args.stats:
            print(timing.summary(), file=sys.stderr)


class CallTiming:
    """When a call was acked, when its first item came, how many items, how long."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ack: float | None = None
        self.first: float | None = None
        self.items = 0

    def acked(self) -> None:
        self.ack = time.perf_counter() - self.start

    def item(self) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.start
        self.items += 1

    def summary(self) -> str:
        """One line: ``ack 1.2 ms, first item 3.4 ms, total 9.9 ms, 20 items (2,020 items/s)``."""
        total = time.perf_counter() - self.start
        first = f"{self.first * 1e3:.1f} ms" if self.first is not None else "none"
        rate = f"{self.items / total:,.0f}" if total > 0 else "-"
        return (
            f"ack {(self.ack or 0.0) * 1e3:.1f} ms, first item {first}, "
            f"total {total * 1e3:.1f} ms, {self.items} items ({rate} items/s)"
        )


# -- instances ----------------------------------------------------------------------------


def instance_line(instance: trioplane.Instance) -> str:
    return (
        f"{instance.instance_id:x}  {instance.transport_kind}  {instance.address}"
        f"  {instance.request_plane_codec or 'json'}"
    )


async def instances(args: argparse.Namespace) -> None:
    """Print an endpoint's live instances; with ``--watch``, their changes as they happen."""
    discovery = as_discovery(chosen_discovery(args))
    path = args.endpoint.removeprefix("dyn://")

    def of_endpoint(snapshot: Sequence[trioplane.Instance]) -> dict[int, trioplane.Instance]:
        return {i.instance_id: i for i in snapshot if i.endpoint_path == path}

    # One read first: a backend that cannot be read (etcd away) is an error, not "none".
    known = of_endpoint(await discovery.instances())
    for key in sorted(known):
        print(instance_line(known[key]), flush=True)
    if not known:
        print(f"trioplane: {_nothing_found(path, discovery, args, '')}", file=sys.stderr)
    if not args.watch:
        return
    async with aclosing(discovery.changes()) as changes:  # type: ignore[type-var]
        async for snapshot in changes:
            now = of_endpoint(snapshot)
            for key in sorted(set(known) - set(now)):
                print(f"- {instance_line(known[key])}", flush=True)
            for key in sorted(set(now) - set(known)):
                print(f"+ {instance_line(now[key])}", flush=True)
            known = now


# -- serve --------------------------------------------------------------------------------


def load_handler(spec: str) -> Any:
    """``package.module:function`` -> the function (the current directory is importable,
    as for other servers' commands); ``ValueError`` saying what is wrong."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"a handler is package.module:function, not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    handler = getattr(module, name, None)
    if not callable(handler):
        raise ValueError(f"{module_name!r} has no function {name!r}")  # noqa: TRY004
    return handler


class CannotListen(trioplane.TrioplaneError):
    """``serve`` could not open its listening socket (a host not of this machine, a
    port in use)."""


async def serve(args: argparse.Namespace, handler: Any) -> None:
    """Serve ``handler`` until SIGTERM or SIGINT; then drain: deregister first, let calls
    in flight finish within ``--grace``, cancel the rest, return (exit status 0)."""
    registry: Registry
    if args.discovery:
        registry = discovery_from_url(args.discovery)
    elif args.discovery_dir:
        registry = FileDiscovery(args.discovery_dir)
    else:
        registry = discovery_from_env()
    options: dict[str, Any] = {
        "discovery": registry,
        "transports": args.transports,
        "host": args.host,
        "port": args.port,
        "grace_period": args.grace,
    }
    if args.advertise_host:
        options["advertise_host"] = args.advertise_host
    if args.nats_server:
        options["nats_servers"] = args.nats_server
    if args.processes > 1:  # the handler is imported by each child, by its name
        try:
            await serve_processes(
                {args.endpoint: args.handler},
                processes=args.processes,
                on_serving=lambda _: _log_to_stderr(),
                **options,
            )
        except OSError as exc:
            raise _cannot_listen(args, exc) from None
        return
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with AsyncExitStack() as stack:
            try:
                worker = await stack.enter_async_context(
                    trioplane.open_worker({args.endpoint: handler}, **options)
                )
            except OSError as exc:
                raise _cannot_listen(args, exc) from None
            # Serving now: the worker's own log (a handler's exception, a peer's bad
            # frame) is this server's stderr. Not before: a failed start is one line.
            _log_to_stderr()
            for instance in worker.instances:
                print(
                    f"serving {instance.endpoint_path} as {instance.instance_id:x} on "
                    f"{instance.transport_kind} {instance.address}",
                    flush=True,
                )
            async for signum in signals:
                name = signal.Signals(signum).name
                print(f"trioplane: {name}: draining (up to {args.grace:g} s)", file=sys.stderr)
                break


def _cannot_listen(args: argparse.Namespace, exc: OSError) -> BaseException:
    """What a worker that could not start listening says (a file's error as it is)."""
    if exc.filename is not None:
        return exc
    return CannotListen(f"cannot listen on {args.host} port {args.port}: {exc.strerror or exc}")


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("trioplane").addHandler(handler)


# -- the parser ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr (exit status 2), pointing to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_call_options(parser: argparse.ArgumentParser) -> None:
    """``--codec`` and ``--instance-id``: how a command's calls are made (``call``,
    ``bench``)."""
    parser.add_argument(
        "--codec",
        choices=["auto", "json", "msgpack"],
        default="auto",
        help="how the request is encoded (default auto: as the instance says, else JSON)",
    )
    parser.add_argument(
        "--instance-id",
        type=parse_instance_id,
        metavar="HEX",
        help="call this instance only: its id in hexadecimal, as Dynamo and "
        "'trioplane instances' print it (0x optional)",
    )


def add_discovery_options(parser: argparse.ArgumentParser, *, register: bool = False) -> None:
    """``--discovery URL`` or ``--discovery-dir DIR``, checked as they are parsed (a
    folder must be a folder one may read, or write to with ``register``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--discovery",
        metavar="URL",
        type=_discovery_url(register),
        help=f"{'where to register' if register else 'where instances are found'}: "
        "etcd://HOST:PORT[,HOST:PORT...] (etcds:// for "
        "TLS) or file:///DIR; default: as a Dynamo process, etcd at $ETCD_ENDPOINTS "
        "(localhost:2379), or with DYN_DISCOVERY_BACKEND=file the folder $DYN_FILE_KV "
        "($TMPDIR/dynamo_store_kv)",
    )
    group.add_argument(
        "--discovery-dir",
        metavar="DIR",
        type=_discovery_folder(register),
        help="Dynamo's file discovery folder (the same as --discovery file:///DIR)",
    )


def _add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    *paragraphs: str,
    epilog: str = EXIT_STATUS_HELP,
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=_fill(*paragraphs),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``trioplane`` command's parser, every subcommand with its options."""
    parser = _Parser(
        prog="trioplane",
        description=_fill(
            "trioplane: a Trio client and worker for NVIDIA Dynamo's request plane. "
            "Call a Dynamo endpoint from the shell, list its instances, serve a Python "
            "handler as an endpoint, or run a self-contained demo.",
            "Run 'trioplane COMMAND --help' for a command's options.",
        ),
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=trioplane.__version__, help="print the version"
    )
    commands = cast(  # its parsers are _Parser, typed as what other modules add to it
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND", title="commands"),
    )

    demo_parser = _add_parser(
        commands,
        "demo",
        "the request plane against an in-process test worker, then the whole loop "
        "(worker, discovery, endpoint client) over every plane available",
        "Send pipelined requests over TCP to an in-process test worker and print the "
        "acks and the client's counters; then serve demo.loop.generate from an "
        "in-process trioplane worker and stream calls to it over every request plane "
        "this machine can run. Needs nothing else running.",
    )
    demo_parser.add_argument(
        "--requests",
        type=whole_number(0),
        default=20_000,
        help="pipelined requests to the test worker (default %(default)s)",
    )
    demo_parser.add_argument(
        "--concurrency",
        type=whole_number(1),
        default=64,
        help="tasks sending them (default %(default)s)",
    )
    demo_parser.add_argument(
        "--calls",
        type=whole_number(0),
        default=200,
        help="streaming calls per plane in the whole loop (default %(default)s; 0: skip it)",
    )
    demo_parser.add_argument(
        "--items",
        type=whole_number(0),
        default=20,
        help="items per call (default %(default)s)",
    )

    call_parser = _add_parser(
        commands,
        "call",
        "call a Dynamo endpoint once and print each response item as a JSON line",
        "Call a Dynamo endpoint once and print each item of its response stream as one "
        "JSON line on stdout (bytes as base64). Errors go to stderr, as one line.",
        epilog=f"{_discovery_help()}\n\n{EXIT_STATUS_HELP}",
    )
    call_parser.add_argument(
        "endpoint",
        type=endpoint_name,
        help="namespace.component.endpoint, e.g. dynamo.backend.generate",
    )
    call_parser.add_argument(
        "request", type=json_request, help='the request, as JSON, e.g. \'{"prompt": "hi"}\''
    )
    add_discovery_options(call_parser)
    add_call_options(call_parser)
    call_parser.add_argument(
        "--wait",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for an instance to appear (default 10)",
    )
    call_parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="a time limit for the whole call, once an instance is found (default: none)",
    )
    call_parser.add_argument(
        "--nats-server",
        type=nats_server_url,
        metavar="URL",
        help="the NATS server (nats://HOST:4222), needed to call instances on the NATS "
        "request plane (default: $NATS_SERVER)",
    )
    call_parser.add_argument(
        "--stats",
        action="store_true",
        help="after the stream, print on stderr: time to ack, to first item, total, items/s",
    )

    instances_parser = _add_parser(
        commands,
        "instances",
        "list an endpoint's live instances (id in hex, transport, address, codec)",
        "List the live instances of an endpoint, one line each: instance id "
        "(hexadecimal), transport, address, codec. With --watch, then print each change "
        "as it happens ('+' added, '-' gone) until interrupted.",
        epilog=f"{_discovery_help()}\n\n{EXIT_STATUS_HELP}",
    )
    instances_parser.add_argument(
        "endpoint", type=endpoint_name, help="namespace.component.endpoint"
    )
    add_discovery_options(instances_parser)
    instances_parser.add_argument(
        "--watch", action="store_true", help="then print each change until interrupted"
    )

    serve_parser = _add_parser(
        commands,
        "serve",
        "serve a handler as a Dynamo endpoint; SIGTERM or SIGINT drains it",
        "Serve handler(request, context), an async generator given as "
        "package.module:function (the current folder is importable), as the endpoint "
        "namespace.component.endpoint, registered in discovery, until SIGTERM or "
        "SIGINT; then deregister first, let calls in flight finish within --grace "
        "seconds, cancel the rest and exit 0. Once serving, the worker's log (a "
        "handler's exception...) goes to stderr.",
        epilog=f"{_discovery_help()}\n\n{EXIT_STATUS_HELP}",
    )
    serve_parser.add_argument("handler", help="the handler, as package.module:function")
    serve_parser.add_argument(
        "--endpoint",
        required=True,
        type=endpoint_name,
        help="namespace.component.endpoint to serve it as",
    )
    serve_parser.add_argument(
        "--transports",
        type=transport_list,
        default=("tcp",),
        metavar="LIST",
        help=f"request planes to serve on, comma-separated: {', '.join(TRANSPORTS)} (default tcp)",
    )
    add_discovery_options(serve_parser, register=True)
    serve_parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default %(default)s)"
    )
    serve_parser.add_argument(
        "--port",
        type=port_number,
        default=0,
        help="TCP plane port (default 0: any free port)",
    )
    serve_parser.add_argument(
        "--advertise-host",
        metavar="HOST",
        help="the host callers dial, registered in discovery (default: --host)",
    )
    serve_parser.add_argument(
        "--grace",
        type=seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long calls in flight may finish after SIGTERM or SIGINT (default 5)",
    )
    serve_parser.add_argument(
        "--nats-server",
        type=nats_server_url,
        metavar="URL",
        help="the NATS server (nats://HOST:4222), for --transports nats (default: $NATS_SERVER)",
    )
    add_processes_options(serve_parser)
    add_bench_parser(commands)
    return parser


# -- main ---------------------------------------------------------------------------------


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return cast(dict[str, argparse.ArgumentParser], action.choices)
    return {}


def _one_line(exc: BaseException) -> str:
    """``ErrorName: message``, on one line."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {' '.join(text.split())}"


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the chosen command; failures are exceptions, turned into lines by :func:`main`."""
    if args.command == "demo":
        trio.run(demo, args.requests, args.concurrency, args.calls, args.items)
    elif args.command == "call":
        trio.run(call, args, args.request)
    elif args.command == "instances":
        trio.run(instances, args)
    elif args.command == "bench":
        return run_bench(args)
    elif args.command == "serve":
        serve_parser = _commands(parser)["serve"]
        if "nats" in args.transports and not _nats_configured(args):
            serve_parser.error("--transports nats needs --nats-server URL (or NATS_SERVER)")
        try:
            handler = load_handler(args.handler)
        except ValueError as exc:
            serve_parser.error(str(exc))
        trio.run(serve, args, handler)
    else:
        parser.error(f"give a command: {', '.join(_commands(parser))}")
    return EXIT_OK


@contextmanager
def _guarded_stdout() -> Iterator[None]:
    """The command's stdout as a :class:`_GuardedStdout` for the block, flushed inside
    it so that a reader gone at the very end is caught too."""
    real = sys.stdout
    if real is None:  # started with stdout closed: print() writes nothing
        yield
        return
    with redirect_stdout(cast(TextIO, _GuardedStdout(real))):
        yield
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run ``trioplane`` with ``argv`` (default ``sys.argv[1:]``); the exit status (see
    the module doc): one line on stderr for any failure, never a traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the command ran, or while its failure was said
        return EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the subcommand's parser, which knows its own --help
        command = _commands(parser)[args.command] if args.command else parser
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    # The library's warnings (e.g. etcd away, retried; a transport that cannot warm
    # up) are not the command's output: the one line on stderr says what failed.
    # (A configured root logger still gets them; `serve` logs to stderr once serving.)
    logging.getLogger("trioplane").addHandler(logging.NullHandler())
    real_stdout = sys.stdout
    try:
        with _guarded_stdout():
            return _run(parser, args)
    except BaseException as exc:
        return _exit_status(exc, args, real_stdout)


def _exit_status(exc: BaseException, args: argparse.Namespace, stdout: TextIO) -> int:
    """The exit status for ``exc`` (from ``trio.run``, perhaps a group), and its line."""
    leaves = list(iter_leaves(exc))
    if any(isinstance(e, StdoutClosed) for e in leaves):
        _silence_stdout(stdout)
        return EXIT_STDOUT_CLOSED
    if any(isinstance(e, KeyboardInterrupt) for e in leaves):
        return EXIT_INTERRUPTED
    if isinstance(exc, SystemExit):  # argparse's, after its line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    error = unwrap_group(exc) if isinstance(exc, BaseExceptionGroup) else exc
    if isinstance(error, trio.TooSlowError) and getattr(args, "timeout", None) is not None:
        fail(f"Timeout: the call took longer than {args.timeout:g} s (--timeout)")
    elif isinstance(error, (trioplane.TrioplaneError, ValueError, OSError, ImportError)):
        fail(_one_line(error))
    elif isinstance(error, Exception):
        fail(f"unexpected {_one_line(error)} (a bug: please report it)")
    else:  # SystemExit from elsewhere, GeneratorExit...
        raise exc
    return EXIT_FAILED
