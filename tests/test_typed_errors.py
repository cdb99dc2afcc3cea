"""Dynamo's typed errors, annotations and context forwarding, trioplane on both sides.

The captured Dynamo 1.6.1 behaviour these mirror is in docs/errors.rst; the same
cases against real Dynamo processes are in test_dynamo_parity.py.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trioplane
from trioplane import Annotated, errors
from trioplane.discovery import FileDiscovery
from trioplane.wire.errors import error_object, prologue_error, remote_error, type_name
from trioplane.worker import RequestContext, open_worker

from .conftest import wait_until

#: Exception raised in a handler -> (error_type, class, reason, message), as a Dynamo
#: 1.6.1 worker sends it (captured against real processes).
DYNAMO_TABLE: list[tuple[BaseException, Any, str, str, str]] = [
    (ValueError("boom"), {"Backend": "InvalidArgument"}, "InvalidRequest",
     "backend.invalid_argument", "ValueError: boom"),
    (TypeError("boom"), {"Backend": "InvalidArgument"}, "InvalidRequest",
     "backend.invalid_argument", "TypeError: boom"),
    (KeyError("boom"), {"Backend": "Unknown"}, "Internal", "backend.unknown", "KeyError: 'boom'"),
    (RuntimeError("boom"), {"Backend": "Unknown"}, "Internal", "backend.unknown",
     "RuntimeError: boom"),
    (TimeoutError("boom"), {"Backend": "ConnectionTimeout"}, "DeadlineExceeded",
     "backend.connection_timeout", "TimeoutError: boom"),
    (ConnectionError("boom"), {"Backend": "Disconnected"}, "Unavailable",
     "backend.disconnected", "ConnectionError: boom"),
    (ConnectionRefusedError("boom"), {"Backend": "CannotConnect"}, "Unavailable",
     "backend.cannot_connect", "ConnectionRefusedError: boom"),
    (errors.Unknown("boom"), {"Backend": "Unknown"}, "Internal", "backend.unknown", "boom"),
    (errors.EngineShutdown("boom"), {"Backend": "EngineShutdown"}, "Unavailable",
     "backend.engine_shutdown", "boom"),
    (errors.Cancelled("boom"), {"Backend": "Cancelled"}, "Cancelled", "backend.cancelled", "boom"),
    (errors.ConnectionTimeout("boom"), {"Backend": "ConnectionTimeout"}, "DeadlineExceeded",
     "backend.connection_timeout", "boom"),
    (errors.StreamIncomplete("boom"), {"Backend": "StreamIncomplete"}, "Unavailable",
     "backend.stream_incomplete", "boom"),
    (errors.WorkerUnavailable("boom"), "WorkerUnavailable", "Unavailable",
     "backend.worker_unavailable", "boom"),
]  # fmt: skip


@pytest.mark.parametrize(("exc", "error_type", "error_class", "reason", "message"), DYNAMO_TABLE)
def test_error_objects_are_dynamos(
    exc: BaseException, error_type: Any, error_class: str, reason: str, message: str
) -> None:
    obj = error_object(exc)
    assert list(obj) == ["error_type", "class", "reason", "message", "diagnostic"]
    assert obj == {
        "error_type": error_type,
        "class": error_class,
        "reason": reason,
        "message": message,
        "diagnostic": message,
    }


def test_invalid_argument_carries_the_public_message() -> None:
    obj = error_object(errors.InvalidArgument("prompt is required"))
    assert list(obj) == ["error_type", "class", "reason", "message", "diagnostic", "public"]
    assert obj["public"] == {"type": "message", "message": "prompt is required"}


def test_trio_timeouts_are_dynamos_connection_timeout() -> None:
    assert error_object(trio.TooSlowError())["class"] == "DeadlineExceeded"


ERROR_CLASSES = [
    errors.Unknown,
    errors.InvalidArgument,
    errors.CannotConnect,
    errors.Disconnected,
    errors.ConnectionTimeout,
    errors.Cancelled,
    errors.EngineShutdown,
    errors.StreamIncomplete,
    errors.WorkerUnavailable,
]


@given(st.sampled_from(ERROR_CLASSES), st.text())
def test_every_type_round_trips(cls: type[trioplane.RemoteError], text: str) -> None:
    received = remote_error(error_object(cls(text)))
    assert type(received) is cls
    assert received.message == text
    assert received.diagnostic == text
    assert type_name(received.error_type) == cls.dynamo_type


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers())))
def test_any_error_value_gives_a_remote_error(value: Any) -> None:
    assert isinstance(remote_error(value), trioplane.RemoteError)
    assert isinstance(remote_error({"error_type": value, "message": "m"}), trioplane.RemoteError)


def test_an_unknown_type_keeps_every_field() -> None:
    obj = {"error_type": "Brand new", "class": "Future", "reason": "r", "message": "m", "x": 1}
    received = remote_error(obj)
    assert type(received) is trioplane.RemoteError
    assert received.error == obj
    assert (received.error_class, received.reason, str(received)) == ("Future", "r", "m")


def test_prologue_errors_are_always_unclassified() -> None:
    assert prologue_error(errors.InvalidArgument("pia")) == {
        "error": "Generate Error: InvalidArgument: pia",
        "typed_error": {
            "error_type": "Unknown",
            "class": "Internal",
            "reason": "runtime.unclassified",
            "message": "InvalidArgument: pia",
            "diagnostic": "InvalidArgument: pia",
        },
    }


@given(
    st.none() | st.integers() | st.text(),
    st.none() | st.text(),
    st.none() | st.lists(st.text()),
    st.none() | st.text(),
)
def test_annotated_round_trips(data: Any, event: Any, comment: Any, item_id: Any) -> None:
    item = Annotated(data=data, event=event, comment=comment, id=item_id)
    wire = item.to_wire()
    assert list(wire) == [k for k in ("data", "id", "event", "comment") if wire.get(k) is not None]
    assert Annotated.from_wire(wire) == item


# -- through a worker -------------------------------------------------------------------

seen: dict[str, Any] = {}


async def raising(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    for i in range(request.get("after", 0)):
        yield {"i": i}
    name = request["exc"]
    cls = getattr(errors, name, None) or getattr(builtins, name)
    raise cls(request["msg"])


async def annotating(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    yield Annotated(event="progress", comment=["warming up"])
    yield {"token": 1}
    yield Annotated(data={"token": 2}, id="2")


async def unencodable(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    yield {"i": 0}
    yield object()
    yield {"i": "never sent"}


async def not_a_generator(request: Any, context: RequestContext) -> Any:
    return {"never": "streamed"}


async def echo_context(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    yield {"id": context.id(), "metadata": context.metadata, "headers": context.headers}


async def slow(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    """Items every 10 ms until stopped; records how it ended."""
    try:
        i = 0
        while not context.is_stopped():
            yield {"i": i}
            i += 1
            await trio.sleep(0.01)
        seen["inner"] = "stopped"
    except trio.Cancelled:
        seen["inner"] = "killed" if context.is_killed() else "cancelled"
        raise


async def forwarding(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    """Calls ``request["to"]`` as part of its own call and passes its items on."""
    async with (
        client(seen["kv"], request["to"]) as downstream,
        downstream.generate(request["request"], context=context) as items,
    ):
        async for item in items:
            yield item


ENDPOINTS: dict[str, Any] = {  # not_a_generator is no Handler, on purpose
    "ns.t.raise": raising,
    "ns.t.annotate": annotating,
    "ns.t.notgen": not_a_generator,
    "ns.t.unencodable": unencodable,
    "ns.t.context": echo_context,
    "ns.t.slow": slow,
    "ns.t.forward": forwarding,
}


def client(kv: Path, endpoint: str, **options: Any) -> Any:
    return trioplane.open_endpoint_client(
        endpoint, FileDiscovery(kv, poll_interval=0.05), **options
    )


@pytest.fixture
async def kv(tmp_path: Path) -> AsyncIterator[Path]:
    seen.clear()
    seen["kv"] = tmp_path
    async with open_worker(ENDPOINTS, discovery_root=tmp_path):
        yield tmp_path


@pytest.mark.parametrize("name", [cls.__name__ for cls in (ValueError, KeyError, TimeoutError)])
async def test_builtin_exceptions_arrive_typed(kv: Path, name: str) -> None:
    async with client(kv, "ns.t.raise") as c:
        items = []
        async with c.generate({"exc": name, "msg": "boom", "after": 2}) as stream:
            with pytest.raises(trioplane.RemoteError) as caught:  # noqa: PT012
                async for item in stream:
                    items.append(item)
    assert items == [{"i": 0}, {"i": 1}]
    (_, error_type, error_class, reason, message) = next(
        row for row in DYNAMO_TABLE if type(row[0]).__name__ == name
    )
    assert type(caught.value) is trioplane.errors.REMOTE_ERRORS[type_name(error_type) or ""]
    assert (caught.value.error_class, caught.value.reason) == (error_class, reason)
    assert str(caught.value) == message


async def test_dynamo_types_raised_in_a_handler_arrive_as_raised(kv: Path) -> None:
    async with client(kv, "ns.t.raise") as c:
        for cls in ERROR_CLASSES:
            with pytest.raises(cls, match=r"^typed$") as caught:
                await c.call({"exc": cls.dynamo_type, "msg": "typed"})
            assert caught.value.error == error_object(cls("typed"))
    assert isinstance(caught.value, trioplane.RemoteError)


async def test_annotations_reach_an_annotated_call_only(kv: Path) -> None:
    async with client(kv, "ns.t.annotate") as c:
        assert await c.call({}) == [{"token": 1}, {"token": 2}]
        assert await c.call({}, annotated=True) == [
            Annotated(event="progress", comment=["warming up"]),
            Annotated(data={"token": 1}),
            Annotated(data={"token": 2}, id="2"),
        ]


async def test_a_handler_that_cannot_stream_fails_the_prologue(kv: Path) -> None:
    async with client(kv, "ns.t.notgen") as c:
        with pytest.raises(trioplane.RemoteUnknown) as caught:
            await c.call({})
    assert caught.value.reason == "runtime.unclassified"
    assert str(caught.value) == "AttributeError: 'coroutine' object has no attribute '__anext__'"


async def test_context_forwards_id_metadata_and_trace_headers(kv: Path) -> None:
    upstream = RequestContext(
        "upstream-7",
        {"tenant": "acme", "k": "upstream"},
        {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "x-request-id": "xr-1"},
    )
    async with client(kv, "ns.t.context") as c:
        (seen_by_worker,) = await c.call({}, context=upstream, metadata={"k": "mine"})
    assert seen_by_worker["id"] == "upstream-7"
    assert seen_by_worker["metadata"] == {"tenant": "acme", "k": "mine"}
    assert seen_by_worker["headers"]["traceparent"] == upstream.headers["traceparent"]
    assert seen_by_worker["headers"]["x-request-id"] == "xr-1"
    assert seen_by_worker["headers"]["request-id"] == "upstream-7"


@pytest.mark.parametrize(("cancel_mode", "inner"), [("stop", "stopped"), ("kill", "killed")])
async def test_stopping_a_call_stops_the_calls_it_made(
    kv: Path, cancel_mode: str, inner: str
) -> None:
    """Two hops: the outer caller's stop or kill reaches the innermost handler."""
    async with client(kv, "ns.t.forward", cancel_mode=cancel_mode) as c:
        async with c.generate({"to": "ns.t.slow", "request": {}}) as items:
            assert await items.__anext__() == {"i": 0}
        await wait_until(lambda: "inner" in seen)
    assert seen["inner"] == inner


