"""Sans-io tests of Dynamo's TwoPart message (spec section 2)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioplane import FrameTooLarge, ProtocolError
from trioplane.wire.twopart import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
    TWO_PART_PREFIX_SIZE,
    TwoPartDecoder,
    TwoPartMessage,
    decode_two_part,
    encode_two_part,
)

from .conftest import split_at

PREFIX = struct.Struct(">QQQ")


messages = st.builds(TwoPartMessage, header=st.binary(max_size=64), body=st.binary(max_size=256))


# --- layout and test vectors ----------------------------------------------------------------


def test_constants_match_spec() -> None:
    assert TWO_PART_PREFIX_SIZE == 24
    assert DEFAULT_MAX_HEADER_SIZE == 128 * 1024
    assert DEFAULT_MAX_BODY_SIZE == 32 * 1024 * 1024


def test_layout_is_three_big_endian_u64_then_header_then_body() -> None:
    data = encode_two_part(b"head", b"body!")
    assert data == (
        b"\x00\x00\x00\x00\x00\x00\x00\x04"
        b"\x00\x00\x00\x00\x00\x00\x00\x05"
        b"\x00\x00\x00\x00\x00\x00\x00\x00"
        b"headbody!"
    )


def test_header_only_message() -> None:
    data = encode_two_part(b'{"error":null}')
    assert data == PREFIX.pack(14, 0, 0) + b'{"error":null}'
    assert decode_two_part(data) == TwoPartMessage(header=b'{"error":null}', body=b"")


def test_body_only_message() -> None:
    data = encode_two_part(body=b'{"complete_final":true}')
    assert data == PREFIX.pack(0, 23, 0) + b'{"complete_final":true}'
    assert decode_two_part(data) == TwoPartMessage(header=b"", body=b'{"complete_final":true}')


def test_empty_message() -> None:
    assert encode_two_part() == b"\x00" * 24
    assert decode_two_part(b"\x00" * 24) == TwoPartMessage()


def test_sentinel_is_header_only_json_string() -> None:
    data = encode_two_part(b'"sentinel"')
    assert data == bytes.fromhex("000000000000000a" + "00" * 16) + b'"sentinel"'
    message = decode_two_part(data)
    assert message.header == b'"sentinel"'
    assert message.body == b""


def test_nonzero_checksum_is_accepted_and_reported() -> None:
    data = PREFIX.pack(1, 2, 0xDEADBEEFCAFEF00D) + b"hbb"
    assert decode_two_part(data) == TwoPartMessage(b"h", b"bb", checksum=0xDEADBEEFCAFEF00D)


# --- round trips and arbitrary chunking -------------------------------------------------------


@settings(max_examples=200)
@given(header=st.binary(max_size=300), body=st.binary(max_size=300))
def test_round_trip(header: bytes, body: bytes) -> None:
    data = encode_two_part(header, body)
    assert len(data) == 24 + len(header) + len(body)
    assert PREFIX.unpack_from(data) == (len(header), len(body), 0)
    assert decode_two_part(data) == TwoPartMessage(header, body, 0)


@settings(max_examples=200)
@given(msgs=st.lists(messages, max_size=8), data=st.data())
def test_arbitrary_chunking(msgs: list[TwoPartMessage], data: st.DataObject) -> None:
    frames = [encode_two_part(m.header, m.body) for m in msgs]
    blob = b"".join(frames)
    ends = []
    offset = 0
    for frame in frames:
        offset += len(frame)
        ends.append(offset)
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20), label="cuts")
    wrap = data.draw(st.sampled_from([bytes, bytearray, memoryview]), label="chunk type")

    decoder = TwoPartDecoder()
    decoded: list[TwoPartMessage] = []
    fed = 0
    for chunk in split_at(blob, cuts):
        decoder.feed(wrap(chunk))
        fed += len(chunk)
        decoded.extend(decoder.messages())
        # exactly the messages complete in the bytes fed so far, no sooner
        assert len(decoded) == sum(1 for end in ends if end <= fed)
        assert decoder.buffered == fed - max([0, *(e for e in ends if e <= fed)])
    assert decoded == msgs
    decoder.check_eof()
    assert decoder.buffered == 0


# --- truncation -------------------------------------------------------------------------------


@settings(max_examples=150)
@given(message=messages, data=st.data())
def test_truncated_message(message: TwoPartMessage, data: st.DataObject) -> None:
    frame = encode_two_part(message.header, message.body)
    cut = data.draw(st.integers(1, len(frame) - 1), label="cut")
    with pytest.raises(ProtocolError, match="truncated"):
        decode_two_part(frame[:cut])
    decoder = TwoPartDecoder()
    decoder.feed(frame[:cut])
    assert decoder.next_message() is None
    assert decoder.buffered == cut
    with pytest.raises(ProtocolError, match="stream ended inside"):
        decoder.check_eof()


def test_decode_two_part_empty_input() -> None:
    with pytest.raises(ProtocolError):
        decode_two_part(b"")


def test_check_eof_on_fresh_decoder_passes() -> None:
    decoder = TwoPartDecoder()
    decoder.check_eof()
    assert decoder.next_message() is None


def test_decode_two_part_rejects_trailing_bytes() -> None:
    data = encode_two_part(b"h", b"b")
    with pytest.raises(ProtocolError, match="after the TwoPart message"):
        decode_two_part(data + b"\x00")
    with pytest.raises(ProtocolError):
        decode_two_part(data + data)


def test_check_eof_with_unpulled_complete_message_raises() -> None:
    decoder = TwoPartDecoder()
    decoder.feed(encode_two_part(b"h") + b"\x00")
    assert decoder.next_message() == TwoPartMessage(b"h")
    with pytest.raises(ProtocolError):
        decoder.check_eof()


# --- oversized length fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header_len", "body_len", "match"),
    [
        (2**64 - 1, 0, "header"),
        (DEFAULT_MAX_HEADER_SIZE + 1, 0, "header"),
        (0, 2**64 - 1, "body"),
        (0, DEFAULT_MAX_BODY_SIZE + 1, "body"),
        (2**63, 2**63, "header"),
    ],
)
def test_oversized_length_rejected_from_prefix_alone(
    header_len: int, body_len: int, match: str
) -> None:
    decoder = TwoPartDecoder()
    decoder.feed(PREFIX.pack(header_len, body_len, 0))  # only the 24-byte prefix
    with pytest.raises(FrameTooLarge, match=match):
        decoder.next_message()


def test_oversized_rejected_by_decode_two_part() -> None:
    with pytest.raises(FrameTooLarge):
        decode_two_part(PREFIX.pack(2**64 - 1, 0, 0))
    with pytest.raises(FrameTooLarge):
        decode_two_part(PREFIX.pack(0, 2**64 - 1, 0))


def test_limits_at_default_boundary_wait_for_bytes() -> None:
    decoder = TwoPartDecoder()
    decoder.feed(PREFIX.pack(DEFAULT_MAX_HEADER_SIZE, DEFAULT_MAX_BODY_SIZE, 0))
    assert decoder.next_message() is None  # allowed, just incomplete


def test_custom_limits_honoured() -> None:
    ok = encode_two_part(b"h" * 16, b"b" * 32)
    decoder = TwoPartDecoder(max_header_size=16, max_body_size=32)
    decoder.feed(ok)
    assert decoder.next_message() == TwoPartMessage(b"h" * 16, b"b" * 32)
    assert decode_two_part(ok, max_header_size=16, max_body_size=32).body == b"b" * 32

    decoder = TwoPartDecoder(max_header_size=16, max_body_size=32)
    decoder.feed(PREFIX.pack(17, 0, 0))
    with pytest.raises(FrameTooLarge, match="header of 17 bytes"):
        decoder.next_message()

    decoder = TwoPartDecoder(max_header_size=16, max_body_size=32)
    decoder.feed(PREFIX.pack(0, 33, 0))
    with pytest.raises(FrameTooLarge, match="body of 33 bytes"):
        decoder.next_message()

    with pytest.raises(FrameTooLarge):
        decode_two_part(encode_two_part(b"h" * 17), max_header_size=16)
    with pytest.raises(FrameTooLarge):
        decode_two_part(encode_two_part(body=b"b" * 33), max_body_size=32)


# --- poisoning and garbage --------------------------------------------------------------------


def test_decoder_stays_poisoned() -> None:
    decoder = TwoPartDecoder(max_header_size=4)
    decoder.feed(PREFIX.pack(5, 0, 0) + b"12345")
    with pytest.raises(FrameTooLarge) as first:
        decoder.next_message()
    decoder.feed(encode_two_part(b"ok"))
    with pytest.raises(FrameTooLarge) as second:
        decoder.next_message()
    assert second.value is first.value
    with pytest.raises(FrameTooLarge):
        list(decoder.messages())


@settings(max_examples=200)
@given(chunks=st.lists(st.binary(max_size=64), max_size=8))
def test_garbage_yields_messages_or_protocol_error(chunks: list[bytes]) -> None:
    decoder = TwoPartDecoder(max_header_size=256, max_body_size=256)
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            for message in decoder.messages():
                assert len(message.header) <= 256
                assert len(message.body) <= 256
    except ProtocolError:
        with pytest.raises(ProtocolError):
            decoder.next_message()
