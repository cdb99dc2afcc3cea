"""Strict, compact JSON as serde_json reads and writes it (UTF-8 only, no NaN)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

from trioplane._errors import BadArgumentType, ProtocolError

_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dump_json(obj: object) -> bytes:
    """Compact UTF-8 JSON; ``ValueError``/``TypeError`` for what JSON cannot hold."""
    return _COMPACT.encode(obj).encode()


def dump_str_map(mapping: Mapping[str, str]) -> bytes:
    """Same bytes as :func:`dump_json` for a str -> str map, faster (a hot path:
    request headers); ``TypeError`` for a name or value that is not ``str``."""
    parts = []
    for key, value in mapping.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise BadArgumentType(f"{key!r}: names and values must be str")
        parts.append(f"{encode_basestring(key)}:{encode_basestring(value)}")
    return ("{" + ",".join(parts) + "}").encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: One decoder for every call (``json.loads`` with an option builds a new one each time).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def load_json(data: bytes | str, what: str, error: type[ProtocolError] = ProtocolError) -> Any:
    """Parse UTF-8 JSON; anything else (other encodings, NaN, absurd nesting) is ``error``."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid JSON: {exc}") from exc
