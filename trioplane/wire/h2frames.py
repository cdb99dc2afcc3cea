"""Just enough HTTP/2 framing to notice a server's GOAWAY, and to send a PING (sans-io).

A GOAWAY's *last stream id* says which requests the server never processed: the
streams above it (RFC 9113, section 6.8), which a client may send again. httpcore
reads a connection only while some request waits for an answer, so a request
whose write fails (the server closed the connection right after its GOAWAY)
never learns that number. :class:`GoawayWatch` reads the server's bytes
alongside httpcore: frame headers, and the first 8 bytes of each GOAWAY.
"""

from __future__ import annotations

__all__ = ["GOAWAY", "PING", "SETTINGS", "GoawayWatch", "frame_header", "ping_frame"]

FRAME_HEADER_SIZE = 9
GOAWAY = 0x7
PING = 0x6
SETTINGS = 0x4
PING_DATA_SIZE = 8
#: A GOAWAY's payload starts with the last stream id and the error code.
GOAWAY_HEAD_SIZE = 8
STREAM_ID_MASK = 0x7FFF_FFFF


def frame_header(length: int, frame_type: int, flags: int, stream_id: int) -> bytes:
    """The 9-byte header of an HTTP/2 frame (for tests and fakes)."""
    return (
        length.to_bytes(3, "big")
        + bytes((frame_type, flags))
        + (stream_id & STREAM_ID_MASK).to_bytes(4, "big")
    )


def ping_frame(opaque_data: bytes) -> bytes:
    """A PING frame (not an ACK) carrying 8 bytes of ``opaque_data``; the peer must
    answer it with a PING ACK (RFC 9113, 6.7)."""
    if len(opaque_data) != PING_DATA_SIZE:
        raise ValueError(f"a PING carries exactly {PING_DATA_SIZE} bytes")
    return frame_header(PING_DATA_SIZE, PING, 0, 0) + opaque_data


class GoawayWatch:
    """Follows a server's HTTP/2 frames and keeps the lowest GOAWAY last stream id.

    ``last_stream_id`` is ``None`` until a GOAWAY arrives. A stream that does not
    open with the server's SETTINGS frame, or a malformed GOAWAY, makes the watch
    ``broken``: it then reports nothing, so no request is ever judged
    unprocessed on bad evidence. It holds at most 9 bytes, whatever it is fed.
    """

    __slots__ = ("_goaway_rest", "_head", "_skip", "_started", "broken", "last_stream_id")

    def __init__(self) -> None:
        self.last_stream_id: int | None = None
        self.broken = False
        self._started = False
        self._head = bytearray()  # a frame header, or a GOAWAY's head, as it arrives
        self._skip = 0  # payload bytes to pass over
        self._goaway_rest = -1  # >= 0 while reading a GOAWAY's head: what follows it

    def feed(self, data: bytes) -> None:
        """Read the next bytes the server sent."""
        pos, end = 0, len(data)
        while pos < end and not self.broken:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            in_goaway = self._goaway_rest >= 0
            need = GOAWAY_HEAD_SIZE if in_goaway else FRAME_HEADER_SIZE
            step = min(need - len(self._head), end - pos)
            self._head += data[pos : pos + step]
            pos += step
            if len(self._head) < need:
                return
            head = bytes(self._head)
            self._head.clear()
            if in_goaway:
                self._on_goaway(head)
            else:
                self._on_header(head)

    def _on_header(self, header: bytes) -> None:
        length = int.from_bytes(header[:3], "big")
        frame_type = header[3]
        stream_id = int.from_bytes(header[5:9], "big") & STREAM_ID_MASK
        if not self._started:
            if frame_type != SETTINGS or stream_id != 0:
                self.broken = True  # not an HTTP/2 server's first frame
                return
            self._started = True
        if frame_type == GOAWAY:
            if length < GOAWAY_HEAD_SIZE or stream_id != 0:
                self.broken = True
                return
            self._goaway_rest = length - GOAWAY_HEAD_SIZE
        else:
            self._skip = length

    def _on_goaway(self, head: bytes) -> None:
        last = int.from_bytes(head[:4], "big") & STREAM_ID_MASK
        if self.last_stream_id is None or last < self.last_stream_id:
            self.last_stream_id = last
        self._skip = self._goaway_rest
        self._goaway_rest = -1
