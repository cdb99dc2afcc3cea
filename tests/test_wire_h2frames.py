"""The sans-io GOAWAY watch that decides which HTTP/2 requests may be sent again."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioplane.wire.h2frames import GOAWAY, PING, SETTINGS, GoawayWatch, frame_header, ping_frame

from .conftest import split_at

EMPTY_SETTINGS = frame_header(0, SETTINGS, 0, 0)


def goaway(last_stream_id: int, error_code: int = 0, debug: bytes = b"") -> bytes:
    payload = last_stream_id.to_bytes(4, "big") + error_code.to_bytes(4, "big") + debug
    return frame_header(len(payload), GOAWAY, 0, 0) + payload


def watch(*chunks: bytes) -> GoawayWatch:
    result = GoawayWatch()
    for chunk in chunks:
        result.feed(chunk)
    return result


def test_a_goaway_after_other_frames() -> None:
    data = frame_header(5, 0x0, 0, 1) + b"hello" + goaway(7, debug=b"bye")
    assert watch(EMPTY_SETTINGS, data).last_stream_id == 7


def test_no_goaway_reports_nothing() -> None:
    assert watch(EMPTY_SETTINGS, frame_header(3, 0x1, 4, 1) + b"abc").last_stream_id is None


def test_the_lowest_of_several_goaways_counts() -> None:
    assert watch(EMPTY_SETTINGS, goaway(2**31 - 1), goaway(5), goaway(9)).last_stream_id == 5


def test_the_reserved_bit_is_ignored() -> None:
    payload = (0x8000_0000 | 11).to_bytes(4, "big") + bytes(4)
    assert watch(EMPTY_SETTINGS, frame_header(8, GOAWAY, 0, 0) + payload).last_stream_id == 11


def test_http1_bytes_break_the_watch() -> None:
    result = watch(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n", goaway(1))
    assert result.broken
    assert result.last_stream_id is None


def test_a_goaway_too_short_or_on_a_stream_breaks_the_watch() -> None:
    short = frame_header(4, GOAWAY, 0, 0) + bytes(4)
    assert watch(EMPTY_SETTINGS, short, goaway(3)).broken
    on_stream = frame_header(8, GOAWAY, 0, 1) + bytes(8)
    assert watch(EMPTY_SETTINGS, on_stream).broken


def test_real_h2_server_bytes() -> None:
    """The bytes of h2's own server state machine, as hypercorn sends them."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    for stream_id in (1, 3, 5):
        client.send_headers(
            stream_id,
            [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "x")],
        )
        client.send_data(stream_id, b"body", end_stream=True)
    events = server.receive_data(client.data_to_send())
    assert sum(isinstance(e, h2.events.RequestReceived) for e in events) == 3
    server.send_headers(1, [(":status", "202")], end_stream=True)
    server.close_connection(last_stream_id=3)
    result = watch(server.data_to_send())
    assert (result.broken, result.last_stream_id) == (False, 3)


frames = st.lists(
    st.one_of(
        st.tuples(st.just(GOAWAY), st.integers(0, 2**31 - 1), st.binary(max_size=20)),
        st.tuples(
            st.integers(0, 255).filter(lambda t: t != GOAWAY),
            st.integers(0, 2**31 - 1),
            st.binary(max_size=64),
        ),
    ),
    max_size=12,
)


@settings(max_examples=300)
@given(frames=frames, cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_any_frames_cut_anywhere(frames: list[tuple[int, int, bytes]], cuts: list[int]) -> None:
    blob = bytearray(EMPTY_SETTINGS)
    expected = None
    for frame_type, number, payload in frames:
        if frame_type == GOAWAY:
            blob += goaway(number, debug=payload)
            expected = number if expected is None else min(expected, number)
        else:
            blob += frame_header(len(payload), frame_type, 0, number) + payload
    result = watch(*split_at(bytes(blob), [c % (len(blob) + 1) for c in cuts]))
    assert not result.broken
    assert result.last_stream_id == expected


@settings(max_examples=300)
@given(garbage=st.binary(max_size=200))
def test_garbage_never_raises_and_never_reports_without_a_goaway_frame(garbage: bytes) -> None:
    result = watch(garbage)
    assert len(result._head) <= 9
    if result.last_stream_id is not None:
        assert not result.broken
        assert garbage[3] == SETTINGS  # it took the garbage for a SETTINGS frame first


def test_ping_frame_is_what_h2_reads_as_a_ping_and_answers() -> None:
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    events = server.receive_data(preface + EMPTY_SETTINGS + ping_frame(b"12345678"))
    pings = [e for e in events if isinstance(e, h2.events.PingReceived)]
    assert [p.ping_data for p in pings] == [b"12345678"]
    assert server.data_to_send().endswith(frame_header(8, PING, 1, 0) + b"12345678")  # ACK
    with pytest.raises(ValueError, match="8 bytes"):
        ping_frame(b"short")
