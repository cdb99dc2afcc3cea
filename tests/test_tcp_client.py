"""The TCP transport against the real test worker on loopback, and memory-stream faults."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

import trioplane
from trioplane.testing import Reply, TcpTestWorker, open_tcp_test_worker
from trioplane.wire.tcp import RequestFrame, encode_request_frame

from .conftest import all_tasks, echo, memory_connector, open_fds, wait_until


async def test_accept_and_reject_acks_reach_the_caller(worker: TcpTestWorker) -> None:
    worker.policy = lambda frame: (
        Reply.accept() if frame.path == "ok" else Reply.reject("Server unavailable: nope")
    )
    async with trioplane.open_tcp_client() as client:
        assert client.transport_name == "tcp"
        assert isinstance(client, trioplane.RequestPlaneClient)
        assert await client.send_request(worker.address("ok"), b"x", {"request-id": "r1"}) == b""
        ack = await client.send_request(f"tcp://{worker.address('other')}", b"y")
        assert ack == b"Server unavailable: nope"
    assert [(f.path, f.payload) for f in worker.received] == [("ok", b"x"), ("other", b"y")]
    assert worker.received[0].headers == {"request-id": "r1"}


async def test_many_pipelined_requests_share_one_connection_in_fifo(
    worker: TcpTestWorker,
) -> None:
    results: dict[int, bytes] = {}
    async with trioplane.open_tcp_client() as client:

        async def one(i: int) -> None:
            results[i] = await client.send_request(worker.address("p"), str(i).encode())

        async with trio.open_nursery() as nursery:
            for i in range(300):
                nursery.start_soon(one, i)
        stats = client.stats()
    assert results == {i: str(i).encode() for i in range(300)}
    assert worker.connections_accepted == 1
    assert stats.requests_sent == stats.responses_received == 300
    assert stats.errors == 0


async def test_cancel_after_write_keeps_fifo_for_the_others(worker: TcpTestWorker) -> None:
    def slow_first(frame: RequestFrame) -> Reply:
        return Reply.reject(frame.payload, delay=1.0 if frame.payload == b"slow" else 0)

    worker.policy = slow_first
    async with trioplane.open_tcp_client() as client:
        with trio.move_on_after(0.05) as scope:
            await client.send_request(worker.address("p"), b"slow")
        assert scope.cancelled_caught
        # Written, not yet acked: its late ack must go to nobody, not to the next caller.
        assert await client.send_request(worker.address("p"), b"next") == b"next"
        assert await client.send_request(worker.address("p"), b"third") == b"third"
        stats = client.stats()
    assert worker.connections_accepted == 1
    assert stats.responses_received == 3
    assert stats.errors == 0


async def test_ack_timeout() -> None:
    async with (
        open_tcp_test_worker(lambda f: Reply.accept(delay=2)) as worker,
        trioplane.open_tcp_client(ack_timeout=0.1) as client,
    ):
        with pytest.raises(trioplane.AckTimeout, match=r"within 0\.1 s"):
            await client.send_request(worker.address("p"), b"x")
        assert client.stats().errors == 1


async def test_ack_timeout_default_is_dynamos_5_s(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        connector = memory_connector(nursery, lambda f: Reply.accept(delay=60))
        async with trioplane.open_tcp_client(connector=connector) as client:
            start = trio.current_time()
            with pytest.raises(trioplane.AckTimeout):
                await client.send_request("h:1/p", b"x")
            assert trio.current_time() - start == pytest.approx(5.0)
        nursery.cancel_scope.cancel()


async def test_connect_refused_is_connect_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    async with trioplane.open_tcp_client() as client:
        with pytest.raises(trioplane.ConnectError, match="cannot connect"):
            await client.send_request(f"127.0.0.1:{port}/p", b"x")
        assert client.stats().errors == 1


async def test_connect_timeout_is_connect_error(autojump_clock: trio.testing.MockClock) -> None:
    async def never_connects(host: str, port: int) -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError

    async with trioplane.open_tcp_client(connector=never_connects, connect_timeout=2) as client:
        start = trio.current_time()
        with pytest.raises(trioplane.ConnectError, match="connect to h:1 timed out after 2 s"):
            await client.send_request("h:1/p", b"x")
        assert trio.current_time() - start == pytest.approx(2.0)


async def test_concurrent_callers_share_one_connect_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts = 0

    async def slow_refusal(host: str, port: int) -> trio.abc.Stream:
        nonlocal attempts
        attempts += 1
        await trio.sleep(1)
        raise OSError("refused")

    failures: list[BaseException] = []
    async with trioplane.open_tcp_client(connector=slow_refusal) as client:

        async def one() -> None:
            try:
                await client.send_request("h:1/p", b"x")
            except trioplane.ConnectError as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(one)
    assert attempts == 1
    assert len(failures) == 10
    assert len({id(f) for f in failures}) == 10  # each caller raises its own object


async def test_peer_close_fails_waiters_and_next_request_reconnects() -> None:
    drop_next = True

    def policy(frame: RequestFrame) -> Reply:
        return Reply.drop(delay=1.0) if frame.payload == b"drop" and drop_next else echo(frame)

    async with open_tcp_test_worker(policy) as worker, trioplane.open_tcp_client() as client:
        outcomes: list[object] = []

        async def one(payload: bytes) -> None:
            try:
                outcomes.append(await client.send_request(worker.address("p"), payload))
            except trioplane.ConnectionLost as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, b"drop")
            await trio.sleep(0.05)
            nursery.start_soon(one, b"after")
        assert all(isinstance(o, trioplane.ConnectionLost) for o in outcomes)
        assert len(outcomes) == 2
        drop_next = False
        assert await client.send_request(worker.address("p"), b"fresh") == b"fresh"
        assert worker.connections_accepted == 2
        assert client.stats().errors == 2


async def test_garbage_ack_is_protocol_error_and_connection_is_replaced() -> None:
    garbage = True

    def policy(frame: RequestFrame) -> Reply:
        return Reply.garbage(b"\xff\xff\xff\xff" * 4) if garbage else echo(frame)

    async with (
        open_tcp_test_worker(policy) as worker,
        trioplane.open_tcp_client(max_frame_size=1024) as client,
    ):
        with pytest.raises(trioplane.FrameTooLarge):
            await client.send_request(worker.address("p"), b"x")
        garbage = False
        assert await client.send_request(worker.address("p"), b"ok") == b"ok"
        assert worker.connections_accepted == 2


async def test_ack_with_no_request_is_protocol_error() -> None:
    async with trio.open_nursery() as nursery:
        client_end, server_end = trio.testing.memory_stream_pair()

        async def connector(host: str, port: int) -> trio.abc.Stream:
            return client_end

        async with trioplane.open_tcp_client(connector=connector) as client:

            async def server() -> None:
                await server_end.receive_some()
                await server_end.send_all(b"\x00\x00\x00\x00" * 2)  # two acks for one request

            nursery.start_soon(server)
            assert await client.send_request("h:1/p", b"x") == b""
            await trio.testing.wait_all_tasks_blocked()
            assert client.stats().active_connections + client.stats().idle_connections == 0


async def test_bad_input_fails_before_any_io() -> None:
    async def no_connect(host: str, port: int) -> trio.abc.Stream:
        raise AssertionError("must not connect")

    async with trioplane.open_tcp_client(connector=no_connect, max_frame_size=100) as client:
        for bad in (
            "nohost",
            "h:notaport/p",
            "h:0/p",
            "h:70000/p",
            "http://h:1/p",
            "h :1/p",
            ":1/p",
        ):
            with pytest.raises(ValueError, match="accepted forms"):
                await client.send_request(bad, b"x")
        with pytest.raises(TypeError):
            await client.send_request("h:1/p", b"x", {"k": 1})  # type: ignore[dict-item]
        with pytest.raises(trioplane.FrameTooLarge):
            await client.send_request("h:1/p", b"x" * 100)
        assert client.stats().requests_sent == 0


async def test_ipv6_address_with_brackets() -> None:
    seen: list[tuple[str, int]] = []

    async with trio.open_nursery() as nursery:
        serve = memory_connector(nursery, echo)

        async def connector(host: str, port: int) -> trio.abc.Stream:
            seen.append((host, port))
            return await serve(host, port)

        async with trioplane.open_tcp_client(connector=connector) as client:
            assert await client.send_request("tcp://[::1]:4000/a/b", b"v6") == b"v6"
        nursery.cancel_scope.cancel()
    assert seen == [("::1", 4000)]


async def test_pool_grows_only_when_connections_are_full() -> None:
    async with (
        open_tcp_test_worker(lambda f: Reply.accept(delay=1.0)) as worker,
        trioplane.open_tcp_client(max_in_flight_per_connection=2) as client,
    ):
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(client.send_request, worker.address("p"), b"x")
            await wait_until(lambda: worker.connections_accepted == 3)
            assert client.stats().active_connections == 3
        assert worker.connections_accepted == 3
        assert client.stats().idle_connections == 3


async def test_full_pool_makes_callers_wait_not_fail() -> None:
    async with (
        open_tcp_test_worker(lambda f: Reply.accept(delay=0.02)) as worker,
        trioplane.open_tcp_client(
            max_in_flight_per_connection=1, max_connections_per_host=2
        ) as client,
    ):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(client.send_request, worker.address("p"), b"x")
        assert client.stats().responses_received == 10
        assert worker.connections_accepted == 2


async def test_caller_cancelled_before_write_is_never_sent() -> None:
    client_end, server_end = trio.testing.lockstep_stream_pair()

    async def connector(host: str, port: int) -> trio.abc.Stream:
        return client_end

    async with trioplane.open_tcp_client(connector=connector) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_request, "h:1/p", b"first")
            await trio.testing.wait_all_tasks_blocked()  # the writer is stuck in send_all
            with trio.move_on_after(0.01):
                await client.send_request("h:1/p", b"cancelled")
            first = encode_request_frame("p", None, b"first")
            assert await server_end.receive_some(len(first)) == first
            await server_end.send_all(b"\x00\x00\x00\x00")
        stats = client.stats()
    assert stats.requests_sent == 1
    assert stats.responses_received == 1


async def test_stats_count_exactly(worker: TcpTestWorker) -> None:
    async with trioplane.open_tcp_client() as client:
        assert not client.stats().is_available()
        for payload in (b"a", b"bb", b"ccc"):
            await client.send_request(worker.address("path"), payload, {"h": "v"})
        stats = client.stats()
    frames = [encode_request_frame("path", {"h": "v"}, p) for p in (b"a", b"bb", b"ccc")]
    assert stats.requests_sent == 3
    assert stats.responses_received == 3
    assert stats.bytes_sent == sum(map(len, frames))
    assert stats.bytes_received == 3 * 4 + 1 + 2 + 3
    assert stats.idle_connections == 1
    assert stats.active_connections == 0
    assert stats.avg_latency_us > 0
    assert stats.is_available()


async def test_close_refuses_new_requests_and_lets_in_flight_finish() -> None:
    async with (
        open_tcp_test_worker(lambda f: Reply.accept(delay=0.1)) as worker,
        trioplane.open_tcp_client(close_grace_period=5) as client,
    ):
        result: list[bytes] = []

        async def in_flight() -> None:
            result.append(await client.send_request(worker.address("p"), b"x"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_flight)
            await trio.sleep(0.02)
            await client.aclose()
        assert result == [b""]
        assert not client.is_healthy()
        with pytest.raises(trioplane.ClientClosed):
            await client.send_request(worker.address("p"), b"late")


async def test_close_cancels_in_flight_after_grace(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        connector = memory_connector(nursery, lambda f: Reply.accept(delay=60))
        errors: list[BaseException] = []
        async with trioplane.open_tcp_client(
            connector=connector, close_grace_period=1, ack_timeout=100
        ) as client:

            async def in_flight() -> None:
                try:
                    await client.send_request("h:1/p", b"x")
                except trioplane.ClientClosed as exc:
                    errors.append(exc)

            nursery.start_soon(in_flight)
            await trio.sleep(0.5)
            start = trio.current_time()
        assert trio.current_time() - start == pytest.approx(1.0)
        await trio.testing.wait_all_tasks_blocked()
        assert len(errors) == 1
        nursery.cancel_scope.cancel()


async def test_no_task_or_socket_left_after_close(worker: TcpTestWorker) -> None:
    tasks_before = len(all_tasks())
    fds_before = open_fds()
    async with trioplane.open_tcp_client() as client:
        for _ in range(3):
            await client.send_request(worker.address("p"), b"x")
        assert len(all_tasks()) > tasks_before
    await trio.testing.wait_all_tasks_blocked()
    assert len(all_tasks()) == tasks_before
    assert open_fds() == fds_before
    assert worker.open_connections == 0


async def test_body_errors_pass_through_plain() -> None:
    with pytest.raises(KeyError):
        async with trioplane.open_tcp_client():
            raise KeyError("mine")


async def test_outer_cancel_scope_tears_client_down(worker: TcpTestWorker) -> None:
    worker.policy = lambda f: Reply.accept(delay=10)
    with trio.move_on_after(0.1) as scope:
        async with trioplane.open_tcp_client(close_grace_period=0.1) as client:
            await client.send_request(worker.address("p"), b"x")
    assert scope.cancelled_caught
    await trio.testing.wait_all_tasks_blocked()
    assert worker.open_connections == 0


async def test_warmup_connects_before_first_request_and_drops_vanished(
    worker: TcpTestWorker,
) -> None:
    instance = trioplane.Instance(
        namespace="ns",
        component="c",
        endpoint="e",
        instance_id=1,
        transport_kind="tcp",
        address=worker.address("1/ns/c/e"),
    )
    nats = trioplane.Instance("ns", "c", "e", 2, "nats_tcp", "ns_c.e-2")
    send, receive = trio.open_memory_channel[list[trioplane.Instance]](math.inf)
    async with trioplane.open_tcp_client() as client:
        client.start_warmup(receive)
        await send.send([instance, nats])
        await wait_until(lambda: client.stats().idle_connections == 1)
        assert worker.connections_accepted == 1
        assert await client.send_request(instance.address, b"x") == b"x"
        assert worker.connections_accepted == 1
        await send.send([nats])
        await wait_until(lambda: worker.open_connections == 0)
        assert client.stats().idle_connections == 0
        await send.aclose()


async def test_start_in_callers_nursery(worker: TcpTestWorker) -> None:
    async with trio.open_nursery() as nursery:
        client = await trioplane.start_tcp_client(nursery, ack_timeout=1)
        async with client:
            assert client.is_healthy()
            assert await client.send_request(worker.address("p"), b"n") == b"n"
    assert not client.is_healthy()


def test_unknown_option_is_type_error() -> None:
    with pytest.raises(TypeError, match="bogus"):
        trioplane.TcpClient(bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="max_in_flight_per_connection"):
        trioplane.TcpClient(max_in_flight_per_connection=0)


async def test_cancel_during_a_direct_write_never_cuts_a_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_end, server_end = trio.testing.lockstep_stream_pair()

    async def connector(host: str, port: int) -> trio.abc.Stream:
        return client_end

    frame = encode_request_frame("p", None, b"first")
    async with trioplane.open_tcp_client(connector=connector) as client:

        async def slow_reader() -> None:
            await trio.sleep(1)  # the caller's write blocks until now
            assert await server_end.receive_some(len(frame)) == frame

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_reader)
            with trio.move_on_after(0.5) as scope:
                await client.send_request("h:1/p", b"first")
        assert scope.cancelled_caught
        assert trio.current_time() == pytest.approx(1.0)  # the whole frame went out first
        await server_end.send_all(b"\x00\x00\x00\x03one")  # the abandoned request's ack

        async def answer_second() -> None:
            await server_end.receive_some()
            await server_end.send_all(b"\x00\x00\x00\x03two")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_second)
            assert await client.send_request("h:1/p", b"second") == b"two"


async def test_a_write_stalled_past_the_ack_timeout_fails_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_end, _server_end = trio.testing.lockstep_stream_pair()  # nobody ever reads

    async def connector(host: str, port: int) -> trio.abc.Stream:
        return client_end

    async with trioplane.open_tcp_client(connector=connector, ack_timeout=2) as client:
        with pytest.raises((trioplane.AckTimeout, trioplane.ConnectionLost)):
            await client.send_request("h:1/p", b"x")
        assert trio.current_time() == pytest.approx(2.0)
        await trio.testing.wait_all_tasks_blocked()
        assert client.stats().idle_connections + client.stats().active_connections == 0
