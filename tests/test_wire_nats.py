"""Sans-io tests of the NATS client protocol (core NATS): the parser and the encoders."""

from __future__ import annotations

import contextlib
import itertools
import json
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioplane import FrameTooLarge, ProtocolError
from trioplane._errors import MaxPayloadExceeded
from trioplane.wire.nats import (
    PING,
    PONG,
    Err,
    Info,
    Msg,
    NatsEvent,
    NatsParser,
    encode_connect,
    encode_headers,
    encode_pub,
    encode_sub,
    encode_unsub,
    parse_headers,
    validate_subject,
)

from .conftest import split_at

#: What nats-server 2.15 sends for a request to a subject nobody subscribes to.
NO_RESPONDERS = b"HMSG _INBOX.x 1 38 38\r\nNATS/1.0 503\r\nNats-Subject: nobody\r\n\r\n\r\n"

#: An INFO as nats-server sends it (some fields left out).
INFO_RAW: dict[str, Any] = {
    "server_id": "NDQ3SERVER",
    "server_name": "n1",
    "version": "2.15.0",
    "proto": 1,
    "host": "0.0.0.0",
    "port": 4222,
    "headers": True,
    "auth_required": True,
    "tls_required": True,
    "tls_available": True,
    "max_payload": 8388608,
    "client_id": 5,
    "nonce": "VLyf2EtBfZg",
    "connect_urls": ["10.0.0.1:4222", "10.0.0.2:4222"],
}

#: An event in a comparable form (events have no ``__eq__``).
Summary = tuple[object, ...]
#: What a server sends for one event, and the event it must parse to.
Frame = tuple[bytes, Summary]


def summary(event: NatsEvent) -> Summary:
    if isinstance(event, Msg):
        return (
            "MSG",
            event.subject,
            event.sid,
            event.reply,
            event.payload,
            event.headers,
            event.status,
            event.description,
        )
    if isinstance(event, Info):
        return ("INFO", event.raw)
    if isinstance(event, Err):
        return ("ERR", event.message)
    return (type(event).__name__,)


def msg(
    subject: str,
    sid: int,
    payload: bytes,
    reply: str | None = None,
    headers: dict[str, list[str]] | None = None,
    status: int | None = None,
    description: str = "",
) -> Summary:
    """The summary of the :class:`Msg` the parser should make."""
    return ("MSG", subject, sid, reply, payload, headers, status, description)


PING_EVENT: Summary = ("Ping",)
PONG_EVENT: Summary = ("Pong",)
OK_EVENT: Summary = ("Ok",)


def header_block(headers: Mapping[str, list[str]], status: str = "") -> bytes:
    """A header block as a server writes it (built without the library's encoder)."""
    first = f"NATS/1.0 {status}" if status else "NATS/1.0"
    lines = [first, *(f"{key}: {value}" for key, values in headers.items() for value in values)]
    return "".join(f"{line}\r\n" for line in lines).encode() + b"\r\n"


def server_msg(
    subject: str, sid: int, payload: bytes, *, reply: str | None = None, block: bytes | None = None
) -> bytes:
    """``MSG`` (``HMSG`` with a header ``block``) as a server writes it."""
    target = f"{subject} {sid} {reply} " if reply is not None else f"{subject} {sid} "
    if block is None:
        line = f"MSG {target}{len(payload)}"
    else:
        line = f"HMSG {target}{len(block)} {len(block) + len(payload)}"
    return line.encode() + b"\r\n" + (block or b"") + payload + b"\r\n"


def as_delivered(frame: bytes, sid: int) -> bytes:
    """The ``MSG``/``HMSG`` a server delivers for a client's ``PUB``/``HPUB`` ``frame``."""
    line, _, rest = frame.partition(b"\r\n")
    op, subject, *fields = line.split(b" ")
    delivered = {b"PUB": b"MSG", b"HPUB": b"HMSG"}[op]
    return b" ".join([delivered, subject, str(sid).encode(), *fields]) + b"\r\n" + rest


def fed(data: bytes, **limits: int) -> NatsParser:
    parser = NatsParser(**limits)
    parser.feed(data)
    return parser


def parse(data: bytes, **limits: int) -> list[Summary]:
    """Every event in ``data``, which must end on a frame boundary."""
    parser = fed(data, **limits)
    events = [summary(event) for event in parser.events()]
    parser.check_eof()
    assert parser.buffered == 0
    return events


def parse_until_error(parser: NatsParser, error: type[ProtocolError], match: str) -> list[Summary]:
    """The events before the parser raises ``error``; then checks it stays poisoned."""
    events: list[Summary] = []
    with pytest.raises(error, match=match) as caught:
        events.extend(summary(event) for event in parser.events())
    parser.feed(PING)
    with pytest.raises(ProtocolError) as again:
        parser.next_event()
    assert again.value is caught.value
    return events


# --- strategies -------------------------------------------------------------------------------

