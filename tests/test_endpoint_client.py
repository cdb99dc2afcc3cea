"""The endpoint client against the fake endpoint worker: routing, streams, errors, cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
import trio
import trio.testing

import trioplane
from trioplane import Instance, StaticDiscovery
from trioplane.testing import FakeCall, FakeEndpointWorker, Reply, stream_frames
from trioplane.testing.endpoint import Action, open_fake_endpoint_worker
from trioplane.wire import encode_two_part
from trioplane.wire.response import encode_end, encode_item, encode_prologue, encode_sentinel

from .conftest import all_tasks, open_fds, wait_until

ENDPOINT = "test.fake.generate"


def items_script(n: int) -> trioplane.testing.endpoint.Script:
    return lambda call: stream_frames(call.codec, [{"i": i} for i in range(n)])


def slow_script(call: FakeCall) -> Sequence[Action]:
    """One item every 10 ms, for a long time (until the caller stops it)."""
    frames: list[Action] = [encode_prologue()]
    for i in range(1000):
        frames += [encode_item(call.codec, {"data": {"i": i}}), 0.01]
    return frames


@pytest.fixture
async def fake() -> AsyncIterator[FakeEndpointWorker]:
    async with open_fake_endpoint_worker() as worker:
        yield worker


async def test_call_and_generate_return_the_handlers_items(fake: FakeEndpointWorker) -> None:
    fake.script = items_script(3)
    instance = fake.instance(ENDPOINT)
    async with trioplane.open_endpoint_client(ENDPOINT, [instance]) as client:
        assert await client.wait_for_instances() == [instance]
        assert await client.call({"q": 1}) == [{"i": 0}, {"i": 1}, {"i": 2}]
        async with client.generate({"q": 2}) as responses:
            got = [item async for item in responses]
            assert responses.instance == instance
            assert responses.request_id == fake.calls[1].control.id
    assert got == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert [call.request for call in fake.calls] == [{"q": 1}, {"q": 2}]


async def test_zero_items_and_a_big_request(fake: FakeEndpointWorker) -> None:
    fake.script = lambda call: stream_frames(call.codec, [])
    blob = "x" * (2 * 1024 * 1024)
    async with trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client:
        assert await client.call({"blob": blob}) == []
    assert fake.calls[0].request == {"blob": blob}


@pytest.mark.parametrize(
    ("option", "advertised", "expected"),
    [("auto", "msgpack", "msgpack"), ("auto", None, "json"), ("json", "msgpack", "json"),
     ("msgpack", None, "msgpack")],
)  # fmt: skip
async def test_payload_codec_choice(
    fake: FakeEndpointWorker, option: str, advertised: str | None, expected: str
) -> None:
    instance = fake.instance(ENDPOINT, codec=advertised)
    async with trioplane.open_endpoint_client(
        ENDPOINT,
        [instance],
        codec=option,  # type: ignore[arg-type]
    ) as client:
        assert await client.call({"n": 2, "msg": "hi"}) == [{"n": 2, "msg": "hi"}]
    assert fake.calls[0].control.payload_codec == expected


async def test_headers_and_metadata_as_dynamo_sends_them(fake: FakeEndpointWorker) -> None:
    instance = fake.instance(ENDPOINT)
    async with trioplane.open_endpoint_client(ENDPOINT, [instance]) as client:
        await client.call(
            {}, metadata={"k": "v"}, headers={"traceparent": "00-abc-def-01", "x-mine": "1"}
        )
        with pytest.raises(ValueError, match="request-id"):
            client.generate({}, headers={"request-id": "mine"})
        with pytest.raises(TypeError):
            client.generate({}, metadata={"k": 1})  # type: ignore[dict-item]
    call = fake.calls[0]
    assert call.headers["request-id"] == call.control.id == call.control.call_home.context
    assert call.headers["x-endpoint-path"] == call.path == instance.address.split("/", 1)[1]
    assert int(call.headers["x-frontend-send-ts-ns"]) > 0
    assert call.control.frontend_send_ts_ns is None  # as Dynamo's Python client
    assert call.headers["traceparent"] == "00-abc-def-01"
    assert call.headers["x-mine"] == "1"
    assert call.control.metadata == {"k": "v"}


ERROR = {
    "error_type": {"Backend": "InvalidArgument"},
    "class": "InvalidRequest",
    "message": "ValueError: boom",
}


async def test_error_annotation_raises_remote_error_after_earlier_items(
    fake: FakeEndpointWorker,
) -> None:
    fake.script = lambda call: [
        encode_prologue(),
        encode_item(call.codec, {"data": {"i": 0}}),
        encode_item(call.codec, {"event": "error", "error": ERROR}),
        encode_end(call.codec),
        encode_sentinel(),
    ]
    async with (
        trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client,
        client.generate({}) as responses,
    ):
        iterator = aiter(responses)
        assert await anext(iterator) == {"i": 0}
        with pytest.raises(trioplane.RemoteError) as info:
            await anext(iterator)
    assert info.value.message == "ValueError: boom"
    assert info.value.error_type == {"Backend": "InvalidArgument"}
    assert fake.calls[0].cancels == []  # a failed stream ends by itself: no stop


async def test_failed_prologue_raises_remote_error(fake: FakeEndpointWorker) -> None:
    fake.script = lambda call: [encode_prologue("engine failed to start")]
    async with trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client:
        with pytest.raises(trioplane.RemoteError, match="engine failed to start"):
            await client.call({})


async def test_annotations_without_data_are_skipped(fake: FakeEndpointWorker) -> None:
    fake.script = lambda call: [
        encode_prologue(),
        encode_item(call.codec, {"event": "progress", "comment": ["50%"]}),
        encode_item(call.codec, {"data": 1, "id": "a"}),
        encode_end(call.codec),
    ]
    async with trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client:
        assert await client.call({}) == [1]


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        pytest.param(
            lambda c: [encode_prologue(), encode_end(c) + encode_item(c, {"data": 1})],
            trioplane.MalformedStream,
            id="data-after-end",
        ),
        pytest.param(
            lambda c: [encode_prologue(), encode_two_part(body=c.encode({"x": 1}))],
            trioplane.MalformedStream,
            id="frame-without-data",
        ),
        pytest.param(
            lambda c: [encode_prologue(), encode_item(c, {"data": 1})],
            trioplane.StreamIncomplete,
            id="eof-before-end",
        ),
        pytest.param(lambda c: [], trioplane.StreamIncomplete, id="eof-before-prologue"),
        pytest.param(
            lambda c: [encode_prologue(), b"\x00" * 8 + b"\x10" + b"\x00" * 15],
            trioplane.MalformedStream,
            id="huge-frame",
        ),
    ],
)
async def test_malformed_streams_raise_named_errors(
    fake: FakeEndpointWorker, frames: object, error: type[Exception]
) -> None:
    fake.script = lambda call: frames(call.codec)  # type: ignore[operator]
    async with trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client:
        with pytest.raises(error):
            await client.call({})
        # The client is still fine for the next call.
        fake.script = items_script(1)
        assert await client.call({}) == [{"i": 0}]


async def test_stream_rejection_on_first_frame(fake: FakeEndpointWorker) -> None:
    fake.script = lambda call: [encode_prologue(), encode_two_part(body=b"Server overloaded: x")]
    async with trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client:
        with pytest.raises(trioplane.WorkerOverloaded):
            await client.call({})


@pytest.mark.parametrize("mode", ["stop", "kill"])
async def test_leaving_early_tells_the_worker(fake: FakeEndpointWorker, mode: str) -> None:
    fake.script = slow_script
    async with trioplane.open_endpoint_client(
        ENDPOINT,
        [fake.instance(ENDPOINT)],
        cancel_mode=mode,  # type: ignore[arg-type]
    ) as client:
        async with client.generate({}) as responses:
            async for item in responses:
                assert item == {"i": 0}
                break
        await wait_until(lambda: fake.calls[0].finished)
    assert fake.calls[0].cancels == [mode]


async def test_cancel_scope_stops_the_stream(fake: FakeEndpointWorker) -> None:
    fake.script = slow_script
    got = []
    async with trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client:
        with trio.move_on_after(0.2) as scope:
            async with client.generate({}) as responses:
                async for item in responses:
                    got.append(item)
        assert scope.cancelled_caught
        await wait_until(lambda: fake.calls[0].finished)
        assert fake.calls[0].cancels == ["stop"]
        assert client.response_plane.statistics().waiting_subjects == 0
    assert 0 < len(got) < 1000


async def test_finished_stream_sends_no_stop(fake: FakeEndpointWorker) -> None:
    fake.script = items_script(2)
    async with trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client:
        await client.call({})
        await wait_until(lambda: fake.calls[0].finished)
    assert fake.calls[0].cancels == []


async def test_accepted_but_never_called_home(fake: FakeEndpointWorker) -> None:
    fake.script = lambda call: Reply.accept()
    async with trioplane.open_endpoint_client(
        ENDPOINT, [fake.instance(ENDPOINT)], call_home_timeout=0.2
    ) as client:
        with pytest.raises(trioplane.CallHomeTimeout, match="did not call home"):
            await client.call({})
        assert client.response_plane.statistics().waiting_subjects == 0


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("Server overloaded: worker at capacity", trioplane.WorkerOverloaded),
        ("Server unavailable: unknown endpoint x", trioplane.WorkerUnavailable),
        ("Invalid endpoint path", trioplane.WorkerUnavailable),
    ],
)
async def test_rejections_become_errors(
    fake: FakeEndpointWorker, text: str, error: type[trioplane.WorkerRejected]
) -> None:
    fake.script = lambda call: Reply.reject(text)
    instance = fake.instance(ENDPOINT)
    async with trioplane.open_endpoint_client(ENDPOINT, [instance]) as client:
        with pytest.raises(error) as info:
            await client.call({})
    assert info.value.text == text
    assert info.value.instance_id == instance.instance_id
    assert isinstance(info.value, trioplane.WorkerRejected)


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeEndpointWorker]]:
    async with open_fake_endpoint_worker() as a, open_fake_endpoint_worker() as b:
        yield [a, b]


def instances_of(fakes: list[FakeEndpointWorker]) -> list[Instance]:
    return [fake.instance(ENDPOINT, instance_id=0x100 + i) for i, fake in enumerate(fakes)]


async def test_round_robin_and_direct(fakes: list[FakeEndpointWorker]) -> None:
    instances = instances_of(fakes)
    async with trioplane.open_endpoint_client(ENDPOINT, instances) as client:
        for _ in range(4):
            await client.call({})
        assert [len(f.calls) for f in fakes] == [2, 2]
        for _ in range(3):
            await client.call({}, instance_id=0x101)
        assert [len(f.calls) for f in fakes] == [2, 5]
        with pytest.raises(trioplane.InstanceNotFound, match="no instance 999"):
            await client.call({}, instance_id=0x999)


async def test_random_router_uses_every_instance(fakes: list[FakeEndpointWorker]) -> None:
    async with trioplane.open_endpoint_client(
        ENDPOINT, instances_of(fakes), router_mode="random"
    ) as client:
        for _ in range(40):
            await client.call({})
    assert all(f.calls for f in fakes)
    assert sum(len(f.calls) for f in fakes) == 40


async def test_rejected_request_is_retried_on_another_instance(
    fakes: list[FakeEndpointWorker],
) -> None:
    fakes[0].script = lambda call: Reply.reject("Server overloaded: busy")
    async with trioplane.open_endpoint_client(ENDPOINT, instances_of(fakes)) as client:
        for _ in range(4):
            assert await client.call({"x": 1}) == [{"x": 1}]
        # Direct calls are never retried elsewhere.
        with pytest.raises(trioplane.WorkerOverloaded):
            await client.call({}, instance_id=0x100)
    assert len(fakes[1].calls) == 4


async def test_max_attempts_bounds_retries(fakes: list[FakeEndpointWorker]) -> None:
    for fake in fakes:
        fake.script = lambda call: Reply.reject("Server overloaded: busy")
    async with trioplane.open_endpoint_client(
        ENDPOINT, instances_of(fakes), max_attempts=1
    ) as client:
        with pytest.raises(trioplane.WorkerOverloaded):
            await client.call({})
    assert sum(len(f.calls) for f in fakes) == 1


async def test_unreachable_instance_is_retried(fakes: list[FakeEndpointWorker]) -> None:
    dead = Instance("test", "fake", "generate", 0x1, "tcp", "127.0.0.1:1/1/test/fake/generate")
    async with trioplane.open_endpoint_client(ENDPOINT, [dead, *instances_of(fakes)[:1]]) as client:
        for _ in range(3):
            assert await client.call({"ok": 1}) == [{"ok": 1}]
        with pytest.raises(trioplane.ConnectError):
            await client.call({}, instance_id=0x1)


async def test_accepted_request_is_never_retried(fakes: list[FakeEndpointWorker]) -> None:
    for fake in fakes:
        fake.script = lambda call: [encode_prologue()]  # accepts, then dies mid-stream
    async with trioplane.open_endpoint_client(ENDPOINT, instances_of(fakes)) as client:
        with pytest.raises(trioplane.StreamIncomplete):
            await client.call({})
    assert sum(len(f.calls) for f in fakes) == 1


async def test_no_instances_and_waiting_for_them(fake: FakeEndpointWorker) -> None:
    discovery = StaticDiscovery()
    async with trioplane.open_endpoint_client(ENDPOINT, discovery) as client:
        with pytest.raises(trioplane.NoInstances):
            await client.call({})
        other = fake.instance("test.fake.other")
        discovery.set([other])
        with trio.move_on_after(0.05):
            await client.wait_for_instances()
        assert client.instances() == []  # another endpoint's instance is not ours

        async def add_later() -> None:
            await trio.sleep(0.05)
            discovery.set([other, fake.instance(ENDPOINT)])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(add_later)
            with trio.fail_after(5):
                assert await client.wait_for_instances() == [fake.instance(ENDPOINT)]
        assert await client.call(7) == [7]


async def test_unknown_subjects_and_silent_peers_do_not_disturb_streams(
    fake: FakeEndpointWorker,
) -> None:
    fake.script = slow_script
    async with trioplane.open_endpoint_client(
        ENDPOINT, [fake.instance(ENDPOINT)], handshake_timeout=0.1
    ) as client:
        plane = client.response_plane
        host, port = plane.address.rsplit(":", 1)
        async with client.generate({}) as responses:
            iterator = aiter(responses)
            assert await anext(iterator) == {"i": 0}
            bogus = await trio.open_tcp_stream(host, int(port))
            await bogus.send_all(encode_two_part(b'{"subject":"nobody","stream_type":"response"}'))
            silent = await trio.open_tcp_stream(host, int(port))
            garbage = await trio.open_tcp_stream(host, int(port))
            await garbage.send_all(b"\x00" * 7 + b"\x05" + b"\x00" * 16 + b"nope!")
            with trio.fail_after(5):
                for stream in (bogus, silent, garbage):
                    assert await stream.receive_some() == b""  # the plane closed it
                    await stream.aclose()
            assert await anext(iterator) == {"i": 1}
        assert plane.statistics().dropped_connections == 3


async def test_closed_client_refuses_calls(fake: FakeEndpointWorker) -> None:
    async with trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client:
        pass
    with pytest.raises(trioplane.ClientClosed):
        await client.call({})


async def test_closing_the_client_ends_open_streams(fake: FakeEndpointWorker) -> None:
    fake.script = slow_script
    errors: list[BaseException] = []
    async with trioplane.open_endpoint_client(
        ENDPOINT, [fake.instance(ENDPOINT)], close_grace_period=0.1
    ) as client:

        async def reader() -> None:
            try:
                await client.call({})
            except trioplane.TrioplaneError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await wait_until(lambda: client.statistics().calls_in_flight > 0 and bool(fake.calls))
            await client.aclose()
    assert len(errors) == 1
    assert isinstance(errors[0], trioplane.ClientClosed)


@pytest.mark.parametrize("when", ["before the ack", "before the call home"])
async def test_closing_the_client_fails_calls_not_yet_streaming(
    fake: FakeEndpointWorker, when: str
) -> None:
    """Calls still waiting for their ack or their call home end at once with ClientClosed."""
    if when == "before the ack":
        fake.script = lambda call: Reply.accept(delay=0.3)
    else:
        fake.script = lambda call: Reply.accept()  # acks, never calls home
    errors: list[BaseException] = []
    async with trioplane.open_endpoint_client(
        ENDPOINT, [fake.instance(ENDPOINT)], close_grace_period=0.1
    ) as client:

        async def caller() -> None:
            try:
                await client.call({})
            except trioplane.TrioplaneError as exc:
                errors.append(exc)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller)
                await wait_until(lambda: bool(fake.calls))
                await client.aclose()
    assert len(errors) == 1
    assert isinstance(errors[0], trioplane.ClientClosed)


async def test_nothing_is_left_after_close(fake: FakeEndpointWorker) -> None:
    fake.script = slow_script
    tasks_before, fds_before = len(all_tasks()), open_fds()
    async with trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client:
        for _ in range(3):
            async with client.generate({}) as responses:
                async for _item in responses:
                    break
        fake.script = items_script(2)
        await client.call({})
    await wait_until(lambda: all(call.finished for call in fake.calls))
    await trio.sleep(0.05)
    assert len(all_tasks()) == tasks_before
    assert open_fds() == fds_before


@pytest.mark.parametrize(
    "name", ["ns.comp", "ns..ep", "a.b.c.d", "ns.comp.ep ", "", "dyn://ns.comp"]
)
def test_bad_endpoint_names(name: str) -> None:
    with pytest.raises(ValueError, match=r"namespace\.component\.endpoint"):
        trioplane.EndpointClient(name, [])


def test_bad_options() -> None:
    with pytest.raises(TypeError, match="unknown endpoint client options: bogus"):
        trioplane.EndpointClient("a.b.c", [], bogus=1)  # type: ignore[call-arg]
    for option, value in [
        ("router_mode", "fastest"),
        ("codec", "xml"),
        ("max_attempts", 0),
        ("cancel_mode", "pause"),
    ]:
        with pytest.raises(ValueError, match=option):
            trioplane.EndpointClient("a.b.c", [], **{option: value})  # type: ignore[arg-type]
    assert trioplane.EndpointClient("dyn://a.b.c", []).endpoint_path == "a.b.c"


async def test_discovery_warms_up_connections(fakes: list[FakeEndpointWorker]) -> None:
    """A connection to each discovered instance opens before the first request."""
    discovery = StaticDiscovery(instances_of(fakes)[:1])
    async with trioplane.open_endpoint_client(ENDPOINT, discovery) as client:
        await wait_until(lambda: fakes[0].tcp.connections_accepted == 1)
        discovery.set(instances_of(fakes))
        await wait_until(lambda: fakes[1].tcp.connections_accepted == 1)
        assert not fakes[0].calls
        assert not fakes[1].calls
        await client.call({})
        await client.call({})
    assert [f.tcp.connections_accepted for f in fakes] == [1, 1]


async def test_a_closed_stream_iterates_no_further(fake: FakeEndpointWorker) -> None:
    fake.script = slow_script
    async with trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client:
        stream = client.generate({})
        with pytest.raises(trioplane.WrongIdiom, match="async with client"):
            await anext(aiter(stream))
        async with stream as responses:
            assert await anext(aiter(responses)) == {"i": 0}
        with pytest.raises(StopAsyncIteration):
            await anext(aiter(responses))
        with pytest.raises(trioplane.WrongIdiom, match="entered once"):
            await stream.__aenter__()


async def test_a_call_that_fails_at_once_is_still_a_checkpoint() -> None:
    """A loop of calls with no instance to go to still sees its cancel scope."""
    async with trioplane.open_endpoint_client(ENDPOINT, StaticDiscovery()) as client:
        failures = 0
        with trio.move_on_after(0.05) as scope:
            while True:
                with pytest.raises(trioplane.NoInstances):
                    await client.call({})
                failures += 1
        assert scope.cancelled_caught
        assert failures > 0
        with trio.testing.assert_checkpoints(), pytest.raises(trioplane.InstanceNotFound):
            await client.call({}, instance_id=0x99)
