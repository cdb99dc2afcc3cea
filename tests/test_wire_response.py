"""Sans-io tests of the response plane, the call-home stream (spec section 5)."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioplane import FrameTooLarge, MalformedStream, ProtocolError, StreamIncomplete
from trioplane.wire.codecs import JSON, MSGPACK, PayloadCodec
from trioplane.wire.control import encode_handshake
from trioplane.wire.response import (
    NOT_DATA,
    SENTINEL,
    End,
    Handshake,
    Item,
    Prologue,
    Rejected,
    ResponseEvent,
    ResponseStreamDecoder,
    Sentinel,
    decode_cancel,
    encode_cancel,
    encode_end,
    encode_item,
    encode_prologue,
    encode_sentinel,
    unwrap_annotated,
)
from trioplane.wire.twopart import TwoPartMessage, decode_two_part, encode_two_part

from .conftest import split_at
from .test_wire_codecs import json_values, msgpack_values

PREFIX = struct.Struct(">QQQ")

#: What a real Dynamo 1.6.1 worker sent home (JSON codec) for a handler yielding
#: ``{"i":0}``, ``{"i":1}``: handshake, prologue, two items, end, sentinel.
JSON_STREAM = (
    b"\x00\x00\x00\x00\x00\x00\x00+\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b'{"subject":"subj","stream_type":"response"}'
    b"\x00\x00\x00\x00\x00\x00\x00\x0e\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b'{"error":null}'
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x000\x00\x00\x00\x00\x00\x00\x00\x00"
    b'{"data":{"data":{"i":0}},"complete_final":false}'
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x000\x00\x00\x00\x00\x00\x00\x00\x00"
    b'{"data":{"data":{"i":1}},"complete_final":false}'
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x17\x00\x00\x00\x00\x00\x00\x00\x00"
    b'{"complete_final":true}'
    b"\x00\x00\x00\x00\x00\x00\x00\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b'"sentinel"'
)
#: The codec-independent frames of the capture: handshake and prologue, sentinel.
OPENING = JSON_STREAM[: (24 + 43) + (24 + 14)]
SENTINEL_FRAME = JSON_STREAM[-(24 + 10) :]


def body_frame(body: bytes) -> bytes:
    """A body-only TwoPart frame, built without the library's encoder."""
    return PREFIX.pack(0, len(body), 0) + body


#: The same stream with the msgpack codec.
MSGPACK_STREAM = (
    OPENING
    + body_frame(b"\x82\xa4data\x81\xa4data\x81\xa1i\x00\xaecomplete_final\xc2")
    + body_frame(b"\x82\xa4data\x81\xa4data\x81\xa1i\x01\xaecomplete_final\xc2")
    + body_frame(b"\x81\xaecomplete_final\xc3")
    + SENTINEL_FRAME
)
VECTOR_ITEMS = [{"data": {"i": 0}}, {"data": {"i": 1}}]
VECTOR_EVENTS: list[ResponseEvent] = [
    Handshake("subj"),
    Prologue(None),
    *(Item(item) for item in VECTOR_ITEMS),
    End(),
    Sentinel(),
]
vectors = pytest.mark.parametrize(
    ("codec", "stream"), [(JSON, JSON_STREAM), (MSGPACK, MSGPACK_STREAM)], ids=["json", "msgpack"]
)
codecs = pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
#: Builds a frame in the given codec (for frames parametrized across codecs).
FrameOf = Callable[[PayloadCodec], bytes]

#: The item a real worker sends for a handler raising ``ValueError("boom")``.
ERROR_BODY = (
    b'{"data":{"event":"error","error":{"error_type":{"Backend":"InvalidArgument"},'
    b'"class":"InvalidRequest","reason":"backend.invalid_argument",'
    b'"message":"ValueError: boom","diagnostic":"ValueError: boom"}},"complete_final":false}'
)

#: Handshake and prologue as the library writes them (checked against the capture below).
OPEN = encode_handshake("subj") + encode_prologue()