#: Any character that may appear in a subject token (no whitespace, dots or wildcards).
token_chars = st.characters(codec="utf-8", exclude_categories=["C", "Z"], exclude_characters=".*>")
subjects = st.lists(st.text(token_chars, min_size=1, max_size=6), min_size=1, max_size=4).map(
    ".".join
)
header_names = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
    min_size=1,
    max_size=12,
)
#: Header values and descriptions: no CR/LF, no space at the ends (the parser strips it).
header_text = st.text(st.characters(codec="utf-8", exclude_categories=["C"]), max_size=12).map(
    lambda text: text.strip(" ")
)
header_dicts = st.dictionaries(header_names, st.lists(header_text, min_size=1, max_size=3))
payloads = st.lists(
    st.binary(max_size=16)
    | st.sampled_from([b"\r\n", b"\r", b"\n", b"PING\r\n", b"MSG a 1 0\r\n"]),
    max_size=6,
).map(b"".join)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(st.characters(codec="utf-8"))
info_keys = st.sampled_from(["max_payload", "headers", "nonce", "connect_urls", "auth_required"])


@st.composite
def message_frames(draw: st.DrawFn) -> Frame:
    subject, payload = draw(subjects), draw(payloads)
    sid = draw(st.integers(0, 2**63))
    reply = draw(st.none() | subjects)
    if draw(st.booleans()):
        frame = server_msg(subject, sid, payload, reply=reply)
        return frame, msg(subject, sid, payload, reply)
    headers = draw(header_dicts)
    status = draw(st.none() | st.integers(100, 999))
    description = draw(header_text) if status is not None else ""
    line = f"{status} {description}".strip(" ") if status is not None else ""
    frame = server_msg(subject, sid, payload, reply=reply, block=header_block(headers, line))
    return frame, msg(subject, sid, payload, reply, headers, status, description)


@st.composite
def info_frames(draw: st.DrawFn) -> Frame:
    value = json_scalars | st.lists(json_scalars, max_size=3)
    raw = draw(st.dictionaries(info_keys | st.text(max_size=8), value, max_size=5))
    return b"INFO " + json.dumps(raw, ensure_ascii=False).encode() + b"\r\n", ("INFO", raw)


@st.composite
def err_frames(draw: st.DrawFn) -> Frame:
    chars = st.characters(codec="utf-8", exclude_categories=["C"], exclude_characters="'")
    message = draw(st.text(chars, max_size=20)).strip()
    return f"-ERR '{message}'\r\n".encode(), ("ERR", message)


server_frames = st.one_of(
    message_frames(),
    info_frames(),
    err_frames(),
    st.sampled_from([(PING, PING_EVENT), (PONG, PONG_EVENT), (b"+OK\r\n", OK_EVENT)]),
)


# --- test vectors: what a server sends --------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"PING\r\n", [PING_EVENT], id="ping"),
        pytest.param(b"PONG\r\n", [PONG_EVENT], id="pong"),
        pytest.param(b"+OK\r\n", [OK_EVENT], id="ok"),
        pytest.param(
            b"-ERR 'Authorization Violation'\r\n", [("ERR", "Authorization Violation")], id="err"
        ),
        pytest.param(b"-ERR Stale Connection\r\n", [("ERR", "Stale Connection")], id="err-bare"),
        pytest.param(b"-ERR\r\n", [("ERR", "")], id="err-empty"),
        pytest.param(
            b"MSG foo.bar 9 11\r\nhello world\r\n", [msg("foo.bar", 9, b"hello world")], id="msg"
        ),
        pytest.param(
            b"MSG foo.bar 9 _INBOX.abc.1 5\r\nhello\r\n",
            [msg("foo.bar", 9, b"hello", "_INBOX.abc.1")],
            id="msg-reply",
        ),
        pytest.param(b"MSG foo 1 0\r\n\r\n", [msg("foo", 1, b"")], id="msg-empty"),
        pytest.param(
            b"MSG foo 1 6\r\n\r\nPING\r\n", [msg("foo", 1, b"\r\nPING")], id="msg-crlf-payload"
        ),
        pytest.param(
            "MSG caf\u00e9.\u00fc 1 0\r\n\r\n".encode(),
            [msg("caf\u00e9.\u00fc", 1, b"")],
            id="msg-utf8-subject",
        ),
        pytest.param(
            NO_RESPONDERS,
            [msg("_INBOX.x", 1, b"", None, {"Nats-Subject": ["nobody"]}, 503)],
            id="no-responders",
        ),
        pytest.param(
            b"HMSG foo 2 _INBOX.r 32 37\r\nNATS/1.0\r\nA: 1\r\nA: 2\r\nB: x y\r\n\r\nhello\r\n",
            [msg("foo", 2, b"hello", "_INBOX.r", {"A": ["1", "2"], "B": ["x y"]})],
            id="hmsg-multi-value",
        ),
        pytest.param(
            b"HMSG _INBOX.x 3 32 32\r\nNATS/1.0 408 Request Timeout\r\n\r\n\r\n",
            [msg("_INBOX.x", 3, b"", None, {}, 408, "Request Timeout")],
            id="hmsg-status-description",
        ),
        pytest.param(
            b"PING\r\nMSG a 1 2\r\nhi\r\nPONG\r\n" + NO_RESPONDERS + b"+OK\r\n",
            [
                PING_EVENT,
                msg("a", 1, b"hi"),
                PONG_EVENT,
                msg("_INBOX.x", 1, b"", None, {"Nats-Subject": ["nobody"]}, 503),
                OK_EVENT,
            ],
            id="sequence",
        ),
    ],
)
def test_server_operations(data: bytes, expected: list[Summary]) -> None:
    assert parse(data) == expected


