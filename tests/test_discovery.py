"""Tests of :mod:`trioplane.discovery`: static and file discovery (spec section 6)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path

import pytest
import trio

from trioplane import Discovery, FileDiscovery, Instance, StaticDiscovery
from trioplane.discovery import STALE_AFTER, as_discovery, default_file_root, instance_key

#: Every wait for something the code under test should do is bounded by this (seconds).
TIMEOUT = 5.0

#: How often the file discovery of these tests polls (seconds).
POLL = 0.01

#: A record written by ai-dynamo-runtime 1.6.1, and the file name it had.
REAL_RECORD = (
    b'{"type":"Endpoint","component":"comp","endpoint":"ep","namespace":"ns",'
    b'"instance_id":16852038663409808829,'
    b'"transport":{"tcp":"127.0.0.1:41225/e9de77e0e1b0b5bd/ns/comp/ep"},'
    b'"device_type":"cuda","request_plane_codec":"msgpack"}'
)
REAL_KEY = "ns%2Fcomp%2Fep%2Fe9de77e0e1b0b5bd"


def make_instance(instance_id: int, endpoint: str = "ep", *, port: int = 41225) -> Instance:
    return Instance(
        namespace="ns",
        component="comp",
        endpoint=endpoint,
        instance_id=instance_id,
        transport_kind="tcp",
        address=f"127.0.0.1:{port}/{instance_id:x}/ns/comp/{endpoint}",
        device_type="cuda",
        request_plane_codec="msgpack",
    )


def instances_folder(root: Path) -> Path:
    return root / "v1" / "instances"


def publish(root: Path, instance: Instance, name: str | None = None) -> Path:
    """Write ``instance``'s record as Dynamo does: a ``.tmp_`` file renamed onto its key."""
    folder = instances_folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or instance_key(instance))
    temp = folder / ".tmp_00c0ffee00c0ffee"
    temp.write_bytes(instance.to_json())
    os.replace(temp, path)
    return path


def age(path: Path, seconds: float) -> None:
    """Set ``path``'s mtime to ``seconds`` ago, as if its owner stopped touching it."""
    then = time.time() - seconds
    os.utime(path, (then, then))


class CountingFileDiscovery(FileDiscovery):
    """A :class:`FileDiscovery` that counts its polls, so tests wait for polls, not for time."""

    def __init__(self, root: Path, *, stale_after: float = STALE_AFTER) -> None:
        super().__init__(root, poll_interval=POLL, stale_after=stale_after)
        self.scans = 0
        self._scanned = trio.lowlevel.ParkingLot()

    async def instances(self) -> list[Instance]:
        found = await super().instances()
        self.scans += 1
        self._scanned.unpark_all()
        return found

    async def wait_for_scans(self, count: int) -> None:
        """Return once ``count`` more scans have completed."""
        target = self.scans + count
        with trio.fail_after(TIMEOUT):
            while self.scans < target:
                await self._scanned.park()


@pytest.fixture
def discovery(tmp_path: Path) -> CountingFileDiscovery:
    return CountingFileDiscovery(tmp_path)


Snapshots = trio.MemoryReceiveChannel[list[Instance]]


@contextlib.asynccontextmanager
async def watching(discovery: Discovery) -> AsyncIterator[Snapshots]:
    """Iterate ``discovery.changes()`` in a task; each snapshot it yields arrives on the channel."""
    send, receive = trio.open_memory_channel[list[Instance]](math.inf)

    async def pump() -> None:
        changes = discovery.changes()
        assert isinstance(changes, AsyncGenerator)
        async with contextlib.aclosing(changes), send:
            async for snapshot in changes:
                send.send_nowait(snapshot)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump)
        yield receive
        nursery.cancel_scope.cancel()


async def next_snapshot(snapshots: Snapshots) -> list[Instance]:
    with trio.fail_after(TIMEOUT):
        return await snapshots.receive()


def pending(snapshots: Snapshots) -> list[list[Instance]]:
    """The snapshots delivered but not received yet."""
    found = []
    while True:
        try:
            found.append(snapshots.receive_nowait())
        except trio.WouldBlock:
            return found


# --- StaticDiscovery --------------------------------------------------------------------------


