"""A worker is only as good as its worst peer: hostile peers on loopback, bounded loops.

Each test plays one peer that used to take a worker (or a client) out of service,
with the limit that stops it set low, and checks that the resource comes back
(file descriptors, slots, connections) and that a good caller is served.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio

import trioplane
from trioplane import FileDiscovery, ServerLimits
from trioplane.endpoint import failed_start
from trioplane.response_plane import ResponsePlane, receive_into
from trioplane.servers import CallHomeLimits, PlaneServer
from trioplane.testing import Reply, open_tcp_test_worker
from trioplane.wire.control import CallHomeInfo, ControlMessage, encode_request_payload
from trioplane.wire.response import Prologue
from trioplane.worker import RequestContext, Worker, open_worker

from .conftest import open_fds, wait_until

ENDPOINT = "ns.hostile.echo"
released: list[str] = []


async def echo(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    yield request


async def endless(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    """Big items until stopped or cancelled; records how it ended."""
    try:
        while not context.is_stopped():
            yield "x" * 256 * 1024
    finally:
        released.append("killed" if context.is_killed() else "stopped")


def tcp_address(worker: Worker, endpoint: str = ENDPOINT) -> str:
    return next(i.address for i in worker.instances if i.endpoint_path == endpoint)


async def served(worker: Worker, request: object = "ok") -> None:
    """A good caller is served: a whole call through the endpoint client."""
    async with trioplane.open_endpoint_client(
        ENDPOINT, [i for i in worker.instances if i.transport_kind == "tcp"]
    ) as client:
        with trio.fail_after(5):
            assert await client.call(request) == [request]


def resident_mib() -> float:
    """This process's resident memory (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def plane(worker: Worker, name: str) -> PlaneServer:
    server = worker.servers[name]
    assert isinstance(server, PlaneServer)
    return server