def test_info_fields() -> None:
    [event] = fed(b"INFO " + json.dumps(INFO_RAW).encode() + b" \r\n").events()
    assert isinstance(event, Info)
    assert event.raw == INFO_RAW
    assert event.server_id == "NDQ3SERVER"
    assert event.max_payload == 8388608
    assert event.headers
    assert event.auth_required
    assert event.tls_required
    assert event.tls_available
    assert event.nonce == "VLyf2EtBfZg"
    assert event.connect_urls == ["10.0.0.1:4222", "10.0.0.2:4222"]


@pytest.mark.parametrize(
    ("raw", "attribute", "expected"),
    [
        ({}, "max_payload", 1024 * 1024),
        ({"max_payload": "big"}, "max_payload", 1024 * 1024),
        ({}, "headers", False),
        ({}, "auth_required", False),
        ({}, "tls_required", False),
        ({}, "server_id", ""),
        ({}, "nonce", None),
        ({"nonce": 5}, "nonce", None),
        ({}, "connect_urls", []),
        ({"connect_urls": None}, "connect_urls", []),
        ({"connect_urls": "a:4222"}, "connect_urls", []),
        ({"connect_urls": [1, "a:4222", None]}, "connect_urls", ["a:4222"]),
    ],
)
def test_info_defaults_and_bad_types(raw: dict[str, Any], attribute: str, expected: Any) -> None:
    [event] = fed(b"INFO " + json.dumps(raw).encode() + b"\r\n").events()
    assert isinstance(event, Info)
    assert getattr(event, attribute) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"ping\r\n", [PING_EVENT], id="ping"),
        pytest.param(b"Pong\r\n", [PONG_EVENT], id="pong"),
        pytest.param(b"+ok\r\n", [OK_EVENT], id="ok"),
        pytest.param(b"-err 'x'\r\n", [("ERR", "x")], id="err"),
        pytest.param(b"info {}\r\n", [("INFO", {})], id="info"),
        pytest.param(b"msg a 1 2\r\nhi\r\n", [msg("a", 1, b"hi")], id="msg"),
        pytest.param(
            b"hmsg a 1 12 12\r\nNATS/1.0\r\n\r\n\r\n", [msg("a", 1, b"", None, {})], id="hmsg"
        ),
    ],
)
def test_operations_are_case_insensitive(data: bytes, expected: list[Summary]) -> None:
    assert parse(data) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"MSG  a   1\t5 \r\nhello\r\n", msg("a", 1, b"hello"), id="msg"),
        pytest.param(b"MSG a\t1 \t r  5\t\r\nhello\r\n", msg("a", 1, b"hello", "r"), id="reply"),
        pytest.param(
            b"HMSG\ta\t1\tr\t12\t12\r\nNATS/1.0\r\n\r\n\r\n",
            msg("a", 1, b"", "r", {}),
            id="hmsg-tabs",
        ),
        pytest.param(b"INFO\t {}\r\n", ("INFO", {}), id="info"),
        pytest.param(b"-ERR  \t'x'\r\n", ("ERR", "x"), id="err"),
        pytest.param(
            b"MSG\ta\t1\t5\r\nhello\r\n",
            msg("a", 1, b"hello"),
            id="tab-after-msg",
        ),
    ],
)
def test_fields_separated_by_any_spaces_and_tabs(data: bytes, expected: Summary) -> None:
    assert parse(data) == [expected]


