"""Parity with Dynamo 1.6.1, both ways: typed errors, failed prologues, annotations,
context forwarding (id, metadata, stop and kill across two hops) and shutdown.

Each case runs against a real Dynamo worker (``tests/dynamo/worker_script.py``) and
a trioplane worker with the same behaviour, and compares what each client sees:
trioplane's client must see the same error from either worker, and Dynamo's own
client must print the same lines for either worker.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioplane
from trioplane import Annotated, FileDiscovery, errors
from trioplane.worker import RequestContext, open_worker

from .conftest import wait_until
from .dynamo import DynamoWorker, dynamo_client_call, run_dynamo_worker

pytestmark = pytest.mark.dynamo
DYNAMO = "parity.dyn.generate"
DYNAMO_NOTGEN = "parity.dyn.notgen"
OURS = "parity.tp.generate"
OURS_NOTGEN = "parity.tp.notgen"
FORWARD = "parity.tp.forward"

#: (exception name, items before it): builtins by their name, Dynamo's by Dynamo's.
ERROR_CASES = [
    ("ValueError", 0),
    ("ValueError", 1),
    ("TypeError", 1),
    ("KeyError", 1),
    ("RuntimeError", 1),
    ("TimeoutError", 1),
    ("ConnectionError", 1),
    ("ConnectionRefusedError", 1),
    ("InvalidArgument", 1),
    ("Unknown", 1),
    ("CannotConnect", 1),
    ("Disconnected", 1),
    ("ConnectionTimeout", 1),
    ("Cancelled", 1),
]
#: Types after which Dynamo's client avoids the instance for a while (one call each).
INHIBITING = ["EngineShutdown", "StreamIncomplete", "WorkerUnavailable"]


def raise_request(name: str, after: int = 1) -> dict[str, Any]:
    return {"op": "raise", "exc": name, "msg": "parity boom", "after": after}


# -- the trioplane worker: worker_script.py's ops, in Trio ------------------------------


async def handler(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    op = request.get("op")
    if op == "raise":
        for i in range(request["after"]):
            yield {"i": i}
        name = request["exc"]
        cls = getattr(errors, name, None) or getattr(builtins, name)
        raise cls(request["msg"])
    if op == "context":
        yield {"id": context.id(), "metadata": context.metadata}
    elif op == "annotate":
        yield Annotated(event="progress", comment=["warming up"])
        yield Annotated(data={"token": 1}, id="t1")
    elif op == "slow":
        i = 0
        while not context.is_stopped():
            yield {"i": i}
            i += 1
            await trio.sleep(0.02)


async def notgen(request: Any, context: RequestContext) -> Any:
    return {"never": "streamed"}


async def forward(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    """Calls Dynamo's worker as part of its own call (Dynamo's ``context=context``)."""
    discovery = FileDiscovery(Path(request["kv"]), poll_interval=0.05)
    async with (
        trioplane.open_endpoint_client(DYNAMO, discovery) as downstream,
        downstream.generate(request["request"], context=context) as items,
    ):
        async for item in items:
            yield item


@pytest.fixture(scope="module")
def dynamo_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoWorker]:
    with run_dynamo_worker(tmp_path_factory.mktemp("kv"), [DYNAMO, DYNAMO_NOTGEN]) as worker:
        yield worker


@pytest.fixture
async def kv(dynamo_worker: DynamoWorker) -> AsyncIterator[Path]:
    """One discovery directory with Dynamo's worker and a trioplane worker in it."""
    endpoints: dict[str, Any] = {OURS: handler, OURS_NOTGEN: notgen, FORWARD: forward}
    async with open_worker(endpoints, discovery_root=dynamo_worker.discovery_dir):
        yield dynamo_worker.discovery_dir


def client(kv: Path, endpoint: str, **options: Any) -> Any:
    return trioplane.open_endpoint_client(
        endpoint, FileDiscovery(kv, poll_interval=0.05), **options
    )


