"""Trio test workers for Dynamo's TCP request plane, over the library's own server.

A test worker is a :class:`~trioplane.servers.TcpPlaneServer` (the worker side's
TCP plane) that also remembers every request frame it decoded
(:attr:`TcpTestWorker.received`) and answers each request as its *policy*
says: accept, reject with a text, delay, drop the connection or send garbage
(:class:`~trioplane.testing.Reply`). Acks go back in request order (FIFO), as
Dynamo's do; the connection caps and deadlines are the server's
(:class:`~trioplane.servers.ServerLimits`).

:class:`TcpTestWorker` listens on 127.0.0.1 (port 0 by default). Run it alone
(for benchmarks): ``python -m trioplane.testing --port 0`` prints
``listening HOST:PORT`` and serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, TypedDict, TypeVar

import trio

from trioplane._util import check_options, serving
from trioplane.servers import (
    FrameLink,
    PlaneServer,
    Policy,
    Reply,
    ServerLimits,
    StreamLink,
    TcpPlaneServer,
    accept_all,
    serve_frame_link,
    serve_request_stream,
)
from trioplane.wire.tcp import DEFAULT_MAX_FRAME_SIZE, RequestFrame

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "FrameLink",
    "Policy",
    "Reply",
    "StreamLink",
    "TcpTestWorker",
    "TestWorker",
    "TestWorkerOptions",
    "accept_all",
    "open_tcp_test_worker",
    "serve_frame_link",
    "serve_request_stream",
]


class TestWorkerOptions(TypedDict, total=False):
    """Options of the TCP and WebSocket test workers.

    * ``host`` (``127.0.0.1``), ``port`` (0: a free one);
    * ``max_frame_size`` (32 MiB): a larger request frame is a read error;
    * ``keep_received`` (True): False keeps nothing in ``received`` (a long run's
      memory stays flat);
    * ``limits``: the server's other caps and deadlines
      (:class:`~trioplane.servers.ServerLimits`; its defaults otherwise);
    * ``ssl_context``: serve TLS (``wss://`` for the WebSocket worker).
    """

    host: str
    port: int
    max_frame_size: int
    keep_received: bool
    limits: ServerLimits
    ssl_context: ssl.SSLContext | None


class TestWorker(PlaneServer):
    """What a test worker adds to a library request-plane server: it remembers.

    ``received`` holds every request frame decoded, in arrival order;
    ``connections_accepted`` and ``open_connections`` are the server's counters.
    ``policy`` is looked up for every frame, so assigning a new one applies at once.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, policy: Policy = accept_all, **options: Unpack[TestWorkerOptions]) -> None:
        check_options(options, TestWorkerOptions, "test worker")
        limits = dataclasses.replace(
            options.get("limits") or ServerLimits(),
            max_frame_size=options.get("max_frame_size", DEFAULT_MAX_FRAME_SIZE),
        )
        super().__init__(
            policy,
            host=options.get("host", "127.0.0.1"),
            port=options.get("port", 0),
            limits=limits,
            ssl_context=options.get("ssl_context"),
            on_frame=self._record,
        )
        self.received: list[RequestFrame] = []
        self.keep_received = options.get("keep_received", True)

    def _record(self, frame: RequestFrame) -> None:
        if self.keep_received:
            self.received.append(frame)

    @property
    def max_frame_size(self) -> int:
        return self.limits.max_frame_size

    @property
    def connections_accepted(self) -> int:
        return self.counters.connections_accepted

    @property
    def open_connections(self) -> int:
        return self.counters.open_connections


W = TypeVar("W", bound=TestWorker)


@asynccontextmanager
async def running(worker: W) -> AsyncIterator[W]:
    """Serve ``worker`` for the duration of the block (stopped at once on the way out)."""
    async with serving(worker.serve):
        yield worker


class TcpTestWorker(TestWorker, TcpPlaneServer):
    """A TCP test worker: its address, what it received, and its policy."""


def open_tcp_test_worker(
    policy: Policy = accept_all, **options: Unpack[TestWorkerOptions]
) -> AbstractAsyncContextManager[TcpTestWorker]:
    """Run a :class:`TcpTestWorker` for the duration of the block."""
    return running(TcpTestWorker(policy, **options))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the trioplane TCP test worker.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    async def run() -> None:
        async with open_tcp_test_worker(
            host=args.host, port=args.port, keep_received=False
        ) as worker:
            print(f"listening {worker.host}:{worker.port}", flush=True)
            await trio.sleep_forever()

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run)


if __name__ == "__main__":
    main()
