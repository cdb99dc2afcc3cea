"""The ``trioplane`` command (also ``python -m trioplane``)."""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import logging
import math
import os
import signal
import sys
import time
from contextlib import aclosing
from typing import Any

import trio

import trioplane
import trioplane.addresses
from trioplane._demo import whole_loop
from trioplane.discovery import (
    DiscoverySource,
    FileDiscovery,
    Registry,
    as_discovery,
    describe,
    discovery_from_env,
    discovery_from_url,
)
from trioplane.testing import Reply, open_tcp_test_worker
from trioplane.wire.rejections import WORKER_AT_CAPACITY
from trioplane.wire.tcp import RequestFrame


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


def parse_instance_id(text: str) -> int:
    """An instance id in decimal, or in hex with ``0x`` or as printed in addresses."""
    try:
        if text.isdigit():
            return int(text)
        return int(text.removeprefix("0x"), 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an instance id: {text!r}") from None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray)):
        return base64.b64encode(obj).decode()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def chosen_discovery(args: argparse.Namespace) -> DiscoverySource:
    """``--discovery`` (a URL), ``--discovery-dir``, else Dynamo's environment."""
    if args.discovery:
        return discovery_from_url(args.discovery)
    root: str | None = args.discovery_dir
    return root


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
                f"no instances of {client.endpoint_path} found in "
                f"{describe(client.discovery)} within {args.wait:g} s"
            )
        timing = CallTiming()
        with trio.fail_after(args.timeout if args.timeout is not None else math.inf):
            async with client.generate(request, instance_id=args.instance_id) as responses:
                timing.acked()
                async for item in responses:
                    timing.item()
                    print(json.dumps(item, ensure_ascii=False, default=_jsonable), flush=True)
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


def instance_line(instance: trioplane.Instance) -> str:
    return (
        f"{instance.instance_id:x}  {instance.transport_kind}  {instance.address}"
        f"  {instance.request_plane_codec or 'json'}"
    )


async def instances(args: argparse.Namespace) -> None:
    """Print an endpoint's live instances; with ``--watch``, their changes as they happen."""
    trioplane.addresses.parse_endpoint(args.endpoint)  # a ValueError for a bad name
    discovery = as_discovery(chosen_discovery(args))
    path = args.endpoint.removeprefix("dyn://")
    known: dict[int, trioplane.Instance] = {}
    first = True
    async with aclosing(discovery.changes()) as changes:  # type: ignore[type-var]
        async for snapshot in changes:
            now = {i.instance_id: i for i in snapshot if i.endpoint_path == path}
            if first:
                for instance in sorted(now.values(), key=lambda i: i.instance_id):
                    print(instance_line(instance), flush=True)
                first = False
            else:
                for key in sorted(set(known) - set(now)):
                    print(f"- {instance_line(known[key])}", flush=True)
                for key in sorted(set(now) - set(known)):
                    print(f"+ {instance_line(now[key])}", flush=True)
            known = now
            if not args.watch:
                return


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
        "transports": tuple(t.strip() for t in args.transports.split(",") if t.strip()),
        "host": args.host,
        "port": args.port,
        "grace_period": args.grace,
    }
    if args.advertise_host:
        options["advertise_host"] = args.advertise_host
    if args.nats_server:
        options["nats_servers"] = args.nats_server
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trioplane.open_worker({args.endpoint: handler}, **options) as worker:
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