def drain(decoder: ResponseStreamDecoder) -> list[ResponseEvent]:
    """Every event the bytes fed so far make."""
    return list(iter(decoder.next_event, None))


def drain_until_error(decoder: ResponseStreamDecoder, match: str) -> list[ResponseEvent]:
    """The events before the decoder raises :class:`MalformedStream` matching ``match``."""
    events: list[ResponseEvent] = []
    with pytest.raises(MalformedStream, match=match):
        events.extend(iter(decoder.next_event, None))  # keeps the events before the error
    return events


def fed(data: bytes, codec: PayloadCodec | None = JSON, **limits: int) -> ResponseStreamDecoder:
    decoder = ResponseStreamDecoder(codec, **limits)
    decoder.feed(data)
    return decoder


def test_malformed_stream_is_a_protocol_error() -> None:
    assert issubclass(MalformedStream, ProtocolError)
    assert not issubclass(StreamIncomplete, ProtocolError)


# --- test vectors: a real worker's bytes ------------------------------------------------------


@vectors
def test_real_worker_stream(codec: PayloadCodec, stream: bytes) -> None:
    decoder = fed(stream, codec)
    assert drain(decoder) == VECTOR_EVENTS
    decoder.check_eof()
    assert decoder.ended
    assert decoder.done


@vectors
def test_encoders_reproduce_real_worker_stream(codec: PayloadCodec, stream: bytes) -> None:
    assert OPEN == OPENING
    assert encode_sentinel() == SENTINEL_FRAME
    items = b"".join(encode_item(codec, item) for item in VECTOR_ITEMS)
    assert OPEN + items + encode_end(codec) + encode_sentinel() == stream


def test_real_worker_error_item() -> None:
    """A handler's exception is a normal item (then end and sentinel), not a failed stream."""
    error_item = JSON.decode(ERROR_BODY)["data"]
    assert encode_item(JSON, error_item) == body_frame(ERROR_BODY)
    decoder = fed(OPENING + body_frame(ERROR_BODY) + encode_end(JSON) + SENTINEL_FRAME)
    events = drain(decoder)
    assert events == [Handshake("subj"), Prologue(None), Item(error_item), End(), Sentinel()]
    item = events[2]
    assert isinstance(item, Item)
    assert item.data["event"] == "error"
    assert item.data["error"]["message"] == "ValueError: boom"
    decoder.check_eof()


# --- any items, any chunking ------------------------------------------------------------------


def items_for(codec: PayloadCodec) -> st.SearchStrategy[list[Any]]:
    """Items the codec can carry; ``None`` is no item (``data: null`` means no data)."""
    values = json_values if codec is JSON else msgpack_values
    return st.lists(values.filter(lambda value: value is not None), max_size=6)


@settings(max_examples=200)
@given(codec=st.sampled_from([JSON, MSGPACK]), last_on_end=st.booleans(), data=st.data())
def test_arbitrary_items_and_chunking(
    codec: PayloadCodec, last_on_end: bool, data: st.DataObject
) -> None:
    """Encoded items fed in any chunks give exactly the expected events, in order.

    With ``last_on_end`` the last item rides on the ``complete_final`` frame, as
    Dynamo allows: still one ``Item`` then ``End``.
    """
    items = data.draw(items_for(codec), label="items")
    subject = data.draw(st.text(min_size=1, max_size=20), label="subject")
    frames = [encode_item(codec, item) for item in items]
    if last_on_end and items:
        frames[-1] = encode_two_part(body=codec.encode({"data": items[-1], "complete_final": True}))
    else:
        frames.append(encode_end(codec))
    blob = encode_handshake(subject) + encode_prologue() + b"".join(frames) + encode_sentinel()
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20), label="cuts")

    decoder = ResponseStreamDecoder(codec)
    events: list[ResponseEvent] = []
    for chunk in split_at(blob, cuts):
        decoder.feed(chunk)
        events.extend(drain(decoder))
        assert decoder.ended == (End() in events)
        assert decoder.done == (Sentinel() in events)
    expected = [Handshake(subject), Prologue(None), *(Item(i) for i in items), End(), Sentinel()]
    assert events == expected
    decoder.check_eof()