# --- encoders: exact bytes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        pytest.param(PING, b"PING\r\n", id="ping"),
        pytest.param(PONG, b"PONG\r\n", id="pong"),
        pytest.param(encode_pub("foo.bar", b"hello"), b"PUB foo.bar 5\r\nhello\r\n", id="pub"),
        pytest.param(encode_pub("foo", b""), b"PUB foo 0\r\n\r\n", id="pub-empty"),
        pytest.param(
            encode_pub("foo", b"a\r\nb", reply="_INBOX.1"),
            b"PUB foo _INBOX.1 4\r\na\r\nb\r\n",
            id="pub-reply",
        ),
        pytest.param(encode_pub("foo", b"hi", headers={}), b"PUB foo 2\r\nhi\r\n", id="no-headers"),
        pytest.param(
            encode_pub("foo", b"hi", headers={"K": "v"}),
            b"HPUB foo 18 20\r\nNATS/1.0\r\nK: v\r\n\r\nhi\r\n",
            id="hpub",
        ),
        pytest.param(
            encode_pub("foo", b"hi", reply="r", headers={"A": ["1", "2"], "B": "x y"}),
            b"HPUB foo r 32 34\r\nNATS/1.0\r\nA: 1\r\nA: 2\r\nB: x y\r\n\r\nhi\r\n",
            id="hpub-reply-lists",
        ),
        pytest.param(encode_headers({}), b"NATS/1.0\r\n\r\n", id="headers-empty"),
        pytest.param(encode_sub("foo.*", 7), b"SUB foo.* 7\r\n", id="sub"),
        pytest.param(encode_sub("foo.>", 7, "workers"), b"SUB foo.> workers 7\r\n", id="sub-q"),
        pytest.param(encode_unsub(7), b"UNSUB 7\r\n", id="unsub"),
        pytest.param(encode_unsub(7, 1), b"UNSUB 7 1\r\n", id="unsub-max"),
        pytest.param(
            encode_connect({"verbose": False, "pedantic": False, "name": "tp", "headers": True}),
            b'CONNECT {"verbose":false,"pedantic":false,"name":"tp","headers":true}\r\n',
            id="connect",
        ),
        pytest.param(
            encode_connect({"name": "caf\u00e9\r\nPING"}),
            'CONNECT {"name":"caf\u00e9\\r\\nPING"}\r\n'.encode(),
            id="connect-escapes",
        ),
        pytest.param(encode_connect({}), b"CONNECT {}\r\n", id="connect-empty"),
    ],
)
def test_encoders(encoded: bytes, expected: bytes) -> None:
    assert encoded == expected


@pytest.mark.parametrize(
    ("headers", "payload"),
    [({"K": "v"}, b"hi"), ({"Nats-Msg-Id": ["a", "b"], "X": ""}, b""), ({"K": "v"}, b"\r\n" * 9)],
)
def test_hpub_sizes(headers: Mapping[str, str | list[str]], payload: bytes) -> None:
    line, _, rest = encode_pub("s", payload, headers=headers).partition(b"\r\n")
    block = encode_headers(headers)
    assert line == f"HPUB s {len(block)} {len(block) + len(payload)}".encode()
    assert rest == block + payload + b"\r\n"


@settings(max_examples=200)
@given(
    subject=subjects,
    reply=st.none() | subjects,
    payload=payloads,
    headers=st.none()
    | st.dictionaries(header_names, header_text | st.lists(header_text, min_size=1, max_size=3)),
    sid=st.integers(0, 2**32),
)
def test_published_message_parses_back(
    subject: str,
    reply: str | None,
    payload: bytes,
    headers: dict[str, str | list[str]] | None,
    sid: int,
) -> None:
    """What encode_pub writes, delivered by a server (MSG/HMSG with a sid), parses back."""
    frame = encode_pub(subject, payload, reply=reply, headers=headers)
    expected = (
        {key: [value] if isinstance(value, str) else value for key, value in headers.items()}
        if headers
        else None
    )
    assert parse(as_delivered(frame, sid)) == [msg(subject, sid, payload, reply, expected)]


# --- any events, any chunking -----------------------------------------------------------------


@settings(max_examples=300)
@given(frames=st.lists(server_frames, max_size=8), data=st.data())
def test_arbitrary_events_and_chunking(frames: list[Frame], data: st.DataObject) -> None:
    """A server's frames fed in any chunks give the same events, each as soon as it is whole."""
    blob = b"".join(frame for frame, _ in frames)
    ends = list(itertools.accumulate(len(frame) for frame, _ in frames))
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20), label="cuts")
    wrap = data.draw(st.sampled_from([bytes, bytearray, memoryview]), label="chunk type")

    parser = NatsParser()
    events: list[Summary] = []
    received = 0
    for chunk in split_at(blob, cuts):
        parser.feed(wrap(chunk))
        received += len(chunk)
        events.extend(summary(event) for event in parser.events())
        assert len(events) == sum(1 for end in ends if end <= received)
    assert events == [expected for _, expected in frames]
    parser.check_eof()
    assert parser.buffered == 0


