"""Telling TLS and HTTP apart from Dynamo's frames by their first bytes (sans-io)."""

from __future__ import annotations

import contextlib
import ssl

from hypothesis import given
from hypothesis import strategies as st

from trioplane.wire.control import encode_handshake
from trioplane.wire.sniff import TLS_DECODE_ERROR_ALERT, foreign_protocol, not_tls
from trioplane.wire.tcp import encode_ack, encode_request_frame

paths = st.text(min_size=1, max_size=4000)
headers = st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=4)


@given(paths, headers, st.binary(max_size=2000))
def test_request_frames_are_never_foreign(path: str, head: dict[str, str], body: bytes) -> None:
    frame = encode_request_frame(path, head, body)
    assert foreign_protocol(frame) is None
    assert foreign_protocol(frame[:3]) is None


@given(st.binary(max_size=10_000))
def test_acks_are_never_foreign(text: bytes) -> None:
    assert foreign_protocol(encode_ack(text)) is None


@given(st.text(min_size=1, max_size=100))
def test_call_home_handshakes_are_not_tls(subject: str) -> None:
    handshake = encode_handshake(subject)
    assert foreign_protocol(handshake) is None
    assert not_tls(handshake)


def client_hello() -> bytes:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="example.org")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_tls_and_http_are_recognised() -> None:
    hello = client_hello()
    assert foreign_protocol(hello) == "TLS"
    assert not not_tls(hello)
    assert foreign_protocol(TLS_DECODE_ERROR_ALERT) == "TLS"
    assert foreign_protocol(b"HTTP/1.1 400 Bad Request\r\n") == "HTTP"
    assert foreign_protocol(b"GET / HTTP/1.1\r\n") == "HTTP"


@given(st.binary(max_size=2))
def test_too_few_bytes_decide_nothing(prefix: bytes) -> None:
    assert not not_tls(prefix)