@settings(max_examples=300)
@given(
    vector=st.sampled_from([(JSON, JSON_STREAM), (MSGPACK, MSGPACK_STREAM)]),
    data=st.data(),
)
def test_corrupted_stream_fails_only_with_named_errors(
    vector: tuple[PayloadCodec, bytes], data: st.DataObject
) -> None:
    """A valid stream with one byte changed decodes, or fails with a named error."""
    codec, stream = vector
    index = data.draw(st.integers(0, len(stream) - 1), label="index")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != stream[index]), label="byte")
    decoder = fed(stream[:index] + bytes([byte]) + stream[index + 1 :], codec)
    with contextlib.suppress(MalformedStream, StreamIncomplete):
        drain(decoder)
        decoder.check_eof()


# --- the end of a stream: EOF, data on the end, failed prologue, rejection ---------------------


@vectors
def test_eof_at_every_prefix(codec: PayloadCodec, stream: bytes) -> None:
    """EOF before the end frame is StreamIncomplete; inside the sentinel, MalformedStream.

    Right after the end frame, or after the sentinel, EOF is fine.
    """
    end_of_end = len(stream) - len(SENTINEL_FRAME)
    for n in range(len(stream) + 1):
        decoder = fed(stream[:n], codec)
        drain(decoder)
        if n < end_of_end:
            with pytest.raises(StreamIncomplete, match="before generation completed"):
                decoder.check_eof()
        elif n in (end_of_end, len(stream)):
            decoder.check_eof()
        else:
            with pytest.raises(MalformedStream, match="inside a frame after complete_final"):
                decoder.check_eof()


@codecs
@pytest.mark.parametrize(
    ("final", "expected"),
    [
        ({"data": {"i": 9}, "complete_final": True}, [Item({"i": 9}), End()]),
        ({"data": None, "complete_final": True}, [End()]),
        ({"complete_final": True}, [End()]),
    ],
)
def test_final_frame_may_carry_data(
    codec: PayloadCodec, final: dict[str, Any], expected: list[ResponseEvent]
) -> None:
    decoder = fed(OPEN + encode_two_part(body=codec.encode(final)) + encode_sentinel(), codec)
    assert drain(decoder) == [Handshake("subj"), Prologue(None), *expected, Sentinel()]
    decoder.check_eof()


@codecs
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(lambda codec: encode_item(codec, {"data": 1}), id="item"),
        pytest.param(encode_end, id="end"),
        pytest.param(lambda codec: encode_sentinel(), id="sentinel"),
    ],
)
def test_failed_prologue_ends_the_stream(codec: PayloadCodec, extra: FrameOf) -> None:
    assert encode_prologue("engine failed") == encode_two_part(b'{"error":"engine failed"}')
    decoder = fed(encode_handshake("subj") + encode_prologue("engine failed"), codec)
    assert drain(decoder) == [Handshake("subj"), Prologue(error="engine failed")]
    assert decoder.ended
    assert decoder.done
    decoder.check_eof()
    decoder.feed(extra(codec))
    with pytest.raises(MalformedStream, match="after the end"):
        decoder.next_event()


def test_structured_prologue_error() -> None:
    error = {"message": "no engine", "code": 3}
    decoder = fed(encode_handshake("subj") + encode_prologue(error))
    assert drain(decoder) == [Handshake("subj"), Prologue(error=error)]
    assert decoder.done


@codecs
@pytest.mark.parametrize(
    "text", ["Server overloaded: worker at capacity", "Server unavailable: draining"]
)
def test_rejection_as_first_item(codec: PayloadCodec, text: str) -> None:
    """Newer Dynamo sheds load on the stream: the first item is raw text, in any codec."""
    decoder = fed(OPEN + encode_two_part(body=text.encode()), codec)
    assert drain(decoder) == [Handshake("subj"), Prologue(None), Rejected(text)]
    assert decoder.done
    decoder.check_eof()


