"""Dynamo's TCP request plane: request frames (caller -> worker) and acks (worker -> caller).

Request: ``u16 path_len | path | u16 headers_len | headers JSON | u32 payload_len | payload``.
Ack: ``u32 len | text``; empty means accepted. All integers big-endian. Dynamo caps
the *whole* frame (request or ack) at 32 MiB by default.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from trioplane._checks import check_bytes, check_str_map
from trioplane._errors import BadArgument, BadArgumentType, FrameTooLarge, ProtocolError
from trioplane.wire._buffer import FrameDecoder
from trioplane.wire._json import dump_str_map, load_json
from trioplane.wire.sniff import foreign_answer, wrong_protocol

__all__ = [
    "decode_ack",
    "ACK_ACCEPTED",
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_HEADERS_SIZE",
    "MAX_PATH_SIZE",
    "AckDecoder",
    "RequestFrame",
    "RequestFrameDecoder",
    "encode_ack",
    "encode_headers",
    "encode_request_frame",
]

#: Dynamo's ``DEFAULT_TCP_MAX_MESSAGE_SIZE``: the cap on a whole request or ack frame.
DEFAULT_MAX_FRAME_SIZE = 32 * 1024 * 1024
#: Width of the u16 length fields.
MAX_PATH_SIZE = 0xFFFF
MAX_HEADERS_SIZE = 0xFFFF

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_EMPTY_HEADERS = b"{}"
#: The ack frame of an accepted request.
ACK_ACCEPTED = b"\x00\x00\x00\x00"


@dataclass(frozen=True)
class RequestFrame:
    """A decoded request frame."""

    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    payload: bytes = b""


def encode_headers(headers: Mapping[str, str] | None) -> bytes:
    """Compact JSON of a string -> string map (as serde_json writes it).

    ``TypeError`` for names or values that are not ``str``.
    """
    if not headers:
        return _EMPTY_HEADERS
    if type(headers) is not dict and not isinstance(headers, Mapping):
        check_str_map(headers)  # raises: names the type
    try:
        return dump_str_map(headers)
    except TypeError as exc:
        raise BadArgumentType(f"header {exc}") from None


def encode_request_frame(
    path: str,
    headers: Mapping[str, str] | None,
    payload: bytes,
    *,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> bytes:
    """Encode one request frame; bad or oversized input raises before anything is sent.

    ``ValueError`` for a path or headers that do not fit their u16 fields,
    :class:`FrameTooLarge` for a frame over ``max_frame_size``.
    """
    if type(payload) is not bytes:
        check_bytes(payload)
    path_bytes = path.encode()
    if len(path_bytes) > MAX_PATH_SIZE:
        raise BadArgument(f"endpoint path too long: {len(path_bytes)} bytes (max {MAX_PATH_SIZE})")
    header_bytes = encode_headers(headers)
    if len(header_bytes) > MAX_HEADERS_SIZE:
        raise BadArgument(f"headers too long: {len(header_bytes)} bytes (max {MAX_HEADERS_SIZE})")
    size = 8 + len(path_bytes) + len(header_bytes) + len(payload)
    if size > max_frame_size:
        raise FrameTooLarge(f"request frame of {size} bytes exceeds limit {max_frame_size}")
    return b"".join(
        (
            _U16.pack(len(path_bytes)),
            path_bytes,
            _U16.pack(len(header_bytes)),
            header_bytes,
            _U32.pack(len(payload)),
            payload,
        )
    )


def _decode_headers(raw: bytes) -> dict[str, str]:
    if not raw:  # Dynamo's server takes a zero-length header block as no headers
        return {}
    obj = load_json(raw, "request headers")
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise ProtocolError("request headers must be a JSON object of strings")
    return obj


class RequestFrameDecoder(FrameDecoder):
    """Incremental decoder of request frames (the worker's side)."""

    _what = "request frame"

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        super().__init__()
        self.max_frame_size = max_frame_size

    def next_frame(self) -> RequestFrame | None:
        result = self._next()
        assert result is None or isinstance(result, RequestFrame)
        return result

    def frames(self) -> Iterator[RequestFrame]:
        while (frame := self.next_frame()) is not None:
            yield frame

    def _parse_one(self) -> RequestFrame | None:
        buf = self._buffer
        have = len(buf)
        if have < 2:
            return None
        (path_len,) = buf.unpack(_U16)
        headers_at = 2 + path_len
        if have < headers_at + 2:
            return None
        (headers_len,) = buf.unpack(_U16, headers_at)
        payload_at = headers_at + 2 + headers_len
        if have < payload_at + 4:
            return None
        (payload_len,) = buf.unpack(_U32, payload_at)
        end = payload_at + 4 + payload_len
        if end > self.max_frame_size:
            raise FrameTooLarge(f"request frame of {end} bytes exceeds limit {self.max_frame_size}")
        if have < end:
            return None
        try:
            path = buf.slice(2, headers_at).decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("endpoint path is not UTF-8") from exc
        headers = _decode_headers(buf.slice(headers_at + 2, payload_at))
        payload = buf.slice(payload_at + 4, end)
        buf.consume(end)
        return RequestFrame(path, headers, payload)


def encode_ack(text: bytes | str = b"") -> bytes:
    """An ack frame: empty = accepted, else the rejection text."""
    data = text.encode() if isinstance(text, str) else text
    return _U32.pack(len(data)) + data


def decode_ack(data: bytes, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Exactly one ack frame filling ``data`` (a WebSocket message): its text."""
    if len(data) < 4:
        raise ProtocolError(f"truncated ack frame ({len(data)} bytes)")
    (length,) = _U32.unpack_from(data)
    if length + 4 > max_frame_size:
        raise FrameTooLarge(f"ack of {length} bytes exceeds limit {max_frame_size}")
    if len(data) != 4 + length:
        raise ProtocolError(f"ack frame of {length} bytes in a message of {len(data)}")
    return data[4:]


class AckDecoder(FrameDecoder):
    """Incremental decoder of ack frames (the caller's side).

    It reads one connection from its start: when the first ack cannot be one (its
    length is over the limit, or the stream ends inside it) and its bytes are
    another protocol's answer (HTTP, HTTP/2, TLS, a NATS server's ``INFO``...), it
    raises :class:`~trioplane.WrongProtocol` naming ``peer`` and what it speaks,
    not a :class:`~trioplane.FrameTooLarge` of "HTTP" read as a length
    (``sniff=False``: no such check).
    """

    _what = "ack frame"

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        peer: str = "the peer",
        sniff: bool = True,
    ) -> None:
        super().__init__()
        self.max_frame_size = max_frame_size
        self.peer = peer
        self._sniffing = sniff

    def next_ack(self) -> bytes | None:
        """The next ack's bytes (``b""`` = accepted), or ``None`` until more arrive."""
        result = self._next()
        assert result is None or isinstance(result, bytes)
        return result

    def acks(self) -> Iterator[bytes]:
        while (ack := self.next_ack()) is not None:
            yield ack

    def _parse_one(self) -> bytes | None:
        buf = self._buffer
        if len(buf) < 4:
            return None
        (length,) = buf.unpack(_U32)
        if self._sniffing:
            self._sniff(length)
        if length + 4 > self.max_frame_size:
            raise FrameTooLarge(f"ack of {length} bytes exceeds limit {self.max_frame_size}")
        if len(buf) < 4 + length:
            return None
        ack = buf.slice(4, 4 + length) if length else b""
        buf.consume(4 + length)
        return ack

    def _sniff(self, length: int) -> None:
        """The first ack: a whole one is Dynamo's (nothing else is looked at after it);
        one over the limit may be another protocol's answer. Only an error the decoder
        would raise anyway is named otherwise, so a worker's acks never are."""
        if length + 4 > self.max_frame_size:
            self._sniffing = False
            self._raise_if_foreign()
        elif len(self._buffer) >= 4 + length:
            self._sniffing = False

    def _raise_if_foreign(self) -> None:
        buf = self._buffer
        found = foreign_answer(buf.slice(0, min(len(buf), 64)), max_frame_size=self.max_frame_size)
        if found is not None:
            self._error = wrong_protocol(self.peer, found)
            raise self._error

    def check_eof(self) -> None:
        """Call at end of stream: :class:`~trioplane.WrongProtocol` if the peer
        answered in another protocol before closing, else :class:`ProtocolError` if
        an ack was cut short."""
        if self._sniffing and self._buffer:
            self._sniffing = False
            self._raise_if_foreign()
        super().check_eof()