async def failure(kv: Path, endpoint: str, request: Any) -> tuple[list[Any], trioplane.RemoteError]:
    """The items, then the error, of one call by trioplane's client."""
    items: list[Any] = []
    async with client(kv, endpoint) as c:
        await c.wait_for_instances()
        with trio.fail_after(20):
            try:
                async with c.generate(request) as stream:
                    async for item in stream:
                        items.append(item)
            except trioplane.RemoteError as exc:
                return items, exc
    raise AssertionError(f"no error: {items}")


# -- typed errors ------------------------------------------------------------------------


async def test_trioplanes_client_sees_the_same_error_from_either_worker(kv: Path) -> None:
    for name, after in [*ERROR_CASES, *((name, 1) for name in INHIBITING)]:
        from_dynamo = await failure(kv, DYNAMO, raise_request(name, after))
        from_ours = await failure(kv, OURS, raise_request(name, after))
        assert from_dynamo[0] == from_ours[0] == [{"i": i} for i in range(after)]
        dynamo_error, our_error = from_dynamo[1], from_ours[1]
        assert type(dynamo_error) is type(our_error), name
        assert list(dynamo_error.error.items()) == list(our_error.error.items()), name
    assert type(dynamo_error) is trioplane.RemoteWorkerUnavailable
    assert dynamo_error.error_type == "WorkerUnavailable"


async def test_dynamos_client_sees_the_same_error_from_either_worker(kv: Path) -> None:
    batch = [raise_request(name, after) for name, after in ERROR_CASES]
    from_dynamo = await dynamo_client_call(kv, DYNAMO, batch, "--batch")
    from_ours = await dynamo_client_call(kv, OURS, batch, "--batch")
    assert from_dynamo == from_ours
    assert from_ours[0] == {
        "call": [{"error": "ValueError: InvalidRequest: ValueError: parity boom"}]
    }
    invalid_argument = from_ours[[name for name, _ in ERROR_CASES].index("InvalidArgument")]
    assert invalid_argument["call"][-1] == {"error": "InvalidArgument: parity boom"}


@pytest.mark.parametrize("name", INHIBITING)
async def test_dynamos_client_avoids_a_worker_after_the_same_errors(kv: Path, name: str) -> None:
    """After these, Dynamo's client stops routing to the instance, ours or its own."""
    batch = [raise_request(name), {"op": "context"}]
    from_dynamo = await dynamo_client_call(kv, DYNAMO, batch, "--batch")
    from_ours = await dynamo_client_call(kv, OURS, batch, "--batch")
    assert [call["call"][-1] for call in from_ours] == [
        {"error": "ValueError: Unavailable: parity boom"},
        {"error": f"Exception: Unavailable: No workers available for endpoint {_slashed(OURS)}"},
    ]
    assert from_dynamo[0] == from_ours[0]
    assert from_dynamo[1]["call"][-1]["error"].endswith(_slashed(DYNAMO))


def _slashed(endpoint: str) -> str:
    return endpoint.replace(".", "/")


# -- handlers that cannot stream ------------------------------------------------------------


async def test_a_handler_that_cannot_stream_fails_alike(kv: Path) -> None:
    (from_dynamo,) = await dynamo_client_call(kv, DYNAMO_NOTGEN, {})
    (from_ours,) = await dynamo_client_call(kv, OURS_NOTGEN, {})
    assert (
        from_dynamo
        == from_ours
        == {
            "error": "Exception: Unavailable: Worker generate() failed before response stream: "
            "Generate Error: AttributeError: 'coroutine' object has no attribute '__anext__'"
        }
    )
    (_, dynamo_error), (_, our_error) = [
        await failure(kv, endpoint, {}) for endpoint in (DYNAMO_NOTGEN, OURS_NOTGEN)
    ]
    assert type(dynamo_error) is type(our_error) is trioplane.RemoteUnknown
    assert dynamo_error.error == our_error.error
    assert our_error.reason == "runtime.unclassified"


