"""The documentation runs as written: its examples, the README's worker and client, the
testing page pasted into an empty project; and Sphinx builds it with no warning and no
broken reference.

The code is taken from the pages themselves (never a copy), and run as a user would:
in a fresh directory, as a separate process, with the environment the page asks for.
"""

from __future__ import annotations

import doctest
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS_DIR = ROOT / "docs"
EXAMPLES_DIR = DOCS_DIR / "examples"
README = ROOT / "README.md"
#: The virtual environment's scripts (``python``, ``trioplane``), first on the PATH.
BIN = Path(sys.executable).parent

#: What a worker prints when it serves the endpoint of the README and the worker page.
SERVING = re.compile(
    r"serving dynamo\.backend\.generate (at|as [0-9a-f]+ on tcp) "
    r"127\.0\.0\.1:\d+/[0-9a-f]+/dynamo/backend/generate"
)


def rst_blocks(page: str, language: str) -> list[str]:
    """The ``.. code-block:: <language>`` blocks of ``docs/<page>``, dedented, in order."""
    lines = (DOCS_DIR / page).read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        match = re.match(r"(\s*)\.\. code-block:: (\S+)\s*$", line)
        if match is None or match.group(2) != language:
            continue
        indent = len(match.group(1))
        body = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        text = textwrap.dedent("\n".join(body)).strip("\n")
        blocks.append(re.sub(r"\A(:\w[\w-]*:.*\n)*\n*", "", text) + "\n")  # no options
    assert blocks, f"docs/{page} has no {language} block"
    return blocks


def readme_blocks(language: str) -> list[str]:
    """The README's fenced blocks in ``language`` (``""``: those without one)."""
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), re.S | re.M)


def block_with(blocks: list[str], text: str) -> str:
    """The one block that contains ``text``."""
    found = [block for block in blocks if text in block]
    assert len(found) == 1, f"{len(found)} blocks contain {text!r}"
    return found[0]


def commands(block: str) -> list[str]:
    """A shell block's commands: ``$ ``-prompted lines if it has any, else every line
    (comments after ``#`` dropped)."""
    lines = block.splitlines()
    if any(line.startswith("$ ") for line in lines):
        return [line[2:] for line in lines if line.startswith("$ ")]
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def user_env(exports: list[str], **extra: str) -> dict[str, str]:
    """This process's environment without Dynamo's and the test run's settings, the
    virtual environment first on the PATH, then the page's ``export`` lines."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DYN_", "ETCD_", "NATS_", "PYTEST_"))
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    for line in exports:
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    env.update(extra)
    return env


def run(command: str | list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    """Run a command (a shell line, or an argument list) to completion; its stdout lines."""
    args = ["bash", "-c", command] if isinstance(command, str) else command
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout.splitlines()


@contextmanager
def background(command: str, cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A long-running command (a worker); killed at the end if it is still running."""
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def first_line(process: subprocess.Popen[str], timeout: float = 30) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"the worker printed nothing within {timeout} s: {err}")
    return line.rstrip("\n")


def check_quickstart(stdout: list[str]) -> None:
    assert "accepted: ack=b''" in stdout
    assert "rejected: ack=b'Server overloaded: worker at capacity'" in stdout


def check_endpoint(stdout: list[str]) -> None:
    assert stdout == [
        "item: {'i': 0}",
        "item: {'i': 1}",
        "item: {'i': 2}",
        "all at once: [{'i': 0}, {'i': 1}]",
    ]


def check_deployment(stdout: list[str]) -> None:
    assert stdout == ["[{'echo': 'hello'}]"]


def check_observability(stdout: list[str]) -> None:
    text = "\n".join(stdout)
    assert 'GET /health: 200 {"status":"ready"' in text
    assert re.search(
        r'dynamo_component_requests_total\{.*dynamo_endpoint="generate".*\} 3\.0', text
    )
    assert "dynamo_request_plane_roundtrip_ttft_seconds_count 3.0" in text


