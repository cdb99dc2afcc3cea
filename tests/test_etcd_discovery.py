"""etcd discovery on both sides: trioplane workers registering, clients watching (real etcd)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import trioplane
import trioplane.etcd
from trioplane import EtcdDiscovery, Instance
from trioplane.discovery import describe, discovery_from_env
from trioplane.discovery.etcd import INSTANCES_PREFIX, etcd_key
from trioplane.etcd import EtcdClient, KeyValue, WatchEvent, open_etcd_client
from trioplane.worker import RequestContext, open_worker

from .conftest import wait_until
from .etcd import ROOT_PASSWORD, EtcdServer, free_port, run_etcd
from .pki import Pki

pytestmark = pytest.mark.etcd
ENDPOINT = "ns.etcd.count"


async def count(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    for i in range(request["n"]):
        yield {"i": i}


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with run_etcd(tmp_path / "etcd") as server:
        yield server


def discovery(etcd: EtcdServer, **options: Any) -> EtcdDiscovery:
    return EtcdDiscovery(etcd.url, **options)


async def instances_in_etcd(etcd: EtcdServer) -> dict[bytes, bytes]:
    async with open_etcd_client(etcd.url) as client:
        kvs, _ = await client.range(INSTANCES_PREFIX, prefix=True)
    return {kv.key: kv.value for kv in kvs}


async def test_a_worker_registers_as_dynamo_does(etcd: EtcdServer) -> None:
    async with open_worker(
        {ENDPOINT: count, "ns.etcd.other": count}, discovery=discovery(etcd)
    ) as worker:
        records = await instances_in_etcd(etcd)
        assert set(records) == {etcd_key(i) for i in worker.instances}
        (instance,) = [i for i in worker.instances if i.endpoint_path == ENDPOINT]
        assert etcd_key(instance) == f"v1/instances/ns/etcd/count/{instance.instance_id:x}".encode()
        assert Instance.from_json(records[etcd_key(instance)]) == instance
        # one lease per worker (per plane): the lease id is the instance id
        assert {i.instance_id for i in worker.instances} == {instance.instance_id}
        async with open_etcd_client(etcd.url) as client:
            (kv,), _ = await client.range(etcd_key(instance))
            assert kv.lease == instance.instance_id
            assert 25 < await client.lease_ttl(kv.lease) <= 30
        assert worker.statistics().registration.registered
    assert await instances_in_etcd(etcd) == {}  # revoked at once on close


async def test_the_endpoint_client_finds_calls_and_loses_workers(etcd: EtcdServer) -> None:
    async with trioplane.open_endpoint_client(ENDPOINT, discovery(etcd)) as client:
        async with open_worker({ENDPOINT: count}, discovery=discovery(etcd)) as worker:
            with trio.fail_after(5):
                await client.wait_for_instances()
            assert client.instances() == worker.instances
            assert await client.call({"n": 3}) == [{"i": 0}, {"i": 1}, {"i": 2}]
        with trio.fail_after(2):  # closed normally: gone at once
            await wait_until(lambda: client.instances() == [])


WORKER_SCRIPT = """
import sys, trio, trioplane
async def count(request, context):
    for i in range(request["n"]):
        yield {"i": i}
async def main():
    discovery = trioplane.EtcdDiscovery(sys.argv[1], lease_ttl=2)
    async with trioplane.open_worker({sys.argv[2]: count}, discovery=discovery) as worker:
        print(worker.instances[0].instance_id, flush=True)
        await trio.sleep_forever()
