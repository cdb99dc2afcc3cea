"""Argument checks shared by the public calls: a mistake gets a :class:`UsageError`
naming the argument, not a bare ``TypeError`` from deep inside (no Trio, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from trioplane._errors import BadArgument, BadArgumentType

__all__ = [
    "check_bytes",
    "check_count",
    "check_plane_options",
    "check_port",
    "check_seconds",
    "check_str_map",
]


def _type_name(value: object) -> str:
    return type(value).__name__


def check_bytes(value: object, what: str = "payload") -> None:
    """:class:`BadArgumentType` unless ``value`` is bytes-like (a ``str`` is told to
    be encoded first)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return
    hint = f" (encode it: {what}.encode())" if isinstance(value, str) else ""
    raise BadArgumentType(f"{what} must be bytes, not {_type_name(value)}{hint}")


def check_str_map(value: object, what: str = "headers") -> Mapping[str, str]:
    """``value`` as a mapping of ``str`` to ``str`` (``None``: empty), else
    :class:`BadArgumentType` naming ``what``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadArgumentType(
            f"{what} must be a mapping of str to str (a dict), not {_type_name(value)}"
        )
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise BadArgumentType(
                f"{what} must map str to str, not {_type_name(key)} to {_type_name(item)}"
                f" ({key!r}: {item!r})"
            )
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_seconds(value: Any, what: str, *, zero: bool = True) -> float:
    """A duration in seconds: a number, ``>= 0`` (``> 0`` unless ``zero``), not NaN."""
    if not _is_number(value):
        raise BadArgumentType(f"{what} must be a number of seconds, not {value!r}")
    if math.isnan(value) or value < 0 or (value == 0 and not zero):
        raise BadArgument(f"{what} must be a number of seconds {'>=' if zero else '>'} 0")
    return float(value)


def check_count(value: Any, what: str, *, minimum: int = 1) -> int:
    """A whole number ``>= minimum``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadArgumentType(f"{what} must be an int, not {value!r}")
    if value < minimum:
        raise BadArgument(f"{what} must be at least {minimum}")
    return value


def check_port(value: Any, what: str = "port") -> int:
    """A TCP port to listen on: 0 (any free one) to 65535."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadArgumentType(f"{what} must be an int, not {value!r}")
    if not 0 <= value <= 65535:
        raise BadArgument(f"{what} must be 0 (a free port) to 65535, not {value}")
    return value


def check_plane_options(options: Mapping[str, Any]) -> None:
    """The per-transport options of a request plane (or an endpoint client):
    ``tcp``, ``http``, ``websocket``, ``nats`` dicts, ``nats_servers`` URL(s)."""
    for kind in ("tcp", "http", "websocket", "nats"):
        if kind in options and not isinstance(options[kind], Mapping):
            raise BadArgumentType(
                f"{kind} must be a dict of the {kind} client's options, not"
                f" {type(options[kind]).__name__}"
            )
    servers = options.get("nats_servers")
    if servers is not None and not (
        isinstance(servers, str)
        or (isinstance(servers, (list, tuple)) and all(isinstance(s, str) for s in servers))
    ):
        raise BadArgumentType(f"nats_servers must be a NATS URL or a list of them, not {servers!r}")