# -- annotations -------------------------------------------------------------------------------


async def test_dynamos_annotated_client_reads_our_annotations(kv: Path) -> None:
    lines = await dynamo_client_call(kv, OURS, {"op": "annotate"}, "--annotated")
    assert lines == [
        {"item": {"data": None, "event": "progress", "comments": ["warming up"], "id": None}},
        {"item": {"data": {"token": 1}, "event": None, "comments": None, "id": "t1"}},
        {"done": True},
    ]
    plain = await dynamo_client_call(kv, OURS, {"op": "annotate"})
    assert plain == [{"item": {"token": 1}}, {"done": True}]


async def test_our_annotated_client_reads_dynamos_items(kv: Path) -> None:
    async with client(kv, DYNAMO) as c:
        await c.wait_for_instances()
        items = await c.call({"op": "count", "n": 2}, annotated=True)
    assert items == [Annotated(data={"i": 0}), Annotated(data={"i": 1})]


# -- context forwarding ---------------------------------------------------------------------


async def test_context_id_and_metadata_reach_either_worker(kv: Path) -> None:
    upstream = RequestContext("ctx-7", {"tenant": "acme"}, {})
    async with client(kv, DYNAMO) as c:
        await c.wait_for_instances()
        assert await c.call({"op": "context"}, context=upstream) == [
            {"id": "ctx-7", "metadata": {"tenant": "acme"}}
        ]
    lines = await dynamo_client_call(
        kv, OURS, {"op": "context"}, "--context", "ctx-9", "--metadata", '{"tenant": "acme"}'
    )
    assert lines == [{"item": {"id": "ctx-9", "metadata": {"tenant": "acme"}}}, {"done": True}]


@pytest.mark.parametrize(("cancel_mode", "marker"), [("stop", "stopped"), ("kill", "killed")])
async def test_our_stop_reaches_dynamos_worker_through_ours(
    kv: Path, tmp_path: Path, cancel_mode: str, marker: str
) -> None:
    """trioplane client -> trioplane worker -> Dynamo worker: leaving early stops both."""
    marker_file = tmp_path / "marker"
    inner = {"op": "slow", "interval": 0.02, "marker": str(marker_file)}
    async with client(kv, FORWARD, cancel_mode=cancel_mode) as c:
        await c.wait_for_instances()
        async with c.generate({"kv": str(kv), "request": inner}) as items:
            assert await items.__anext__() == {"i": 0}
        await wait_until(marker_file.exists)
    assert marker_file.read_text() == marker


async def test_dynamos_client_stopping_reaches_dynamos_worker_through_ours(
    kv: Path, tmp_path: Path
) -> None:
    """Dynamo client -> trioplane worker -> Dynamo worker: Dynamo's client kills the call
    when it stops reading, and the kill goes on to the worker behind ours."""
    marker_file = tmp_path / "marker"
    inner = {"op": "slow", "interval": 0.02, "marker": str(marker_file)}
    lines = await dynamo_client_call(kv, FORWARD, {"kv": str(kv), "request": inner}, "2")
    assert lines == [{"item": {"i": 0}}, {"item": {"i": 1}}, {"done": True}]
    await wait_until(marker_file.exists)
    assert marker_file.read_text() == "killed"


# -- shutdown ---------------------------------------------------------------------------------


async def test_closing_our_worker_fails_dynamos_call_with_engine_shutdown(
    dynamo_worker: DynamoWorker, tmp_path: Path
) -> None:
    lines: list[Any] = []
    async with open_worker({OURS: handler}, discovery_root=tmp_path, grace_period=0.2) as worker:

        async def call() -> None:
            lines.extend(await dynamo_client_call(tmp_path, OURS, {"op": "slow"}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            with trio.fail_after(20):
                while worker.statistics().calls_in_flight == 0:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            await worker.aclose()
    assert lines[0] == {"item": {"i": 0}}
    assert lines[-1] == {"error": "ValueError: Unavailable: the worker is shutting down"}
