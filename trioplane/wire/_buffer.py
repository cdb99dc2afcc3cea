"""A receive buffer for incremental frame decoders (no I/O)."""

from __future__ import annotations

import struct

from trioplane._errors import ProtocolError


class ReceiveBuffer:
    """Bytes received but not yet parsed; consumed from the front.

    Parsing reads at ``pos`` without copying the rest; consumed bytes are
    dropped lazily so a stream of small frames costs O(total bytes).
    """

    __slots__ = ("_data", "_pos")

    def __init__(self) -> None:
        self._data = bytearray()
        self._pos = 0

    def __len__(self) -> int:
        return len(self._data) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos and self._pos * 2 >= len(self._data):
            del self._data[: self._pos]
            self._pos = 0
        self._data += data

    def unpack(self, fmt: struct.Struct, offset: int = 0) -> tuple[int, ...]:
        """Unpack ``fmt`` at ``offset`` bytes past the front (caller checked length)."""
        return fmt.unpack_from(self._data, self._pos + offset)

    def find(self, sub: bytes, limit: int) -> int:
        """Offset of ``sub`` from the front, searched in the first ``limit`` bytes; -1 if absent."""
        pos = self._pos
        index = self._data.find(sub, pos, pos + limit)
        return index - pos if index >= 0 else -1

    def slice(self, start: int, end: int) -> bytes:
        """Copy of bytes ``start:end`` counted from the front."""
        return bytes(self._data[self._pos + start : self._pos + end])

    def consume(self, n: int) -> None:
        self._pos += n
        if self._pos == len(self._data):
            self._data.clear()
            self._pos = 0


class FrameDecoder:
    """Base of the incremental decoders: ``feed`` bytes, pull frames, check EOF.

    Subclasses implement :meth:`_parse_one`, which returns the next frame and its
    size, or ``None`` when more bytes are needed, and raises
    :class:`~trioplane.ProtocolError` for bad input. After an error the decoder is
    poisoned: the stream it reads is out of sync and must be dropped.
    """

    _what = "frame"

    def __init__(self) -> None:
        self._buffer = ReceiveBuffer()
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer.feed(data)

    def _parse_one(self) -> object | None:
        raise NotImplementedError

    def _next(self) -> object | None:
        if self._error is not None:
            raise self._error
        try:
            return self._parse_one()
        except ProtocolError as exc:
            self._error = exc
            raise

    def check_eof(self) -> None:
        """Call at end of stream: raise :class:`ProtocolError` if a frame was cut short."""
        if self._buffer:
            raise ProtocolError(
                f"stream ended inside a {self._what} ({len(self._buffer)} bytes buffered)"
            )