def test_rejection_text_after_an_item_is_malformed() -> None:
    rejection = encode_two_part(body=b"Server overloaded: worker at capacity")
    decoder = fed(OPEN + encode_item(JSON, {"data": 1}) + rejection)
    assert drain_until_error(decoder, "does not decode") == [
        Handshake("subj"),
        Prologue(None),
        Item({"data": 1}),
    ]


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "body", "match"),
    [
        (b'{"subject":"subj","stream_type":"response"}', b"x", "handshake has a body"),
        (b"not json", b"", "not valid JSON"),
        (b"", b"", "not valid JSON"),
        (b"\xff\xfe", b"", "not valid JSON"),
        (b'["subj"]', b"", "not a JSON object"),
        (b'{"stream_type":"response"}', b"", "subject"),
        (b'{"subject":7,"stream_type":"response"}', b"", "subject"),
    ],
)
def test_bad_handshake(header: bytes, body: bytes, match: str) -> None:
    decoder = fed(encode_two_part(header, body) + encode_prologue())
    assert drain_until_error(decoder, match) == []


@pytest.mark.parametrize(
    ("header", "body", "match"),
    [
        (b'{"error":null}', b"x", "header-only"),
        (b"", b'{"error":null}', "header-only"),
        (b"", b"", "header-only"),
        (b"nope", b"", "not valid JSON"),
        (b"{}", b"", "'error' field"),
        (b'{"err":null}', b"", "'error' field"),
        (b'["error"]', b"", "'error' field"),
        (b"null", b"", "'error' field"),
    ],
)
def test_bad_prologue(header: bytes, body: bytes, match: str) -> None:
    decoder = fed(encode_handshake("subj") + encode_two_part(header, body))
    assert drain_until_error(decoder, match) == [Handshake("subj")]


@codecs
@pytest.mark.parametrize(
    ("wrapper", "match"),
    [
        ({"complete_final": False}, "without data"),
        ({"data": None, "complete_final": False}, "without data"),
        ({}, "without data"),
        ([{"data": 1}], "not a map"),
        ("text", "not a map"),
        ({"data": 1, "complete_final": "yes"}, "must be a boolean"),
        ({"complete_final": 1}, "must be a boolean"),
        ({"complete_final": None}, "must be a boolean"),
    ],
)
def test_bad_item(codec: PayloadCodec, wrapper: Any, match: str) -> None:
    decoder = fed(OPEN + encode_two_part(body=codec.encode(wrapper)), codec)
    assert drain_until_error(decoder, match) == [Handshake("subj"), Prologue(None)]


@pytest.mark.parametrize(
    ("codec", "body"),
    [(JSON, b"{"), (JSON, b"\xff"), (JSON, b""), (MSGPACK, b"\xc1"), (MSGPACK, b"\x92\x01")],
)
def test_undecodable_item(codec: PayloadCodec, body: bytes) -> None:
    decoder = fed(OPEN + encode_two_part(body=body), codec)
    assert drain_until_error(decoder, "does not decode") == [Handshake("subj"), Prologue(None)]


@pytest.mark.parametrize("header", [b"h", SENTINEL, b'{"error":null}'])
def test_item_frame_with_header(header: bytes) -> None:
    """Also a sentinel, or a second prologue, before the end."""
    decoder = fed(OPEN + encode_two_part(header, JSON.encode({"data": 1})))
    assert drain_until_error(decoder, "has a header") == [Handshake("subj"), Prologue(None)]


