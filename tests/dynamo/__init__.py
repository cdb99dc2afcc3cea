"""Real Dynamo workers for interop tests, in virtual environments of their own.

Dynamo's pins must never touch trioplane's, so ``ai-dynamo-runtime`` lives in a separate
venv per version, created the first time a test needs it and reused from then on:

=======  ===============================================  ============
version  used by                                          size on disk
=======  ===============================================  ============
1.6.1    every test marked ``dynamo``                     about 270 MB
1.2.1    the HTTP-plane tests (the last release with it)  about 160 MB
=======  ===============================================  ============

Where each venv lives, first match wins:

``$TRIOPLANE_DYNAMO_VENV_<version>`` (dots as underscores: ``TRIOPLANE_DYNAMO_VENV_1_6_1``,
``TRIOPLANE_DYNAMO_VENV_1_2_1``)
    that version's venv, exactly there.
``$TRIOPLANE_DYNAMO_VENV``
    the 1.6.1 venv only (the variable from before there were two versions).
``$TRIOPLANE_DYNAMO_CACHE``
    a parent folder: each version in ``dynamo-<version>`` under it.
otherwise
    ``~/.cache/trioplane/dynamo-<version>``.

A path whose ``bin/python`` exists is used as it is (so a venv made by hand works); else
it is created there with ``pip install ai-dynamo-runtime==<version>``, which needs the
package index once. The tests say on the terminal what is being installed, where and how
big, with pip's output and a line every few seconds while it is quiet. When the venv
cannot be made (no package index, say), the tests that need it are skipped with the
reason, or fail with ``TRIOPLANE_REQUIRE_DYNAMO=1`` (CI sets it, so that it never passes by
skipping them). Outside pytest (the benchmarks), :class:`DynamoUnavailable` is raised.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import venv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import trio

from trioplane import Instance

DYNAMO_VERSION = "1.6.1"
#: What each version's venv takes on disk, told before it is created.
VENV_SIZES = {"1.6.1": "about 270 MB", "1.2.1": "about 160 MB"}
#: While pip prints nothing for this long, a line says it is still at work.
HEARTBEAT = 10.0
WORKER_SCRIPT = Path(__file__).with_name("worker_script.py")
CLIENT_SCRIPT = Path(__file__).with_name("client_script.py")
START_TIMEOUT = 60.0


class DynamoUnavailable(RuntimeError):
    """A Dynamo venv could not be made (outside pytest; tests are skipped instead)."""


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


_say: Callable[[str], None] = _stderr_line
_say_lock = threading.Lock()
_under_pytest = False
#: Why a version's venv could not be made, so that the next test skips at once.
_failures: dict[str, str] = {}


def use_output(say: Callable[[str], None]) -> None:
    """Send progress lines to ``say`` (the conftest's: pytest's terminal, past capture),
    and skip tests, rather than raise, when a venv cannot be made."""
    global _say, _under_pytest
    _say, _under_pytest = say, True


def say(line: str) -> None:
    """One progress line (thread-safe: pip's reader and the heartbeat both write)."""
    with _say_lock:
        _say(line)


def venv_variable(version: str) -> str:
    """The environment variable naming ``version``'s venv."""
    return "TRIOPLANE_DYNAMO_VENV_" + version.replace(".", "_")


def dynamo_venv(version: str = DYNAMO_VERSION) -> Path:
    """Where ``version``'s venv lives (see the module's docstring)."""
    if exact := os.environ.get(venv_variable(version)):
        return Path(exact)
    if version == DYNAMO_VERSION and (exact := os.environ.get("TRIOPLANE_DYNAMO_VENV")):
        return Path(exact)
    cache = os.environ.get("TRIOPLANE_DYNAMO_CACHE") or Path.home() / ".cache" / "trioplane"
    return Path(cache) / f"dynamo-{version}"


def dynamo_python(version: str = DYNAMO_VERSION) -> Path:
    """The Python of a venv with ``ai-dynamo-runtime==version``, created on first use.

    Skips the calling test (or raises :class:`DynamoUnavailable` outside pytest) when it
    cannot be created."""
    root = dynamo_venv(version)
    python = root / "bin" / "python"
    if python.exists():
        return python
    if version in _failures:
        _unavailable(_failures[version])
    failure = None
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(root.parent / f".{root.name}.lock", "w")  # noqa: SIM115
    except OSError as error:
        lock_file, failure = None, f"cannot create the Dynamo {version} venv at {root}: {error}"
    if lock_file is not None:
        with lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say(f"Dynamo {version} venv: another process is creating {root}; waiting")
                fcntl.flock(lock_file, fcntl.LOCK_EX)
            if not python.exists():
                try:
                    _create(version, root)
                except DynamoUnavailable as error:
                    failure = str(error)
    if failure is not None:  # raised here, not chained to the error above
        _failures[version] = failure
        _unavailable(failure)
    return python


def _unavailable(reason: str) -> NoReturn:
    if not _under_pytest:
        raise DynamoUnavailable(reason)
    import pytest

    if os.environ.get("TRIOPLANE_REQUIRE_DYNAMO") == "1":
        pytest.fail(f"{reason} (and TRIOPLANE_REQUIRE_DYNAMO=1)", pytrace=False)
    pytest.skip(reason)


def _create(version: str, root: Path) -> None:
    """Make ``root`` a venv with ``ai-dynamo-runtime==version``, telling how it goes."""
    requirement = f"ai-dynamo-runtime=={version}"
    size = VENV_SIZES.get(version, "a few hundred MB")
    say(
        f"Dynamo {version} venv: installing {requirement} ({size}) into {root}, "
        "from the package index. This happens once; later runs reuse it "
        f"(${venv_variable(version)} or $TRIOPLANE_DYNAMO_CACHE choose the place)."
    )
    start = time.monotonic()
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    # The running pip installs into the new venv (pip >= 22.3's --python): much faster than
    # giving the venv a pip of its own, which only a Python without such a pip still needs.
    own_pip = _pip_version() < (22, 3)
    try:
        venv.EnvBuilder(with_pip=own_pip).create(staging)
    except (OSError, subprocess.CalledProcessError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DynamoUnavailable(
            f"cannot create a virtual environment for Dynamo {version} at {staging}: {error}"
        ) from error
    target = str(staging / "bin" / "python")
    pip = [target, "-m", "pip"] if own_pip else [sys.executable, "-m", "pip", "--python", target]
    command = [*pip, "install", "--progress-bar", "off", "--disable-pip-version-check", requirement]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    assert process.stdout is not None
    tail: collections.deque[str] = collections.deque(maxlen=20)
    quiet_since = [time.monotonic()]
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(1.0):
            if time.monotonic() - quiet_since[0] >= HEARTBEAT:
                quiet_since[0] = time.monotonic()
                held = _megabytes(staging)
                say(
                    f"Dynamo {version} venv: pip still at work "
                    f"({time.monotonic() - start:.0f} s"
                    + (f", {held} MB in the venv so far)" if held else ", downloading)")
                )

    beat = threading.Thread(target=heartbeat, name=f"dynamo-{version}-heartbeat", daemon=True)
    beat.start()
    try:
        for raw in process.stdout:
            line = raw.rstrip()
            if line:
                quiet_since[0] = time.monotonic()
                tail.append(line)
                say(f"  pip: {line}")
        returncode = process.wait()
    finally:
        done.set()
        if process.poll() is None:
            process.kill()
            process.wait()
        beat.join()
    if returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise DynamoUnavailable(
            f"cannot install {requirement} (pip exited with {returncode}: {_pip_error(tail)}); "
            "it needs the package index once, or a ready venv named by "
            f"${venv_variable(version)}"
        )
    staging.rename(root)  # venv scripts use absolute paths; python itself is a symlink
    say(
        f"Dynamo {version} venv: ready at {root} "
        f"({_megabytes(root)} MB, {time.monotonic() - start:.0f} s)"
    )


def _pip_version() -> tuple[int, ...]:
    """The running Python's pip version, (0,) without pip."""
    try:
        version = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        return (0,)
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _pip_error(lines: collections.deque[str]) -> str:
    """pip's last error line, or its last line."""
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or list(lines) or ["no output"])[-1]


def _megabytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total // 1_000_000


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


def interrupt(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGINT ``process`` (if it still runs), and kill it if it has not exited within
    ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def run_dynamo_worker(
    discovery_dir: Path,
    endpoints: list[str],
    *,
    version: str = DYNAMO_VERSION,
    etcd_url: str | None = None,
    code: str | None = None,
    **env: str,
) -> Iterator[DynamoWorker]:
    """Start a real Dynamo worker (``ai-dynamo-runtime==version``) serving ``endpoints``;
    stop it on exit.

    Several workers may share ``discovery_dir``: each one's ``instances`` are the
    records it added, by endpoint path. With ``etcd_url`` the worker registers in
    etcd there (``DYN_DISCOVERY_BACKEND=etcd``) instead. ``env`` overrides :func:`worker_env`'s
    variables (e.g. ``DYN_REQUEST_PLANE="http"`` for 1.2.1's HTTP plane). ``code``: a
    worker program of your own (``python -c code ENDPOINT...``) instead of ``worker_script.py``.
    """
    python = dynamo_python(version)
    if etcd_url is not None:
        env = {"DYN_DISCOVERY_BACKEND": "etcd", "ETCD_ENDPOINTS": etcd_url, **env}
    known = {i.instance_id for i in read_instances(discovery_dir, etcd_url)}
    process = subprocess.Popen(
        [python, *(["-c", code] if code is not None else [WORKER_SCRIPT]), *endpoints],
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
        interrupt(process)


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
