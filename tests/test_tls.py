"""TLS on the TCP request plane and the response plane, trioplane on both sides.

The settings and their meanings are Dynamo 1.6.1's (captured against real
processes; docs/security.rst); tests/test_dynamo_tls.py checks them against a
real Dynamo worker and client.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioplane
import trioplane.servers
from trioplane import FileDiscovery, TcpTls
from trioplane.testing import open_fake_endpoint_worker, open_tcp_test_worker
from trioplane.tls import ENV
from trioplane.wire.sniff import TLS_DECODE_ERROR_ALERT
from trioplane.worker import RequestContext, open_worker

from .conftest import wait_until
from .pki import Pki


async def count(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    for i in range(request["n"]):
        yield {"i": i}


def client(kv: Path, **options: Any) -> Any:
    return trioplane.open_endpoint_client(
        "ns.tls.count", FileDiscovery(kv, poll_interval=0.05), **options
    )


# -- the settings --------------------------------------------------------------------------


def test_settings_are_read_as_dynamo_reads_them(pki: Pki) -> None:
    env = {
        ENV["ca_path"]: pki.ca,
        ENV["insecure"]: "Yes",
        ENV["handshake_timeout"]: "7",
        ENV["server_name"]: "",  # empty: unset
    }
    tls = TcpTls.from_env(env)
    assert tls.dials
    assert not tls.serves
    assert tls.insecure
    assert tls.handshake_timeout == 7
    assert tls.server_name is None
    assert TcpTls.from_env({ENV["handshake_timeout"]: "abc"}).handshake_timeout == 3
    assert TcpTls.from_env({ENV["insecure"]: "0"}).insecure is False
    assert not TcpTls.from_env({}).enabled
    assert TcpTls.from_env({}).client_context is None
    assert TcpTls.from_env({}).server_context is None


def test_bad_settings_are_refused_at_once(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DYN_TCP_TLS_KEY_PATH"):
        TcpTls(cert_path=pki.server_cert)
    with pytest.raises(ValueError, match="needs a server certificate"):
        TcpTls(client_ca_path=pki.ca)
    with pytest.raises(ValueError, match="client identity needs DYN_TCP_TLS_CA_CERT_PATH"):
        TcpTls(client_cert_path=pki.client_cert, client_key_path=pki.client_key)
    missing = TcpTls(ca_path=str(tmp_path / "nope.pem"))
    with pytest.raises(ValueError, match=r"cannot load DYN_TCP_TLS_CA_CERT_PATH \(.*nope.pem\)"):
        _ = missing.client_context


# -- the TCP request plane -------------------------------------------------------------------


async def test_tls_request_plane(pki: Pki) -> None:
    server_tls = pki.server()
    async with (
        open_tcp_test_worker(ssl_context=server_tls.server_context) as worker,
        trioplane.open_tcp_client(ssl_context=TcpTls(ca_path=pki.ca).client_context) as tcp,
    ):
        assert await tcp.send_request(worker.address("p"), b"x") == b""
        assert worker.received[0].payload == b"x"


async def test_mtls_request_plane(pki: Pki) -> None:
    server = pki.server(mtls=True).server_context
    identity = TcpTls(
        ca_path=pki.ca, client_cert_path=pki.client_cert, client_key_path=pki.client_key
    ).client_context
    async with (
        open_tcp_test_worker(ssl_context=server) as worker,
        trioplane.open_tcp_client(ssl_context=identity) as tcp,
    ):
        assert await tcp.send_request(worker.address("p"), b"x") == b""
    async with (
        open_tcp_test_worker(ssl_context=server) as worker,
        trioplane.open_tcp_client(ssl_context=TcpTls(ca_path=pki.ca).client_context) as tcp,
    ):
        with pytest.raises(trioplane.ConnectError, match=r"TLS with 127.0.0.1:.* failed: .*certif"):
            await tcp.send_request(worker.address("p"), b"x")


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("wrong_ca", "TLS with 127.0.0.1:[0-9]+ failed: .*certificate verify failed"),
        ("wrong_name", "TLS with 127.0.0.1:[0-9]+ failed: .*(mismatch|match)"),
        ("expired", "TLS with 127.0.0.1:[0-9]+ failed: .*expired"),
        ("plain_client", "answered with TLS: it serves TLS and this client speaks plain text"),
        ("plain_server", "TLS with 127.0.0.1:[0-9]+ failed: .*does it serve TLS"),
    ],
)
async def test_tls_failures_are_named(pki: Pki, case: str, match: str) -> None:
    certs = {"wrong_name": pki.wrong_name_cert, "expired": pki.expired_cert}
    keys = {"wrong_name": pki.wrong_name_key, "expired": pki.expired_key}
    served = TcpTls(
        cert_path=certs.get(case, pki.server_cert), key_path=keys.get(case, pki.server_key)
    )
    dialled = TcpTls(ca_path=pki.other_ca if case == "wrong_ca" else pki.ca)
    server_context = None if case == "plain_server" else served.server_context
    client_context = None if case == "plain_client" else dialled.client_context
    async with (
        open_tcp_test_worker(ssl_context=server_context) as worker,
        trioplane.open_tcp_client(ssl_context=client_context) as tcp,
    ):
        with trio.fail_after(2), pytest.raises(trioplane.ConnectError, match=match):
            await tcp.send_request(worker.address("p"), b"x")
        # the worker counted the failure and serves good callers on
        if case != "plain_server":
            await wait_until(lambda: worker.statistics().handshake_failures == 1)
    if case == "plain_server":
        assert worker.statistics().read_errors == 1


async def test_handshake_deadline_on_both_sides(pki: Pki) -> None:
    """A peer that never finishes a TLS handshake is cut off at the deadline."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        async with trioplane.open_tcp_client(
            ssl_context=TcpTls(ca_path=pki.ca).client_context, tls_handshake_timeout=0.2
        ) as tcp:
            with pytest.raises(
                trioplane.ConnectError, match=r"TLS handshake .* timed out after 0.2 s"
            ):
                await tcp.send_request(f"127.0.0.1:{port}/p", b"x")
    limits = trioplane.ServerLimits(handshake_timeout=0.2)
    async with open_tcp_test_worker(ssl_context=pki.server().server_context, limits=limits) as w:
        stream = await trio.open_tcp_stream("127.0.0.1", w.port)
        async with stream:
            await stream.send_all(b"\x16\x03\x01")  # a ClientHello begun, never finished
            with trio.fail_after(2):
                assert await stream.receive_some() == b""  # closed at the deadline
        assert w.statistics().handshake_failures == 1