trio.run(main)
"""


async def test_a_killed_worker_disappears_within_its_lease_ttl(etcd: EtcdServer) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", WORKER_SCRIPT, etcd.url, ENDPOINT], stdout=subprocess.PIPE
    )
    try:
        async with trioplane.open_endpoint_client(ENDPOINT, discovery(etcd)) as client:
            with trio.fail_after(20):
                await client.wait_for_instances()
            assert await client.call({"n": 1}) == [{"i": 0}]
            process.send_signal(signal.SIGKILL)
            killed = trio.current_time()
            with trio.fail_after(10):
                while client.instances():  # noqa: ASYNC110 - discovery's own pace
                    await trio.sleep(0.05)
            assert trio.current_time() - killed < 2 + 2  # the TTL, and etcd's expiry tick
    finally:
        process.kill()
        await process.wait()


async def test_etcd_restarted_mid_watch(etcd: EtcdServer) -> None:
    async with (
        trioplane.open_endpoint_client(ENDPOINT, discovery(etcd, request_timeout=1)) as client,
        open_worker({ENDPOINT: count}, discovery=discovery(etcd)) as first,
    ):
        with trio.fail_after(5):
            await client.wait_for_instances()
        etcd.stop()
        await trio.sleep(0.5)
        assert client.instances() == first.instances  # kept while etcd is away
        await trio.to_thread.run_sync(etcd.start)
        async with open_worker({ENDPOINT: count}, discovery=discovery(etcd)) as second:
            everyone = sorted(first.instances + second.instances, key=lambda i: i.instance_id)
            with trio.fail_after(10):
                await wait_until(lambda: client.instances() == everyone)
            assert await client.call({"n": 1}, instance_id=second.instances[0].instance_id) == [
                {"i": 0}
            ]


async def test_a_lost_lease_is_granted_again_under_the_same_id(etcd: EtcdServer) -> None:
    async with (
        open_worker({ENDPOINT: count}, discovery=discovery(etcd, lease_ttl=3)) as worker,
        trioplane.open_endpoint_client(ENDPOINT, discovery(etcd)) as client,
    ):
        (instance,) = worker.instances
        etcd.etcdctl("lease", "revoke", f"{instance.instance_id:x}")  # as if it expired
        with trio.fail_after(10):
            await wait_until(lambda: worker.statistics().registration.losses == 1)
            await wait_until(lambda: worker.statistics().registration.registered)
            await wait_until(lambda: client.instances() == [instance])
        assert await client.call({"n": 1}) == [{"i": 0}]


async def test_a_compacted_revision_forces_a_full_resync(
    etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch resumes from a revision etcd compacted meanwhile: everything again.

    etcd compacts on its own schedule; here the watch is made to resume from a
    revision compacted while it was away (its first batch is held back).
    """
    original_watch, original_range = EtcdClient.watch, EtcdClient.range
    resumes: list[int] = []
    ranges: list[bytes] = []

    async def counted_range(
        self: EtcdClient, key: bytes, *, prefix: bool = False
    ) -> tuple[list[KeyValue], int]:
        ranges.append(key)
        return await original_range(self, key, prefix=prefix)

    async def watch_from_the_past(
        self: EtcdClient, prefix: bytes, start_revision: int
    ) -> AsyncIterator[tuple[int, list[WatchEvent]]]:
        resumes.append(start_revision)
        if len(resumes) == 1:
            start_revision = 1  # compacted away below
        async for batch in original_watch(self, prefix, start_revision):
            yield batch

    async with open_etcd_client(etcd.url) as tool:
        first = Instance("ns", "etcd", "count", 0xA, "tcp", "127.0.0.1:1/a/ns/etcd/count")
        await tool.put(etcd_key(first), first.to_json())
        await tool.put(b"unrelated", b"x")
        _, revision = await tool.range(INSTANCES_PREFIX, prefix=True)
        await tool.compact(revision)
        monkeypatch.setattr(EtcdClient, "watch", watch_from_the_past)
        monkeypatch.setattr(EtcdClient, "range", counted_range)
        async with aclosing(discovery(etcd).changes()) as changes:  # type: ignore[type-var]
            assert await anext(changes) == [first]
            second = Instance("ns", "etcd", "count", 0xB, "tcp", "127.0.0.1:1/b/ns/etcd/count")
            await tool.put(etcd_key(second), second.to_json())
            with trio.fail_after(10):
                assert await anext(changes) == [first, second]
            assert ranges == [INSTANCES_PREFIX] * 2  # compacted: everything again


async def test_two_hundred_instances_in_a_burst_converge(etcd: EtcdServer, no_leaks: None) -> None:
    async with (
        trioplane.open_endpoint_client(ENDPOINT, discovery(etcd)) as client,
        open_etcd_client(etcd.url) as tool,
    ):
        lease, _ = await tool.lease_grant(30)
        records = [
            Instance("ns", "etcd", "count", 1000 + i, "tcp", f"127.0.0.1:1/{i}/ns/etcd/count")
            for i in range(200)
        ]
        async with trio.open_nursery() as nursery:
            for record in records:
                nursery.start_soon(
                    partial(tool.create, lease=lease), etcd_key(record), record.to_json()
                )
        with trio.fail_after(10):
            await wait_until(lambda: len(client.instances()) == 200)
        assert client.instances() == records
        async with trio.open_nursery() as nursery:
            for record in records[::2]:
                nursery.start_soon(tool.delete, etcd_key(record))
        with trio.fail_after(10):
            await wait_until(lambda: client.instances() == records[1::2])
        await tool.lease_revoke(lease)
        with trio.fail_after(10):
            await wait_until(lambda: client.instances() == [])


