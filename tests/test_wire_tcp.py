"""Sans-io tests of the TCP request plane: request frames and acks (spec section 4.1)."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioplane import FrameTooLarge, ProtocolError
from trioplane.wire.tcp import (
    ACK_ACCEPTED,
    DEFAULT_MAX_FRAME_SIZE,
    MAX_HEADERS_SIZE,
    MAX_PATH_SIZE,
    AckDecoder,
    RequestFrame,
    RequestFrameDecoder,
    decode_ack,
    encode_ack,
    encode_headers,
    encode_request_frame,
)

from .conftest import split_at

U16 = struct.Struct(">H")
U32 = struct.Struct(">I")

PATH = "718e09ed4c898113/ns/comp/ep"


def hand_frame(path: bytes, headers: bytes, payload: bytes) -> bytes:
    """Spec layout: u16 path_len | path | u16 headers_len | headers | u32 payload_len | payload."""
    return (
        U16.pack(len(path))
        + path
        + U16.pack(len(headers))
        + headers
        + U32.pack(len(payload))
        + payload
    )


def compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def decode_one(data: bytes, **kwargs: Any) -> RequestFrame:
    decoder = RequestFrameDecoder(**kwargs)
    decoder.feed(data)
    frame = decoder.next_frame()
    assert frame is not None
    assert decoder.next_frame() is None
    decoder.check_eof()
    return frame


paths = st.text(max_size=40)
headers_st = st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=6)
payloads = st.binary(max_size=200)
request_frames = st.builds(RequestFrame, path=paths, headers=headers_st, payload=payloads)


# --- layout and test vectors ------------------------------------------------------------------


def test_constants_match_spec() -> None:
    assert DEFAULT_MAX_FRAME_SIZE == 32 * 1024 * 1024
    assert MAX_PATH_SIZE == MAX_HEADERS_SIZE == 65535


def test_dynamo_style_frame_byte_exact() -> None:
    headers = {
        "request-id": "9f0c1b2a-0000-4000-8000-000000000001",
        "x-endpoint-path": PATH,
        "x-frontend-send-ts-ns": "1795606855393812576",
    }
    payload = b"\x00\x01\x02payload"
    header_json = (
        b'{"request-id":"9f0c1b2a-0000-4000-8000-000000000001",'
        b'"x-endpoint-path":"718e09ed4c898113/ns/comp/ep",'
        b'"x-frontend-send-ts-ns":"1795606855393812576"}'
    )
    expected = (
        len(PATH).to_bytes(2, "big")
        + PATH.encode()
        + len(header_json).to_bytes(2, "big")
        + header_json
        + len(payload).to_bytes(4, "big")
        + payload
    )
    assert encode_request_frame(PATH, headers, payload) == expected
    assert decode_one(expected) == RequestFrame(PATH, headers, payload)


def test_minimal_frame_bytes() -> None:
    assert encode_request_frame("p", None, b"") == b"\x00\x01p\x00\x02{}\x00\x00\x00\x00"
    assert encode_request_frame("p", {}, b"x") == b"\x00\x01p\x00\x02{}\x00\x00\x00\x01x"


@settings(max_examples=200)
@given(path=paths, headers=headers_st, payload=payloads)
def test_hand_built_frame_equals_encoder(
    path: str, headers: dict[str, str], payload: bytes
) -> None:
    expected = hand_frame(path.encode(), compact(headers), payload)
    assert encode_request_frame(path, headers, payload) == expected


def test_non_ascii_path_and_headers_are_raw_utf8() -> None:
    path = "ns/caf\u00e9/\u6f22"
    headers = {"k\u00e9": "v\u2603"}
    frame = encode_request_frame(path, headers, b"")
    assert frame == hand_frame(path.encode(), '{"k\u00e9":"v\u2603"}'.encode(), b"")
    assert decode_one(frame) == RequestFrame(path, headers, b"")


def test_zero_length_header_block_decodes_to_empty() -> None:
    frame = decode_one(hand_frame(b"a/b", b"", b"body"))
    assert frame == RequestFrame("a/b", {}, b"body")
    assert frame.headers == {}


def test_empty_path_and_payload() -> None:
    assert decode_one(hand_frame(b"", b"{}", b"")) == RequestFrame("", {}, b"")


# --- round trips and chunking -----------------------------------------------------------------


@settings(max_examples=200)
@given(path=paths, headers=headers_st, payload=payloads)
def test_request_frame_round_trip(path: str, headers: dict[str, str], payload: bytes) -> None:
    frame = decode_one(encode_request_frame(path, headers, payload))
    assert frame.path == path
    assert dict(frame.headers) == headers
    assert frame.payload == payload


@settings(max_examples=200)
@given(frames=st.lists(request_frames, max_size=6), data=st.data())
def test_request_frames_arbitrary_chunking(frames: list[RequestFrame], data: st.DataObject) -> None:
    encoded = [encode_request_frame(f.path, f.headers, f.payload) for f in frames]
    blob = b"".join(encoded)
    ends = []
    offset = 0
    for one in encoded:
        offset += len(one)
        ends.append(offset)
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20), label="cuts")
    wrap = data.draw(st.sampled_from([bytes, bytearray, memoryview]), label="chunk type")

    decoder = RequestFrameDecoder()
    decoded: list[RequestFrame] = []
    fed = 0
    for chunk in split_at(blob, cuts):
        decoder.feed(wrap(chunk))
        fed += len(chunk)
        decoded.extend(decoder.frames())
        assert len(decoded) == sum(1 for end in ends if end <= fed)
    assert decoded == frames
    decoder.check_eof()
    assert decoder.buffered == 0


@settings(max_examples=200)
@given(acks=st.lists(st.binary(max_size=80), max_size=10), data=st.data())
def test_acks_arbitrary_chunking(acks: list[bytes], data: st.DataObject) -> None:
    blob = b"".join(encode_ack(a) for a in acks)
    assert len(blob) == 4 * len(acks) + sum(map(len, acks))
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20), label="cuts")
    decoder = AckDecoder()
    decoded: list[bytes] = []
    for chunk in split_at(blob, cuts):
        decoder.feed(chunk)
        decoded.extend(decoder.acks())
    assert decoded == acks
    assert all(type(a) is bytes for a in decoded)
    decoder.check_eof()


@settings(max_examples=150)
@given(text=st.text(max_size=80))
def test_ack_round_trip_str(text: str) -> None:
    data = encode_ack(text)
    assert data == U32.pack(len(text.encode())) + text.encode()
    assert encode_ack(text.encode()) == data
    decoder = AckDecoder()
    decoder.feed(data)
    assert decoder.next_ack() == text.encode()
    decoder.check_eof()


# --- acks -------------------------------------------------------------------------------------


def test_empty_ack_vector() -> None:
    assert ACK_ACCEPTED == b"\x00\x00\x00\x00"
    assert encode_ack() == ACK_ACCEPTED
    assert encode_ack(b"") == ACK_ACCEPTED
    assert encode_ack("") == ACK_ACCEPTED
    decoder = AckDecoder()
    decoder.feed(ACK_ACCEPTED)
    assert decoder.next_ack() == b""
    assert decoder.next_ack() is None
    decoder.check_eof()


def test_rejection_ack_vector() -> None:
    text = "Server overloaded: worker at capacity"
    data = encode_ack(text)
    assert data == b"\x00\x00\x00\x25" + text.encode()
    decoder = AckDecoder()
    decoder.feed(data[:10])
    assert decoder.next_ack() is None
    decoder.feed(data[10:])
    assert decoder.next_ack() == text.encode()


def test_ack_truncated() -> None:
    data = encode_ack(b"Invalid endpoint path")
    for cut in range(1, len(data)):
        decoder = AckDecoder()
        decoder.feed(data[:cut])
        assert decoder.next_ack() is None
        with pytest.raises(ProtocolError, match="ack frame"):
            decoder.check_eof()


def test_ack_length_over_limit_rejected_from_prefix() -> None:
    decoder = AckDecoder()
    decoder.feed(U32.pack(2**32 - 1))
    with pytest.raises(FrameTooLarge):
        decoder.next_ack()
    decoder = AckDecoder()
    decoder.feed(U32.pack(DEFAULT_MAX_FRAME_SIZE - 3))
    with pytest.raises(FrameTooLarge):
        decoder.next_ack()
    decoder = AckDecoder()
    decoder.feed(U32.pack(DEFAULT_MAX_FRAME_SIZE - 4))  # whole frame exactly at the cap
    assert decoder.next_ack() is None


def test_ack_custom_limit() -> None:
    decoder = AckDecoder(max_frame_size=10)
    decoder.feed(encode_ack(b"123456"))  # 4 + 6 == 10
    assert decoder.next_ack() == b"123456"
    decoder.feed(U32.pack(7))  # 4 + 7 > 10, rejected before the text arrives
    with pytest.raises(FrameTooLarge):
        decoder.next_ack()


def test_ack_decoder_stays_poisoned() -> None:
    decoder = AckDecoder(max_frame_size=8)
    decoder.feed(U32.pack(100))
    with pytest.raises(FrameTooLarge):
        decoder.next_ack()
    decoder.feed(ACK_ACCEPTED)
    with pytest.raises(FrameTooLarge):
        decoder.next_ack()


# --- truncated and oversized request frames ---------------------------------------------------


@settings(max_examples=150)
@given(frame=request_frames, data=st.data())
def test_truncated_request_frame(frame: RequestFrame, data: st.DataObject) -> None:
    encoded = encode_request_frame(frame.path, frame.headers, frame.payload)
    cut = data.draw(st.integers(1, len(encoded) - 1), label="cut")
    decoder = RequestFrameDecoder()
    decoder.feed(encoded[:cut])
    assert decoder.next_frame() is None
    assert decoder.buffered == cut
    with pytest.raises(ProtocolError, match="request frame"):
        decoder.check_eof()


def test_payload_length_over_limit_rejected_before_payload() -> None:
    prefix = hand_frame(b"p", b"{}", b"")[:-4] + U32.pack(2**32 - 1)
    decoder = RequestFrameDecoder()
    decoder.feed(prefix)
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()

    over = DEFAULT_MAX_FRAME_SIZE - (2 + 1 + 2 + 2 + 4) + 1
    decoder = RequestFrameDecoder()
    decoder.feed(hand_frame(b"p", b"{}", b"")[:-4] + U32.pack(over))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()

    decoder = RequestFrameDecoder()
    decoder.feed(hand_frame(b"p", b"{}", b"")[:-4] + U32.pack(over - 1))
    assert decoder.next_frame() is None  # exactly at the cap: allowed, waits for bytes


@settings(max_examples=100)
@given(frame=request_frames)
def test_custom_frame_limit_is_inclusive(frame: RequestFrame) -> None:
    encoded = encode_request_frame(frame.path, frame.headers, frame.payload)
    size = len(encoded)
    assert encode_request_frame(frame.path, frame.headers, frame.payload, max_frame_size=size)
    with pytest.raises(FrameTooLarge):
        encode_request_frame(frame.path, frame.headers, frame.payload, max_frame_size=size - 1)
    assert decode_one(encoded, max_frame_size=size) == frame
    decoder = RequestFrameDecoder(max_frame_size=size - 1)
    decoder.feed(encoded[: size - len(frame.payload)])  # up to the payload length only
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


# --- bad frames -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        b"[]",
        b'"x"',
        b"1",
        b"null",
        b'{"a":1}',
        b'{"a":null}',
        b'{"a":["b"]}',
        b'{"a":{"b":"c"}}',
        b"{",
        b"not json",
        b"\xff\xfe\xfd",
        b'{"a":"\xff"}',
    ],
)
def test_headers_not_object_of_strings(headers: bytes) -> None:
    decoder = RequestFrameDecoder()
    decoder.feed(hand_frame(b"p", headers, b"x"))
    with pytest.raises(ProtocolError, match="headers"):
        decoder.next_frame()


@pytest.mark.parametrize("path", [b"\xff", b"ok/\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_invalid_utf8_path(path: bytes) -> None:
    decoder = RequestFrameDecoder()
    decoder.feed(hand_frame(path, b"{}", b""))
    with pytest.raises(ProtocolError, match="UTF-8"):
        decoder.next_frame()


def test_request_decoder_stays_poisoned() -> None:
    decoder = RequestFrameDecoder()
    decoder.feed(hand_frame(b"\xff", b"{}", b""))
    with pytest.raises(ProtocolError) as first:
        decoder.next_frame()
    decoder.feed(encode_request_frame("good", None, b""))
    with pytest.raises(ProtocolError) as second:
        decoder.next_frame()
    assert second.value is first.value
    with pytest.raises(ProtocolError):
        list(decoder.frames())


def test_deeply_nested_headers_are_protocol_error() -> None:
    decoder = RequestFrameDecoder()
    decoder.feed(hand_frame(b"p", b"[" * 60000, b""))
    with pytest.raises(ProtocolError):
        decoder.next_frame()


@settings(max_examples=200)
@given(chunks=st.lists(st.binary(max_size=64), max_size=8))
def test_garbage_bytes_yield_frames_or_protocol_error(chunks: list[bytes]) -> None:
    decoder = RequestFrameDecoder(max_frame_size=1024)
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            for frame in decoder.frames():
                assert isinstance(frame.path, str)
                assert all(
                    isinstance(k, str) and isinstance(v, str) for k, v in frame.headers.items()
                )
    except ProtocolError:
        with pytest.raises(ProtocolError):
            decoder.next_frame()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
header_blocks = st.one_of(
    st.binary(max_size=40),
    json_values.map(compact),
    headers_st.map(compact),
    headers_st.map(lambda h: compact(h)[:-1]),
)


@settings(max_examples=200)
@given(path=st.binary(max_size=12), headers=header_blocks, payload=st.binary(max_size=16))
def test_fuzzed_well_framed_request(path: bytes, headers: bytes, payload: bytes) -> None:
    """Correct lengths, arbitrary contents: a frame with str headers, or ProtocolError."""
    decoder = RequestFrameDecoder()
    decoder.feed(hand_frame(path, headers, payload))
    try:
        frame = decoder.next_frame()
    except ProtocolError:
        return
    assert frame is not None
    assert frame.path.encode() == path
    assert frame.payload == payload
    assert isinstance(frame.headers, Mapping)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in frame.headers.items())
    decoder.check_eof()


# --- encoder argument errors ------------------------------------------------------------------


def test_path_length_limit() -> None:
    longest = "p" * MAX_PATH_SIZE
    assert decode_one(encode_request_frame(longest, None, b"")).path == longest
    with pytest.raises(ValueError, match="path too long"):
        encode_request_frame("p" * (MAX_PATH_SIZE + 1), None, b"")
    with pytest.raises(ValueError, match="path too long"):
        encode_request_frame("\u00e9" * 32768, None, b"")  # 65536 bytes, 32768 chars


def test_headers_length_limit() -> None:
    with pytest.raises(ValueError, match="headers too long"):
        encode_request_frame("p", {"k": "v" * MAX_HEADERS_SIZE}, b"")
    fits = {"k": "v" * (MAX_HEADERS_SIZE - len('{"k":""}'))}
    assert len(encode_headers(fits)) == MAX_HEADERS_SIZE
    assert decode_one(encode_request_frame("p", fits, b"")).headers == fits


@pytest.mark.parametrize(
    "headers",
    [{"k": 1}, {1: "v"}, {"k": None}, {"k": b"v"}, {b"k": "v"}, {"a": "b", "k": ["v"]}],
)
def test_non_str_headers_type_error(headers: Any) -> None:
    with pytest.raises(TypeError, match="must be str"):
        encode_request_frame("p", headers, b"")
    with pytest.raises(TypeError, match="must be str"):
        encode_headers(headers)


def test_frame_over_max_frame_size() -> None:
    with pytest.raises(FrameTooLarge):
        encode_request_frame("p", None, b"x" * DEFAULT_MAX_FRAME_SIZE)
    with pytest.raises(FrameTooLarge, match="exceeds limit 16"):
        encode_request_frame("p", None, b"x" * 6, max_frame_size=16)  # 8 + 1 + 2 + 6 == 17
    assert encode_request_frame("p", None, b"x" * 5, max_frame_size=16)


def test_encode_headers_empty_and_none() -> None:
    assert encode_headers(None) == b"{}"
    assert encode_headers({}) == b"{}"
    assert encode_headers({"a": "b"}) == b'{"a":"b"}'


@pytest.mark.parametrize("text", [b"", b"Server overloaded: busy"])
def test_decode_ack_takes_exactly_one_frame(text: bytes) -> None:
    assert decode_ack(encode_ack(text)) == text


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00\x00", ProtocolError),
        (b"\x00\x00\x00\x05abc", ProtocolError),
        (encode_ack(b"a") + encode_ack(b"b"), ProtocolError),
        (b"\xff\xff\xff\xff", FrameTooLarge),
    ],
)
def test_decode_ack_refuses_anything_else(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_ack(data)
