"""The TCP transport against a real Dynamo 1.6.1 worker (spec, section 7)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import trio

import trioplane
from trioplane.wire import (
    MSGPACK,
    CallHomeInfo,
    ControlMessage,
    TwoPartDecoder,
    decode_handshake,
    encode_request_payload,
)

from .dynamo import DynamoWorker, run_dynamo_worker

pytestmark = pytest.mark.dynamo
ENDPOINT = "interop.echo.generate"


@pytest.fixture(scope="module")
def dynamo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoWorker]:
    with run_dynamo_worker(tmp_path_factory.mktemp("kv"), [ENDPOINT]) as worker:
        yield worker


class CallHomeRecorder:
    """A listener that takes each worker's call-home handshake and records its subject."""

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.address = ""

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        decoder = TwoPartDecoder()
        async with stream:
            while (message := decoder.next_message()) is None:
                data = await stream.receive_some()
                if not data:
                    return
                decoder.feed(data)
            self.subjects.append(decode_handshake(message.header))


def request_payload(call_home: str, subject: str, body: object) -> tuple[bytes, dict[str, str]]:
    request_id = str(uuid.uuid4())
    control = ControlMessage(
        id=request_id,
        call_home=CallHomeInfo(address=call_home, subject=subject, context=request_id),
        payload_codec="msgpack",
    )
    return encode_request_payload(control, MSGPACK.encode(body)), {"request-id": request_id}


def test_instance_record_is_parsed(dynamo: DynamoWorker) -> None:
    instance = dynamo.instances[ENDPOINT]
    assert instance.transport_kind == "tcp"
    assert instance.request_plane_codec == "msgpack"
    assert instance.address.endswith("/interop/echo/generate")
    assert instance.address.split("/")[1] == f"{instance.instance_id:x}"


async def test_valid_request_is_accepted_and_worker_calls_home(dynamo: DynamoWorker) -> None:
    instance = dynamo.instances[ENDPOINT]
    recorder = CallHomeRecorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder.serve)
        async with trioplane.open_tcp_client() as client:
            payload, headers = request_payload(recorder.address, "subject-1", {"n": 1})
            headers["x-endpoint-path"] = instance.address.partition("/")[2]
            assert await client.send_request(instance.address, payload, headers) == b""
        with trio.fail_after(10):
            while not recorder.subjects:  # noqa: ASYNC110 - the worker is another process
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert recorder.subjects == ["subject-1"]


async def test_unknown_path_gets_the_workers_rejection(dynamo: DynamoWorker) -> None:
    instance = dynamo.instances[ENDPOINT]
    host_port, _, path = instance.address.partition("/")
    bogus = f"{host_port}/{path}-nope"
    async with trioplane.open_tcp_client() as client:
        payload, headers = request_payload("127.0.0.1:9", "s", {"n": 1})
        ack = await client.send_request(bogus, payload, headers)
    assert ack == f"Server unavailable: unknown endpoint {path}-nope".encode()


async def test_200_pipelined_requests_on_one_connection(dynamo: DynamoWorker) -> None:
    instance = dynamo.instances[ENDPOINT]
    recorder = CallHomeRecorder()
    acks: list[bytes] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(recorder.serve)
        async with trioplane.open_tcp_client() as client:

            async def one(i: int) -> None:
                payload, headers = request_payload(recorder.address, f"s{i}", {"i": i})
                acks.append(await client.send_request(instance.address, payload, headers))

            async with trio.open_nursery() as requests:
                for i in range(200):
                    requests.start_soon(one, i)
            stats = client.stats()
        with trio.fail_after(20):
            while len(recorder.subjects) < 200:  # noqa: ASYNC110 - another process
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert acks == [b""] * 200
    assert stats.active_connections + stats.idle_connections == 1
    assert stats.requests_sent == stats.responses_received == 200
    assert sorted(recorder.subjects) == sorted(f"s{i}" for i in range(200))
