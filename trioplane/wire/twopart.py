"""Dynamo's TwoPart message: ``u64 header_len | u64 body_len | u64 checksum | header | body``.

Every request-plane payload and every response-plane frame is one of these.
Checksum: Dynamo release builds send 0 and only verify a non-zero value (debug
builds use xxh3-64); we send 0 and accept any value.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from trioplane._errors import FrameTooLarge, ProtocolError
from trioplane.wire._buffer import FrameDecoder

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "TWO_PART_PREFIX_SIZE",
    "TwoPartDecoder",
    "TwoPartMessage",
    "decode_two_part",
    "encode_two_part",
]

_PREFIX = struct.Struct(">QQQ")
TWO_PART_PREFIX_SIZE = _PREFIX.size
#: Dynamo's limit on a control header.
DEFAULT_MAX_HEADER_SIZE = 128 * 1024
#: Dynamo's default frame cap.
DEFAULT_MAX_BODY_SIZE = 32 * 1024 * 1024


@dataclass(frozen=True)
class TwoPartMessage:
    """One TwoPart message; either part may be empty."""

    header: bytes = b""
    body: bytes = b""
    checksum: int = 0


def encode_two_part(header: bytes = b"", body: bytes = b"") -> bytes:
    """Encode a TwoPart message with checksum 0, as Dynamo release builds do."""
    return _PREFIX.pack(len(header), len(body), 0) + header + body


class TwoPartDecoder(FrameDecoder):
    """Incremental TwoPart decoder: ``feed`` chunks, iterate :meth:`messages`.

    Length fields are checked against the limits before any allocation, so a
    hostile 2**64 length is a :class:`FrameTooLarge`, not a memory error.
    """

    _what = "TwoPart message"

    def __init__(
        self,
        *,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        super().__init__()
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size

    def next_message(self) -> TwoPartMessage | None:
        """The next complete message, or ``None`` until more bytes are fed."""
        result = self._next()
        assert result is None or isinstance(result, TwoPartMessage)
        return result

    def messages(self) -> Iterator[TwoPartMessage]:
        """Every complete message buffered so far."""
        while (message := self.next_message()) is not None:
            yield message

    def peek_body(self) -> bytes | None:
        """The body of the next message, if it is complete, has no header and keeps
        to the limits (a response item: the hot path); else ``None``, and the message,
        if any, is for :meth:`next_message`. Nothing is consumed: :meth:`skip` it."""
        buf = self._buffer  # its fields, read directly: this runs for every item
        data, pos = buf._data, buf._pos
        start = pos + TWO_PART_PREFIX_SIZE
        if len(data) < start or self._error is not None:
            return None
        header_len, body_len, _ = _PREFIX.unpack_from(data, pos)
        end = start + body_len
        if header_len or end > len(data) or body_len > self.max_body_size:
            return None
        return bytes(data[start:end])

    def skip(self, body: bytes) -> None:
        """Consume the message whose body :meth:`peek_body` returned."""
        self._buffer.consume(TWO_PART_PREFIX_SIZE + len(body))

    def _parse_one(self) -> TwoPartMessage | None:
        buf = self._buffer
        if len(buf) < TWO_PART_PREFIX_SIZE:
            return None
        header_len, body_len, checksum = buf.unpack(_PREFIX)
        _check_lengths(header_len, body_len, self.max_header_size, self.max_body_size)
        end = TWO_PART_PREFIX_SIZE + header_len + body_len
        if len(buf) < end:
            return None
        header_end = TWO_PART_PREFIX_SIZE + header_len
        message = TwoPartMessage(
            header=buf.slice(TWO_PART_PREFIX_SIZE, header_end),
            body=buf.slice(header_end, end),
            checksum=checksum,
        )
        buf.consume(end)
        return message


def decode_two_part(
    data: bytes,
    *,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
) -> TwoPartMessage:
    """Decode exactly one TwoPart message filling ``data`` (a request payload)."""
    if len(data) < TWO_PART_PREFIX_SIZE:
        raise ProtocolError(f"truncated TwoPart message ({len(data)} bytes)")
    header_len, body_len, checksum = _PREFIX.unpack_from(data)
    _check_lengths(header_len, body_len, max_header_size, max_body_size)
    header_end = TWO_PART_PREFIX_SIZE + header_len
    end = header_end + body_len
    if len(data) < end:
        raise ProtocolError(f"truncated TwoPart message ({len(data)} bytes)")
    if len(data) > end:
        raise ProtocolError(f"{len(data) - end} bytes after the TwoPart message")
    return TwoPartMessage(
        bytes(data[TWO_PART_PREFIX_SIZE:header_end]), bytes(data[header_end:end]), checksum
    )


def _check_lengths(header_len: int, body_len: int, max_header: int, max_body: int) -> None:
    """Lengths read off the wire, checked before anything is allocated for them."""
    if header_len > max_header:
        raise FrameTooLarge(f"TwoPart header of {header_len} bytes exceeds limit {max_header}")
    if body_len > max_body:
        raise FrameTooLarge(f"TwoPart body of {body_len} bytes exceeds limit {max_body}")
