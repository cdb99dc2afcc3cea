"""etcd discovery against real Dynamo 1.6.1 processes, both ways (a real etcd 3.5).

* A Dynamo worker with ``DYN_DISCOVERY_BACKEND=etcd`` is found and called by
  trioplane's endpoint client: streams, errors, stop; it disappears when stopped.
* A trioplane worker registered in etcd is found and called by Dynamo's own client
  (``DistributedRuntime(loop, "etcd", ...)``), over TCP and NATS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioplane
from trioplane import EtcdDiscovery
from trioplane.worker import RequestContext, open_worker

from .conftest import wait_until
from .dynamo import dynamo_client_call, run_dynamo_worker
from .etcd import EtcdServer, run_etcd
from .nats import NatsServer, start_nats_server

pytestmark = [pytest.mark.dynamo, pytest.mark.etcd]
ENDPOINT = "interop.etcd.generate"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with run_etcd(tmp_path / "etcd") as server:
        yield server


async def test_trioplane_client_calls_a_dynamo_worker_found_in_etcd(
    tmp_path: Path, etcd: EtcdServer
) -> None:
    marker = tmp_path / "marker"
    async with trioplane.open_endpoint_client(ENDPOINT, EtcdDiscovery(etcd.url)) as client:
        with run_dynamo_worker(
            tmp_path, [ENDPOINT], etcd_url=etcd.url, ETCD_LEASE_TTL="3"
        ) as worker:
            with trio.fail_after(10):
                await client.wait_for_instances()
            assert client.instances() == list(worker.instances.values())
            with trio.fail_after(20):
                assert await client.call({"op": "count", "n": 5}) == [{"i": i} for i in range(5)]
                with pytest.raises(trioplane.RemoteError, match="ValueError: boom"):
                    await client.call({"op": "error_after"})
                async with client.generate(
                    {"op": "slow", "marker": str(marker), "interval": 0.02}
                ) as stream:
                    async for item in stream:
                        if item["i"] == 2:
                            break
                await wait_until(lambda: marker.exists() and marker.read_text() == "stopped")
        with trio.fail_after(15):  # 1.6.1 does not revoke on SIGINT: gone with its 3 s lease
            await wait_until_gone(client)


async def wait_until_gone(client: trioplane.EndpointClient) -> None:
    while client.instances():  # noqa: ASYNC110 - discovery's own pace
        await trio.sleep(0.1)


async def count(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    for i in range(request["n"]):
        yield {"i": i}


async def boom(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    yield {"i": 0}
    raise ValueError("boom")


def etcd_env(etcd: EtcdServer, **extra: str) -> dict[str, str]:
    return {"DYN_DISCOVERY_BACKEND": "etcd", "ETCD_ENDPOINTS": etcd.url, **extra}


async def test_dynamo_client_calls_a_trioplane_worker_registered_in_etcd(
    tmp_path: Path, etcd: EtcdServer
) -> None:
    endpoints = {ENDPOINT: count, "interop.etcd.boom": boom}
    async with open_worker(endpoints, discovery=EtcdDiscovery(etcd.url)):
        lines = await dynamo_client_call(tmp_path, ENDPOINT, {"n": 4}, **etcd_env(etcd))
        assert lines == [{"item": {"i": i}} for i in range(4)] + [{"done": True}]
        lines = await dynamo_client_call(tmp_path, "interop.etcd.boom", {}, **etcd_env(etcd))
        assert lines[0] == {"item": {"i": 0}}
        assert "ValueError: boom" in lines[1]["error"]


@pytest.fixture
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with start_nats_server(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.mark.nats
async def test_dynamo_client_calls_a_trioplane_nats_worker_registered_in_etcd(
    tmp_path: Path, etcd: EtcdServer, nats: NatsServer
) -> None:
    async with open_worker(
        {ENDPOINT: count},
        discovery=EtcdDiscovery(etcd.url),
        transports=("nats",),
        nats_servers=nats.url,
    ) as worker:
        assert {i.transport_kind for i in worker.instances} == {"nats_tcp"}
        env = etcd_env(etcd, DYN_REQUEST_PLANE="nats", NATS_SERVER=nats.url)
        lines = await dynamo_client_call(tmp_path, ENDPOINT, {"n": 3}, **env)
        assert lines == [{"item": {"i": i}} for i in range(3)] + [{"done": True}]
