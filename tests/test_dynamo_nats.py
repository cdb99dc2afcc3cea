"""The endpoint client against a real Dynamo 1.6.1 worker on the NATS request plane."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import trioplane
from trioplane import FileDiscovery

from .dynamo import DynamoWorker, run_dynamo_worker
from .nats import NatsServer, start_nats_server

pytestmark = [pytest.mark.dynamo, pytest.mark.nats]
ENDPOINT = "interop.natsplane.generate"


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with start_nats_server(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, nats: NatsServer) -> Iterator[DynamoWorker]:
    kv = tmp_path_factory.mktemp("kv")
    with run_dynamo_worker(kv, [ENDPOINT], DYN_REQUEST_PLANE="nats", NATS_SERVER=nats.url) as w:
        yield w


def test_instance_is_on_the_nats_plane(worker: DynamoWorker) -> None:
    instance = worker.instances[ENDPOINT]
    assert instance.transport_kind == "nats_tcp"
    assert instance.address == f"interop_natsplane.generate-{instance.instance_id:x}"


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_stream_over_nats(worker: DynamoWorker, nats: NatsServer, codec: str) -> None:
    async with trioplane.open_endpoint_client(
        ENDPOINT,
        FileDiscovery(worker.discovery_dir, poll_interval=0.1),
        nats_servers=nats.url,
        codec=codec,  # type: ignore[arg-type]
    ) as client:
        await client.wait_for_instances()
        assert await client.call({"op": "count", "n": 100}) == [{"i": i} for i in range(100)]
        with pytest.raises(trioplane.RemoteError, match="ValueError: boom"):
            await client.call({"op": "error_before"})


async def test_stop_over_nats(worker: DynamoWorker, nats: NatsServer, tmp_path: Path) -> None:
    marker = trio.Path(tmp_path / "marker")
    async with trioplane.open_endpoint_client(
        ENDPOINT, FileDiscovery(worker.discovery_dir, poll_interval=0.1), nats_servers=nats.url
    ) as client:
        await client.wait_for_instances()
        async with client.generate({"op": "slow", "marker": str(marker)}) as responses:
            async for _ in responses:
                break
        with trio.fail_after(10):
            while not (await marker.exists() and await marker.read_text()):  # noqa: ASYNC110
                await trio.sleep(0.02)
    assert await marker.read_text() == "stopped"


async def test_nats_server_from_the_environment(
    worker: DynamoWorker, nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like Dynamo, the endpoint client finds the NATS server in $NATS_SERVER."""
    monkeypatch.setenv("NATS_SERVER", nats.url)
    async with trioplane.open_endpoint_client(
        ENDPOINT, FileDiscovery(worker.discovery_dir, poll_interval=0.1)
    ) as client:
        await client.wait_for_instances()
        assert await client.call({"op": "count", "n": 1}) == [{"i": 0}]