@settings(max_examples=300)
@given(chunks=st.lists(st.binary(max_size=64), max_size=8))
def test_garbage_yields_events_or_protocol_error(chunks: list[bytes]) -> None:
    parser = NatsParser(max_line=128, max_payload=128)
    try:
        for chunk in chunks:
            parser.feed(chunk)
            for event in parser.events():
                assert not isinstance(event, Msg) or len(event.payload) <= 128
    except ProtocolError:
        with pytest.raises(ProtocolError):
            parser.next_event()


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(b"FOO bar\r\n", "unknown NATS operation", id="unknown-op"),
        pytest.param(b"\r\n", "unknown NATS operation", id="empty-line"),
        pytest.param(b"MSGS a 1 0\r\n\r\n", "unknown NATS operation", id="msgs"),
        pytest.param(b"MSG a x 0\r\n\r\n", "malformed", id="sid-not-numeric"),
        pytest.param(b"MSG a 1 x\r\n\r\n", "malformed", id="size-not-numeric"),
        pytest.param(b"MSG a -1 0\r\n\r\n", "malformed", id="sid-negative"),
        pytest.param(b"MSG a 1 -2\r\n\r\n", "malformed", id="size-negative"),
        pytest.param(b"MSG a 1 " + b"9" * 5000 + b"\r\n", "malformed", id="size-5000-digits"),
        pytest.param(b"MSG \r\n", "malformed", id="msg-no-fields"),
        pytest.param(b"MSG a 1\r\n", "malformed", id="msg-too-few"),
        pytest.param(b"MSG a 1 r x 0\r\n\r\n", "malformed", id="msg-too-many"),
        pytest.param(b"MSG \xff 1 0\r\n\r\n", "malformed", id="subject-not-utf8"),
        pytest.param(b"MSG a 1 \xff 0\r\n\r\n", "malformed", id="reply-not-utf8"),
        pytest.param(b"HMSG a 1 12\r\n", "malformed", id="hmsg-too-few"),
        pytest.param(b"HMSG a 1 r x 12 12\r\n", "malformed", id="hmsg-too-many"),
        pytest.param(b"HMSG a 1 13 12\r\n", "malformed", id="header-size-over-total"),
        pytest.param(b"HMSG a 1 -1 12\r\n", "malformed", id="header-size-negative"),
        pytest.param(b"MSG a 1 2\r\nhiXX", "not followed by CRLF", id="payload-no-crlf"),
        pytest.param(b"MSG a 1 2\r\nhello\r\n", "not followed by CRLF", id="payload-too-long"),
        pytest.param(b"MSG a 1 6\r\nhi\r\n\r\n", "not followed by CRLF", id="payload-too-short"),
        pytest.param(
            server_msg("a", 1, b"", block=b"HTTP/1.1 200\r\n\r\n"), "NATS/1.0", id="not-nats-1.0"
        ),
        pytest.param(
            server_msg("a", 1, b"", block=b"NATS/1.0\r\nNoColon\r\n\r\n"),
            "header line",
            id="header-without-colon",
        ),
        pytest.param(
            server_msg("a", 1, b"", block=b"NATS/1.0 OK\r\n\r\n"), "status", id="status-not-number"
        ),
        pytest.param(b"INFO not json\r\n", "not valid JSON", id="info-not-json"),
        pytest.param(b"INFO\r\n", "not valid JSON", id="info-empty"),
        pytest.param(b"INFO {\xff}\r\n", "not valid JSON", id="info-not-utf8"),
        pytest.param(b"INFO [1, 2]\r\n", "not a JSON object", id="info-array"),
        pytest.param(b'INFO "x"\r\n', "not a JSON object", id="info-string"),
    ],
)
def test_bad_input(data: bytes, match: str) -> None:
    """Valid events before the bad one are delivered; then the parser is poisoned."""
    parser = fed(PING + data + PING)
    assert parse_until_error(parser, ProtocolError, match) == [PING_EVENT]


def test_status_with_too_many_digits_is_a_protocol_error() -> None:
    parser = fed(server_msg("a", 1, b"", block=b"NATS/1.0 " + b"1" * 5000 + b"\r\n\r\n"))
    parse_until_error(parser, ProtocolError, "status")


@pytest.mark.parametrize("line", [b"MSG a +1 2", b"MSG a 1 +2", b"MSG a 1_0 2", b"MSG a 1 0_2"])
def test_sid_and_size_are_plain_digits(line: bytes) -> None:
    parser = fed(line + b"\r\nhi\r\n")
    with pytest.raises(ProtocolError, match="malformed"):
        parser.next_event()


# --- limits -----------------------------------------------------------------------------------

#: A 16-byte INFO line (without its CRLF).
LINE_16 = b"INFO {}" + b" " * 9


