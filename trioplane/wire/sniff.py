"""Recognise a peer that speaks another protocol than the one expected (no I/O).

Dynamo's planes carry no magic bytes, so a plain-text caller that reaches a TLS
port (or the reverse, or an HTTP port) would otherwise read the other side's
first bytes as a frame length: ``FrameTooLarge ack of 1213486160 bytes`` is
"HTTP" read as a u32. These helpers look at a connection's first bytes instead:
:func:`foreign_protocol` at what a caller sent, :func:`foreign_answer` at what a
peer answered a request with (HTTP, HTTP/2, TLS, NATS, SSH or other text), and
:func:`wrong_protocol` words the error a caller raises for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from trioplane._errors import WrongProtocol

__all__ = [
    "ANSWER_SNIFF_SIZE",
    "TLS_DECODE_ERROR_ALERT",
    "Foreign",
    "foreign_answer",
    "foreign_protocol",
    "not_tls",
    "wrong_protocol",
]

#: A fatal TLS ``decode_error`` alert record, as Dynamo's TLS listener sends to a
#: plain-text peer before closing.
TLS_DECODE_ERROR_ALERT = b"\x15\x03\x03\x00\x02\x02\x32"
_TLS_RECORD_TYPES = (0x15, 0x16)  # alert, handshake
#: Bytes of an answer enough for any verdict (an HTTP/2 frame header is 9).
ANSWER_SNIFF_SIZE = 9
#: HTTP/2 frames a server sends on stream 0 first: SETTINGS, PING, GOAWAY, WINDOW_UPDATE.
_H2_CONNECTION_FRAMES = (0x04, 0x06, 0x07, 0x08)
#: Answers that name their protocol in their first bytes.
_BANNERS = ((b"HTTP", "HTTP"), (b"INFO", "NATS"), (b"SSH-", "SSH"))
_TEXT = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
_PREVIEW_SIZE = 60


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


@dataclass(frozen=True)
class Foreign:
    """What a peer that does not speak Dynamo's request plane looks like."""

    #: ``"TLS"``, ``"HTTP"``, ``"HTTP/2"``, ``"NATS"``, ``"SSH"`` or ``"text"``.
    protocol: str
    #: Its first line, printable and shortened (``""`` for a binary protocol).
    first_line: str = ""


def foreign_answer(
    prefix: bytes | bytearray | memoryview, *, max_frame_size: int
) -> Foreign | None:
    """What the peer speaks, from the first bytes it answered a request frame with;
    ``None`` if they may be Dynamo acks (``u32 length | text``).

    Ask once the first ack cannot be one (its length is over ``max_frame_size``, or
    the stream ended inside it): :class:`~trioplane.wire.AckDecoder` does, so a
    worker's acks, whatever their text, are never taken for another protocol. A
    TLS record, or an answer opening with ``HTTP``, ``INFO`` (a NATS server's
    greeting) or ``SSH-``, is named as such; other printable text is ``"text"`` when
    its first 4 bytes, read as a length, exceed ``max_frame_size`` (or fewer than 4
    bytes came); 9 bytes or more opening with an HTTP/2 connection frame (type
    SETTINGS, PING, GOAWAY or WINDOW_UPDATE on stream 0) are ``"HTTP/2"``.
    """
    head = bytes(prefix[:_PREVIEW_SIZE])
    if not head:
        return None
    if len(head) >= 3 and head[0] in _TLS_RECORD_TYPES and head[1] == 3 and head[2] <= 4:
        return Foreign("TLS")
    for banner, protocol in _BANNERS:
        if head.startswith(banner):
            return Foreign(protocol, _first_line(head))
    if (
        len(head) >= ANSWER_SNIFF_SIZE
        and head[0] == 0
        and head[3] in _H2_CONNECTION_FRAMES
        and head[4] in (0, 1)
        and head[5:9] == b"\0\0\0\0"
    ):
        return Foreign("HTTP/2")
    length = int.from_bytes(head[:4], "big") if len(head) >= 4 else None
    if all(b in _TEXT for b in head[:4]) and (length is None or length + 4 > max_frame_size):
        return Foreign("text", _first_line(head))
    return None


def _first_line(head: bytes) -> str:
    line = head.split(b"\n", 1)[0].rstrip()
    text = "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in line)
    return text if len(line) < _PREVIEW_SIZE else text + "..."


def wrong_protocol(peer: str, found: Foreign) -> WrongProtocol:
    """The error a TCP request-plane caller raises when ``peer`` answered as ``found``
    says: what the peer looks like, and what to do instead."""
    protocol = found.protocol
    said = f"{protocol} ('{found.first_line}')" if found.first_line else protocol
    if protocol == "TLS":
        message = (
            f"{peer} answered with TLS: it serves TLS and this client speaks plain text"
            " (give ssl_context, or set DYN_TCP_TLS_CA_CERT_PATH)"
        )
    elif protocol in ("HTTP", "HTTP/2"):
        message = (
            f"{peer} answered with {said}, not Dynamo's TCP request plane: is it an HTTP"
            " port (a frontend, a status server, a worker's HTTP or WebSocket plane)? A"
            f" worker's HTTP plane is called at http://{peer}/v1/rpc/<endpoint>, its"
            f" WebSocket plane at ws://{peer}/<endpoint>"
        )
    elif protocol == "NATS":
        message = (
            f"{peer} answered with {said}, not Dynamo's TCP request plane: it is a NATS"
            f" server. Workers on NATS are reached through it: give nats_servers="
            f"'nats://{peer}' (or set NATS_SERVER) and call the endpoint, or send to an"
            " instance's subject ('nats:<subject>')"
        )
    else:
        message = (
            f"{peer} answered with {said}, not Dynamo's TCP request plane: it speaks"
            " another protocol (is this the worker's TCP port?)"
        )
    return WrongProtocol(message, protocol, peer)
