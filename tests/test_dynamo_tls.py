"""TLS and mTLS on Dynamo 1.6.1's TCP planes, both ways, against real Dynamo processes.

Each side is configured as Dynamo configures it (``DYN_TCP_TLS_*``; see
docs/security.rst): the serving side's certificate and key, the dialling side's
CA, and for mTLS a client CA on the serving side and a client identity on the
dialling side. The call home is TLS too: the worker dials it with its CA, the
caller serves it with its certificate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioplane
from trioplane import FileDiscovery, TcpTls
from trioplane.servers import TcpPlaneServer
from trioplane.worker import RequestContext, open_worker

from .conftest import wait_until
from .dynamo import dynamo_client_call, run_dynamo_worker
from .pki import Pki

pytestmark = pytest.mark.dynamo
ENDPOINT = "interop.tls.generate"


def caller(pki: Pki, *, mtls: bool, ca: str | None = None) -> TcpTls:
    """A caller's settings: dial with the CA (and an identity, for mTLS); serve its
    response plane with a certificate (requiring the worker's identity, for mTLS)."""
    return TcpTls(
        ca_path=ca or pki.ca,
        cert_path=pki.server_cert,
        key_path=pki.server_key,
        client_ca_path=pki.ca if mtls else None,
        client_cert_path=pki.client_cert if mtls else None,
        client_key_path=pki.client_key if mtls else None,
    )


def discovery(kv: Path) -> FileDiscovery:
    return FileDiscovery(kv, poll_interval=0.05)


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
async def test_trioplane_client_streams_from_a_dynamo_tls_worker(
    pki: Pki, tmp_path: Path, mtls: bool
) -> None:
    with run_dynamo_worker(tmp_path, [ENDPOINT], **pki.env(pki.server(mtls=mtls))) as worker:
        (instance,) = worker.instances.values()
        assert "://" not in instance.address  # TLS is not advertised: each side is configured
        async with trioplane.open_endpoint_client(
            ENDPOINT, discovery(tmp_path), tls=caller(pki, mtls=mtls)
        ) as client:
            await client.wait_for_instances()
            with trio.fail_after(20):
                assert await client.call({"op": "count", "n": 3}) == [{"i": i} for i in range(3)]
                async with client.generate({"op": "error_after"}) as stream:
                    with pytest.raises(trioplane.RemoteError, match="ValueError: boom"):
                        _ = [item async for item in stream]
            assert client.statistics().response_plane.dropped_connections == 0


async def test_tls_failures_against_a_dynamo_worker_are_named(pki: Pki, tmp_path: Path) -> None:
    with run_dynamo_worker(tmp_path, [ENDPOINT], **pki.env(pki.server(mtls=True))):
        cases: list[tuple[TcpTls, str]] = [
            (caller(pki, mtls=True, ca=pki.other_ca), "TLS with .* certificate verify failed"),
            (TcpTls(), "answered with TLS: it serves TLS and this client speaks plain text"),
            (caller(pki, mtls=False), "TLS with .* certificate required"),
        ]
        for tls, match in cases:
            async with trioplane.open_endpoint_client(
                ENDPOINT, discovery(tmp_path), tls=tls
            ) as client:
                await client.wait_for_instances()
                with trio.fail_after(10), pytest.raises(trioplane.ConnectError, match=match):
                    await client.call({"op": "count", "n": 1})


async def count(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    for i in range(request["n"]):
        yield {"i": i}


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
async def test_dynamo_client_streams_from_a_trioplane_tls_worker(
    pki: Pki, tmp_path: Path, mtls: bool
) -> None:
    async with open_worker(
        {ENDPOINT: count}, discovery_root=tmp_path, tls=pki.server(mtls=mtls)
    ) as worker:
        lines = await dynamo_client_call(
            tmp_path, ENDPOINT, {"n": 3}, **pki.env(caller(pki, mtls=mtls))
        )
        assert lines == [{"item": {"i": i}} for i in range(3)] + [{"done": True}]
        stats = worker.statistics()
        assert stats.call_home_failures == 0
        assert stats.calls_accepted == 1


async def test_a_plain_text_dynamo_client_is_refused_by_a_trioplane_tls_worker(
    pki: Pki, tmp_path: Path
) -> None:
    async with open_worker(
        {ENDPOINT: count}, discovery_root=tmp_path, tls=pki.server(mtls=True)
    ) as worker:
        lines = await dynamo_client_call(tmp_path, ENDPOINT, {"n": 3})
        assert len(lines) == 1
        assert "error" in lines[0]
        plane = worker.servers["tcp"]
        assert isinstance(plane, TcpPlaneServer)
        await wait_until(lambda: plane.statistics().handshake_failures >= 1)
        assert worker.statistics().calls_accepted == 0


async def test_a_dynamo_worker_calling_home_with_tls_to_a_plain_caller_is_named(
    pki: Pki, tmp_path: Path
) -> None:
    """Where Dynamo's own client waits forever, trioplane's says why the call failed."""
    with run_dynamo_worker(tmp_path, [ENDPOINT], **pki.env(pki.server())):
        plain_listener = TcpTls(ca_path=pki.ca)  # dials with TLS, serves its plane in plain text
        async with trioplane.open_endpoint_client(
            ENDPOINT, discovery(tmp_path), tls=plain_listener, call_home_timeout=2
        ) as client:
            await client.wait_for_instances()
            with (
                trio.fail_after(10),
                pytest.raises(
                    trioplane.CallHomeTimeout,
                    match=r"called home with TLS, but this response plane",
                ),
            ):
                await client.call({"op": "count", "n": 1})
