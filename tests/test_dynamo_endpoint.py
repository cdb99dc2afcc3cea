"""The endpoint client against real Dynamo 1.6.1 workers (file discovery, TCP plane).

The worker's handler is ``tests/dynamo/worker_script.py``; the request's ``op``
picks what it does.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import trioplane
from trioplane import FileDiscovery

from .dynamo import DynamoWorker, run_dynamo_worker

pytestmark = pytest.mark.dynamo
ENDPOINT = "interop.stream.generate"


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DynamoWorker]]:
    """Two real workers of ENDPOINT sharing one discovery directory."""
    kv = tmp_path_factory.mktemp("kv")
    with run_dynamo_worker(kv, [ENDPOINT]) as first, run_dynamo_worker(kv, [ENDPOINT]) as second:
        yield [first, second]


@pytest.fixture
def kv(workers: list[DynamoWorker]) -> Path:
    return workers[0].discovery_dir


def discovery(root: Path) -> FileDiscovery:
    return FileDiscovery(root, poll_interval=0.1)


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize("n", [0, 1, 1000])
async def test_streams_of_n_items(kv: Path, codec: str, n: int) -> None:
    async with trioplane.open_endpoint_client(
        ENDPOINT,
        discovery(kv),
        codec=codec,  # type: ignore[arg-type]
    ) as client:
        await client.wait_for_instances()
        with trio.fail_after(30):
            items = await client.call({"op": "count", "n": n})
    assert items == [{"i": i} for i in range(n)]


async def test_echo_with_auto_codec_and_nested_values(kv: Path) -> None:
    request = {"text": "héllo", "n": [1, 2.5, None, True], "deep": {"a": {"b": []}}}
    async with trioplane.open_endpoint_client(ENDPOINT, discovery(kv)) as client:
        await client.wait_for_instances()
        assert await client.call(request) == [{"echo": request}]


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_error_after_the_first_item(kv: Path, codec: str) -> None:
    async with trioplane.open_endpoint_client(
        ENDPOINT,
        discovery(kv),
        codec=codec,  # type: ignore[arg-type]
    ) as client:
        await client.wait_for_instances()
        got = []
        with pytest.raises(trioplane.RemoteError) as info:  # noqa: PT012 - items, then error
            async with client.generate({"op": "error_after"}) as responses:
                async for item in responses:
                    got.append(item)
    assert got == [{"i": 0}]
    assert info.value.message == "ValueError: boom"
    assert info.value.error_type == {"Backend": "InvalidArgument"}


async def test_error_before_the_first_item(kv: Path) -> None:
    async with trioplane.open_endpoint_client(ENDPOINT, discovery(kv)) as client:
        await client.wait_for_instances()
        with pytest.raises(trioplane.RemoteError, match="ValueError: boom"):
            await client.call({"op": "error_before"})
        with pytest.raises(trioplane.RemoteError) as info:
            await client.call({"op": "no-such-op"})
    assert info.value.error_type == {"Backend": "Unknown"}


async def test_metadata_and_request_id_reach_the_handler(kv: Path) -> None:
    async with trioplane.open_endpoint_client(ENDPOINT, discovery(kv)) as client:
        await client.wait_for_instances()
        async with client.generate({"op": "context"}, metadata={"tenant": "t1"}) as responses:
            items = [item async for item in responses]
    assert items == [{"id": responses.request_id, "metadata": {"tenant": "t1"}}]


async def wait_for_file(path: Path) -> str:
    """The text the worker's handler wrote to ``path`` (another process: poll)."""
    marker = trio.Path(path)
    with trio.fail_after(10):
        while not (await marker.exists() and await marker.read_text()):  # noqa: ASYNC110
            await trio.sleep(0.02)
    return await marker.read_text()


@pytest.mark.parametrize(("mode", "seen"), [("stop", "stopped"), ("kill", "killed")])
async def test_leaving_mid_stream_stops_the_handler(
    kv: Path, tmp_path: Path, mode: str, seen: str
) -> None:
    marker = tmp_path / "marker"
    async with trioplane.open_endpoint_client(
        ENDPOINT,
        discovery(kv),
        cancel_mode=mode,  # type: ignore[arg-type]
    ) as client:
        await client.wait_for_instances()
        got = []
        async with client.generate({"op": "slow", "marker": str(marker)}) as responses:
            async for item in responses:
                got.append(item)
                if len(got) == 3:
                    break
        assert got == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert await wait_for_file(marker) == seen
        # The client and the worker both go on serving.
        assert await client.call({"op": "count", "n": 2}) == [{"i": 0}, {"i": 1}]


async def test_cancel_scope_mid_stream_stops_the_handler(kv: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    async with trioplane.open_endpoint_client(ENDPOINT, discovery(kv)) as client:
        await client.wait_for_instances()
        with trio.move_on_after(0.3) as scope:
            await client.call({"op": "slow", "marker": str(marker)})
        assert scope.cancelled_caught
        assert await wait_for_file(marker) == "stopped"


async def test_round_robin_over_two_workers_and_direct(workers: list[DynamoWorker]) -> None:
    ids = {w.instances[ENDPOINT].instance_id for w in workers}
    async with trioplane.open_endpoint_client(
        ENDPOINT, discovery(workers[0].discovery_dir)
    ) as client:
        with trio.fail_after(10):
            while {i.instance_id for i in client.instances()} != ids:
                await client.wait_for_instances()
                await trio.sleep(0.05)
        served = []
        for _ in range(4):
            async with client.generate({"op": "count", "n": 1}) as responses:
                assert [item async for item in responses] == [{"i": 0}]
                assert responses.instance is not None
                served.append(responses.instance.instance_id)
        assert set(served) == ids
        assert served[0] != served[1]
        assert served[:2] == served[2:]
        target = workers[1].instances[ENDPOINT].instance_id
        for _ in range(3):
            async with client.generate({"op": "count", "n": 1}, instance_id=target) as responses:
                await responses.__anext__()
                assert responses.instance is not None
                assert responses.instance.instance_id == target
        with pytest.raises(trioplane.InstanceNotFound):
            await client.call({}, instance_id=12345)


async def test_request_bigger_than_one_mib(kv: Path) -> None:
    blob = "x" * (3 * 1024 * 1024 // 2)
    async with trioplane.open_endpoint_client(ENDPOINT, discovery(kv)) as client:
        await client.wait_for_instances()
        assert await client.call({"op": "size", "blob": blob}) == [{"size": len(blob)}]


async def test_worker_killed_mid_stream(tmp_path: Path) -> None:
    with run_dynamo_worker(tmp_path / "kv", [ENDPOINT]) as worker:
        async with trioplane.open_endpoint_client(ENDPOINT, discovery(tmp_path / "kv")) as client:
            await client.wait_for_instances()
            got = []
            with trio.fail_after(10), pytest.raises(trioplane.StreamIncomplete):  # noqa: PT012
                async with client.generate(
                    {"op": "slow", "marker": str(tmp_path / "m")}
                ) as responses:
                    async for item in responses:
                        got.append(item)
                        if len(got) == 2:
                            worker.process.send_signal(signal.SIGKILL)
            with contextlib.suppress(Exception):
                worker.process.wait(5)
    assert len(got) >= 2
