"""The HTTP request plane of a real Dynamo 1.2.1 worker, with bare httpx (spec, 4.3).

1.2.1 is the last release with the HTTP plane. Its worker is JSON only: no
``payload_codec`` and no ``request_plane_codec`` in its instance record.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

import trioplane
from trioplane import FileDiscovery
from trioplane.testing.http import open_http_test_worker
from trioplane.wire import (
    JSON,
    CallHomeInfo,
    ControlMessage,
    TwoPartDecoder,
    decode_handshake,
    encode_request_payload,
)

from .conftest import bare_client
from .dynamo import DynamoWorker, run_dynamo_worker

pytestmark = pytest.mark.dynamo
VERSION = "1.2.1"
ENDPOINT = "interop.echohttp.generate"
LIMIT = 2 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def dynamo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoWorker]:
    with run_dynamo_worker(
        tmp_path_factory.mktemp("kv"),
        [ENDPOINT],
        version=VERSION,
        DYN_REQUEST_PLANE="http",
        DYN_HTTP_RPC_HOST="127.0.0.1",
        DYN_HTTP_RPC_PORT=str(free_port()),
    ) as worker:
        yield worker


def url(dynamo: DynamoWorker, endpoint: str = "generate") -> str:
    base = dynamo.instances[ENDPOINT].address.rsplit("/", 1)[0]
    return f"{base}/{endpoint}"


def request_payload(call_home: str, body: object) -> tuple[bytes, dict[str, str]]:
    """A JSON request (1.2.1 has no payload codec) whose worker calls ``call_home``."""
    request_id = str(uuid.uuid4())
    control = ControlMessage(
        id=request_id,
        call_home=CallHomeInfo(address=call_home, subject=str(uuid.uuid4()), context=request_id),
    )
    headers = {"content-type": "application/octet-stream", "request-id": request_id}
    return encode_request_payload(control, JSON.encode(body)), headers


class CallHome:
    """A response-plane listener: records each stream's subject and JSON items."""

    def __init__(self) -> None:
        self.address = ""
        self.streams: dict[str, list[Any]] = {}
        self.done = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        decoder = TwoPartDecoder()
        items: list[Any] = []
        subject = None
        async with stream:
            while True:
                data = await stream.receive_some()
                if not data:
                    return
                decoder.feed(data)
                while (message := decoder.next_message()) is not None:
                    if subject is None:
                        subject = decode_handshake(message.header)
                        self.streams[subject] = items
                    elif message.header == b'"sentinel"':
                        self.done.set()
                        return
                    elif message.body:
                        items.append(JSON.decode(message.body))


def test_instance_record(dynamo: DynamoWorker) -> None:
    instance = dynamo.instances[ENDPOINT]
    assert instance.transport_kind == "http"
    assert instance.request_plane_codec is None
    port = instance.address.split(":")[2].split("/")[0]
    assert instance.address == f"http://127.0.0.1:{port}/v1/rpc/generate"
    [path] = (dynamo.discovery_dir / "v1" / "instances").iterdir()
    record = json.loads(path.read_bytes())
    assert list(record) == [
        "type",
        "component",
        "endpoint",
        "namespace",
        "instance_id",
        "transport",
        "device_type",
    ]
    assert record["transport"] == {"http": instance.address}
    assert path.name == f"interop%2Fechohttp%2Fgenerate%2F{instance.instance_id:x}"


async def test_valid_request_is_accepted_and_worker_calls_home(
    dynamo: DynamoWorker, protocol: str
) -> None:
    call_home = CallHome()
    async with trio.open_nursery() as nursery:
        await nursery.start(call_home.serve)
        payload, headers = request_payload(call_home.address, {"n": 2, "msg": "hi"})
        async with bare_client(protocol) as http:
            response = await http.post(url(dynamo), content=payload, headers=headers)
        assert response.http_version == ("HTTP/2" if protocol == "h2c" else "HTTP/1.1")
        assert (response.status_code, response.content) == (202, b"")
        assert response.headers["content-length"] == "0"
        with trio.fail_after(10):
            await call_home.done.wait()
        [items] = call_home.streams.values()
        assert items[0] == {
            "data": {"data": {"echo": {"n": 2, "msg": "hi"}}},
            "complete_final": False,
        }
        assert items[-1] == {"complete_final": True}
        nursery.cancel_scope.cancel()


async def test_ack_does_not_wait_for_the_call_home(dynamo: DynamoWorker, protocol: str) -> None:
    with socket.socket() as unused:  # bound, never listening: the call home fails
        unused.bind(("127.0.0.1", 0))
        payload, headers = request_payload(f"127.0.0.1:{unused.getsockname()[1]}", {"x": 1})
        async with bare_client(protocol) as http:
            response = await http.post(url(dynamo), content=payload, headers=headers)
    assert (response.status_code, response.content) == (202, b"")