@codecs
@pytest.mark.parametrize(
    ("after", "match"),
    [(b"", "after complete_final"), (encode_sentinel(), "after the end of the response stream")],
    ids=["after-end", "after-sentinel"],
)
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(lambda codec: encode_item(codec, {"data": 1}), id="item"),
        pytest.param(encode_end, id="end"),
        pytest.param(lambda codec: encode_prologue(), id="prologue"),
        pytest.param(lambda codec: encode_two_part(SENTINEL, b"x"), id="sentinel-with-body"),
        pytest.param(lambda codec: encode_two_part(), id="empty"),
    ],
)
def test_frame_after_the_end(codec: PayloadCodec, after: bytes, match: str, extra: FrameOf) -> None:
    """``extra`` builds, from the codec, a frame the worker may not send once it ended."""
    decoder = fed(OPEN + encode_end(codec) + after + extra(codec), codec)
    events = drain_until_error(decoder, match)
    assert events[-1] == (Sentinel() if after else End())


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        pytest.param(PREFIX.pack(2**60, 0, 0), "header of 1152921504606846976", id="handshake"),
        pytest.param(OPEN + PREFIX.pack(0, 2**60, 0), "body of 1152921504606846976", id="item"),
        pytest.param(OPEN + PREFIX.pack(0, 65, 0) + b"{" * 65, "body of 65 bytes", id="65-bytes"),
    ],
)
def test_oversized_frame_rejected_without_allocating(frames: bytes, match: str) -> None:
    """Only the length field is needed: 2**60 is refused, not allocated (nor waited for)."""
    decoder = fed(frames, max_item_size=64)
    tracemalloc.start()
    try:
        with pytest.raises(MalformedStream, match=match) as caught:
            drain(decoder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024
    assert isinstance(caught.value.__cause__, FrameTooLarge)
    with pytest.raises(MalformedStream):  # the framing is lost for good
        decoder.next_event()


@codecs
def test_max_item_size_is_the_frame_body_size(codec: PayloadCodec) -> None:
    """The limit counts the encoded wrapper, as Dynamo's frame cap does."""
    frame = encode_item(codec, {"data": "x" * 40})
    size = len(frame) - PREFIX.size
    assert drain(fed(OPEN + frame, codec, max_item_size=size))[-1] == Item({"data": "x" * 40})
    with pytest.raises(MalformedStream, match="exceeds limit"):
        drain(fed(OPEN + frame, codec, max_item_size=size - 1))


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"\xff" * 24,
        PREFIX.pack(3, 0, 0) + b"\x00\x01\x02",
        OPEN + b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ],
)
def test_garbage(garbage: bytes) -> None:
    decoder = fed(garbage)
    with pytest.raises(MalformedStream):
        drain(decoder)


# --- codec ------------------------------------------------------------------------------------


def test_reading_items_needs_a_codec() -> None:
    """The handshake and prologue decode without a codec; items do not."""
    decoder = fed(OPEN + encode_item(JSON, {"data": 1}), codec=None)
    assert decoder.next_event() == Handshake("subj")
    assert decoder.next_event() == Prologue(None)
    with pytest.raises(RuntimeError, match="codec"):
        decoder.next_event()


def test_missing_codec_does_not_lose_the_item() -> None:
    decoder = fed(OPEN + encode_item(JSON, {"data": 1}) + encode_end(JSON), codec=None)
    assert [decoder.next_event(), decoder.next_event()] == [Handshake("subj"), Prologue(None)]
    with pytest.raises(RuntimeError):
        decoder.next_event()
    decoder.codec = JSON
    assert decoder.next_event() == Item({"data": 1})


def test_broken_rule_poisons_the_decoder() -> None:
    decoder = fed(OPEN + encode_end(JSON) + encode_item(JSON, {"data": 1}) + encode_sentinel())
    drain_until_error(decoder, "after complete_final")
    with pytest.raises(MalformedStream):
        decoder.next_event()  # returns Sentinel()


# --- annotations and cancellation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"data": 1}, (True, 1)),
        ({"data": {"i": 0}, "id": "7"}, (True, {"i": 0})),
        ({"data": None}, (False, None)),
        ({"event": "x"}, (False, None)),
        ({"comment": "c"}, (False, None)),
        ({"id": "7"}, (True, {"id": "7"})),  # not an annotation: an item as it stands
        (5, (True, 5)),
        ([1], (True, [1])),
        (None, (True, None)),
    ],
)
def test_unwrap_annotated(item: Any, expected: tuple[bool, Any]) -> None:
    assert unwrap_annotated(item) == expected


