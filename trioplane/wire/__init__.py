"""Sans-io codecs for Dynamo's wire: bytes in, frames out; no Trio, no sockets, no clocks."""

from trioplane.wire.codecs import JSON, MSGPACK, CodecError, PayloadCodec, get_codec
from trioplane.wire.control import (
    CallHomeInfo,
    ControlMessage,
    decode_handshake,
    encode_handshake,
    encode_request_payload,
)
from trioplane.wire.tcp import (
    ACK_ACCEPTED,
    DEFAULT_MAX_FRAME_SIZE,
    AckDecoder,
    RequestFrame,
    RequestFrameDecoder,
    encode_ack,
    encode_request_frame,
)
from trioplane.wire.twopart import (
    TwoPartDecoder,
    TwoPartMessage,
    decode_two_part,
    encode_two_part,
)

__all__ = [
    "ACK_ACCEPTED",
    "DEFAULT_MAX_FRAME_SIZE",
    "JSON",
    "MSGPACK",
    "AckDecoder",
    "CallHomeInfo",
    "CodecError",
    "ControlMessage",
    "PayloadCodec",
    "RequestFrame",
    "RequestFrameDecoder",
    "TwoPartDecoder",
    "TwoPartMessage",
    "decode_handshake",
    "decode_two_part",
    "encode_ack",
    "encode_handshake",
    "encode_request_frame",
    "encode_request_payload",
    "encode_two_part",
    "get_codec",
]
