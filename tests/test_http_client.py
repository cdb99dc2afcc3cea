"""The HTTP request plane against hypercorn (the HTTP test worker), HTTP/1.1 and h2c."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trustme

import trioplane
from trioplane.testing.http import HttpReply, HttpTestWorker, open_http_test_worker
from trioplane.transports.http import HttpStatusError, parse_http_address

from .conftest import all_tasks

pytestmark = pytest.mark.parametrize("h2", [False, True], ids=["http1", "h2c"])


@pytest.fixture
async def http_worker() -> AsyncIterator[HttpTestWorker]:
    async with open_http_test_worker() as worker:
        yield worker


async def test_accepted_request_posts_the_payload(http_worker: HttpTestWorker, h2: bool) -> None:
    async with trioplane.open_http_client(http2=h2) as client:
        assert client.transport_name == "http"
        ack = await client.send_request(http_worker.url(), b"payload", {"request-id": "r1"})
        stats = client.stats()
    assert ack == b""
    (request,) = http_worker.received
    assert request.method == "POST"
    assert request.body == b"payload"
    assert request.headers["request-id"] == "r1"
    assert request.headers["content-type"] == "application/octet-stream"
    assert request.http_version == ("2" if h2 else "1.1")
    assert stats.requests_sent == stats.responses_received == 1
    assert stats.idle_connections == 1


@pytest.mark.parametrize(
    ("reply", "error", "text"),
    [
        (HttpReply.status_code(503, "Server overloaded: busy"), trioplane.WorkerOverloaded, "busy"),
        (HttpReply.status_code(429, "slow down"), trioplane.WorkerOverloaded, "slow down"),
        (HttpReply.status_code(500, "kaboom"), HttpStatusError, "HTTP 500: kaboom"),
    ],
)  # fmt: skip
async def test_statuses_become_named_errors(
    http_worker: HttpTestWorker, h2: bool, reply: HttpReply, error: type[Exception], text: str
) -> None:
    http_worker.policy = lambda request: reply
    async with trioplane.open_http_client(http2=h2) as client:
        with pytest.raises(error, match=text):
            await client.send_request(http_worker.url(), b"x")
        assert client.stats().errors == 1


async def test_dynamo_refusals(http_worker: HttpTestWorker, h2: bool) -> None:
    async with trioplane.open_http_client(http2=h2) as client:
        with pytest.raises(trioplane.WorkerUnavailable, match="Endpoint not found"):
            await client.send_request(http_worker.url("nope"), b"x")
        with pytest.raises(trioplane.FrameTooLarge, match="too large"):
            await client.send_request(http_worker.url(), b"x" * (3 * 1024 * 1024))
    async with trioplane.open_http_client(http2=h2, max_body_size=10) as client:
        with pytest.raises(trioplane.FrameTooLarge, match="exceeds 10"):
            await client.send_request(http_worker.url(), b"x" * 11)


async def test_cancelled_requests_do_not_leak(http_worker: HttpTestWorker, h2: bool) -> None:
    """1,000 cancelled requests on one h2 connection (300 over HTTP/1.1's pool of
    100 connections), then one that must succeed.

    Bare httpx/httpcore loses a stream (or pool) slot per cancelled request and
    fails the 101st (httpcore issue 1022); trioplane lets them finish elsewhere.
    """
    http_worker.policy = lambda request: HttpReply.accept(delay=0.05)
    async with trioplane.open_http_client(http2=h2, ack_timeout=30) as client:
        for _ in range(10 if h2 else 3):
            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(client.send_request, http_worker.url(), b"x")
                await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
        http_worker.policy = lambda request: HttpReply.accept()
        with trio.fail_after(30):
            assert await client.send_request(http_worker.url(), b"after") == b""


async def test_https_trusts_what_the_ssl_context_trusts(h2: bool, tmp_path: Path) -> None:
    """https: the caller's SSLContext decides whom to trust; ALPN picks HTTP/2 if asked."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "chain.pem", tmp_path / "key.pem"
    certfile.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    keyfile.write_bytes(cert.private_key_pem.bytes())
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with open_http_test_worker(certfile=str(certfile), keyfile=str(keyfile)) as worker:
        assert worker.url().startswith("https://127.0.0.1:")
        async with trioplane.open_http_client(http2=h2, ssl_context=trusting) as client:
            assert await client.send_request(worker.url(), b"secret") == b""
        [request] = worker.received
        assert (request.body, request.http_version) == (b"secret", "2" if h2 else "1.1")
        async with trioplane.open_http_client(http2=h2) as system_trust:
            with pytest.raises(trioplane.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await system_trust.send_request(worker.url(), b"x")
    assert len(worker.received) == 1


async def test_goaway_never_sends_a_request_twice(h2: bool) -> None:
    """The server retires a connection every 50 requests.

    A request whose body had not all left is sent again on a fresh connection; one
    whose body had left may have been processed, so it is never sent twice: it fails
    with ConnectionLost. (On HTTP/2 hypercorn drops what is in flight after its
    GOAWAY; HTTP/1.1 closes after an answer, so nothing fails there.)
    """
    async with (
        open_http_test_worker(keep_alive_max_requests=50) as worker,
        trioplane.open_http_client(http2=h2, ack_timeout=20) as client,
    ):
        failed: list[bytes] = []
        succeeded: list[bytes] = []

        async def caller(n: int) -> None:
            for i in range(25):
                body = b"%d-%d" % (n, i)
                try:
                    assert await client.send_request(worker.url(), body) == b""
                    succeeded.append(body)
                except trioplane.ConnectionLost:
                    failed.append(body)

        async with trio.open_nursery() as nursery:
            for n in range(16):
                nursery.start_soon(caller, n)
    received = [request.body for request in worker.received if request.complete]
    assert len(succeeded) + len(failed) == 400
    assert len(received) == len(set(received))  # nothing was processed twice
    assert set(succeeded) <= set(received)
    assert len(failed) < 100 if h2 else failed == []


async def test_timeouts_and_refused_connections(http_worker: HttpTestWorker, h2: bool) -> None:
    http_worker.policy = lambda request: HttpReply.hang()
    async with trioplane.open_http_client(http2=h2, ack_timeout=0.2) as client:
        with pytest.raises(trioplane.AckTimeout):
            await client.send_request(http_worker.url(), b"x")
        with pytest.raises(trioplane.ConnectError):
            await client.send_request("http://127.0.0.1:1/v1/rpc/generate", b"x")


async def test_close_refuses_new_requests_and_leaves_nothing(
    http_worker: HttpTestWorker, h2: bool
) -> None:
    def client_tasks() -> int:  # the server's side of a connection may linger: not counted
        return sum(1 for task in all_tasks() if task.name.startswith(("trioplane.", "http")))

    tasks = client_tasks()
    async with trioplane.open_http_client(http2=h2) as client:
        await client.send_request(http_worker.url(), b"x")
    assert not client.is_healthy()
    with pytest.raises(trioplane.ClientClosed):
        await client.send_request(http_worker.url(), b"x")
    assert client_tasks() == tasks


@pytest.mark.parametrize("address", ["ws://h:1/p", "http:///p", "http://h:x/p", "http://h/ p"])
def test_bad_addresses(address: str, h2: bool) -> None:
    with pytest.raises(ValueError, match="http"):
        parse_http_address(address)