def add_discovery_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--discovery",
        metavar="URL",
        help="etcd://host:2379[,host2:2379] (etcds:// for TLS) or file:///dir "
        "(default: as Dynamo, from $DYN_DISCOVERY_BACKEND, $ETCD_ENDPOINTS, $DYN_FILE_KV)",
    )
    parser.add_argument(
        "--discovery-dir", help="Dynamo's file discovery root (same as --discovery file:///DIR)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trioplane", description=trioplane.__doc__)
    parser.add_argument("--version", action="version", version=trioplane.__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo",
        help="the request plane against an in-process test worker, then the whole loop "
        "(worker, discovery, endpoint client) over every plane available",
    )
    demo_parser.add_argument("--requests", type=int, default=20_000)
    demo_parser.add_argument("--concurrency", type=int, default=64)
    demo_parser.add_argument(
        "--calls", type=int, default=200, help="streaming calls per plane in the whole loop"
    )
    demo_parser.add_argument("--items", type=int, default=20, help="items per call")
    call_parser = commands.add_parser(
        "call",
        help="call a Dynamo endpoint once and print each response item as a JSON line",
        description="Call a Dynamo endpoint found by file discovery; print one JSON line "
        "per item (bytes as base64). Exit status 0 on success, 1 on any failure.",
    )
    call_parser.add_argument("endpoint", help="namespace.component.endpoint")
    call_parser.add_argument("request", help="the request, as JSON")
    add_discovery_options(call_parser)
    call_parser.add_argument("--codec", choices=["auto", "json", "msgpack"], default="auto")
    call_parser.add_argument(
        "--instance-id", type=parse_instance_id, help="this instance only (decimal or hex)"
    )
    call_parser.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for an instance (10)"
    )
    call_parser.add_argument("--timeout", type=float, help="seconds for the whole call")
    call_parser.add_argument(
        "--nats-server", help="NATS server URL for instances on NATS (default: $NATS_SERVER)"
    )
    call_parser.add_argument(
        "--stats",
        action="store_true",
        help="after the stream, print on stderr: time to ack, to first item, total, items/s",
    )
    instances_parser = commands.add_parser(
        "instances",
        help="list an endpoint's live instances (id in hex, transport, address, codec)",
        description="List the live instances of an endpoint, one line each: instance id "
        "(hex), transport, address, codec. With --watch, then print each change as it "
        "happens ('+' added, '-' gone) until interrupted.",
    )
    instances_parser.add_argument("endpoint", help="namespace.component.endpoint")
    add_discovery_options(instances_parser)
    instances_parser.add_argument("--watch", action="store_true", help="print changes too")
    serve_parser = commands.add_parser(
        "serve",
        help="serve a handler as a Dynamo endpoint; SIGTERM or SIGINT drains it",
        description="Serve handler(request, context), an async generator given as "
        "package.module:function, as the endpoint namespace.component.endpoint, "
        "registered in discovery, until SIGTERM or SIGINT; then deregister first, let "
        "calls in flight finish within --grace seconds, cancel the rest and exit 0. "
        "Exit status 1 if serving fails, 2 for bad arguments.",
    )
    serve_parser.add_argument("handler", help="package.module:function")
    serve_parser.add_argument(
        "--endpoint", required=True, help="namespace.component.endpoint to serve it as"
    )
    serve_parser.add_argument(
        "--transports", default="tcp", help="comma-separated: tcp, nats, websocket, http (tcp)"
    )
    add_discovery_options(serve_parser)
    serve_parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    serve_parser.add_argument("--port", type=int, default=0, help="TCP plane port (0: any)")
    serve_parser.add_argument("--advertise-host", help="host callers dial (default: --host)")
    serve_parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds calls in flight get on SIGTERM (5)"
    )
    serve_parser.add_argument(
        "--nats-server", help="NATS server URL for the NATS plane (default: $NATS_SERVER)"
    )
    args = parser.parse_args(argv)
    # The library's warnings (e.g. etcd away, retried) are not the command's output:
    # the one line on stderr says what failed. (A configured root logger still gets them.)
    logging.getLogger("trioplane").addHandler(logging.NullHandler())
    try:
        if args.command == "demo":
            if args.requests < 0 or args.concurrency < 1 or args.calls < 0 or args.items < 0:
                parser.error("--requests, --calls, --items must be >= 0, --concurrency >= 1")
            trio.run(demo, args.requests, args.concurrency, args.calls, args.items)
        elif args.command == "call":
            try:
                request = json.loads(args.request)
            except ValueError as exc:
                call_parser.error(f"the request is not valid JSON: {exc}")
            trio.run(call, args, request)
        elif args.command == "instances":
            trio.run(instances, args)
        elif args.command == "serve":
            try:
                handler = load_handler(args.handler)
                trioplane.addresses.parse_endpoint(args.endpoint)
            except ValueError as exc:
                serve_parser.error(str(exc))
            trio.run(serve, args, handler)
    except trio.TooSlowError:
        print(f"trioplane: the call took longer than {args.timeout:g} s", file=sys.stderr)
        return 1
    except (trioplane.TrioplaneError, ValueError) as exc:
        print(f"trioplane: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
