"""The HTTP test worker (hypercorn) against bare httpx, HTTP/1.1 and h2c."""

from __future__ import annotations

import httpx
import pytest
import trio

from trioplane.testing.http import (
    DEFAULT_MAX_BODY_SIZE,
    HttpReply,
    HttpRequest,
    HttpTestWorker,
    open_http_test_worker,
)

from .conftest import HTTP_VERSIONS, bare_client, wait_until


async def test_url_and_port() -> None:
    async with open_http_test_worker(endpoints=["generate", "other"]) as worker:
        assert worker.port != 0
        assert worker.url() == f"http://127.0.0.1:{worker.port}/v1/rpc/generate"
        assert worker.url("other") == f"http://127.0.0.1:{worker.port}/v1/rpc/other"


async def test_post_is_accepted_with_an_empty_body(protocol: str) -> None:
    async with open_http_test_worker() as worker, bare_client(protocol) as http:
        response = await http.post(
            worker.url(),
            content=b"payload",
            headers={"Content-Type": "application/octet-stream", "Request-Id": "abc"},
        )
        assert response.status_code == 202
        assert response.content == b""
        assert response.http_version == HTTP_VERSIONS[protocol]
        [request] = worker.received
        assert request.method == "POST"
        assert request.path == "/v1/rpc/generate"
        assert request.body == b"payload"
        assert request.headers["request-id"] == "abc"
        assert request.headers["content-type"] == "application/octet-stream"
        assert request.http_version == ("2" if protocol == "h2c" else "1.1")
        await wait_until(lambda: worker.requests_served == 1)


async def test_unknown_endpoint_is_404_endpoint_not_found(protocol: str) -> None:
    async with open_http_test_worker() as worker, bare_client(protocol) as http:
        response = await http.post(worker.url("nope"), content=b"x")
        assert (response.status_code, response.text) == (404, "Endpoint not found")
        assert [r.path for r in worker.received] == ["/v1/rpc/nope"]


async def test_path_outside_the_root_is_a_bare_404(protocol: str) -> None:
    async with open_http_test_worker() as worker, bare_client(protocol) as http:
        for path in ("/other", "/v1/rpc/", "/v1/rpc"):
            response = await http.post(worker.base_url + path, content=b"x")
            assert (response.status_code, response.content) == (404, b"")


async def test_other_methods_are_405(protocol: str) -> None:
    async with open_http_test_worker() as worker, bare_client(protocol) as http:
        for method in ("GET", "PUT", "DELETE"):
            response = await http.request(method, worker.url())
            assert response.status_code == 405
            assert response.headers["allow"] == "POST"
            assert response.content == b""
        response = await http.get(worker.url("nope"))  # the method is checked first
        assert response.status_code == 405


async def test_body_over_the_limit_is_413(protocol: str) -> None:
    async with open_http_test_worker(max_body_size=1000) as worker, bare_client(protocol) as http:
        response = await http.post(worker.url(), content=b"x" * 1000)
        assert response.status_code == 202
        response = await http.post(worker.url(), content=b"x" * 1001)
        assert response.status_code == 413
        assert response.text == "Failed to buffer the request body: length limit exceeded"
        response = await http.post(worker.url("nope"), content=b"x" * 1001)
        assert response.status_code == 413  # the size is checked before the endpoint
        assert [len(r.body) for r in worker.received] == [1000, 1000, 1000]
        # The connection is still good.
        response = await http.post(worker.url(), content=b"x")
        assert response.status_code == 202


async def test_default_limit_is_2_mib(protocol: str) -> None:
    async with open_http_test_worker() as worker, bare_client(protocol) as http:
        assert worker.max_body_size == DEFAULT_MAX_BODY_SIZE == 2 * 1024 * 1024
        response = await http.post(worker.url(), content=bytes(DEFAULT_MAX_BODY_SIZE))
        assert response.status_code == 202
        response = await http.post(worker.url(), content=bytes(DEFAULT_MAX_BODY_SIZE + 1))
        assert response.status_code == 413


@pytest.mark.parametrize(
    ("reply", "status", "text"),
    [
        (HttpReply.status_code(503, "Server overloaded: worker at capacity"), 503, None),
        (HttpReply.status_code(429, "slow down"), 429, "slow down"),
        (HttpReply.status_code(500, b"internal error"), 500, "internal error"),
        (HttpReply.status_code(200, "ok"), 200, "ok"),
    ],
)
async def test_policy_picks_the_answer(
    protocol: str, reply: HttpReply, status: int, text: str | None
) -> None:
    async with (
        open_http_test_worker(lambda request: reply) as worker,
        bare_client(protocol) as http,
    ):
        response = await http.post(worker.url(), content=b"x")
        assert response.status_code == status
        assert response.text == (text or reply.body.decode())
        # The built-in answers come before the policy.
        response = await http.post(worker.url("nope"), content=b"x")
        assert response.status_code == 404