#: Every program in docs/examples: what it needs installed, its environment, its output.
EXAMPLES: dict[str, tuple[tuple[str, ...], dict[str, str], Callable[[list[str]], None]]] = {
    "quickstart.py": ((), {}, check_quickstart),
    "endpoint.py": ((), {}, check_endpoint),
    # Its docstring's other choice, etcd, is run by the test below.
    "deployment.py": ((), {"DYN_DISCOVERY_BACKEND": "file"}, check_deployment),
    "observability.py": (("prometheus_client", "httpx"), {}, check_observability),
}


@pytest.mark.parametrize("example", sorted(path.name for path in EXAMPLES_DIR.glob("*.py")))
def test_every_example_runs(example: str, tmp_path: Path) -> None:
    assert example in EXAMPLES, f"docs/examples/{example} has no expected output in EXAMPLES"
    needs, env, check = EXAMPLES[example]
    for module in needs:
        pytest.importorskip(module)
    env = user_env([], DYN_FILE_KV=str(tmp_path / "kv"), **env)
    check(run([sys.executable, str(EXAMPLES_DIR / example)], tmp_path, env))


@pytest.mark.etcd
def test_deployment_example_runs_against_etcd_and_the_file_backend(tmp_path: Path) -> None:
    from .etcd import run_etcd

    example = str(EXAMPLES_DIR / "deployment.py")
    with run_etcd(tmp_path / "etcd") as etcd:
        for env in (
            user_env([], ETCD_ENDPOINTS=etcd.url),
            user_env([], DYN_DISCOVERY_BACKEND="file", DYN_FILE_KV=str(tmp_path / "kv")),
        ):
            check_deployment(run([sys.executable, example], tmp_path, env))


def worker_from_readme() -> tuple[str, list[str]]:
    """The README's worker, and the commands it says start it."""
    worker = block_with(readme_blocks("python"), "open_worker")
    return worker, commands(block_with(readme_blocks(""), "python worker.py"))


def worker_from_worker_page() -> tuple[str, list[str]]:
    """The worker page's first program, and the commands that page says start it."""
    worker = rst_blocks("worker.rst", "python")[0]
    return worker, commands(block_with(rst_blocks("worker.rst", "console"), "python worker.py"))


def worker_page_handler_served_from_the_shell() -> tuple[str, list[str]]:
    """The same worker's handler, served by ``trioplane serve`` as the page says."""
    worker, start = worker_from_worker_page()
    exports = [command for command in start if command.startswith("export ")]
    serve = commands(block_with(rst_blocks("worker.rst", "console"), "trioplane serve"))
    return worker, exports + serve


@pytest.mark.parametrize(
    ("worker_source", "every_client"),
    [
        (worker_from_readme, False),
        (worker_from_worker_page, True),
        (worker_page_handler_served_from_the_shell, False),
    ],
)
def test_readme_and_the_docs_tell_one_story(
    worker_source: Callable[[], tuple[str, list[str]]], every_client: bool, tmp_path: Path
) -> None:
    """The README's worker (and the worker page's, and that page's ``trioplane serve``)
    serves the README's client (and the endpoint page's client and ``trioplane call``),
    found in file discovery as the pages say; SIGTERM then stops the worker cleanly."""
    worker, start = worker_source()
    (tmp_path / "worker.py").write_text(worker)
    *exports, start_worker = start
    assert all(line.startswith("export ") for line in exports), start
    # The pages' folder is $DYN_FILE_KV, default $TMPDIR/dynamo_store_kv: one per test.
    kv = tmp_path / "kv"
    env = user_env(exports, DYN_FILE_KV=str(kv))
    assert env.get("DYN_DISCOVERY_BACKEND") == "file", "the pages say to use the file backend"

    (tmp_path / "client.py").write_text(block_with(readme_blocks("python"), "open_endpoint_client"))
    *client_exports, start_client = commands(block_with(readme_blocks(""), "python client.py"))
    assert client_exports == exports
    readme = README.read_text()
    with background(start_worker, tmp_path, env) as process:
        assert SERVING.fullmatch(first_line(process))

        tokens = run(start_client, tmp_path, env)
        assert tokens == ["{'token': 'hello'}", "{'token': 'from'}", "{'token': 'trio'}"]
        assert all(f"`{line}`" in readme for line in tokens), "the README says what it prints"
        if every_client:
            check_endpoint_page_clients(tmp_path, env)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert not list((kv / "v1" / "instances").iterdir()), "the worker deregistered"


