"""Testing a Trio service that calls Dynamo, on trioplane's virtual network.

Run with pytest (trio_mode = true): each test is a whole deployment (workers, their
discovery, the client) in memory, under Trio's autojump clock, so the seconds the
service waits cost no wall time.
"""

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import trioplane
from trioplane.testing import VirtualNetwork

#: Failures worth another attempt: nothing reached the handler's caller yet.
RETRYABLE = (
    trioplane.StreamIncomplete,  # the worker died mid-stream
    trioplane.CallHomeTimeout,  # it accepted, but never reached us
    trioplane.WorkerRejected,  # overloaded or draining
    trioplane.NoInstances,  # none to route to, for now
    trioplane.ConnectError,
    trioplane.AckTimeout,
)


async def summarize(
    client: trioplane.EndpointClient, text: str, *, attempts: int = 5, deadline: float = 20
) -> str:
    """The service under test: a summary of ``text`` from the LLM endpoint, its
    streamed tokens joined; a failed attempt is retried after a second's pause,
    and the whole has ``deadline`` seconds (``trio.TooSlowError``)."""
    with trio.fail_after(deadline):
        for attempt in range(1, attempts + 1):
            try:
                async with client.generate({"prompt": text}) as stream:
                    return "".join([token async for token in stream])
            except RETRYABLE:
                if attempt == attempts:
                    raise
                await trio.sleep(1)
    raise AssertionError("unreachable")


async def llm(request: Any, context: trioplane.RequestContext) -> AsyncIterator[str]:
    """The worker's handler: four tokens, one every half second."""
    for token in ("a ", "short ", "summary ", "indeed"):
        await trio.sleep(0.5)
        yield token


SUMMARY = "a short summary indeed"


async def test_the_summary(virtual_deployment: Any, autojump_clock: Any) -> None:
    async with virtual_deployment(llm, workers=2) as deployment, deployment.client() as client:
        assert await summarize(client, "a long text") == SUMMARY


async def test_a_worker_dies_mid_stream(
    virtual_network: VirtualNetwork, virtual_deployment: Any, autojump_clock: Any
) -> None:
    async with virtual_deployment(llm, workers=2) as deployment, deployment.client() as client:
        await client.wait_for_instances()
        # at t = 1.2 s (two tokens sent), kill the worker serving the stream
        virtual_network.after(1.2, lambda: deployment.kill(deployment.busy()[0]))
        start = trio.current_time()
        assert await summarize(client, "a long text") == SUMMARY
        assert trio.current_time() - start == pytest.approx(1.2 + 1 + 2, abs=0.01)
        assert any(event.kind == "reset" for event in virtual_network.events)


async def test_a_partition(
    virtual_network: VirtualNetwork, virtual_deployment: Any, autojump_clock: Any
) -> None:
    async with virtual_deployment(llm, workers=1) as deployment, deployment.client() as client:
        await client.wait_for_instances()
        # the client (127.0.0.1) cannot reach the worker for 5 s
        split = virtual_network.partition("127.0.0.1", deployment.host(0))
        virtual_network.after(5, split.heal)
        assert await summarize(client, "a long text") == SUMMARY
        assert trio.current_time() > 5


async def test_an_overloaded_instance(virtual_deployment: Any, autojump_clock: Any) -> None:
    async with (
        virtual_deployment(llm, workers=1, max_concurrency=1) as deployment,
        deployment.client() as client,
        trio.open_nursery() as nursery,
    ):
        await client.wait_for_instances()
        nursery.start_soon(client.call, {"prompt": "someone else's"})  # 2 s of work
        await trio.sleep(0.1)
        start = trio.current_time()
        assert await summarize(client, "a long text") == SUMMARY  # after a retry or two
        assert trio.current_time() - start > 2


async def test_the_deadline(
    virtual_network: VirtualNetwork, virtual_deployment: Any, autojump_clock: Any
) -> None:
    async with virtual_deployment(llm, workers=1) as deployment, deployment.client() as client:
        await client.wait_for_instances()
        virtual_network.partition("127.0.0.1", deployment.host(0))  # for good
        with pytest.raises(trio.TooSlowError):
            await summarize(client, "a long text", deadline=20)
        assert trio.current_time() == pytest.approx(20, abs=0.01)
