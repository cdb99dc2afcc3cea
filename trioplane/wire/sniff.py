"""Recognise a peer that speaks another protocol than the one expected (no I/O).

Dynamo's planes carry no magic bytes, so a plain-text caller that reaches a TLS
port (or the reverse, or an HTTP port) would otherwise read the other side's
first bytes as a frame length: ``FrameTooLarge ack of 1213486160 bytes`` is
"HTTP" read as a u32. These helpers look at a connection's first bytes instead.
"""

from __future__ import annotations

__all__ = ["TLS_DECODE_ERROR_ALERT", "foreign_protocol", "not_tls"]

#: A fatal TLS ``decode_error`` alert record, as Dynamo's TLS listener sends to a
#: plain-text peer before closing.
TLS_DECODE_ERROR_ALERT = b"\x15\x03\x03\x00\x02\x02\x32"
_TLS_RECORD_TYPES = (0x15, 0x16)  # alert, handshake


def foreign_protocol(prefix: bytes | bytearray | memoryview) -> str | None:
    """``"TLS"`` or ``"HTTP"`` if ``prefix`` (a connection's first bytes, at least 3
    for a verdict) opens a TLS record or an HTTP message; else ``None``.

    A TLS record is type 21 or 22, version 3.x with x <= 4: as a TCP request frame
    that would be a path of over 5,000 bytes starting with a control character;
    as an ack or a TwoPart length, one of gigabytes.
    """
    head = bytes(prefix[:5])
    if len(head) >= 3 and head[0] in _TLS_RECORD_TYPES and head[1] == 3 and head[2] <= 4:
        return "TLS"
    if head.startswith((b"HTTP/", b"GET ", b"POST ", b"PUT ", b"HEAD ")):
        return "HTTP"
    return None


def not_tls(prefix: bytes | bytearray | memoryview) -> bool:
    """True if ``prefix`` (at least 3 bytes) is surely not the start of a TLS ClientHello:
    a plain-text peer on a TLS port. Fewer bytes decide nothing."""
    return len(prefix) >= 3 and foreign_protocol(prefix) != "TLS"
