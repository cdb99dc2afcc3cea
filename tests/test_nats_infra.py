"""The NATS test infrastructure works: a real nats-server, nats-py peers, raw protocol.

These use nats-py and raw sockets only (no trioplane), and pin down the server
behaviour that trioplane's NATS client relies on: INFO fields, the CONNECT fields
of each auth mode, the nkey signature encoding, TLS and handshake-first.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nkeys
import pytest
import trio

from .nats import (
    NatsServer,
    nats_server_binary,
    parse_info,
    read_line,
    request_with_nats_py,
    run_responder,
    sign_nonce,
    start_nats_server,
)

pytestmark = pytest.mark.nats

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "token": {"auth": "token"},
    "userpass": {"auth": "userpass"},
    "nkey": {"auth": "nkey"},
    "tls": {"tls": True},
    "tls_handshake_first": {"tls_handshake_first": True},
}


def exchange(server: NatsServer, connect: Callable[[dict[str, Any]], dict[str, Any]]) -> bytes:
    """Raw plaintext session: read INFO, send CONNECT (built from INFO) and PING.

    Returns what the server answered: ``PONG\\r\\n...`` or an ``-ERR`` line.
    """
    with socket.create_connection((server.host, server.port), timeout=3) as sock:
        info = parse_info(read_line(sock))
        fields = {"verbose": False, "pedantic": False, "protocol": 1, **connect(info)}
        sock.sendall(b"CONNECT " + json.dumps(fields).encode() + b"\r\nPING\r\n")
        return read_line(sock)


def test_binary_is_shipped() -> None:
    binary = nats_server_binary()
    assert os.access(binary, os.X_OK)


@pytest.mark.parametrize("variant", VARIANTS)
async def test_request_reply(tmp_path: Path, variant: str) -> None:
    with (
        start_nats_server(tmp_path, **VARIANTS[variant]) as server,
        run_responder(server, "svc.echo"),
    ):
        reply = await trio.to_thread.run_sync(
            lambda: request_with_nats_py(server, "svc.echo", b"hello", {"X-Trace": "1"})
        )
    assert reply.payload == b"hello"
    assert reply.headers == {"X-Trace": "1"}
    assert not server.is_running


def test_empty_and_silent_responders(tmp_path: Path) -> None:
    with start_nats_server(tmp_path) as server:
        with run_responder(server, "svc.empty", "empty"):
            reply = request_with_nats_py(server, "svc.empty", b"work", {"X-Trace": "1"})
        assert (reply.payload, reply.headers) == (b"", {})
        with (
            run_responder(server, "svc.silent", "silent"),
            pytest.raises(RuntimeError, match="Timeout"),
        ):
            request_with_nats_py(server, "svc.silent", b"work", timeout=0.3)


@pytest.mark.parametrize("auth", ["token", "userpass", "nkey"])
def test_auth_is_enforced_and_connect_fields(tmp_path: Path, auth: str) -> None:
    with start_nats_server(tmp_path, auth=auth) as server:
        info = server.info()
        assert info["auth_required"] is True
        assert ("nonce" in info) == (auth == "nkey")
        assert exchange(server, lambda info: {}) == b"-ERR 'Authorization Violation'\r\n"

        def credentials(info: dict[str, Any]) -> dict[str, Any]:
            if auth == "token":
                return {"auth_token": server.token}
            if auth == "userpass":
                return {"user": server.user, "pass": server.password}
            assert server.nkey_seed is not None
            return {"nkey": server.nkey_public, "sig": sign_nonce(server.nkey_seed, info["nonce"])}

        assert exchange(server, credentials) == b"PONG\r\n"


@pytest.mark.parametrize(
    ("encoding", "accepted"),
    [
        ("base64url-unpadded", True),  # what the Go client (and trioplane) sends
        ("base64-padded", True),  # what nats-py sends: the server falls back to it
        # (The rejected encodings are not tested: whether a given signature's
        # encodings differ depends on its random bytes.)
    ],
)
def test_nkey_signature_encodings(tmp_path: Path, encoding: str, accepted: bool) -> None:
    encoders: dict[str, Callable[[bytes], bytes]] = {
        "base64url-unpadded": lambda b: base64.urlsafe_b64encode(b).rstrip(b"="),
        "base64-padded": base64.b64encode,
    }
    with start_nats_server(tmp_path, auth="nkey") as server:
        assert server.nkey_seed is not None
        assert server.nkey_seed.startswith(b"SU")
        assert server.nkey_public is not None
        assert server.nkey_public.startswith("U")
        key = nkeys.from_seed(bytearray(server.nkey_seed))

        def connect(info: dict[str, Any]) -> dict[str, Any]:
            # Signed: the nonce string's ASCII bytes as sent in INFO, not decoded.
            # (Ed25519 signatures always need padding: 64 bytes is not a multiple of 3.)
            signature = key.sign(info["nonce"].encode())
            return {"nkey": server.nkey_public, "sig": encoders[encoding](signature).decode()}

        answer = exchange(server, connect)
    assert (answer == b"PONG\r\n") is accepted, answer


def test_tls_info_and_handshake_first(tmp_path: Path) -> None:
    with start_nats_server(tmp_path, tls=True) as server:
        with socket.create_connection((server.host, server.port), timeout=3) as sock:
            info = parse_info(read_line(sock))  # INFO comes in plaintext, then upgrade
        assert info["tls_required"] is True
        assert server.url.startswith("nats://")
    with start_nats_server(tmp_path, tls_handshake_first=True) as server:
        assert server.info()["tls_required"] is True  # read after the TLS handshake
        with (
            socket.create_connection((server.host, server.port), timeout=0.3) as sock,
            pytest.raises(TimeoutError),
        ):
            sock.recv(1)  # silent until a TLS ClientHello arrives


def test_max_payload_in_info(tmp_path: Path) -> None:
    with start_nats_server(tmp_path, max_payload=1024) as server:
        with socket.create_connection((server.host, server.port), timeout=3) as sock:
            first = read_line(sock)
        assert first.startswith(b"INFO {")
        assert first.endswith(b"} \r\n")  # nats-server puts a space before CRLF
        assert parse_info(first)["max_payload"] == 1024


def test_restart_same_port(tmp_path: Path) -> None:
    with start_nats_server(tmp_path, auth="token") as server:
        port, pid = server.port, server.process.pid
        with run_responder(server, "svc.echo"):
            server.stop()
            assert not server.is_running
            server.restart()
            assert server.is_running
            assert (server.port, server.info()["port"]) == (port, port)
            assert server.process.pid != pid
            # The responder reconnects and resubscribes by itself.
            deadline = time.monotonic() + 10
            while True:
                try:
                    reply = request_with_nats_py(server, "svc.echo", b"again")
                    break
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert reply.payload == b"again"