async def test_static_instances_returns_a_copy_of_the_list() -> None:
    a, b = make_instance(1), make_instance(2)
    static = StaticDiscovery(iter([a, b]))
    found = await static.instances()
    assert found == [a, b]
    found.clear()
    assert await static.instances() == [a, b]
    assert await StaticDiscovery().instances() == []


async def test_static_changes_yields_the_current_list_then_each_new_one() -> None:
    a, b = make_instance(1), make_instance(2)
    static = StaticDiscovery([a])
    async with watching(static) as snapshots:
        assert await next_snapshot(snapshots) == [a]
        static.set([a, b])
        assert await next_snapshot(snapshots) == [a, b]
        static.set([])
        assert await next_snapshot(snapshots) == []
        assert await static.instances() == []


async def test_static_concurrent_watchers_all_see_a_change() -> None:
    a, b = make_instance(1), make_instance(2)
    static = StaticDiscovery([a])
    async with watching(static) as first, watching(static) as second:
        assert await next_snapshot(first) == [a]
        assert await next_snapshot(second) == [a]
        static.set([b])
        assert await next_snapshot(first) == [b]
        assert await next_snapshot(second) == [b]


async def test_static_set_while_the_watcher_is_busy_is_not_missed() -> None:
    a, b = make_instance(1), make_instance(2)
    static = StaticDiscovery([a])
    changes = static.changes()
    assert isinstance(changes, AsyncGenerator)
    async with contextlib.aclosing(changes):
        assert await anext(changes) == [a]  # the generator now waits at its yield
        static.set([b])  # ...while its consumer is busy elsewhere
        with trio.fail_after(TIMEOUT):
            assert await anext(changes) == [b]


async def test_static_watcher_started_after_set_starts_from_the_new_list() -> None:
    a, b = make_instance(1), make_instance(2)
    static = StaticDiscovery([a])
    static.set([b])
    async with watching(static) as snapshots:
        assert await next_snapshot(snapshots) == [b]
        assert pending(snapshots) == []


# --- FileDiscovery: instances() ---------------------------------------------------------------


@pytest.mark.parametrize("existing", ["nothing", "root only", "empty folder"])
async def test_no_records_means_no_instances(tmp_path: Path, existing: str) -> None:
    root = tmp_path / "kv"
    if existing == "root only":
        root.mkdir()
    elif existing == "empty folder":
        instances_folder(root).mkdir(parents=True)
    assert await FileDiscovery(root, poll_interval=POLL).instances() == []


async def test_real_dynamo_record_is_found(tmp_path: Path) -> None:
    folder = instances_folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / REAL_KEY).write_bytes(REAL_RECORD)
    discovery = FileDiscovery(tmp_path, poll_interval=POLL)
    assert discovery.folder == folder
    assert await discovery.instances() == [Instance.from_json(REAL_RECORD)]


async def test_temporary_file_is_skipped_until_renamed_onto_its_key(
    tmp_path: Path, discovery: CountingFileDiscovery
) -> None:
    instance = make_instance(1)
    folder = instances_folder(tmp_path)
    folder.mkdir(parents=True)
    temp = folder / ".tmp_5d1e0a3f9b2c4e71"
    temp.write_bytes(instance.to_json())
    assert await discovery.instances() == []
    temp.rename(folder / instance_key(instance))
    assert await discovery.instances() == [instance]


@pytest.mark.parametrize(
    ("seconds_old", "found"),
    [(0, True), (STALE_AFTER - 3, True), (STALE_AFTER + 3, False), (3600, False)],
)
async def test_record_older_than_stale_after_is_skipped(
    tmp_path: Path, discovery: CountingFileDiscovery, seconds_old: float, found: bool
) -> None:
    instance = make_instance(1)
    age(publish(tmp_path, instance), seconds_old)
    assert await discovery.instances() == ([instance] if found else [])


async def test_stale_record_reappears_when_its_owner_touches_it(
    tmp_path: Path, discovery: CountingFileDiscovery
) -> None:
    instance = make_instance(1)
    path = publish(tmp_path, instance)
    assert await discovery.instances() == [instance]
    age(path, STALE_AFTER + 1)
    assert await discovery.instances() == []
    os.utime(path)
    assert await discovery.instances() == [instance]


