"""Sans-io tests of the control message and the call-home handshake (spec sections 3 and 5)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioplane import ProtocolError
from trioplane.wire.control import (
    CallHomeInfo,
    ControlMessage,
    decode_handshake,
    encode_control,
    encode_handshake,
    encode_request_payload,
)
from trioplane.wire.twopart import TwoPartMessage, decode_two_part, encode_two_part

REQUEST_ID = "5b0c4c4e-2f4b-4b6e-9d7e-3f7f0a1b2c3d"
SUBJECT = "0e6a3d4f-8c1b-4a2d-9e5f-6a7b8c9d0e1f"

#: The control message example of spec section 3, placeholders filled in.
SPEC_EXAMPLE = (
    "{"
    f'"id":"{REQUEST_ID}",'
    '"request_type":"single_in",'
    '"response_type":"many_out",'
    '"payload_codec":"msgpack",'
    '"connection_info":{"transport":"tcp_server",'
    f'"info":"{{\\"address\\":\\"127.0.0.1:45165\\",\\"subject\\":\\"{SUBJECT}\\",'
    f'\\"context\\":\\"{REQUEST_ID}\\",\\"stream_type\\":\\"response\\"}}"}},'
    '"metadata":{"k1":"v1"},'
    '"frontend_send_ts_ns":1795606855393812576'
    "}"
).encode()


def spec_example_obj() -> dict[str, Any]:
    obj = json.loads(SPEC_EXAMPLE)
    assert isinstance(obj, dict)
    return obj


def dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


# --- test vectors -----------------------------------------------------------------------------


def test_spec_example_decodes() -> None:
    message = ControlMessage.decode(SPEC_EXAMPLE)
    assert message.id == REQUEST_ID
    assert message.call_home == CallHomeInfo(
        address="127.0.0.1:45165", subject=SUBJECT, context=REQUEST_ID, stream_type="response"
    )
    assert message.call_home.address == "127.0.0.1:45165"
    assert message.payload_codec == "msgpack"
    assert dict(message.metadata) == {"k1": "v1"}
    assert message.frontend_send_ts_ns == 1795606855393812576
    assert message.request_type == "single_in"
    assert message.response_type == "many_out"
    assert message.transport == "tcp_server"


def test_spec_example_encodes_byte_exact() -> None:
    message = ControlMessage(
        id=REQUEST_ID,
        call_home=CallHomeInfo(address="127.0.0.1:45165", subject=SUBJECT, context=REQUEST_ID),
        payload_codec="msgpack",
        metadata={"k1": "v1"},
        frontend_send_ts_ns=1795606855393812576,
    )
    encoded = message.encode()
    assert encoded == SPEC_EXAMPLE
    assert b" " not in encoded  # compact
    obj = json.loads(encoded)
    info = obj["connection_info"]["info"]
    assert isinstance(info, str)  # a JSON string inside the JSON
    assert json.loads(info) == {
        "address": "127.0.0.1:45165",
        "subject": SUBJECT,
        "context": REQUEST_ID,
        "stream_type": "response",
    }
    assert list(obj) == [
        "id",
        "request_type",
        "response_type",
        "payload_codec",
        "connection_info",
        "metadata",
        "frontend_send_ts_ns",
    ]


def test_optional_keys_omitted_when_unset() -> None:
    message = ControlMessage(
        id="r", call_home=CallHomeInfo(address="h:1", subject="s", context="r")
    )
    assert message.encode() == (
        b'{"id":"r","request_type":"single_in","response_type":"many_out",'
        b'"connection_info":{"transport":"tcp_server","info":'
        b'"{\\"address\\":\\"h:1\\",\\"subject\\":\\"s\\",\\"context\\":\\"r\\",'
        b'\\"stream_type\\":\\"response\\"}"}}'
    )
    decoded = ControlMessage.decode(message.encode())
    assert decoded == message
    assert decoded.payload_codec is None
    assert decoded.frontend_send_ts_ns is None
    assert dict(decoded.metadata) == {}


def test_non_ascii_is_raw_utf8() -> None:
    message = ControlMessage(
        id="r",
        call_home=CallHomeInfo(address="h:1", subject="s", context="r"),
        metadata={"k": "caf\u00e9"},
    )
    assert '"metadata":{"k":"caf\u00e9"}'.encode() in message.encode()


def test_request_payload_is_two_part_of_control_and_body() -> None:
    message = ControlMessage.decode(SPEC_EXAMPLE)
    body = bytes.fromhex("82a16e02a36d7367a26869")
    payload = encode_request_payload(message, body)
    assert payload == encode_two_part(message.encode(), body)
    part = decode_two_part(payload)
    assert part == TwoPartMessage(header=SPEC_EXAMPLE, body=body)
    assert ControlMessage.decode(part.header) == message


def test_handshake_vector_and_round_trip() -> None:
    frame = encode_handshake(SUBJECT)
    header = f'{{"subject":"{SUBJECT}","stream_type":"response"}}'.encode()
    assert frame == encode_two_part(header)
    part = decode_two_part(frame)
    assert part.body == b""
    assert part.header == header
    assert decode_handshake(part.header) == SUBJECT


@pytest.mark.parametrize(
    "header",
    [b'"sentinel"', b'{"error":null}', b'{"subject":1}', b"[]", b"garbage", b"\xff", b""],
)
def test_decode_handshake_rejects_malformed(header: bytes) -> None:
    with pytest.raises(ProtocolError, match="handshake"):
        decode_handshake(header)


# --- properties -------------------------------------------------------------------------------


@st.composite
def control_messages(draw: st.DrawFn) -> ControlMessage:
    request_id = draw(st.text(max_size=40))
    return ControlMessage(
        id=request_id,
        call_home=CallHomeInfo(
            address=draw(st.text(max_size=30)),
            subject=draw(st.text(max_size=40)),
            context=request_id,
            stream_type=draw(st.sampled_from(["response"]) | st.text(max_size=10)),
        ),
        payload_codec=draw(st.none() | st.sampled_from(["json", "msgpack"]) | st.text(max_size=8)),
        metadata=draw(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4)),
        frontend_send_ts_ns=draw(st.none() | st.integers(0, 2**64 - 1)),
        request_type=draw(st.sampled_from(["single_in", "many_in"]) | st.text(max_size=10)),
        response_type=draw(st.sampled_from(["many_out", "single_out"]) | st.text(max_size=10)),
        transport=draw(st.sampled_from(["tcp_server"]) | st.text(max_size=10)),
    )


@settings(max_examples=200)
@given(message=control_messages())
def test_control_message_round_trip(message: ControlMessage) -> None:
    encoded = message.encode()
    assert ControlMessage.decode(encoded) == message
    obj = json.loads(encoded)
    assert obj["connection_info"]["info"] == message.call_home.encode()
    assert CallHomeInfo.decode(obj["connection_info"]["info"]) == message.call_home


def reference_encoding(message: ControlMessage) -> bytes:
    """The control message as ``json.dumps`` writes it (compact, UTF-8, Dynamo's key
    order): what the string-built encoder must match byte for byte."""
    home = message.call_home
    info = {"address": home.address, "subject": home.subject, "context": home.context,
            "stream_type": home.stream_type}  # fmt: skip
    obj: dict[str, Any] = {"id": message.id, "request_type": message.request_type,
                           "response_type": message.response_type}  # fmt: skip
    if message.payload_codec is not None:
        obj["payload_codec"] = message.payload_codec
    compact = {"separators": (",", ":"), "ensure_ascii": False}
    obj["connection_info"] = {"transport": message.transport,
                              "info": json.dumps(info, **compact)}  # type: ignore[arg-type]  # fmt: skip
    if message.metadata:
        obj["metadata"] = dict(message.metadata)
    if message.frontend_send_ts_ns is not None:
        obj["frontend_send_ts_ns"] = message.frontend_send_ts_ns
    return json.dumps(obj, **compact).encode()  # type: ignore[arg-type]


@settings(max_examples=300)
@given(message=control_messages())
def test_the_string_built_encoding_is_json_dumps_byte_for_byte(message: ControlMessage) -> None:
    assert message.encode() == reference_encoding(message)
    home = message.call_home
    fast = encode_control(
        message.id,
        home.address,
        home.subject,
        payload_codec=message.payload_codec,
        metadata=message.metadata,
        frontend_send_ts_ns=message.frontend_send_ts_ns,
        context=home.context,
        stream_type=home.stream_type,
        request_type=message.request_type,
        response_type=message.response_type,
        transport=message.transport,
    )
    assert fast == reference_encoding(message)


def test_encode_control_defaults_are_a_calls() -> None:
    encoded = encode_control("r-1", "127.0.0.1:5", "s-1", payload_codec="msgpack")
    assert ControlMessage.decode(encoded) == ControlMessage(
        id="r-1", call_home=CallHomeInfo("127.0.0.1:5", "s-1", "r-1"), payload_codec="msgpack"
    )


@settings(max_examples=150)
@given(message=control_messages(), body=st.binary(max_size=100))
def test_request_payload_round_trip(message: ControlMessage, body: bytes) -> None:
    part = decode_two_part(encode_request_payload(message, body))
    assert part.body == body
    assert ControlMessage.decode(part.header) == message


@settings(max_examples=150)
@given(subject=st.text(max_size=60))
def test_handshake_round_trip(subject: str) -> None:
    part = decode_two_part(encode_handshake(subject))
    assert part.body == b""
    assert json.loads(part.header) == {"subject": subject, "stream_type": "response"}
    assert decode_handshake(part.header) == subject


@settings(max_examples=150)
@given(data=st.binary(max_size=200))
def test_garbage_control_message_is_protocol_error(data: bytes) -> None:
    try:
        message = ControlMessage.decode(data)
    except ProtocolError:
        return
    assert message.call_home.context == message.id


# --- bad control messages ---------------------------------------------------------------------


def _without(key: str) -> bytes:
    obj = spec_example_obj()
    del obj[key]
    return dumps(obj)


def _with(key: str, value: object) -> bytes:
    obj = spec_example_obj()
    obj[key] = value
    return dumps(obj)


def _with_conn(key: str, value: object) -> bytes:
    obj = spec_example_obj()
    if value is ...:
        del obj["connection_info"][key]
    else:
        obj["connection_info"][key] = value
    return dumps(obj)


def _with_info(key: str, value: object) -> bytes:
    obj = spec_example_obj()
    info = json.loads(obj["connection_info"]["info"])
    if value is ...:
        del info[key]
    else:
        info[key] = value
    obj["connection_info"]["info"] = json.dumps(info)
    return dumps(obj)


BAD_CONTROL_MESSAGES = {
    "not json": b"not json",
    "empty": b"",
    "bad utf-8": b'{"id":"\xff"}',
    "truncated": SPEC_EXAMPLE[:-1],
    "array": b"[]",
    "string": b'"sentinel"',
    "missing id": _without("id"),
    "int id": _with("id", 7),
    "missing connection_info": _without("connection_info"),
    "connection_info string": _with("connection_info", "tcp_server"),
    "missing info": _with_conn("info", ...),
    "info object not string": _with_conn("info", {"address": "a"}),
    "info not json": _with_conn("info", "{not json"),
    "info array": _with_conn("info", "[]"),
    "missing transport": _with_conn("transport", ...),
    "missing address": _with_info("address", ...),
    "missing subject": _with_info("subject", ...),
    "missing context": _with_info("context", ...),
    "int address": _with_info("address", 45165),
    "context != id": _with_info("context", "another-request"),
    "missing request_type": _without("request_type"),
    "missing response_type": _without("response_type"),
    "metadata list": _with("metadata", ["k1", "v1"]),
    "metadata int value": _with("metadata", {"k1": 1}),
    "payload_codec int": _with("payload_codec", 1),
    "ts string": _with("frontend_send_ts_ns", "1795606855393812576"),
    "ts float": _with("frontend_send_ts_ns", 1.5),
    "ts bool": _with("frontend_send_ts_ns", True),
}


@pytest.mark.parametrize("data", BAD_CONTROL_MESSAGES.values(), ids=BAD_CONTROL_MESSAGES.keys())
def test_bad_control_message(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ControlMessage.decode(data)


def test_context_mismatch_message() -> None:
    with pytest.raises(ProtocolError, match="context does not match"):
        ControlMessage.decode(_with_info("context", "another-request"))


def test_optional_fields_may_be_absent_or_null() -> None:
    obj = spec_example_obj()
    for key in ("payload_codec", "metadata", "frontend_send_ts_ns"):
        del obj[key]
    obj["connection_info"]["info"] = json.dumps(
        {"address": "a:1", "subject": "s", "context": REQUEST_ID}
    )
    message = ControlMessage.decode(dumps(obj))
    assert message.payload_codec is None
    assert dict(message.metadata) == {}
    assert message.frontend_send_ts_ns is None
    assert message.call_home.stream_type == "response"
    nulls = spec_example_obj()
    nulls.update(payload_codec=None, metadata=None, frontend_send_ts_ns=None)
    message = ControlMessage.decode(dumps(nulls))
    assert (message.payload_codec, dict(message.metadata), message.frontend_send_ts_ns) == (
        None,
        {},
        None,
    )


def test_non_string_stream_type_is_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        ControlMessage.decode(_with_info("stream_type", 5))


@pytest.mark.parametrize("decode", [ControlMessage.decode, decode_handshake])
def test_deeply_nested_json_is_protocol_error(decode: Any) -> None:
    with pytest.raises(ProtocolError):
        decode(b"[" * 100_000)
