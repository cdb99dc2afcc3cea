"""The NATS client protocol (core NATS), sans-io: a parser for what a server sends
and encoders for what a client sends.

Server to client: ``INFO {json}``, ``MSG subject sid [reply] size``,
``HMSG subject sid [reply] header_size total_size`` (a header block
``NATS/1.0[ status[ description]]`` with ``Key: Value`` lines, then the payload),
``PING``, ``PONG``, ``+OK``, ``-ERR 'message'``; every line ends with CRLF.
Client to server: ``CONNECT``, ``PUB``, ``HPUB``, ``SUB``, ``UNSUB``, ``PING``, ``PONG``.

Subjects and header fields are validated before they are written, so nothing a
caller passes can smuggle a space, CR or LF into a protocol line. Lines and
payloads have limits, checked before any allocation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from trioplane._checks import check_bytes
from trioplane._errors import (
    BadArgument,
    BadArgumentType,
    FrameTooLarge,
    MaxPayloadExceeded,
    ProtocolError,
)
from trioplane.wire._buffer import FrameDecoder
from trioplane.wire._json import dump_json, load_json

__all__ = [
    "PING",
    "PONG",
    "Err",
    "Info",
    "Msg",
    "NatsParser",
    "Ok",
    "Ping",
    "Pong",
    "encode_connect",
    "encode_headers",
    "encode_pub",
    "encode_sub",
    "encode_unsub",
    "parse_headers",
    "validate_subject",
]

PING = b"PING\r\n"
PONG = b"PONG\r\n"
#: Longest protocol line accepted (an INFO with many ``connect_urls`` is the longest).
DEFAULT_MAX_LINE = 64 * 1024
#: Largest payload accepted before the server's own ``max_payload`` is known.
DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024
_HEADER_LINE = b"NATS/1.0"
_CRLF = b"\r\n"

# A token is anything but whitespace and dots; wildcards are checked separately.
_SUBJECT = re.compile(r"[^\s.]+(?:\.[^\s.]+)*\Z")
_HEADER_KEY = re.compile(r"[!-9;-~]+\Z")  # printable ASCII except ':'
_BAD_VALUE = re.compile(r"[\r\n]")


class Info:
    """The server's INFO: the raw object, with the fields a client needs as attributes."""

    __slots__ = (
        "auth_required",
        "connect_urls",
        "headers",
        "max_payload",
        "nonce",
        "raw",
        "server_id",
        "tls_available",
        "tls_required",
    )

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.server_id = str(raw.get("server_id", ""))
        max_payload = raw.get("max_payload", 1024 * 1024)
        valid = isinstance(max_payload, int) and not isinstance(max_payload, bool)
        self.max_payload = max_payload if valid and max_payload > 0 else 1024 * 1024
        self.headers = bool(raw.get("headers", False))
        self.auth_required = bool(raw.get("auth_required", False))
        self.tls_required = bool(raw.get("tls_required", False))
        self.tls_available = bool(raw.get("tls_available", False))
        nonce = raw.get("nonce")
        self.nonce = nonce if isinstance(nonce, str) else None
        urls = raw.get("connect_urls") or []
        self.connect_urls = (
            [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []
        )

    def __repr__(self) -> str:
        return f"Info({self.raw!r})"


class Msg:
    """A message delivered to subscription ``sid``.

    ``headers`` maps each header name to its values (``None`` without a header
    block); ``status`` is the status code of the header line (503 = no
    responders), ``description`` its text.
    """

    __slots__ = ("description", "headers", "payload", "reply", "sid", "status", "subject")

    def __init__(
        self,
        subject: str,
        sid: int,
        reply: str | None,
        payload: bytes,
        headers: dict[str, list[str]] | None = None,
        status: int | None = None,
        description: str = "",
    ) -> None:
        self.subject = subject
        self.sid = sid
        self.reply = reply
        self.payload = payload
        self.headers = headers
        self.status = status
        self.description = description

    def __repr__(self) -> str:
        return (
            f"Msg(subject={self.subject!r}, sid={self.sid}, reply={self.reply!r}, "
            f"payload={self.payload!r}, headers={self.headers!r}, status={self.status!r})"
        )


class Ping:
    """The server asks for a PONG."""


class Pong:
    """The server answered a PING."""


class Ok:
    """``+OK`` (only in verbose mode)."""


class Err:
    """``-ERR``: the server's error message (quotes removed)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"Err({self.message!r})"


NatsEvent = Info | Msg | Ping | Pong | Ok | Err
_PING, _PONG, _OK = Ping(), Pong(), Ok()


class NatsParser(FrameDecoder):
    """Incremental parser of everything a NATS server sends; ``feed``, then :meth:`events`.

    ``max_payload`` caps a message's payload (set it from INFO), ``max_line``
    a protocol line. After a :class:`~trioplane.ProtocolError` the parser is
    poisoned: the connection is out of sync and must be dropped.
    """

    _what = "NATS message"

    def __init__(
        self, *, max_line: int = DEFAULT_MAX_LINE, max_payload: int = DEFAULT_MAX_PAYLOAD
    ) -> None:
        super().__init__()
        self.max_line = max_line
        self.max_payload = max_payload
        # A MSG/HMSG whose line is parsed and whose payload has not arrived yet:
        # (subject, sid, reply, header size, total size).
        self._pending: tuple[str, int, str | None, int, int] | None = None

    def next_event(self) -> NatsEvent | None:
        """The next complete event, or ``None`` until more bytes are fed."""
        event = self._next()
        assert event is None or isinstance(event, NatsEvent)
        return event

    def events(self) -> Iterator[NatsEvent]:
        """Every complete event buffered so far."""
        while (event := self.next_event()) is not None:
            yield event

    def _parse_one(self) -> NatsEvent | None:
        if self._pending is not None:
            return self._payload()
        buf = self._buffer
        end = buf.find(_CRLF, self.max_line + 2)
        if end < 0:
            size = len(buf)
            # Too long once no CRLF can end the line within the limit: past max_line
            # bytes, only the CR of a max_line-byte line may wait for its LF.
            if size > self.max_line + 1 or (
                size == self.max_line + 1 and buf.slice(size - 1, size) != b"\r"
            ):
                raise ProtocolError(f"NATS protocol line longer than {self.max_line} bytes")
            return None
        line = buf.slice(0, end)
        buf.consume(end + 2)
        words = line.split(None, 1)
        op = words[0].upper() if words else b""
        if op == b"MSG" or op == b"HMSG":
            self._pending = self._message_line(line, headers=op == b"HMSG")
            return self._payload()
        if op == b"PING":
            return _PING
        if op == b"PONG":
            return _PONG
        if op == b"+OK":
            return _OK
        if op == b"INFO":
            info = load_json(words[1] if len(words) > 1 else b"", "NATS INFO")
            if not isinstance(info, dict):
                raise ProtocolError("NATS INFO is not a JSON object")
            return Info(info)
        if op == b"-ERR":
            text = words[1].strip() if len(words) > 1 else b""
            return Err(text.strip(b"'").decode("utf-8", "replace"))
        raise ProtocolError(f"unknown NATS operation {line[:16]!r}")

    def _message_line(self, line: bytes, *, headers: bool) -> tuple[str, int, str | None, int, int]:
        parts = line.split()
        fields = len(parts) - (6 if headers else 5)  # 0 with a reply subject, -1 without
        if fields not in (0, -1):
            raise ProtocolError(f"malformed NATS message line {line[:80]!r}")
        numbers = parts[-2:] if headers else parts[-1:]
        if not all(n.isdigit() and len(n) <= 20 for n in (parts[2], *numbers)):
            raise ProtocolError(f"malformed NATS message line {line[:80]!r}")
        total = int(parts[-1])
        header_size = int(parts[-2]) if headers else 0
        sid = int(parts[2])
        try:
            subject = parts[1].decode()
            reply = parts[3].decode() if fields == 0 else None
        except UnicodeDecodeError:
            raise ProtocolError(f"malformed NATS message line {line[:80]!r}") from None
        if not 0 <= header_size <= total or sid < 0:
            raise ProtocolError(f"malformed NATS message line {line[:80]!r}")
        if total > self.max_payload:
            raise FrameTooLarge(f"NATS message of {total} bytes exceeds limit {self.max_payload}")
        return subject, sid, reply, header_size, total

    def check_eof(self) -> None:
        """At end of stream: :class:`ProtocolError` if a line or a payload was cut short."""
        if self._pending is not None:
            raise ProtocolError("stream ended inside a NATS message payload")
        super().check_eof()

    def _payload(self) -> Msg | None:
        assert self._pending is not None
        subject, sid, reply, header_size, total = self._pending
        buf = self._buffer
        if len(buf) < total + 2:
            return None
        if buf.slice(total, total + 2) != _CRLF:
            raise ProtocolError("NATS message payload is not followed by CRLF")
        self._pending = None
        if not header_size:
            payload = buf.slice(0, total)
            buf.consume(total + 2)
            return Msg(subject, sid, reply, payload)
        block = buf.slice(0, header_size)
        payload = buf.slice(header_size, total)
        buf.consume(total + 2)
        status, description, headers = parse_headers(block)
        return Msg(subject, sid, reply, payload, headers, status, description)


def parse_headers(block: bytes) -> tuple[int | None, str, dict[str, list[str]]]:
    """A header block -> ``(status, description, headers)``; :class:`ProtocolError` if bad."""
    lines = block.split(_CRLF)
    first = lines[0]
    if not first.startswith(_HEADER_LINE):
        raise ProtocolError(f"NATS header block does not start with NATS/1.0: {first[:40]!r}")
    status: int | None = None
    description = ""
    rest = first[len(_HEADER_LINE) :].strip()
    if rest:
        code, _, reason = rest.partition(b" ")
        if not code.isdigit() or len(code) > 3:
            raise ProtocolError(f"bad NATS status line {first[:40]!r}")
        status = int(code)
        description = reason.strip().decode("utf-8", "replace")
    headers: dict[str, list[str]] = {}
    for raw in lines[1:]:
        if not raw:
            continue
        key, sep, value = raw.partition(b":")
        if not sep or not key.strip():
            raise ProtocolError(f"bad NATS header line {raw[:40]!r}")
        try:
            name, text = key.strip().decode(), value.strip().decode()
        except UnicodeDecodeError:
            raise ProtocolError("NATS header is not UTF-8") from None
        headers.setdefault(name, []).append(text)
    return status, description, headers


def validate_subject(subject: str, *, wildcards: bool = False, what: str = "subject") -> None:
    """``ValueError`` unless ``subject`` is a valid NATS subject (no whitespace, no empty token).

    ``wildcards`` allows ``*`` tokens and a final ``>`` (subscriptions only).
    """
    if not isinstance(subject, str):
        raise BadArgumentType(f"{what} must be str, not {type(subject).__name__}")
    if not _SUBJECT.match(subject):
        raise BadArgument(f"invalid NATS {what} {subject!r}")
    if "*" in subject or ">" in subject:
        tokens = subject.split(".")
        ok = wildcards and all(
            (t == "*" or "*" not in t) and (t == ">" or ">" not in t) for t in tokens
        )
        if not ok or ">" in tokens[:-1]:
            raise BadArgument(f"wildcards are not allowed in NATS {what} {subject!r}")


def encode_headers(headers: Mapping[str, str | list[str]]) -> bytes:
    """The ``NATS/1.0`` header block for ``headers`` (values may be lists)."""
    if not isinstance(headers, Mapping):
        raise BadArgumentType(f"headers must be a mapping (a dict), not {type(headers).__name__}")
    out = [_HEADER_LINE, _CRLF]
    for key, values in headers.items():
        if not isinstance(key, str) or not _HEADER_KEY.match(key):
            raise BadArgument(f"invalid NATS header name {key!r}")
        for value in [values] if isinstance(values, str) else values:
            if not isinstance(value, str):
                raise BadArgumentType(
                    f"NATS header {key!r} must be str, not {type(value).__name__}"
                )
            if _BAD_VALUE.search(value):
                raise BadArgument(f"NATS header {key!r} contains CR or LF")
            out += [key.encode(), b": ", value.encode(), _CRLF]
    out.append(_CRLF)
    return b"".join(out)


def encode_connect(options: Mapping[str, Any]) -> bytes:
    """``CONNECT {json}``."""
    return b"CONNECT " + dump_json(dict(options)) + _CRLF


def encode_pub(
    subject: str,
    payload: bytes,
    *,
    reply: str | None = None,
    headers: Mapping[str, str | list[str]] | None = None,
    max_payload: int | None = None,
) -> bytes:
    """``PUB`` (or ``HPUB`` with headers); :class:`MaxPayloadExceeded` past ``max_payload``."""
    validate_subject(subject)
    check_bytes(payload)
    if reply is not None:
        validate_subject(reply, what="reply subject")
    target = f"{subject} {reply} " if reply is not None else f"{subject} "
    if headers:
        block = encode_headers(headers)
        total = len(block) + len(payload)
        _check_size(total, max_payload)
        line = f"HPUB {target}{len(block)} {total}\r\n".encode()
        return b"".join((line, block, payload, _CRLF))
    _check_size(len(payload), max_payload)
    return b"".join((f"PUB {target}{len(payload)}\r\n".encode(), payload, _CRLF))


def _check_size(size: int, max_payload: int | None) -> None:
    if max_payload is not None and size > max_payload:
        raise MaxPayloadExceeded(
            f"message of {size} bytes exceeds the server's max_payload {max_payload}"
        )


def _check_count(value: object, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadArgumentType(f"{what} must be a non-negative int, not {value!r}")


def encode_sub(subject: str, sid: int, queue: str | None = None) -> bytes:
    """``SUB subject [queue] sid`` (wildcards allowed)."""
    _check_count(sid, "sid")
    validate_subject(subject, wildcards=True)
    if queue is not None:
        validate_subject(queue, what="queue group")
        return f"SUB {subject} {queue} {sid}\r\n".encode()
    return f"SUB {subject} {sid}\r\n".encode()


def encode_unsub(sid: int, max_msgs: int | None = None) -> bytes:
    """``UNSUB sid [max_msgs]``: unsubscribe now, or after ``max_msgs`` more messages."""
    _check_count(sid, "sid")
    if max_msgs is None:
        return f"UNSUB {sid}\r\n".encode()
    _check_count(max_msgs, "max_msgs")
    return f"UNSUB {sid} {max_msgs}\r\n".encode()