@pytest.mark.parametrize("kind", ["stop", "kill"])
def test_cancel_round_trip(kind: str) -> None:
    frame = encode_cancel(kind)
    assert frame == PREFIX.pack(6, 0, 0) + f'"{kind}"'.encode()
    message = decode_two_part(frame)
    assert message == TwoPartMessage(header=f'"{kind}"'.encode())
    assert decode_cancel(message.header) == kind


def test_cancel_default_is_stop() -> None:
    assert encode_cancel() == encode_cancel("stop")


@pytest.mark.parametrize("kind", ["other", "STOP", "", "sentinel"])
def test_encode_cancel_unknown_kind(kind: str) -> None:
    with pytest.raises(ValueError, match="'stop' or 'kill'"):
        encode_cancel(kind)


@pytest.mark.parametrize("header", [b'"nope"', b"stop", b"", b'["stop"]', b'{"stop":1}', b"\xff"])
def test_decode_cancel_bad_header(header: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_cancel(header)


def test_encode_item_refuses_none() -> None:
    """``None`` data would be a non-final frame without data, which callers reject."""
    with pytest.raises(ValueError, match="cannot be None"):
        encode_item(JSON, None)


def test_handshake_for_another_stream_type_is_malformed() -> None:
    decoder = ResponseStreamDecoder(JSON)
    decoder.feed(encode_two_part(b'{"subject":"s","stream_type":"request"}'))
    with pytest.raises(MalformedStream, match="'request' stream"):
        decoder.next_event()


# --- the hot path: next_data reads what next_event reads ----------------------------------------


def read_all(decoder: ResponseStreamDecoder, chunks: list[bytes], fast: bool) -> list[Any]:
    """What a reader sees, chunk by chunk: item data, other events, and the error that
    ends it (its type and text); ``fast`` reads as the endpoint client does."""
    seen: list[Any] = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while True:
                data = decoder.next_data() if fast else NOT_DATA
                if data is not NOT_DATA:
                    seen.append(("item", data))
                    continue
                event = decoder.next_event()
                if event is None:
                    break
                seen.append(("item", event.data) if isinstance(event, Item) else event)
        decoder.check_eof()
    except (MalformedStream, StreamIncomplete, FrameTooLarge) as exc:
        seen.append((type(exc), str(exc)))
    return seen


@settings(max_examples=300)
@given(
    codec=st.sampled_from([JSON, MSGPACK]),
    last_on_end=st.booleans(),
    corrupt=st.booleans(),
    data=st.data(),
)
def test_next_data_reads_what_next_event_reads(
    codec: PayloadCodec, last_on_end: bool, corrupt: bool, data: st.DataObject
) -> None:
    """Valid or corrupted, in any chunks, under a small item limit or not: the fast
    path gives the same items, events, errors and state as the events alone."""
    items = data.draw(items_for(codec), label="items")
    frames = [encode_item(codec, item) for item in items]
    if last_on_end and items:
        frames[-1] = encode_two_part(body=codec.encode({"data": items[-1], "complete_final": True}))
    else:
        frames.append(encode_end(codec))
    blob = OPEN + b"".join(frames) + encode_sentinel()
    if corrupt:
        index = data.draw(st.integers(0, len(blob) - 1), label="index")
        blob = (
            blob[:index] + bytes([blob[index] ^ data.draw(st.integers(1, 255))]) + blob[index + 1 :]
        )
    cut = data.draw(st.integers(0, len(blob)), label="truncate at")
    blob = blob[:cut] if data.draw(st.booleans(), label="truncate") else blob
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=12), label="cuts")
    limit = data.draw(st.sampled_from([64 * 1024 * 1024, 40]), label="max_item_size")
    chunks = list(split_at(blob, cuts))
    slow = ResponseStreamDecoder(codec, max_item_size=limit)
    fast = ResponseStreamDecoder(codec, max_item_size=limit)
    # Compared by repr: a corrupted float may decode to NaN, which == says differs from itself.
    assert repr(read_all(fast, chunks, fast=True)) == repr(read_all(slow, chunks, fast=False))
    assert (fast.ended, fast.done) == (slow.ended, slow.done)