@contextlib.contextmanager
def peak_memory() -> Iterator[list[int]]:
    """Traces allocations in the block; the list gets the peak, in bytes, on exit."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def test_line_of_max_line_bytes_is_accepted() -> None:
    assert len(LINE_16) == 16
    assert parse(LINE_16 + b"\r\n", max_line=16) == [("INFO", {})]


def test_line_longer_than_max_line_is_rejected_even_with_its_crlf() -> None:
    parser = fed(b" " + LINE_16 + b"\r\n", max_line=16)
    assert parse_until_error(parser, ProtocolError, "longer than 16 bytes") == []


def test_long_line_is_rejected_before_its_crlf_without_copying() -> None:
    """Refused as soon as the buffer holds max_line + 1 bytes without CRLF, nothing copied."""
    limit = 1024 * 1024
    parser = NatsParser(max_line=limit)
    chunk = b"INFO " + b"x" * (limit // 4 - 5)
    for _ in range(4):
        parser.feed(chunk)
        with peak_memory() as peak:
            assert parser.next_event() is None
        assert peak[0] < limit // 16
    assert parser.buffered == limit
    parser.feed(b"x")
    with peak_memory() as peak, pytest.raises(ProtocolError, match="longer than"):
        parser.next_event()
    assert peak[0] < limit // 16


def test_line_of_max_line_bytes_split_between_cr_and_lf() -> None:
    parser = fed(LINE_16 + b"\r", max_line=16)
    assert parser.next_event() is None
    parser.feed(b"\n")
    assert [summary(event) for event in parser.events()] == [("INFO", {})]


@pytest.mark.parametrize(
    "line",
    [
        b"MSG a 1 17",
        b"MSG a 1 _INBOX.r 17",
        b"HMSG a 1 12 17",
        b"HMSG a 1 0 17",
        b"MSG a 1 1152921504606846976",
        b"HMSG a 1 12 1152921504606846976",
    ],
)
def test_oversized_message_is_rejected_on_its_line(line: bytes) -> None:
    """FrameTooLarge from the line alone: the payload is neither waited for nor allocated."""
    parser = fed(PING + line + b"\r\n", max_payload=16)
    with peak_memory() as peak:
        assert parse_until_error(parser, FrameTooLarge, "exceeds limit 16") == [PING_EVENT]
    assert peak[0] < 64 * 1024


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        pytest.param(server_msg("a", 1, b"x" * 16), msg("a", 1, b"x" * 16), id="msg"),
        pytest.param(
            server_msg("a", 1, b"x" * 4, block=b"NATS/1.0\r\n\r\n"),
            msg("a", 1, b"x" * 4, None, {}),
            id="hmsg",
        ),
    ],
)
def test_message_of_max_payload_bytes_is_accepted(frame: bytes, expected: Summary) -> None:
    line_end = frame.index(b"\r\n") + 2
    parser = fed(frame[:line_end], max_payload=16)
    assert parser.next_event() is None
    parser.feed(frame[line_end:])
    assert [summary(event) for event in parser.events()] == [expected]


# --- end of stream ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"PIN", id="partial-line"),
        pytest.param(b"INFO {", id="partial-info"),
        pytest.param(b"MSG a 1 2\r\nh", id="partial-payload"),
        pytest.param(b"MSG a 1 2\r\nhi", id="payload-no-crlf"),
        pytest.param(b"MSG a 1 2\r\nhi\r", id="payload-half-crlf"),
        pytest.param(NO_RESPONDERS[:30], id="partial-header-block"),
        pytest.param(NO_RESPONDERS[:-1], id="hmsg-half-crlf"),
        pytest.param(b"MSG a 1 2\r\n", id="msg-line-only"),
        pytest.param(b"MSG a 1 0\r\n", id="empty-msg-line-only"),
        pytest.param(NO_RESPONDERS[:23], id="hmsg-line-only"),
    ],
)
def test_check_eof_on_truncated_input(data: bytes) -> None:
    parser = fed(PING + data)
    assert [summary(event) for event in parser.events()] == [PING_EVENT]
    with pytest.raises(ProtocolError, match="stream ended inside"):
        parser.check_eof()


def test_check_eof_on_clean_input() -> None:
    parser = NatsParser()
    parser.check_eof()
    parser.feed(PING + NO_RESPONDERS)
    assert len(list(parser.events())) == 2
    parser.check_eof()


# --- validation: nothing a caller passes reaches the wire unchecked ----------------------------

BAD_SUBJECTS = [
    "",
    " ",
    "a b",
    "a\tb",
    "a\rb",
    "a\nb",
    "a\x0bb",
    "a\x0cb",
    "a\r\nPUB b 0",
    " a",
    "a ",
    ".",
    ".a",
    "a.",
    "a..b",
]
#: Valid in a subscription only (not in a publish or reply subject, nor a queue group).
WILDCARDS = ["*", ">", "a.*", "a.>", "a.*.c", "*.*.>"]
#: Valid nowhere: a wildcard must be a whole token, and ``>`` the last one.
BAD_WILDCARDS = ["a*", "*a", "a.b*", "a.>b", "a.>.b", ">.a", ">>", "a.**"]

#: Every way a caller's subject reaches a protocol line, and whether wildcards may.
SUBJECT_USES: list[tuple[str, Callable[[Any], object], bool]] = [
    ("validate", validate_subject, False),
    ("validate-wildcards", lambda subject: validate_subject(subject, wildcards=True), True),
    ("pub", lambda subject: encode_pub(subject, b""), False),
    ("pub-reply", lambda subject: encode_pub("ok", b"", reply=subject), False),
    ("hpub", lambda subject: encode_pub(subject, b"", headers={"K": "v"}), False),
    ("hpub-reply", lambda subject: encode_pub("ok", b"", reply=subject, headers={"K": "v"}), False),
    ("sub", lambda subject: encode_sub(subject, 1), True),
    ("sub-queue", lambda subject: encode_sub("ok", 1, subject), False),
]
subject_uses = pytest.mark.parametrize(
    "use", [pytest.param(use, id=name) for name, use, _ in SUBJECT_USES]
)


@subject_uses
@pytest.mark.parametrize("subject", BAD_SUBJECTS + BAD_WILDCARDS)
def test_bad_subject_is_rejected(use: Callable[[str], object], subject: str) -> None:
    with pytest.raises(ValueError, match="NATS"):
        use(subject)


@pytest.mark.parametrize(
    ("use", "allowed"), [pytest.param(use, ok, id=name) for name, use, ok in SUBJECT_USES]
)
@pytest.mark.parametrize("subject", WILDCARDS)
def test_wildcards_only_in_subscriptions(
    use: Callable[[str], object], allowed: bool, subject: str
) -> None:
    if allowed:
        use(subject)
    else:
        with pytest.raises(ValueError, match="wildcards are not allowed"):
            use(subject)


@pytest.mark.parametrize("subject", WILDCARDS)
def test_subscription_with_wildcards(subject: str) -> None:
    assert encode_sub(subject, 3) == f"SUB {subject} 3\r\n".encode()


@subject_uses
@pytest.mark.parametrize("subject", [b"a", 1, ["a"]])
def test_subject_not_str_is_a_type_error(use: Callable[[Any], object], subject: object) -> None:
    with pytest.raises(TypeError, match="must be str"):
        use(subject)


def is_valid_subject(subject: str, *, wildcards: bool) -> bool:
    """The subject grammar, spelled out: dot-separated tokens, no whitespace, whole wildcards."""
    tokens = subject.split(".")
    if not all(tokens) or any(char.isspace() for char in subject):
        return False
    if not wildcards:
        return "*" not in subject and ">" not in subject
    whole = all(token in ("*", ">") or not {"*", ">"} & set(token) for token in tokens)
    return whole and ">" not in tokens[:-1]


@settings(max_examples=500)
@given(
    subject=st.text(st.sampled_from("ab.*> \t\r\n\x0b\u00e9\u3000"), max_size=8),
    wildcards=st.booleans(),
)
def test_validate_subject_follows_the_grammar(subject: str, wildcards: bool) -> None:
    try:
        validate_subject(subject, wildcards=wildcards)
    except ValueError:
        assert not is_valid_subject(subject, wildcards=wildcards)
    else:
        assert is_valid_subject(subject, wildcards=wildcards)


def accepted(encode: Callable[[], bytes]) -> bytes | None:
    """What ``encode`` writes, or ``None`` if it refuses (``ValueError``)."""
    try:
        return encode()
    except ValueError:
        return None


@settings(max_examples=300)
@given(subject=st.text(max_size=10), other=st.text(max_size=10), sid=st.integers(0, 2**32))
def test_lines_hold_exactly_the_fields_given(subject: str, other: str, sid: int) -> None:
    """Whatever text is passed, a line is refused or splits into exactly the fields given."""
    pub = accepted(lambda: encode_pub(subject, b"", reply=other))
    if pub is not None:
        assert pub.split(b"\r\n") == [f"PUB {subject} {other} 0".encode(), b"", b""]
        assert pub.split() == [b"PUB", subject.encode(), other.encode(), b"0"]
    sub = accepted(lambda: encode_sub(subject, sid, other))
    if sub is not None:
        assert sub.split(b"\r\n") == [f"SUB {subject} {other} {sid}".encode(), b""]
        assert sub.split() == [b"SUB", subject.encode(), other.encode(), str(sid).encode()]


BAD_HEADER_NAMES = ["", "a:b", ":", "a b", " a", "a\tb", "a\r\nb", "caf\u00e9", "a\x7f", "a\x00"]
BAD_HEADER_VALUES: list[str | list[str]] = ["a\rb", "a\nb", "\r\n", "v\r\nX: 1", ["ok", "b\nad"]]
header_uses = pytest.mark.parametrize(
    "use",
    [
        pytest.param(encode_headers, id="encode_headers"),
        pytest.param(lambda headers: encode_pub("a", b"", headers=headers), id="hpub"),
    ],
)


@header_uses
@pytest.mark.parametrize("name", BAD_HEADER_NAMES)
def test_bad_header_name_is_rejected(use: Callable[[Any], object], name: str) -> None:
    with pytest.raises(ValueError, match="invalid NATS header name"):
        use({name: "v"})


@header_uses
@pytest.mark.parametrize("value", BAD_HEADER_VALUES)
def test_header_value_with_cr_or_lf_is_rejected(
    use: Callable[[Any], object], value: str | list[str]
) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        use({"K": value})


@header_uses
@pytest.mark.parametrize("value", [1, None, b"v", ["ok", 2], [b"v"]])
def test_header_value_not_str_is_a_type_error(use: Callable[[Any], object], value: object) -> None:
    with pytest.raises(TypeError):
        use({"K": value})


@settings(max_examples=300)
@given(name=st.text(max_size=6), value=st.text(max_size=10))
def test_header_block_is_refused_or_parses_back(name: str, value: str) -> None:
    """No name or value can add a header line or end the block early."""
    try:
        block = encode_headers({name: value})
    except ValueError:
        return
    assert block == f"NATS/1.0\r\n{name}: {value}\r\n\r\n".encode()
    assert parse_headers(block) == (None, "", {name: [value.encode().strip().decode()]})


@pytest.mark.parametrize(
    ("headers", "overhead"),
    [(None, 0), ({"K": "v"}, 18), ({"A": ["1", "2"]}, 24)],
    ids=["pub", "hpub", "hpub-list"],
)
def test_max_payload_counts_payload_and_header_block(
    headers: dict[str, str | list[str]] | None, overhead: int
) -> None:
    """Exactly max_payload bytes (header block included) pass; one more is refused."""
    limit = 32
    payload = b"x" * (limit - overhead)
    assert encode_pub("a", payload, headers=headers, max_payload=limit).endswith(payload + b"\r\n")
    with pytest.raises(MaxPayloadExceeded, match=f"{limit + 1} bytes"):
        encode_pub("a", payload + b"x", headers=headers, max_payload=limit)


def test_header_block_alone_may_exceed_max_payload() -> None:
    with pytest.raises(MaxPayloadExceeded):
        encode_pub("a", b"", headers={"K": "v"}, max_payload=17)


# --- parse_headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        pytest.param(b"NATS/1.0\r\n\r\n", (None, "", {}), id="empty"),
        pytest.param(b"NATS/1.0 503\r\n\r\n", (503, "", {}), id="status"),
        pytest.param(b"NATS/1.0  503 \r\n\r\n", (503, "", {}), id="status-spaces"),
        pytest.param(
            b"NATS/1.0 408 Request Timeout\r\n\r\n", (408, "Request Timeout", {}), id="description"
        ),
        pytest.param(
            b"NATS/1.0 100 Idle  Heartbeat \r\nNats-Last-Consumer: 7\r\n\r\n",
            (100, "Idle  Heartbeat", {"Nats-Last-Consumer": ["7"]}),
            id="description-and-headers",
        ),
        pytest.param(
            b"NATS/1.0\r\nA: 1\r\nB: 2\r\nA: 3\r\n\r\n",
            (None, "", {"A": ["1", "3"], "B": ["2"]}),
            id="duplicate-keys",
        ),
        pytest.param(
            b"NATS/1.0\r\n  Key \t:  spaced  value \t\r\n\r\n",
            (None, "", {"Key": ["spaced  value"]}),
            id="whitespace-stripped",
        ),
        pytest.param(b"NATS/1.0\r\nK:v\r\n\r\n", (None, "", {"K": ["v"]}), id="no-space"),
        pytest.param(b"NATS/1.0\r\nK:\r\n\r\n", (None, "", {"K": [""]}), id="empty-value"),
        pytest.param(
            b"NATS/1.0\r\nUrl: http://h:1/x\r\n\r\n",
            (None, "", {"Url": ["http://h:1/x"]}),
            id="colon-in-value",
        ),
        pytest.param(
            "NATS/1.0\r\nK: caf\u00e9\r\n\r\n".encode(), (None, "", {"K": ["caf\u00e9"]}), id="utf8"
        ),
        pytest.param(
            b"NATS/1.0\r\nk: 1\r\nK: 2\r\n\r\n", (None, "", {"k": ["1"], "K": ["2"]}), id="case"
        ),
    ],
)
def test_parse_headers(
    block: bytes, expected: tuple[int | None, str, dict[str, list[str]]]
) -> None:
    assert parse_headers(block) == expected


@pytest.mark.parametrize(
    ("block", "match"),
    [
        pytest.param(b"", "does not start with NATS/1.0", id="empty"),
        pytest.param(b"HTTP/1.1 200 OK\r\n\r\n", "does not start with NATS/1.0", id="http"),
        pytest.param(b"nats/1.0\r\n\r\n", "does not start with NATS/1.0", id="lowercase"),
        pytest.param(b"NATS/1.0 abc\r\n\r\n", "bad NATS status line", id="status-word"),
        pytest.param(b"NATS/1.0 -1\r\n\r\n", "bad NATS status line", id="status-negative"),
        pytest.param(b"NATS/1.0\r\nNoColon\r\n\r\n", "bad NATS header line", id="no-colon"),
        pytest.param(b"NATS/1.0\r\n : v\r\n\r\n", "bad NATS header line", id="empty-key"),
        pytest.param(b"NATS/1.0\r\nK: \xff\r\n\r\n", "not UTF-8", id="value-not-utf8"),
        pytest.param(b"NATS/1.0\r\n\xff: v\r\n\r\n", "not UTF-8", id="key-not-utf8"),
    ],
)
def test_parse_headers_bad_block(block: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_headers(block)
