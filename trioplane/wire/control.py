"""The control message (header of every request payload) and the call-home handshake.

The control message tells the worker where to call home: ``connection_info.info``
is a JSON *string* inside the JSON, whose ``context`` must equal the request ``id``.
The worker, connecting back, sends the handshake ``{"subject":..,"stream_type":"response"}``
as a header-only TwoPart message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _quote
from typing import Any

from trioplane._errors import ProtocolError
from trioplane.wire._json import dump_json, dump_str_map, load_json
from trioplane.wire.twopart import encode_two_part

__all__ = [
    "CallHomeInfo",
    "ControlMessage",
    "encode_control",
    "decode_handshake",
    "encode_handshake",
    "encode_request_payload",
]


def _load_object(data: bytes | str, what: str) -> dict[str, Any]:
    obj = load_json(data, what)
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return obj


def _get_str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{what} needs a string {key!r}")
    return value


@dataclass(frozen=True)
class CallHomeInfo:
    """Where the worker calls home: the caller's listener and the stream's subject."""

    address: str
    subject: str
    context: str
    stream_type: str = "response"

    def encode(self) -> str:
        return _info_json(self.address, self.subject, self.context, self.stream_type)

    @classmethod
    def decode(cls, data: str) -> CallHomeInfo:
        obj = _load_object(data, "connection_info.info")
        return cls(
            address=_get_str(obj, "address", "connection_info.info"),
            subject=_get_str(obj, "subject", "connection_info.info"),
            context=_get_str(obj, "context", "connection_info.info"),
            stream_type=_get_str(obj, "stream_type", "connection_info.info")
            if "stream_type" in obj
            else "response",
        )


@dataclass(frozen=True)
class ControlMessage:
    """Dynamo's ``RequestControlMessage`` for a ``single_in``/``many_out`` call."""

    id: str
    call_home: CallHomeInfo
    payload_codec: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    frontend_send_ts_ns: int | None = None
    request_type: str = "single_in"
    response_type: str = "many_out"
    transport: str = "tcp_server"

    def encode(self) -> bytes:
        """Compact JSON, keys in Dynamo's order; optional keys only when set."""
        home = self.call_home
        return encode_control(
            self.id,
            home.address,
            home.subject,
            payload_codec=self.payload_codec,
            metadata=self.metadata,
            frontend_send_ts_ns=self.frontend_send_ts_ns,
            context=home.context,
            stream_type=home.stream_type,
            request_type=self.request_type,
            response_type=self.response_type,
            transport=self.transport,
        )

    @classmethod
    def decode(cls, data: bytes) -> ControlMessage:
        """Parse and validate (``context`` must equal ``id``, as Dynamo's worker checks)."""
        obj = _load_object(data, "control message")
        request_id = _get_str(obj, "id", "control message")
        conn = obj.get("connection_info")
        if not isinstance(conn, dict):
            raise ProtocolError("control message needs a 'connection_info' object")
        call_home = CallHomeInfo.decode(_get_str(conn, "info", "connection_info"))
        if call_home.context != request_id:
            raise ProtocolError("connection_info context does not match the request id")
        metadata = obj.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise ProtocolError("control message metadata must map strings to strings")
        codec = obj.get("payload_codec")
        if codec is not None and not isinstance(codec, str):
            raise ProtocolError("payload_codec must be a string")
        ts = obj.get("frontend_send_ts_ns")
        if ts is not None and (not isinstance(ts, int) or isinstance(ts, bool)):
            raise ProtocolError("frontend_send_ts_ns must be an integer")
        return cls(
            id=request_id,
            call_home=call_home,
            payload_codec=codec,
            metadata=metadata,
            frontend_send_ts_ns=ts,
            request_type=_get_str(obj, "request_type", "control message"),
            response_type=_get_str(obj, "response_type", "control message"),
            transport=_get_str(conn, "transport", "connection_info"),
        )


def _info_json(address: str, subject: str, context: str, stream_type: str) -> str:
    return (
        f'{{"address":{_quote(address)},"subject":{_quote(subject)},'
        f'"context":{_quote(context)},"stream_type":{_quote(stream_type)}}}'
    )


def encode_control(
    request_id: str,
    address: str,
    subject: str,
    *,
    payload_codec: str | None = None,
    metadata: Mapping[str, str] | None = None,
    frontend_send_ts_ns: int | None = None,
    context: str | None = None,
    stream_type: str = "response",
    request_type: str = "single_in",
    response_type: str = "many_out",
    transport: str = "tcp_server",
) -> bytes:
    """:meth:`ControlMessage.encode`'s bytes without building the objects (the client's
    hot path): the same JSON as :func:`~trioplane.wire._json.dump_json` writes.
    ``context`` defaults to ``request_id``, as a call's must be."""
    info = _info_json(address, subject, request_id if context is None else context, stream_type)
    parts = [
        f'{{"id":{_quote(request_id)},"request_type":{_quote(request_type)},'
        f'"response_type":{_quote(response_type)}'
    ]
    if payload_codec is not None:
        parts.append(f',"payload_codec":{_quote(payload_codec)}')
    parts.append(f',"connection_info":{{"transport":{_quote(transport)},"info":{_quote(info)}}}')
    if metadata:
        parts.append(',"metadata":' + dump_str_map(metadata).decode())
    if frontend_send_ts_ns is not None:
        parts.append(f',"frontend_send_ts_ns":{int(frontend_send_ts_ns)}')
    parts.append("}")
    return "".join(parts).encode()


def encode_request_payload(control: ControlMessage, body: bytes) -> bytes:
    """The request-plane payload: a TwoPart message of the control message and the body."""
    return encode_two_part(control.encode(), body)


def encode_handshake(subject: str) -> bytes:
    """The worker's first call-home frame (header-only TwoPart)."""
    return encode_two_part(dump_json({"subject": subject, "stream_type": "response"}))


def decode_handshake(header: bytes) -> str:
    """The subject of a call-home handshake header; :class:`ProtocolError` if malformed."""
    obj = _load_object(header, "call-home handshake")
    if obj.get("stream_type", "response") != "response":
        raise ProtocolError(f"call-home handshake for a {obj['stream_type']!r} stream")
    return _get_str(obj, "subject", "call-home handshake")