def check_endpoint_page_clients(tmp_path: Path, env: dict[str, str]) -> None:
    """The endpoint page's program and its ``trioplane call`` print what the page says."""
    endpoint_page = (DOCS_DIR / "endpoint.rst").read_text()
    (tmp_path / "endpoint_client.py").write_text(rst_blocks("endpoint.rst", "python")[0])
    printed = run([sys.executable, "endpoint_client.py"], tmp_path, env)
    assert printed == ["{'token': 'hello'}", "[{'token': 'again'}]"]
    assert all(f"``{line}``" in endpoint_page for line in printed)

    call_block = block_with(rst_blocks("endpoint.rst", "console"), "trioplane call")
    (call,) = commands(call_block)
    assert run(call, tmp_path, env) == [line for line in call_block.splitlines()[1:] if line]


def test_readme_has_two_commands_for_a_fresh_machine() -> None:
    """One runs the demo, one the whole test suite; each from nothing but a checkout."""
    section = README.read_text().split("## On a fresh machine\n")[1].split("\n## ")[0]
    blocks = re.findall(r"^```\n(.*?)^```$", section, re.S | re.M)
    assert len(blocks) == 2, blocks
    demo, tests = (block.strip() for block in blocks)
    for command in (demo, tests):
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -e '."), command
    assert demo.endswith("&& .venv/bin/trioplane demo")
    assert tests.endswith("&& .venv/bin/python -m pytest")


def test_the_worker_page_shows_what_a_worker_prints() -> None:
    for block in rst_blocks("worker.rst", "console"):
        for line in block.splitlines():
            if line and not line.startswith("$ "):
                assert SERVING.fullmatch(line), line


def test_testing_page_passes_in_an_empty_project(tmp_path: Path) -> None:
    """The testing page's tests, pasted into an empty project with the ``pytest.ini`` the
    page shows, pass under pytest; its other examples run as programs."""
    (ini,) = rst_blocks("testing.rst", "ini")
    (tmp_path / "pytest.ini").write_text(ini)
    (install,) = (c for b in rst_blocks("testing.rst", "console") for c in commands(b))
    assert {"pytest", "pytest-trio"} <= set(install.split()), install
    tests = 0
    for i, block in enumerate(rst_blocks("testing.rst", "python")):
        if "def test_" in block:
            (tmp_path / f"test_page_{i}.py").write_text(block)
            tests += len(re.findall(r"^async def test_", block, re.M))
        else:
            (tmp_path / f"example_{i}.py").write_text(block)
            run([sys.executable, f"example_{i}.py"], tmp_path, user_env([]))
    assert tests >= 4

    env = user_env([])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = result.stdout.splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", outcome), outcome
    assert not re.search(r"skipped|failed|error|xfail|warning", outcome), outcome


@pytest.mark.nats
def test_nats_page_example_runs(nats_server: str, tmp_path: Path) -> None:
    (tmp_path / "nats_example.py").write_text(rst_blocks("nats.rst", "python")[0])
    env = user_env([], NATS_SERVER=nats_server)
    stdout = run([sys.executable, "nats_example.py"], tmp_path, env)
    assert stdout == ["b'hello'", "events.start b'go'"]


def test_wire_page_examples_run() -> None:
    (session,) = rst_blocks("wire.rst", "pycon")
    test = doctest.DocTestParser().get_doctest(session, {}, "wire.rst", "wire.rst", 0)
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    (payload,) = [block for block in rst_blocks("wire.rst", "python") if "import" in block]
    namespace: dict[str, object] = {}
    exec(compile(payload, "wire.rst", "exec"), namespace)
    assert isinstance(namespace["payload"], bytes)


def test_docs_build_without_warnings_or_broken_references(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-n",
            "-W",
            "--keep-going",
            "-b",
            "html",
            str(DOCS_DIR),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