async def test_policy_sees_the_request_and_can_be_changed() -> None:
    seen: list[HttpRequest] = []

    def policy(request: HttpRequest) -> HttpReply:
        seen.append(request)
        return HttpReply.status_code(503) if request.body == b"busy" else HttpReply.accept()

    async with open_http_test_worker(policy) as worker, bare_client("h1") as http:
        assert (await http.post(worker.url(), content=b"busy")).status_code == 503
        assert (await http.post(worker.url(), content=b"fine")).status_code == 202
        assert [r.body for r in seen] == [b"busy", b"fine"]
        worker.policy = lambda request: HttpReply.status_code(429)
        assert (await http.post(worker.url(), content=b"fine")).status_code == 429


async def test_delayed_reply(protocol: str) -> None:
    policy = lambda request: HttpReply.accept(delay=0.2)  # noqa: E731
    async with open_http_test_worker(policy) as worker, bare_client(protocol) as http:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(http.post, worker.url())
            await wait_until(lambda: worker.requests_in_flight == 3)
        elapsed = trio.current_time() - start
        assert 0.2 <= elapsed < 2.0  # concurrently, not one after the other
        await wait_until(lambda: worker.requests_served == 3)


async def test_caller_that_leaves_is_counted_as_abandoned() -> None:
    async with open_http_test_worker(lambda request: HttpReply.hang()) as worker:
        async with bare_client("h1") as http:
            with trio.move_on_after(0.2):
                await http.post(worker.url(), content=b"x")
        await wait_until(lambda: worker.requests_abandoned == 1)
        assert worker.requests_served == 0
        assert worker.requests_in_flight == 0


async def test_headers_are_lower_case_and_repeats_are_joined() -> None:
    async with open_http_test_worker() as worker, bare_client("h1") as http:
        headers = [("X-Trace", "a"), ("x-trace", "b"), ("TraceParent", "00-1-2-01")]
        await http.post(worker.url(), content=b"", headers=headers)
        [request] = worker.received
        assert request.headers["x-trace"] == "a, b"
        assert request.headers["traceparent"] == "00-1-2-01"
        assert all(name == name.lower() for name in request.headers)


async def test_h1_and_h2c_share_the_port() -> None:
    async with open_http_test_worker() as worker:
        async with bare_client("h1") as h1, bare_client("h2c") as h2:
            first = await h1.post(worker.url(), content=b"1")
            second = await h2.post(worker.url(), content=b"2")
        assert (first.http_version, second.http_version) == ("HTTP/1.1", "HTTP/2")
        assert [r.http_version for r in worker.received] == ["1.1", "2"]


async def test_h1_connection_closes_after_keep_alive_max_requests() -> None:
    async with (
        open_http_test_worker(keep_alive_max_requests=3) as worker,
        bare_client("h1") as http,
    ):
        for _ in range(7):
            response = await http.post(worker.url())
            assert response.status_code == 202
        ports = [r.client for r in worker.received]
        assert len(set(ports)) == 3  # three requests per connection, then `connection: close`
        assert ports[0] == ports[2] != ports[3]


async def test_h2_goaway_after_keep_alive_max_requests() -> None:
    """hypercorn sends GOAWAY on the request *after* the limit, and drops that request
    and every other one still in flight on the connection."""
    async with (
        open_http_test_worker(keep_alive_max_requests=3) as worker,
        bare_client("h2c") as http,
    ):
        for _ in range(3):
            assert (await http.post(worker.url())).status_code == 202
        with pytest.raises(httpx.RemoteProtocolError, match="ConnectionTerminated"):
            await http.post(worker.url())
        assert (await http.post(worker.url())).status_code == 202  # a new connection
        assert len({r.client for r in worker.received}) == 2


async def test_max_concurrent_streams_limits_h2_streams() -> None:
    async with (
        open_http_test_worker(lambda r: HttpReply.hang(), max_concurrent_streams=2) as worker,
        bare_client("h2c") as http,
        trio.open_nursery() as nursery,
    ):
        for _ in range(4):
            nursery.start_soon(http.post, worker.url())
        await wait_until(lambda: worker.requests_in_flight == 2)
        await trio.sleep(0.2)
        assert worker.requests_in_flight == 2  # the other two wait for a stream
        assert len({r.client for r in worker.received}) == 1
        nursery.cancel_scope.cancel()


async def test_worker_stops_with_requests_in_flight() -> None:
    with trio.fail_after(5):
        async with (
            bare_client("h2c") as http,
            open_http_test_worker(lambda r: HttpReply.hang()) as worker,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(http.post, worker.url())
            await wait_until(lambda: worker.requests_in_flight == 1)
            nursery.cancel_scope.cancel()
    assert isinstance(worker, HttpTestWorker)


async def test_keep_received_false_answers_and_keeps_nothing(protocol: str) -> None:
    async with open_http_test_worker(keep_received=False) as worker, bare_client(protocol) as http:
        for _ in range(3):
            response = await http.post(worker.url(), content=b"x" * 1000)
            assert response.status_code == 202
        assert worker.received == []
        await wait_until(lambda: worker.requests_served == 3)


def test_https_needs_both_files() -> None:
    async def main() -> None:
        async with open_http_test_worker(certfile="chain.pem"):
            pass  # pragma: no cover

    with pytest.raises(ValueError, match="certfile and keyfile"):
        trio.run(main)