async def test_unknown_endpoint_is_404(dynamo: DynamoWorker, protocol: str) -> None:
    payload, headers = request_payload("127.0.0.1:9", {})
    async with bare_client(protocol) as http:
        response = await http.post(url(dynamo, "nope"), content=payload, headers=headers)
    assert (response.status_code, response.text) == (404, "Endpoint not found")


async def test_other_methods_are_405(dynamo: DynamoWorker, protocol: str) -> None:
    async with bare_client(protocol) as http:
        for method in ("GET", "PUT"):
            response = await http.request(method, url(dynamo))
            assert (response.status_code, response.content) == (405, b"")
            assert response.headers["allow"] == "POST"


async def test_body_over_2_mib_is_413(dynamo: DynamoWorker, protocol: str) -> None:
    async with bare_client(protocol) as http:
        response = await http.post(url(dynamo), content=bytes(LIMIT + 1))
        assert response.status_code == 413
        assert response.text == "Failed to buffer the request body: length limit exceeded"
        # Exactly the limit is taken; a body it cannot decode still gets 202.
        response = await http.post(url(dynamo), content=bytes(LIMIT))
        assert (response.status_code, response.content) == (202, b"")


#: (method, path under the server, body): answers to compare.
PROBES = [
    ("POST", "/v1/rpc/generate", b"garbage"),
    ("POST", "/v1/rpc/generate?x=1", b""),
    ("POST", "/v1/rpc/nope", b"x"),
    ("POST", "/v1/rpc/a/b", b"x"),
    ("POST", "/v1/rpc/", b"x"),
    ("POST", "/other", b"x"),
    ("GET", "/other", b""),
    ("GET", "/v1/rpc/generate", b""),
    ("GET", "/v1/rpc/nope", b""),
    ("DELETE", "/v1/rpc/generate", b""),
    ("POST", "/v1/rpc/nope", bytes(LIMIT + 1)),
]


async def test_the_test_worker_answers_like_dynamo(dynamo: DynamoWorker, protocol: str) -> None:
    def summary(response: httpx.Response) -> tuple[int, bytes, str | None, str | None]:
        h = response.headers
        return response.status_code, response.content, h.get("allow"), h.get("content-type")

    real_base = url(dynamo).split("/v1/rpc/")[0]
    async with open_http_test_worker() as fake, bare_client(protocol) as http:
        for method, path, body in PROBES:
            real = await http.request(method, real_base + path, content=body)
            ours = await http.request(method, fake.base_url + path, content=body)
            assert summary(ours) == summary(real), (method, path)


@pytest.mark.parametrize("h2", [False, True], ids=["h1", "h2c"])
async def test_endpoint_client_streams_over_http(dynamo: DynamoWorker, h2: bool) -> None:
    """End to end: discovery finds the HTTP instance, the worker calls home, items stream."""
    async with trioplane.open_endpoint_client(
        ENDPOINT,
        FileDiscovery(dynamo.discovery_dir, poll_interval=0.1),
        http={"http2": h2},
    ) as client:
        with trio.fail_after(10):
            (instance,) = await client.wait_for_instances()
        assert instance.transport_kind == "http"
        assert await client.call({"op": "count", "n": 50}) == [{"i": i} for i in range(50)]
        with pytest.raises(trioplane.RemoteError, match="ValueError: boom"):
            await client.call({"op": "error_after"})


async def test_an_endpoint_mixing_http_and_tcp_instances(
    dynamo: DynamoWorker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A 1.6.1 TCP worker joins the 1.2.1 HTTP worker's endpoint: round robin uses both."""
    with run_dynamo_worker(dynamo.discovery_dir, [ENDPOINT]) as tcp_worker:
        async with trioplane.open_endpoint_client(
            ENDPOINT, FileDiscovery(dynamo.discovery_dir, poll_interval=0.1)
        ) as client:
            with trio.fail_after(10):
                while len(client.instances()) < 2:
                    await client.wait_for_instances()
                    await trio.sleep(0.05)
            kinds = set()
            for _ in range(4):
                async with client.generate({"op": "count", "n": 2}) as responses:
                    assert [item async for item in responses] == [{"i": 0}, {"i": 1}]
                    assert responses.instance is not None
                    kinds.add(responses.instance.transport_kind)
    assert kinds == {"http", "tcp"}
    assert tcp_worker.instances[ENDPOINT].transport_kind == "tcp"