async def test_stale_after_is_configurable(tmp_path: Path) -> None:
    instance = make_instance(1)
    age(publish(tmp_path, instance), 5)
    assert await CountingFileDiscovery(tmp_path, stale_after=60).instances() == [instance]
    assert await CountingFileDiscovery(tmp_path, stale_after=2).instances() == []


MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "not json": b"not json",
    "truncated": REAL_RECORD[:40],
    "bad utf-8": b'{"namespace":"\xff"}',
    "array": b"[]",
    "no transport": b'{"type":"Endpoint","namespace":"ns","component":"c","endpoint":"e",'
    b'"instance_id":1}',
}


@pytest.mark.parametrize("contents", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_record_is_skipped_once_and_logged_once(
    tmp_path: Path,
    discovery: CountingFileDiscovery,
    caplog: pytest.LogCaptureFixture,
    contents: bytes,
) -> None:
    good = make_instance(1)
    publish(tmp_path, good)
    (instances_folder(tmp_path) / instance_key(make_instance(2))).write_bytes(contents)
    with caplog.at_level(logging.WARNING, logger="trioplane.discovery"):
        assert await discovery.instances() == [good]
        assert await discovery.instances() == [good]
    skipped = [r for r in caplog.records if "skipping instance record" in r.getMessage()]
    assert len(skipped) == 1  # unchanged files are not re-read, so not re-logged


async def test_directory_in_the_folder_is_skipped(
    tmp_path: Path, discovery: CountingFileDiscovery
) -> None:
    good = make_instance(1)
    publish(tmp_path, good)
    (instances_folder(tmp_path) / instance_key(make_instance(2))).mkdir()
    assert await discovery.instances() == [good]


@pytest.mark.parametrize(
    ("new", "same_mtime"),
    [
        pytest.param(make_instance(1, port=41226), False, id="new mtime, same size"),
        pytest.param(make_instance(1, port=1), True, id="same mtime, new size"),
    ],
)
async def test_changed_record_is_reread(
    tmp_path: Path, discovery: CountingFileDiscovery, new: Instance, same_mtime: bool
) -> None:
    old = make_instance(1)
    path = publish(tmp_path, old)
    written = time.time_ns() - 2_000_000_000
    os.utime(path, ns=(written, written))
    assert await discovery.instances() == [old]
    publish(tmp_path, new)
    rewritten = written if same_mtime else written + 1_000_000_000
    os.utime(path, ns=(rewritten, rewritten))
    assert await discovery.instances() == [new]


async def test_removed_record_disappears(tmp_path: Path, discovery: CountingFileDiscovery) -> None:
    a, b = make_instance(1), make_instance(2)
    path_a = publish(tmp_path, a)
    publish(tmp_path, b)
    assert await discovery.instances() == [a, b]
    path_a.unlink()
    assert await discovery.instances() == [b]


async def test_results_are_sorted_by_key_and_stable(
    tmp_path: Path, discovery: CountingFileDiscovery
) -> None:
    for instance_id in [0xABC, 0x2, 0x10, 0x1]:
        publish(tmp_path, make_instance(instance_id))
    publish(tmp_path, make_instance(0x5, endpoint="another"))
    found = await discovery.instances()
    # By file name: "ns%2Fcomp%2Fanother%2F5" < "...%2Fep%2F1" < "...%2F10" < "...%2F2" < ...
    assert [(i.endpoint, i.instance_id) for i in found] == [
        ("another", 0x5),
        ("ep", 0x1),
        ("ep", 0x10),
        ("ep", 0x2),
        ("ep", 0xABC),
    ]
    assert await discovery.instances() == found
    assert await FileDiscovery(tmp_path, poll_interval=POLL).instances() == found


# --- FileDiscovery: changes() -----------------------------------------------------------------


async def test_changes_yields_the_initial_list_then_each_addition_and_removal(
    tmp_path: Path, discovery: CountingFileDiscovery
) -> None:
    a, b = make_instance(1), make_instance(2)
    path_a = publish(tmp_path, a)
    async with watching(discovery) as snapshots:
        assert await next_snapshot(snapshots) == [a]
        path_b = publish(tmp_path, b)
        assert await next_snapshot(snapshots) == [a, b]
        path_a.unlink()
        assert await next_snapshot(snapshots) == [b]
        path_b.unlink()
        assert await next_snapshot(snapshots) == []


async def test_changes_yields_an_empty_initial_list_when_there_is_no_folder(
    tmp_path: Path,
) -> None:
    discovery = CountingFileDiscovery(tmp_path / "absent")
    async with watching(discovery) as snapshots:
        assert await next_snapshot(snapshots) == []
        publish(tmp_path / "absent", make_instance(1))
        assert await next_snapshot(snapshots) == [make_instance(1)]


async def test_changes_is_quiet_while_the_instances_stay_the_same(
    tmp_path: Path, discovery: CountingFileDiscovery
) -> None:
    instance = make_instance(1)
    path = publish(tmp_path, instance)
    async with watching(discovery) as snapshots:
        assert await next_snapshot(snapshots) == [instance]
        await discovery.wait_for_scans(3)
        assert pending(snapshots) == []

        # Neither a keep-alive touch, nor a write in progress, nor a bad record is a change.
        os.utime(path)
        (instances_folder(tmp_path) / ".tmp_0123456789abcdef").write_bytes(b"{")
        (instances_folder(tmp_path) / instance_key(make_instance(2))).write_bytes(b"junk")
        await discovery.wait_for_scans(3)
        assert pending(snapshots) == []


async def test_changes_ignores_a_consumer_editing_its_snapshot(
    tmp_path: Path, discovery: CountingFileDiscovery
) -> None:
    publish(tmp_path, make_instance(1))
    publish(tmp_path, make_instance(2))
    async with watching(discovery) as snapshots:
        snapshot = await next_snapshot(snapshots)
        snapshot.sort(key=lambda i: i.instance_id, reverse=True)  # the consumer's own order
        await discovery.wait_for_scans(3)
        assert pending(snapshots) == []


class RendezvousDict(dict[str, tuple[int, int, Instance | None]]):
    """A dict whose deletions wait (up to 1 s) for a second deletion to line up with them."""

    def __init__(self, items: Mapping[str, tuple[int, int, Instance | None]]) -> None:
        super().__init__(items)
        self._barrier = threading.Barrier(2, timeout=1)

    def __delitem__(self, key: str) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):  # none: proceed alone
            self._barrier.wait()
        super().__delitem__(key)


