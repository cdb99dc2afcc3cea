"""Payload codecs: how request bodies and response items are encoded.

Dynamo's ``payload_codec`` is ``"json"`` (compact UTF-8, as serde_json writes it)
or ``"msgpack"`` ("named" msgpack: maps with string keys, smallest integer
encodings, str as str and bytes as bin).
"""

from __future__ import annotations

from typing import Any, Protocol

import msgpack

from trioplane._errors import BadArgument, ProtocolError
from trioplane.wire._json import dump_json, load_json

__all__ = ["JSON", "MSGPACK", "CodecError", "PayloadCodec", "get_codec"]


class CodecError(ProtocolError):
    """A payload could not be decoded with its codec."""


class PayloadCodec(Protocol):
    """Encodes objects to bytes and back; ``name`` is what goes on the wire."""

    name: str

    def encode(self, obj: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class JsonCodec:
    name = "json"

    def encode(self, obj: Any) -> bytes:
        try:
            return dump_json(obj)
        except (TypeError, ValueError) as exc:
            raise BadArgument(f"json codec cannot encode {type(obj).__name__}: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        return load_json(data, "payload", CodecError)


class MsgpackCodec:
    name = "msgpack"

    def encode(self, obj: Any) -> bytes:
        try:
            return msgpack.packb(obj, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise BadArgument(f"msgpack codec cannot encode {type(obj).__name__}: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CodecError(f"payload is not valid msgpack: {exc}") from exc


JSON: PayloadCodec = JsonCodec()
MSGPACK: PayloadCodec = MsgpackCodec()
_CODECS = {"json": JSON, "msgpack": MSGPACK}


def get_codec(name: str | None) -> PayloadCodec:
    """The codec called ``name``; ``None`` means JSON, as in Dynamo."""
    if name is None:
        return JSON
    try:
        return _CODECS[name]
    except KeyError:
        raise BadArgument(f"unknown payload codec {name!r}; use 'json' or 'msgpack'") from None