async def test_auth_and_tls_on_both_sides(tmp_path: Path, pki: Pki) -> None:
    with run_etcd(tmp_path / "etcd", pki=pki) as etcd:
        etcd.enable_auth()
        # etcd's JSON gateway refuses a client certificate with a common name when
        # auth is on (it would not use it): this one has none.
        secure = EtcdDiscovery(
            etcd.url, username="root", password=ROOT_PASSWORD, ssl_context=etcd.ssl_context()
        )
        async with (
            open_worker({ENDPOINT: count}, discovery=secure),
            trioplane.open_endpoint_client(ENDPOINT, secure) as client,
        ):
            with trio.fail_after(5):
                await client.wait_for_instances()
            assert await client.call({"n": 2}) == [{"i": 0}, {"i": 1}]


def test_discovery_from_the_environment(tmp_path: Path, pki: Pki) -> None:
    env = {
        "DYN_DISCOVERY_BACKEND": "etcd",
        "ETCD_ENDPOINTS": "https://a:1,b:2",
        "ETCD_AUTH_USERNAME": "u",
        "ETCD_AUTH_PASSWORD": "p",
        "ETCD_AUTH_CA": pki.ca,
        "ETCD_AUTH_CLIENT_CERT": pki.client_cert,
        "ETCD_AUTH_CLIENT_KEY": pki.client_key,
    }
    chosen = discovery_from_env(env)
    assert isinstance(chosen, EtcdDiscovery)
    assert chosen.endpoints == "https://a:1,b:2"
    assert (chosen.username, chosen.password) == ("u", "p")
    assert chosen.ssl_context is not None
    assert chosen.lease_ttl == 30
    default = discovery_from_env({})  # Dynamo's default backend: etcd on localhost
    assert isinstance(default, EtcdDiscovery)
    assert default.endpoints == "http://localhost:2379"
    file = discovery_from_env({"DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": str(tmp_path)})
    assert isinstance(file, trioplane.FileDiscovery)
    assert file.root == tmp_path
    with pytest.raises(ValueError, match="kubernetes is not supported by trioplane yet: use etcd"):
        discovery_from_env({"DYN_DISCOVERY_BACKEND": "kubernetes"})
    for bad in ("zookeeper", "kv_store", "ETCD"):  # Dynamo takes exactly its four names
        with pytest.raises(ValueError, match="not a discovery backend"):
            discovery_from_env({"DYN_DISCOVERY_BACKEND": bad})
    ttl = discovery_from_env({"ETCD_LEASE_TTL": "7"})
    assert isinstance(ttl, EtcdDiscovery)
    assert ttl.lease_ttl == 7


def test_etcd_tls_settings_are_pem_text_as_dynamos(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    as_text = {
        "ETCD_AUTH_CA": Path(pki.ca).read_text(),
        "ETCD_AUTH_CLIENT_CERT": Path(pki.client_cert).read_text(),
        "ETCD_AUTH_CLIENT_KEY": Path(pki.client_key).read_text(),
    }
    assert EtcdDiscovery.from_env(as_text).ssl_context is not None
    as_paths = {"ETCD_AUTH_CA": pki.ca, "ETCD_AUTH_CLIENT_CERT": pki.client_cert,
                "ETCD_AUTH_CLIENT_KEY": pki.client_key}  # fmt: skip
    assert EtcdDiscovery.from_env(as_paths).ssl_context is not None
    # as Dynamo: only the three together; a CA alone is ignored (with a warning)
    assert EtcdDiscovery.from_env({"ETCD_AUTH_CA": pki.ca}).ssl_context is None
    assert "used only together" in caplog.text
    assert EtcdDiscovery.from_env({"ETCD_LEASE_TTL": "abc"}).lease_ttl == 30


async def test_both_sides_read_the_environment(
    etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYN_DISCOVERY_BACKEND", "etcd")
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd.url)
    async with (
        open_worker({ENDPOINT: count}) as worker,
        trioplane.open_endpoint_client(ENDPOINT) as client,
    ):
        assert isinstance(worker.discovery, EtcdDiscovery)
        with trio.fail_after(5):
            await client.wait_for_instances()
        assert await client.call({"n": 1}) == [{"i": 0}]


async def test_a_dead_etcd_is_named_and_never_a_hang() -> None:
    dead = EtcdDiscovery(f"127.0.0.1:{free_port()}", request_timeout=0.5)
    with trio.fail_after(5):
        async with trioplane.open_endpoint_client(ENDPOINT, dead) as client:
            with trio.move_on_after(0.5):
                await client.wait_for_instances()
            assert client.instances() == []
            assert "no etcd endpoint answered" in describe(dead)
        with pytest.raises(trioplane.etcd.EtcdUnavailable, match="no etcd endpoint answered"):
            async with open_worker({ENDPOINT: count}, discovery=dead):
                pass