async def test_concurrent_scans_of_one_discovery_do_not_fail(
    tmp_path: Path, discovery: CountingFileDiscovery
) -> None:
    kept = make_instance(1)
    publish(tmp_path, kept)
    gone = publish(tmp_path, make_instance(2))
    assert len(await discovery.instances()) == 2
    gone.unlink()
    # Line up the two scans' cache clean-ups (a thread switch can do the same, rarely).
    discovery._cache = RendezvousDict(discovery._cache)
    results: list[list[Instance] | Exception] = []

    async def scan() -> None:
        try:
            results.append(await discovery.instances())
        except Exception as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scan)
        nursery.start_soon(scan)
    assert results == [[kept], [kept]]


# --- instance_key -----------------------------------------------------------------------------

INSTANCE_KEYS = [
    pytest.param(Instance.from_json(REAL_RECORD), REAL_KEY, id="dynamo 1.6.1"),
    pytest.param(
        # Observed from ai-dynamo-runtime 1.6.1: the id is not zero-padded.
        dataclasses.replace(Instance.from_json(REAL_RECORD), instance_id=0x8F9D2164365525D),
        "ns%2Fcomp%2Fep%2F8f9d2164365525d",
        id="short hex id",
    ),
    pytest.param(
        # Observed from ai-dynamo-runtime 1.6.1 serving "my-ns.my_comp.gen".
        Instance(
            namespace="my-ns",
            component="my_comp",
            endpoint="gen",
            instance_id=0x8F9D2164365525D,
            transport_kind="tcp",
            address="127.0.0.1:41225/8f9d2164365525d/my-ns/my_comp/gen",
        ),
        "my%2Dns%2Fmy%5Fcomp%2Fgen%2F8f9d2164365525d",
        id="dash and underscore",
    ),
]


