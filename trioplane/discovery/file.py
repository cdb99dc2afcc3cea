"""Dynamo's file discovery backend (``DYN_DISCOVERY_BACKEND=file``), both sides.

One JSON file per instance under ``<root>/v1/instances/``, named by the
url-encoded key ``ns/comp/ep/{instance_id:x}``. The client polls the folder; a
worker writes its records through ``.tmp_`` files renamed into place, touches
their mtime every few seconds (a record untouched for 10 s is stale), and removes
them when it stops. Disk access runs in worker threads, never in the event loop:
the root may be on a slow or network file system.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from pathlib import Path
from typing import BinaryIO

import trio

from trioplane._errors import BadArgument, ProtocolError
from trioplane._logging import RateLimitedLog
from trioplane._types import Instance
from trioplane.discovery._base import RegistrationStatistics, random_instance_id, registered

__all__ = ["FileDiscovery", "default_file_root", "instance_key"]

logger = logging.getLogger(__name__)

#: Dynamo deletes instance files whose owner has not touched them for this long.
STALE_AFTER = 10.0
#: A record larger than this is skipped (Dynamo's are a few hundred bytes).
MAX_RECORD_SIZE = 64 * 1024
#: How often a worker refreshes its records' mtime.
REFRESH_INTERVAL = 3.0
#: How long withdrawing waits for the records' removal (a hung file system).
WITHDRAW_TIMEOUT = 5.0


def default_file_root() -> Path:
    """``$DYN_FILE_KV``, else Dynamo's default ``$TMPDIR/dynamo_store_kv``."""
    root = os.environ.get("DYN_FILE_KV")
    return Path(root) if root else Path(tempfile.gettempdir()) / "dynamo_store_kv"


class FileDiscovery:
    """Dynamo's file discovery backend, read by polling every ``poll_interval`` s.

    Files whose name starts with ``.tmp_`` (atomic writes in progress) are
    skipped, and so are records not touched for ``stale_after`` seconds (Dynamo's
    owners refresh the mtime every few seconds). A file is re-read only when its
    size or mtime changed; unreadable or malformed records are skipped (logged).
    Disk access runs in a worker thread, so the event loop never blocks on it.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        poll_interval: float = 0.5,
        stale_after: float = STALE_AFTER,
    ) -> None:
        if poll_interval <= 0:
            raise BadArgument("poll_interval must be positive")
        self.root = Path(root) if root is not None else default_file_root()
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self._cache: dict[str, tuple[int, int, Instance | None]] = {}
        self._scan_lock = threading.Lock()
        self._log = RateLimitedLog(logger)  # a folder of 10,000 bad records: a few lines

    @property
    def folder(self) -> Path:
        return self.root / "v1" / "instances"

    async def instances(self) -> list[Instance]:
        # Abandoned if cancelled: a scan stuck on a hung file system must not hold up
        # the client's close (the next scan waits for the lock instead).
        return await trio.to_thread.run_sync(self._scan, abandon_on_cancel=True)

    async def changes(self) -> AsyncIterator[list[Instance]]:
        last: list[Instance] | None = None
        while True:
            current = await self.instances()
            if current != last:
                last = current
                yield list(current)  # a copy: the caller may change it
            await trio.sleep(self.poll_interval)

    def open_registration(self) -> AbstractAsyncContextManager[_FileRegistration]:
        """Register a worker's instances under this root (see the module doc)."""
        registration = _FileRegistration(self.folder)
        return registered(registration, registration.refresh_loop)

    def _scan(self) -> list[Instance]:
        with self._scan_lock:  # scans run in worker threads and share the cache
            return self._scan_locked()

    def _scan_locked(self) -> list[Instance]:
        now = time.time()
        found: dict[str, Instance] = {}
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if entry.name.startswith(".tmp_"):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime > self.stale_after:
                continue  # a FIFO or device would block the read; a stale record is dead
            cached = self._cache.get(entry.name)
            if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
                instance = cached[2]
            else:
                instance = self._read(entry.path)
                self._cache[entry.name] = (st.st_mtime_ns, st.st_size, instance)
            if instance is not None:
                found[entry.name] = instance
        for name in set(self._cache) - {e.name for e in entries}:
            del self._cache[name]
        return [found[name] for name in sorted(found)]

    def _read(self, path: str) -> Instance | None:
        """One record; never blocks on a file that is not a regular one (opened
        non-blocking, checked again once open), never reads past ``MAX_RECORD_SIZE``."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
            with open(fd, "rb") as file:
                return Instance.from_json(_read_record(file))
        except (OSError, ProtocolError) as exc:
            self._log.warning("record", "skipping instance record %s: %s", path, exc)
            return None


def _read_record(file: BinaryIO) -> bytes:
    """The bytes of an open record file, if it is a regular file of sane size."""
    st = os.fstat(file.fileno())
    if not stat.S_ISREG(st.st_mode):
        raise ProtocolError("not a regular file")
    if st.st_size > MAX_RECORD_SIZE:
        raise ProtocolError(f"{st.st_size} bytes, over {MAX_RECORD_SIZE}")
    return file.read(MAX_RECORD_SIZE + 1)


def instance_key(instance: Instance) -> str:
    """The file backend's file name for ``instance``: ``ns/comp/ep/{id:x}``, encoded.

    As Dynamo does, every byte that is not an ASCII letter or digit is
    percent-encoded (``-`` and ``_`` too: ``my-ns`` is ``my%2Dns``).
    """
    raw = f"{instance.namespace}/{instance.component}/{instance.endpoint}/{instance.instance_id:x}"
    return "".join(
        chr(byte) if chr(byte).isascii() and chr(byte).isalnum() else f"%{byte:02X}"
        for byte in raw.encode()
    )


class _FileRegistration:
    """A worker's records as files; written, touched and removed in threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: list[Path] = []

    async def new_instance_id(self) -> int:
        await trio.lowlevel.checkpoint()
        return random_instance_id()

    async def publish(self, instances: Sequence[Instance]) -> None:
        paths = [self.folder / instance_key(i) for i in instances]
        await trio.to_thread.run_sync(self._write, instances, paths)
        self.paths += paths

    def _write(self, instances: Sequence[Instance], paths: Sequence[Path]) -> None:
        for instance, path in zip(instances, paths, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp_{path.name}.{os.getpid()}")
            tmp.write_bytes(instance.to_json())
            os.replace(tmp, path)  # atomic, as Dynamo's file backend

    async def refresh_loop(self) -> None:
        while True:
            await trio.sleep(REFRESH_INTERVAL)
            await trio.to_thread.run_sync(self._touch, abandon_on_cancel=True)

    def _touch(self) -> None:
        now = time.time()
        for path in list(self.paths):
            with suppress(OSError):
                os.utime(path, (now, now))

    async def withdraw(self) -> None:
        paths, self.paths = self.paths, []
        if not paths:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(WITHDRAW_TIMEOUT):
            await trio.to_thread.run_sync(_remove, paths, abandon_on_cancel=True)

    def statistics(self) -> RegistrationStatistics:
        return RegistrationStatistics(registered=bool(self.paths), records=len(self.paths))


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        with suppress(OSError):
            path.unlink()
