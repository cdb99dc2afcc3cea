"""The pytest plugin: the worked example of the docs, and each fault script."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import trioplane
from trioplane.testing import FakeEndpointWorker, faults
from trioplane.testing.endpoint import Script

ENDPOINT = "shop.llm.generate"


async def summarize(client: trioplane.EndpointClient, text: str, limit: float = 5) -> str:
    """The 'service' under test: asks an LLM endpoint, joins the streamed tokens."""
    with trio.fail_after(limit):
        return "".join([item["token"] async for item in _stream(client, text)])


async def _stream(client: trioplane.EndpointClient, text: str) -> AsyncIterator[Any]:
    async with client.generate({"prompt": text}) as responses:
        async for item in responses:
            yield item


def tokens(call: object) -> list[dict[str, str]]:
    return [{"token": t} for t in ("a ", "short ", "summary")]


async def test_the_service_joins_the_stream(
    fake_endpoint_worker: FakeEndpointWorker, no_leaks: None
) -> None:
    fake_endpoint_worker.script = faults.slow_items(0.001, tokens)
    instance = fake_endpoint_worker.instance(ENDPOINT)
    async with trioplane.open_endpoint_client(ENDPOINT, [instance]) as client:
        assert await summarize(client, "long text") == "a short summary"
    assert fake_endpoint_worker.calls[0].request == {"prompt": "long text"}


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (faults.reject(), trioplane.WorkerOverloaded),
        (faults.reject("Server unavailable: draining"), trioplane.WorkerUnavailable),
        (faults.drop_after(1, tokens), trioplane.StreamIncomplete),
        (faults.corrupt_after(1, items=tokens), trioplane.MalformedStream),
        (faults.stall_after(1, items=tokens), trio.TooSlowError),
    ],
)
async def test_the_service_sees_named_errors(
    fake_endpoint_worker: FakeEndpointWorker,
    no_leaks: None,
    script: Script,
    error: type[BaseException],
) -> None:
    fake_endpoint_worker.script = script
    instance = fake_endpoint_worker.instance(ENDPOINT)
    async with trioplane.open_endpoint_client(ENDPOINT, [instance], max_attempts=1) as client:
        with pytest.raises(error):
            await summarize(client, "x", limit=0.5)


async def test_never_calling_home_and_late_acks(fake_endpoint_worker: FakeEndpointWorker) -> None:
    instance = fake_endpoint_worker.instance(ENDPOINT)
    fake_endpoint_worker.script = faults.never_call_home()
    async with trioplane.open_endpoint_client(
        ENDPOINT, [instance], call_home_timeout=0.1
    ) as client:
        with pytest.raises(trioplane.CallHomeTimeout):
            await client.call({})
        fake_endpoint_worker.script = faults.delay_ack(0.05, tokens)
        assert len(await client.call({})) == 3


async def test_nats_server_fixture(nats_server: str) -> None:
    async with trioplane.open_nats_connection(nats_server) as nc:
        sub = await nc.subscribe("hello")
        await nc.publish("hello", b"world")
        with trio.fail_after(5):
            assert (await sub.__anext__()).payload == b"world"