@pytest.mark.parametrize(("instance", "key"), INSTANCE_KEYS)
def test_instance_key_is_dynamos_file_name(instance: Instance, key: str) -> None:
    assert instance_key(instance) == key


async def test_record_written_under_instance_key_is_found(tmp_path: Path) -> None:
    instance = Instance.from_json(REAL_RECORD)
    folder = instances_folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / instance_key(instance)).write_bytes(instance.to_json())
    assert [p.name for p in folder.iterdir()] == [REAL_KEY]
    assert await FileDiscovery(tmp_path, poll_interval=POLL).instances() == [instance]


# --- default root, as_discovery, construction -------------------------------------------------


def test_default_file_root_is_dyn_file_kv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DYN_FILE_KV", str(tmp_path / "kv"))
    assert default_file_root() == tmp_path / "kv"
    assert FileDiscovery().root == tmp_path / "kv"


def test_default_file_root_without_dyn_file_kv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DYN_FILE_KV", raising=False)
    assert default_file_root() == Path(tempfile.gettempdir()) / "dynamo_store_kv"


def test_as_discovery_of_none_reads_dynamos_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DYN_DISCOVERY_BACKEND", "file")
    monkeypatch.setenv("DYN_FILE_KV", str(tmp_path))
    discovery = as_discovery(None)
    assert isinstance(discovery, FileDiscovery)
    assert discovery.root == tmp_path
    monkeypatch.delenv("DYN_DISCOVERY_BACKEND")  # unset: etcd, Dynamo's default
    assert type(as_discovery(None)).__name__ == "EtcdDiscovery"


@pytest.mark.parametrize("convert", [str, Path], ids=["str", "Path"])
def test_as_discovery_of_a_root_is_file_discovery_there(
    tmp_path: Path, convert: type[str] | type[Path]
) -> None:
    discovery = as_discovery(convert(tmp_path))
    assert isinstance(discovery, FileDiscovery)
    assert discovery.root == tmp_path


@pytest.mark.parametrize(
    "instances",
    [[], [make_instance(1), make_instance(2)], (make_instance(3),)],
    ids=["empty list", "list", "tuple"],
)
async def test_as_discovery_of_instances_is_static_discovery(
    instances: list[Instance] | tuple[Instance, ...],
) -> None:
    discovery = as_discovery(instances)
    assert isinstance(discovery, StaticDiscovery)
    assert await discovery.instances() == list(instances)


class OwnDiscovery:
    """A discovery of the caller's own, matching the protocol by shape only."""

    async def instances(self) -> list[Instance]:
        await trio.lowlevel.checkpoint()
        return []

    async def changes(self) -> AsyncIterator[list[Instance]]:
        yield []


DISCOVERIES = {
    "static": StaticDiscovery(),
    "file": FileDiscovery("/nonexistent", poll_interval=POLL),
    "own": OwnDiscovery(),
}


@pytest.mark.parametrize("discovery", DISCOVERIES.values(), ids=DISCOVERIES.keys())
def test_as_discovery_passes_a_discovery_through(discovery: Discovery) -> None:
    assert isinstance(discovery, Discovery)
    assert as_discovery(discovery) is discovery


@pytest.mark.parametrize("thing", [[make_instance(1)], "/some/root", None, object()])
def test_other_things_are_not_discoveries(thing: object) -> None:
    assert not isinstance(thing, Discovery)


@pytest.mark.parametrize("poll_interval", [0, -0.5])
def test_poll_interval_must_be_positive(poll_interval: float) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        FileDiscovery("/nonexistent", poll_interval=poll_interval)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("etcd://10.0.0.1", ["http://10.0.0.1:2379"]),
        ("etcd://a:1234,b", ["http://a:1234", "http://b:2379"]),
        ("etcds://[::1]", ["https://[::1]:2379"]),
        ("etcd://[::1]:2380", ["http://[::1]:2380"]),
    ],
)
def test_an_etcd_url_without_a_port_means_2379(url: str, expected: list[str]) -> None:
    from trioplane.discovery import discovery_from_url

    assert list(discovery_from_url(url).endpoints) == expected  # type: ignore[union-attr]
