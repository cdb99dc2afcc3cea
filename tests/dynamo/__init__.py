"""Real Dynamo workers for interop tests, in a virtual environment of their own.

Dynamo's pins must never touch trioplane's, so ``ai-dynamo-runtime`` lives in a
separate venv that is created once and cached (``$TRIOPLANE_DYNAMO_VENV``, else
``~/.cache/trioplane/dynamo-<version>``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from trioplane import Instance

DYNAMO_VERSION = "1.6.1"
WORKER_SCRIPT = Path(__file__).with_name("worker_script.py")
CLIENT_SCRIPT = Path(__file__).with_name("client_script.py")
START_TIMEOUT = 60.0


def dynamo_python(version: str = DYNAMO_VERSION) -> Path:
    """The Python of a venv with ``ai-dynamo-runtime==version``, created on first use."""
    default = Path.home() / ".cache" / "trioplane" / f"dynamo-{version}"
    root = Path(os.environ.get("TRIOPLANE_DYNAMO_VENV", default))
    python = root / "bin" / "python"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists():
            return python
        staging = root.with_name(root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        venv.EnvBuilder(with_pip=True).create(staging)
        subprocess.run(
            [
                staging / "bin" / "python",
                "-m",
                "pip",
                "install",
                "-q",
                f"ai-dynamo-runtime=={version}",
            ],
            check=True,
        )
        staging.rename(root)  # venv scripts use absolute paths; python itself is a symlink
        return python


def worker_env(discovery_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYN_")}
    env.update(
        DYN_DISCOVERY_BACKEND="file",
        DYN_FILE_KV=str(discovery_dir),
        DYN_REQUEST_PLANE="tcp",
        DYN_EVENT_PLANE="zmq",
        DYN_TCP_RPC_HOST="127.0.0.1",
        DYN_TCP_RPC_PORT="0",
        DYN_TCP_RESPONSE_STREAM_HOST="127.0.0.1",
        DYN_EVENT_PLANE_HOST="127.0.0.1",
        DYN_SYSTEM_PORT="-1",
        DYN_LOG="warn",
    )
    env.update(extra)
    return env


@dataclass
class DynamoWorker:
    process: subprocess.Popen[bytes]
    discovery_dir: Path
    instances: dict[str, Instance]


def read_instances(discovery_dir: Path, etcd_url: str | None = None) -> list[Instance]:
    """Every instance record in Dynamo's file backend under ``discovery_dir`` (or in
    etcd at ``etcd_url``)."""
    if etcd_url is not None:
        return read_etcd_instances(etcd_url)
    found = []
    folder = discovery_dir / "v1" / "instances"
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(".tmp_"):
                continue
            with contextlib.suppress(OSError, ValueError):
                found.append(Instance.from_json(path.read_bytes()))
    return found


def read_etcd_instances(etcd_url: str) -> list[Instance]:
    """Every instance record in etcd (Dynamo's layout), read with a plain HTTP call."""
    import base64

    import httpx

    body = {"key": base64.b64encode(b"v1/instances/").decode(),
            "range_end": base64.b64encode(b"v1/instances0").decode()}  # fmt: skip
    found = []
    with contextlib.suppress(httpx.HTTPError):
        for kv in httpx.post(f"{etcd_url}/v3/kv/range", json=body, timeout=2).json().get("kvs", []):
            with contextlib.suppress(ValueError):
                found.append(Instance.from_json(base64.b64decode(kv["value"])))
    return found


@contextlib.contextmanager
def run_dynamo_worker(
    discovery_dir: Path,
    endpoints: list[str],
    *,
    version: str = DYNAMO_VERSION,
    etcd_url: str | None = None,
    **env: str,
) -> Iterator[DynamoWorker]:
    """Start a real Dynamo worker (``ai-dynamo-runtime==version``) serving ``endpoints``;
    stop it on exit.

    Several workers may share ``discovery_dir``: each one's ``instances`` are the
    records it added, by endpoint path. With ``etcd_url`` the worker registers in
    etcd there (``DYN_DISCOVERY_BACKEND=etcd``) instead. ``env`` overrides :func:`worker_env`'s
    variables (e.g. ``DYN_REQUEST_PLANE="http"`` for 1.2.1's HTTP plane).
    """
    python = dynamo_python(version)
    if etcd_url is not None:
        env = {"DYN_DISCOVERY_BACKEND": "etcd", "ETCD_ENDPOINTS": etcd_url, **env}
    known = {i.instance_id for i in read_instances(discovery_dir, etcd_url)}
    process = subprocess.Popen(
        [python, WORKER_SCRIPT, *endpoints],
        env=worker_env(discovery_dir, **env),
        stdout=subprocess.DEVNULL,
        stderr=sys.stderr,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            instances = {
                i.endpoint_path: i
                for i in read_instances(discovery_dir, etcd_url)
                if i.instance_id not in known
            }
            if set(endpoints) <= set(instances):
                break
            if process.poll() is not None:
                raise RuntimeError(f"Dynamo worker exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("Dynamo worker did not register in time")
            time.sleep(0.05)
        yield DynamoWorker(process, discovery_dir, instances)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def dynamo_client_call(
    kv: Path, endpoint: str, request: object, *extra: str, **env_extra: str
) -> list[Any]:
    """Run Dynamo's own client (``client_script.py``) in its venv; its JSON lines, parsed."""
    env = worker_env(kv, **env_extra)
    del env["DYN_TCP_RPC_PORT"]  # a client process must not bind the worker's port
    python = await trio.to_thread.run_sync(dynamo_python)
    result = await trio.run_process(
        [str(python), str(CLIENT_SCRIPT), endpoint, json.dumps(request), *extra],
        env=env, capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def free_low_port() -> int:
    """A free loopback port below 32768: Dynamo 1.6.1 reads ``DYN_SYSTEM_PORT`` as an
    ``i16`` (and the system picks port 0's port above that)."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")
