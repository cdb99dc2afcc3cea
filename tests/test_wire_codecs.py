"""Sans-io tests of the payload codecs (spec section 3: ``payload_codec``)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioplane import ProtocolError
from trioplane.wire.codecs import JSON, MSGPACK, CodecError, PayloadCodec, get_codec

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)


def nested(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and string-keyed maps of ``scalars``, a few levels deep."""
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=20,
    )


json_values = nested(json_scalars)
msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
msgpack_values = nested(msgpack_scalars)


# --- registry ---------------------------------------------------------------------------------


def test_get_codec() -> None:
    assert get_codec(None) is JSON
    assert get_codec("json") is JSON
    assert get_codec("msgpack") is MSGPACK
    assert JSON.name == "json"
    assert MSGPACK.name == "msgpack"


@pytest.mark.parametrize("name", ["bogus", "JSON", "MsgPack", "", "msgpack "])
def test_get_codec_unknown(name: str) -> None:
    with pytest.raises(ValueError, match="unknown payload codec"):
        get_codec(name)


def test_codec_error_is_protocol_error() -> None:
    assert issubclass(CodecError, ProtocolError)
    assert not issubclass(CodecError, ValueError)


# --- test vectors -----------------------------------------------------------------------------


def test_msgpack_spec_vector() -> None:
    expected = bytes.fromhex("82a16e02a36d7367a26869")
    assert MSGPACK.encode({"n": 2, "msg": "hi"}) == expected
    assert MSGPACK.decode(expected) == {"n": 2, "msg": "hi"}


@pytest.mark.parametrize(
    ("obj", "hex_bytes"),
    [
        (2, "02"),
        (-1, "ff"),
        (300, "cd012c"),
        (2**32, "cf0000000100000000"),
        (None, "c0"),
        (True, "c3"),
        ("a", "a161"),  # str as str
        (b"a", "c40161"),  # bytes as bin
        ([1, "x"], "9201a178"),
        (1.5, "cb3ff8000000000000"),
    ],
)
def test_msgpack_named_smallest_encodings(obj: Any, hex_bytes: str) -> None:
    assert MSGPACK.encode(obj) == bytes.fromhex(hex_bytes)
    assert MSGPACK.decode(bytes.fromhex(hex_bytes)) == obj


def test_msgpack_decodes_str_as_str_and_bin_as_bytes() -> None:
    decoded = MSGPACK.decode(bytes.fromhex("82a173a178a162c40178"))
    assert decoded == {"s": "x", "b": b"x"}
    assert type(decoded["s"]) is str
    assert type(decoded["b"]) is bytes


def test_json_is_compact_utf8() -> None:
    assert JSON.encode({"n": 2, "msg": "hi"}) == b'{"n":2,"msg":"hi"}'
    assert JSON.encode({"a": [1, 2.5, None, True]}) == b'{"a":[1,2.5,null,true]}'
    assert JSON.encode("caf\u00e9") == '"caf\u00e9"'.encode()
    assert JSON.decode(b'{"n":2,"msg":"hi"}') == {"n": 2, "msg": "hi"}
    assert JSON.decode('"caf\u00e9"'.encode()) == "caf\u00e9"


# --- round trips ------------------------------------------------------------------------------


@settings(max_examples=200)
@given(obj=json_values)
def test_json_round_trip(obj: Any) -> None:
    data = JSON.encode(obj)
    assert isinstance(data, bytes)
    data.decode("utf-8")  # always valid UTF-8
    assert JSON.decode(data) == obj


@settings(max_examples=200)
@given(obj=msgpack_values)
def test_msgpack_round_trip(obj: Any) -> None:
    data = MSGPACK.encode(obj)
    assert isinstance(data, bytes)
    assert MSGPACK.decode(data) == obj
    assert data == msgpack.packb(obj, use_bin_type=True)


# --- undecodable input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"{", b"[1,]", b"{'a':1}", b"\xff", b"1 2", b'{"a":1}x', b"\xc3\x28"]
)
def test_json_undecodable(data: bytes) -> None:
    with pytest.raises(CodecError, match="not valid JSON"):
        JSON.decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used
        b"\x92\x01",  # truncated array
        b"\x01\x02",  # extra data
        b"\xa1\xff",  # str that is not UTF-8
        b"\x81\x91\x01\x01",  # array as map key
        b"\xdd\xff\xff\xff\xff",  # array32 of 2**32-1 items, nothing follows
        b"\xc7\x01\xff\x00",  # timestamp ext of bad length
        b"\x91" * 100_000,  # nesting too deep
    ],
)
def test_msgpack_undecodable(data: bytes) -> None:
    with pytest.raises(CodecError, match="not valid msgpack"):
        MSGPACK.decode(data)


@settings(max_examples=200)
@given(data=st.binary(max_size=100), codec=st.sampled_from([JSON, MSGPACK]))
def test_garbage_decodes_or_codec_error(data: bytes, codec: PayloadCodec) -> None:
    with contextlib.suppress(CodecError):
        codec.decode(data)  # any other exception fails the test


def test_json_deeply_nested_is_codec_error() -> None:
    with pytest.raises(CodecError):
        JSON.decode(b"[" * 100_000)


# --- unencodable objects ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [{1, 2}, float("nan"), float("inf"), -math.inf, object(), b"bytes", {"a": {1}}, [1, 2j]],
)
def test_json_unencodable(obj: Any) -> None:
    with pytest.raises(ValueError, match="json codec cannot encode"):
        JSON.encode(obj)


def test_json_circular_unencodable() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="json codec cannot encode"):
        JSON.encode(loop)


@pytest.mark.parametrize("obj", [{1, 2}, object(), 2**64, -(2**63) - 1, {"a": frozenset()}, 1j])
def test_msgpack_unencodable(obj: Any) -> None:
    with pytest.raises(ValueError, match="msgpack codec cannot encode"):
        MSGPACK.encode(obj)