async def test_a_plain_text_peer_on_a_tls_port_gets_an_alert(pki: Pki) -> None:
    async with open_tcp_test_worker(ssl_context=pki.server().server_context) as worker:
        stream = await trio.open_tcp_stream("127.0.0.1", worker.port)
        async with stream:
            await stream.send_all(b"\x00\x01p\x00\x02{}\x00\x00\x00\x00")
            with trio.fail_after(2):
                assert await stream.receive_some() == TLS_DECODE_ERROR_ALERT
        assert worker.received == []


# -- the whole loop: request plane and call home ---------------------------------------------


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
async def test_endpoint_client_and_worker_over_tls(pki: Pki, tmp_path: Path, mtls: bool) -> None:
    """TLS both planes: the worker serves and calls home with TLS, the client dials
    and serves its response plane with TLS (with mTLS, each asks the other's identity)."""
    worker_tls = pki.server(mtls=mtls)
    client_tls = TcpTls(
        ca_path=pki.ca,
        cert_path=pki.server_cert,  # the response plane's certificate
        key_path=pki.server_key,
        client_ca_path=pki.ca if mtls else None,
        client_cert_path=pki.client_cert if mtls else None,
        client_key_path=pki.client_key if mtls else None,
    )
    async with (
        open_worker({"ns.tls.count": count}, discovery_root=tmp_path, tls=worker_tls) as w,
        client(tmp_path, tls=client_tls) as c,
    ):
        await c.wait_for_instances()
        assert await c.call({"n": 3}) == [{"i": 0}, {"i": 1}, {"i": 2}]
        plane = w.statistics().planes["tcp"]
        assert isinstance(plane, trioplane.servers.ServerStatistics)
        assert plane.handshake_failures == 0
        assert c.statistics().response_plane.dropped_connections == 0