@contextmanager
def black_hole() -> Iterator[str]:
    """A ``host:port`` whose connects hang: a listener whose backlog is full."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    try:
        for _ in range(8):  # fill the accept queue; later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect(address)
            fillers.append(filler)
        yield f"127.0.0.1:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def control_to(address: str, codec: str = "json") -> bytes:
    """A request payload whose call home goes to ``address``."""
    request_id = str(uuid.uuid4())
    control = ControlMessage(
        id=request_id,
        call_home=CallHomeInfo(address=address, subject=uuid.uuid4().hex, context=request_id),
        payload_codec=codec,
    )
    return encode_request_payload(control, b'"hi"')


# -- the WebSocket plane ---------------------------------------------------------------------


async def test_websocket_peers_that_leave_at_once_release_their_fds(tmp_path: Path) -> None:
    async with open_worker(
        {ENDPOINT: echo}, discovery_root=tmp_path, transports=("tcp", "websocket")
    ) as worker:
        ws = plane(worker, "websocket")
        baseline = open_fds()
        memory = []
        for _ in range(2):
            for _ in range(1200):  # each one used to pin an fd for a minute
                stream = await trio.open_tcp_stream("127.0.0.1", ws.port)
                await stream.aclose()
            await wait_until(lambda: ws.statistics().open_connections == 0)
            await wait_until(lambda: open_fds() <= baseline)
            memory.append(resident_mib())
        assert ws.statistics().connections_accepted == 2400
        assert memory[1] - memory[0] < 8, f"memory grew from {memory[0]} to {memory[1]} MiB"
        await served(worker)


async def test_a_silent_websocket_peer_is_cut_off_at_the_handshake_deadline(
    tmp_path: Path,
) -> None:
    limits = ServerLimits(handshake_timeout=0.2)
    async with open_worker(
        {ENDPOINT: echo}, discovery_root=tmp_path, transports=("websocket",), limits=limits
    ) as worker:
        ws = plane(worker, "websocket")
        async with await trio.open_tcp_stream("127.0.0.1", ws.port) as stream:
            with trio.fail_after(3):
                assert await stream.receive_some() == b""
        assert ws.statistics().handshake_failures == 1


# -- the TCP plane -------------------------------------------------------------------------


async def test_tcp_plane_caps_connections_and_closes_idle_ones(tmp_path: Path) -> None:
    limits = ServerLimits(max_connections=10, idle_timeout=0.5)
    async with open_worker({ENDPOINT: echo}, discovery_root=tmp_path, limits=limits) as worker:
        tcp = plane(worker, "tcp")
        baseline = open_fds()
        idle = [await trio.open_tcp_stream("127.0.0.1", tcp.port) for _ in range(10)]
        await wait_until(lambda: tcp.statistics().open_connections == 10)
        async with await trio.open_tcp_stream("127.0.0.1", tcp.port) as refused:
            with trio.fail_after(2):
                assert await refused.receive_some() == b""  # closed at once
        assert tcp.statistics().connections_refused == 1
        with trio.fail_after(5):
            for stream in idle:  # closed by the server at the idle deadline
                assert await stream.receive_some() == b""
                await stream.aclose()
        await wait_until(lambda: tcp.statistics().open_connections == 0)
        assert tcp.statistics().timeouts == 10
        await served(worker)
        await wait_until(lambda: open_fds() <= baseline + 2)  # the good caller's, pooled


async def test_a_frame_trickled_byte_by_byte_is_cut_off(tmp_path: Path) -> None:
    limits = ServerLimits(frame_timeout=0.3)
    async with open_worker({ENDPOINT: echo}, discovery_root=tmp_path, limits=limits) as worker:
        tcp = plane(worker, "tcp")
        async with await trio.open_tcp_stream("127.0.0.1", tcp.port) as stream:
            with trio.fail_after(5):
                try:
                    for _ in range(100):  # one byte every 50 ms: a frame that never ends
                        await stream.send_all(b"\x00")
                        await trio.sleep(0.05)
                except trio.BrokenResourceError:
                    pass
                assert await stream.receive_some() == b""
        assert tcp.statistics().timeouts == 1
        await served(worker)


async def test_a_peer_that_stops_reading_acks_is_cut_off() -> None:
    """Requests whose acks it never reads: the write stalls, the connection goes."""
    limits = ServerLimits(write_timeout=0.3)
    refusal = Reply.reject("x" * 4096)
    async with open_tcp_test_worker(lambda frame: refusal, limits=limits) as worker:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await trio.to_thread.run_sync(sock.connect, ("127.0.0.1", worker.port))
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        frame = b"\x00\x01p\x00\x02{}\x00\x00\x00\x00"
        with trio.fail_after(10):
            try:
                for _ in range(4000):  # 16 MiB of acks nobody reads
                    await stream.send_all(frame * 10)
            except trio.BrokenResourceError:
                pass
            await wait_until(lambda: worker.statistics().timeouts == 1)
        await stream.aclose()
        await wait_until(lambda: worker.open_connections == 0)


# -- the call home -----------------------------------------------------------------------------


async def test_call_home_to_a_black_hole_frees_the_slot(tmp_path: Path) -> None:
    limits = CallHomeLimits(connect_timeout=0.3)
    async with (
        open_worker(
            {ENDPOINT: echo}, discovery_root=tmp_path, max_concurrency=4, call_home=limits
        ) as worker,
        trioplane.open_tcp_client() as tcp,
    ):
        with black_hole() as nowhere:
            for _ in range(4):
                assert await tcp.send_request(tcp_address(worker), control_to(nowhere)) == b""
            assert worker.statistics().calls_in_flight == 4
            with pytest.raises(trioplane.WorkerOverloaded):
                await served(worker)
            with trio.fail_after(5):
                await wait_until(lambda: worker.statistics().calls_in_flight == 0)
        assert worker.statistics().call_home_failures == 4
        await served(worker)


async def test_a_caller_that_never_reads_the_stream_frees_the_slot(tmp_path: Path) -> None:
    released.clear()
    limits = CallHomeLimits(write_timeout=0.3)
    async with (
        open_worker({ENDPOINT: endless}, discovery_root=tmp_path, call_home=limits) as worker,
        trioplane.open_tcp_client() as tcp,
        trio.open_nursery() as nursery,
    ):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        accepted: list[trio.SocketStream] = []

        async def accept_and_never_read() -> None:
            async with listeners[0]:
                while True:
                    accepted.append(await listeners[0].accept())

        nursery.start_soon(accept_and_never_read)
        port = listeners[0].socket.getsockname()[1]
        assert await tcp.send_request(tcp_address(worker), control_to(f"127.0.0.1:{port}")) == b""
        with trio.fail_after(10):
            await wait_until(lambda: worker.statistics().calls_in_flight == 0)
        assert released == ["killed"]
        for stream in accepted:
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_an_unknown_payload_codec_is_answered_and_logged_a_few_times(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        open_worker({ENDPOINT: echo}, discovery_root=tmp_path) as worker,
        trioplane.open_tcp_client() as tcp,
        trio.open_nursery() as nursery,
    ):
        plane_ = ResponsePlane()
        await nursery.start(plane_.run)
        with caplog.at_level(logging.WARNING, logger="trioplane.worker"):
            for _ in range(50):
                call_home = plane_.register()
                request_id = str(uuid.uuid4())
                control = ControlMessage(
                    id=request_id,
                    call_home=CallHomeInfo(plane_.address, call_home.subject, request_id),
                    payload_codec="zstd",
                )
                payload = encode_request_payload(control, b"?")
                assert await tcp.send_request(tcp_address(worker), payload) == b""
                with trio.fail_after(5):
                    await call_home.wait_connected()
                    assert call_home.connection is not None
                    while (event := call_home.decoder.next_event()) is None:
                        assert await receive_into(call_home.connection, call_home.decoder)
                assert isinstance(event, Prologue)
                assert "unknown payload codec 'zstd'" in str(event.error)
                assert isinstance(failed_start(event), trioplane.InvalidArgument)
                call_home.close()
        lines = [r for r in caplog.records if "cannot decode request" in r.getMessage()]
        assert 1 <= len(lines) <= 5
        assert not any(r.exc_info for r in caplog.records)
        nursery.cancel_scope.cancel()


# -- the client side -------------------------------------------------------------------------


async def test_closing_a_client_with_1000_calls_in_flight_keeps_its_grace(tmp_path: Path) -> None:
    """The worker shares the event loop and its handlers are busy: stop frames sent one
    at a time (a checkpoint each, every busy handler running in between) took 27 s."""
    busy = trio.Event()

    async def ticking(request: Any, context: RequestContext) -> AsyncIterator[Any]:
        yield 0
        await busy.wait()  # every call started: now an item each 20 ms
        while not context.is_stopped():
            yield 1
            await trio.sleep(0.02)

    async with open_worker({ENDPOINT: ticking}, discovery_root=tmp_path) as worker:
        client = trioplane.open_endpoint_client(
            ENDPOINT, FileDiscovery(tmp_path, poll_interval=0.05), close_grace_period=0.2
        )
        started = 0
        async with trio.open_nursery() as nursery:
            async with client as c:
                await c.wait_for_instances()

                async def hold() -> None:
                    nonlocal started
                    with suppress(trioplane.ClientClosed):
                        async with c.generate({}) as stream:
                            started += 1
                            async for _ in stream:
                                pass

                for _ in range(1000):
                    nursery.start_soon(hold)
                with trio.fail_after(60):
                    while started < 1000:  # noqa: ASYNC110 - a count, not an event
                        await trio.sleep(0.05)
                busy.set()
                await trio.sleep(0.2)
                closing = trio.current_time()
            took = trio.current_time() - closing
            nursery.cancel_scope.cancel()
        assert took < 0.2 + 3.0, f"closing took {took:.1f} s"
        await wait_until(lambda: worker.statistics().calls_in_flight == 0)


async def test_a_fifo_in_the_discovery_folder_does_not_freeze_discovery(tmp_path: Path) -> None:
    async with open_worker({ENDPOINT: echo}, discovery_root=tmp_path) as worker:
        os.mkfifo(tmp_path / "v1" / "instances" / "a-fifo")
        discovery = FileDiscovery(tmp_path, poll_interval=0.05)
        with trio.fail_after(2):
            assert await discovery.instances() == worker.instances
        async with trioplane.open_endpoint_client(ENDPOINT, discovery) as client:
            with trio.fail_after(2):
                await client.wait_for_instances()
                assert await client.call("hi") == ["hi"]


async def test_silent_call_home_connections_are_capped_and_timed_out() -> None:
    """Connections to a caller's response plane that never say which call they are."""
    async with trio.open_nursery() as nursery:
        plane_ = ResponsePlane(handshake_timeout=0.3, max_pending_handshakes=3)
        await nursery.start(plane_.run)
        baseline = open_fds()
        silent = [await trio.open_tcp_stream("127.0.0.1", plane_.port) for _ in range(5)]
        await wait_until(lambda: plane_.statistics().dropped_connections >= 2)
        assert "max_pending_handshakes" in str(plane_.statistics().last_drop)
        await wait_until(lambda: plane_.statistics().dropped_connections == 5)  # timed out
        assert plane_.statistics().open_connections == 0
        for stream in silent:
            await stream.aclose()
        assert open_fds() <= baseline
        nursery.cancel_scope.cancel()