async def test_a_stopped_upstream_call_stops_a_call_started_after(kv: Path) -> None:
    upstream = RequestContext("up", {}, {})
    upstream._cancel("stop")
    async with client(kv, "ns.t.slow") as c:
        await c.call({}, context=upstream)  # ends: told to stop at once
    assert seen["inner"] == "stopped"


async def test_an_item_the_codec_cannot_encode_ends_the_stream_as_dynamo_does(kv: Path) -> None:
    async with client(kv, "ns.t.unencodable", codec="json") as c:
        items = []
        async with c.generate({}) as stream:
            with pytest.raises(trioplane.RemoteUnknown) as caught:  # noqa: PT012
                async for item in stream:
                    items.append(item)
    assert items == [{"i": 0}]
    assert str(caught.value).startswith("critical error: failed serializing Python response as")
    assert caught.value.reason == "runtime.unclassified"


async def test_a_handler_error_is_logged_once_with_its_traceback_and_request_id(
    kv: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="trioplane"):
        async with client(kv, "ns.t.raise") as c:
            with pytest.raises(trioplane.InvalidArgument):
                await c.call({"exc": "ValueError", "msg": "boom"}, request_id="req-42")
    (record,) = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert record.name == "trioplane.worker"
    assert record.levelno == logging.ERROR
    assert "req-42" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)


async def test_successful_calls_log_nothing_at_info(
    kv: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="trioplane"):
        async with client(kv, "ns.t.context") as c:
            for _ in range(20):
                await c.call({})
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