async def test_both_sides_read_dynamo_tls_variables(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in pki.env(pki.server(mtls=True)).items():
        monkeypatch.setenv(name, value)
    async with (
        open_worker({"ns.tls.count": count}, discovery_root=tmp_path) as w,
        client(tmp_path) as c,
    ):
        assert w.tls.serves
        assert c.tls.serves
        assert c.tls.dials
        await c.wait_for_instances()
        assert await c.call({"n": 2}) == [{"i": 0}, {"i": 1}]
    # plain text is one argument away
    async with (
        open_worker({"ns.tls.count": count}, discovery_root=tmp_path, tls=TcpTls()) as w,
        client(tmp_path, tls=TcpTls()) as c,
    ):
        await c.wait_for_instances()
        assert await c.call({"n": 1}) == [{"i": 0}]


async def test_call_home_mismatch_tls_worker_plain_caller(pki: Pki, tmp_path: Path) -> None:
    """The worker calls home with TLS; the caller's response plane is plain text (as
    with Dynamo, where it would hang): the call fails at its deadline, saying why."""
    async with (
        open_worker({"ns.tls.count": count}, discovery_root=tmp_path, tls=pki.server()) as w,
        client(tmp_path, tls=TcpTls(ca_path=pki.ca), call_home_timeout=1) as c,
    ):
        await c.wait_for_instances()
        with pytest.raises(trioplane.CallHomeTimeout, match=r"called home with TLS.*plain text"):
            await c.call({"n": 1})
        await wait_until(lambda: w.statistics().call_home_failures == 1)


async def test_call_home_mismatch_plain_worker_tls_caller(pki: Pki, tmp_path: Path) -> None:
    async with open_fake_endpoint_worker() as fake:  # a plain-text call home
        tls = TcpTls(cert_path=pki.server_cert, key_path=pki.server_key)
        instance = fake.instance("ns.tls.count")
        async with trioplane.open_endpoint_client(
            "ns.tls.count", [instance], tls=tls, call_home_timeout=1
        ) as c:
            with pytest.raises(
                trioplane.CallHomeTimeout, match=r"called home in plain text.*serves TLS"
            ):
                await c.call({"n": 1})
    async with (
        open_worker(
            {"ns.tls.count": count},
            discovery_root=tmp_path,
            tls=TcpTls(),  # plain-text call home
        ) as w,
        client(tmp_path, tls=tls, call_home_timeout=1) as c,
    ):
        await c.wait_for_instances()
        with pytest.raises(trioplane.CallHomeTimeout):
            await c.call({"n": 1})
        await wait_until(lambda: w.statistics().call_home_failures == 1)


async def test_call_home_tls_failure_is_named_on_the_worker(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker trusts another CA than the one that signed the caller's certificate."""
    worker_tls = TcpTls(ca_path=pki.other_ca)
    client_tls = TcpTls(cert_path=pki.server_cert, key_path=pki.server_key)
    async with (
        open_worker({"ns.tls.count": count}, discovery_root=tmp_path, tls=worker_tls) as w,
        client(tmp_path, tls=client_tls, call_home_timeout=1) as c,
    ):
        await c.wait_for_instances()
        with pytest.raises(trioplane.CallHomeTimeout):
            await c.call({"n": 1})
        await wait_until(lambda: w.statistics().call_home_failures == 1)
    assert any(
        "call home: TLS with 127.0.0.1" in r.getMessage()
        and "certificate verify failed" in r.getMessage()
        for r in caplog.records
    )


async def test_server_contexts_are_built_once(pki: Pki) -> None:
    tls = pki.server(mtls=True)
    assert tls.server_context is tls.server_context
    assert tls.client_context is tls.client_context
    assert isinstance(tls.client_context, ssl.SSLContext)
    await trio.lowlevel.checkpoint()
