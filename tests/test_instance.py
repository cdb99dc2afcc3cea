"""Tests of :class:`trioplane.Instance`, Dynamo's instance record (spec section 6)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioplane import Instance, ProtocolError

#: Observed from ai-dynamo-runtime 1.6.1: Dynamo's own key order, compact.
OBSERVED_1_6_1 = (
    b'{"type":"Endpoint","component":"comp","endpoint":"ep","namespace":"ns",'
    b'"instance_id":8182488487774748947,'
    b'"transport":{"tcp":"127.0.0.1:42663/718e09ed4c898113/ns/comp/ep"},'
    b'"device_type":"cuda","request_plane_codec":"msgpack"}'
)

#: The example of spec section 6 (different key order, with spaces).
SPEC_EXAMPLE = """
{"type":"Endpoint","namespace":"interop","component":"echo","endpoint":"generate",
 "instance_id":14134356802367817066,
 "transport":{"tcp":"127.0.0.1:29100/c427529fedc2856a/interop/echo/generate"},
 "device_type":"cuda","request_plane_codec":"msgpack"}
"""


def record(**overrides: Any) -> dict[str, Any]:
    obj = json.loads(OBSERVED_1_6_1)
    assert isinstance(obj, dict)
    for key, value in overrides.items():
        if value is ...:
            del obj[key]
        else:
            obj[key] = value
    return obj


# --- test vectors -----------------------------------------------------------------------------


def test_observed_1_6_1_record_round_trips_byte_exact() -> None:
    instance = Instance.from_json(OBSERVED_1_6_1)
    assert instance == Instance(
        namespace="ns",
        component="comp",
        endpoint="ep",
        instance_id=8182488487774748947,
        transport_kind="tcp",
        address="127.0.0.1:42663/718e09ed4c898113/ns/comp/ep",
        device_type="cuda",
        request_plane_codec="msgpack",
    )
    assert instance.to_json() == OBSERVED_1_6_1


def test_spec_example_parses_and_reencodes() -> None:
    instance = Instance.from_json(SPEC_EXAMPLE)
    assert instance == Instance(
        namespace="interop",
        component="echo",
        endpoint="generate",
        instance_id=14134356802367817066,
        transport_kind="tcp",
        address="127.0.0.1:29100/c427529fedc2856a/interop/echo/generate",
        device_type="cuda",
        request_plane_codec="msgpack",
    )
    assert f"{instance.instance_id:x}" == "c427529fedc2856a"
    assert instance.endpoint_path == "interop.echo.generate"
    encoded = instance.to_json()
    assert json.loads(encoded) == json.loads(SPEC_EXAMPLE)
    assert encoded == (
        b'{"type":"Endpoint","component":"echo","endpoint":"generate","namespace":"interop",'
        b'"instance_id":14134356802367817066,'
        b'"transport":{"tcp":"127.0.0.1:29100/c427529fedc2856a/interop/echo/generate"},'
        b'"device_type":"cuda","request_plane_codec":"msgpack"}'
    )
    assert Instance.from_json(encoded) == instance


def test_from_json_accepts_str_bytes_and_mapping() -> None:
    expected = Instance.from_json(OBSERVED_1_6_1)
    assert Instance.from_json(OBSERVED_1_6_1.decode()) == expected
    assert Instance.from_json(record()) == expected


def test_optional_fields_absent() -> None:
    instance = Instance.from_json(record(device_type=..., request_plane_codec=...))
    assert instance.device_type is None
    assert instance.request_plane_codec is None
    assert instance.to_json() == (
        b'{"type":"Endpoint","component":"comp","endpoint":"ep","namespace":"ns",'
        b'"instance_id":8182488487774748947,'
        b'"transport":{"tcp":"127.0.0.1:42663/718e09ed4c898113/ns/comp/ep"}}'
    )


@pytest.mark.parametrize(
    ("kind", "address"),
    [
        ("tcp", "tcp://10.0.0.1:1/abc/ns/c/e"),
        ("nats_tcp", "namespace.ns.component.comp.endpoint.ep-718e09ed4c898113"),
        ("http", "http://10.0.0.1:8888/v1/rpc/ns/comp/ep"),
    ],
)
def test_transport_kinds(kind: str, address: str) -> None:
    instance = Instance.from_json(record(transport={kind: address}))
    assert (instance.transport_kind, instance.address) == (kind, address)
    assert json.loads(instance.to_json())["transport"] == {kind: address}


def test_instance_id_bounds() -> None:
    assert Instance.from_json(record(instance_id=0)).instance_id == 0
    assert Instance.from_json(record(instance_id=2**64 - 1)).instance_id == 2**64 - 1


# --- properties -------------------------------------------------------------------------------

instances = st.builds(
    Instance,
    namespace=st.text(max_size=16),
    component=st.text(max_size=16),
    endpoint=st.text(max_size=16),
    instance_id=st.integers(0, 2**64 - 1),
    transport_kind=st.sampled_from(["tcp", "nats_tcp", "http"]),
    address=st.text(max_size=40),
    device_type=st.none() | st.sampled_from(["cuda", "cpu"]) | st.text(max_size=8),
    request_plane_codec=st.none() | st.sampled_from(["json", "msgpack"]),
)


@settings(max_examples=200)
@given(instance=instances)
def test_round_trip(instance: Instance) -> None:
    encoded = instance.to_json()
    assert Instance.from_json(encoded) == instance
    assert Instance.from_json(encoded.decode()) == instance
    obj = json.loads(encoded)
    assert list(obj)[:6] == [
        "type",
        "component",
        "endpoint",
        "namespace",
        "instance_id",
        "transport",
    ]
    assert obj["type"] == "Endpoint"
    assert ("device_type" in obj) == (instance.device_type is not None)
    assert ("request_plane_codec" in obj) == (instance.request_plane_codec is not None)


ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16)


@settings(max_examples=150)
@given(
    instance=st.builds(
        Instance,
        namespace=ascii_text,
        component=ascii_text,
        endpoint=ascii_text,
        instance_id=st.integers(0, 2**64 - 1),
        transport_kind=st.sampled_from(["tcp", "nats_tcp", "http"]),
        address=ascii_text,
        device_type=st.none() | ascii_text,
        request_plane_codec=st.none() | st.sampled_from(["json", "msgpack"]),
    )
)
def test_dynamo_written_ascii_record_round_trips_byte_exact(instance: Instance) -> None:
    obj: dict[str, Any] = {
        "type": "Endpoint",
        "component": instance.component,
        "endpoint": instance.endpoint,
        "namespace": instance.namespace,
        "instance_id": instance.instance_id,
        "transport": {instance.transport_kind: instance.address},
    }
    if instance.device_type is not None:
        obj["device_type"] = instance.device_type
    if instance.request_plane_codec is not None:
        obj["request_plane_codec"] = instance.request_plane_codec
    written = json.dumps(obj, separators=(",", ":")).encode()  # as serde_json writes it
    assert Instance.from_json(written).to_json() == written


def test_non_ascii_record_round_trips_byte_exact() -> None:
    written = (
        '{"type":"Endpoint","component":"\u00e9cho","endpoint":"ep","namespace":"ns",'
        '"instance_id":1,"transport":{"tcp":"127.0.0.1:1/1/ns/\u00e9cho/ep"}}'
    ).encode()
    assert Instance.from_json(written).to_json() == written


# --- malformed records ------------------------------------------------------------------------

BAD_RECORDS: dict[str, str | bytes | dict[str, Any]] = {
    "not json": "not json",
    "bad utf-8": b'{"namespace":"\xff"}',
    "empty": "",
    "array": "[]",
    "string": '"Endpoint"',
    "no transport": record(transport=...),
    "transport string": record(transport="tcp"),
    "transport empty": record(transport={}),
    "transport two keys": record(transport={"tcp": "a", "nats_tcp": "b"}),
    "unknown transport": record(transport={"udp": "a"}),
    "address not string": record(transport={"tcp": 1}),
    "no instance_id": record(instance_id=...),
    "string instance_id": record(instance_id="8182488487774748947"),
    "float instance_id": record(instance_id=1.0),
    "bool instance_id": record(instance_id=True),
    "negative instance_id": record(instance_id=-1),
    "instance_id 2**64": record(instance_id=2**64),
    "no namespace": record(namespace=...),
    "no component": record(component=...),
    "no endpoint": record(endpoint=...),
    "int namespace": record(namespace=1),
    "int device_type": record(device_type=1),
    "list codec": record(request_plane_codec=["msgpack"]),
}


@pytest.mark.parametrize("data", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_malformed_record(data: str | bytes | dict[str, Any]) -> None:
    if isinstance(data, dict):
        with pytest.raises(ProtocolError):
            Instance.from_json(data)
        data = json.dumps(data)
    with pytest.raises(ProtocolError):
        Instance.from_json(data)


def test_deeply_nested_record_is_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        Instance.from_json(b"[" * 100_000)


@settings(max_examples=150)
@given(data=st.binary(max_size=120))
def test_garbage_record_is_protocol_error(data: bytes) -> None:
    try:
        instance = Instance.from_json(data)
    except ProtocolError:
        return
    assert 0 <= instance.instance_id < 2**64
