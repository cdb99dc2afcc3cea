"""The ``trioplane`` command as a new user meets it (issue 16): each test runs the real
command and checks what a user reported: one line on stderr, never a traceback, and
the documented exit status (0 ok, 1 failed, 2 bad arguments, 130 SIGINT, 141 stdout
closed)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from trioplane import Instance
from trioplane.cli import build_parser
from trioplane.discovery import instance_key
from trioplane.testing import FakeCall, open_fake_endpoint_worker, stream_frames
from trioplane.testing.endpoint import Action
from trioplane.worker import RequestContext, open_worker

from .etcd import free_port

COMMAND = [sys.executable, "-m", "trioplane"]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    """The command's outcome (text), run to its end."""
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=120, check=False,
        env=env, cwd=cwd,
    )  # fmt: skip


async def run_async(*args: str, env: dict[str, str] | None = None) -> Any:
    """The same from a Trio test, while the test's own worker serves."""
    with trio.fail_after(120):
        return await trio.run_process(
            [*COMMAND, *args], capture_stdout=True, capture_stderr=True, check=False, env=env
        )


def one_line(stderr: str | bytes) -> str:
    """The one line a failure prints (and no traceback)."""
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    lines = text.splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in text
    return lines[0]


def write_record(root: Path, instance: Instance) -> None:
    """Register ``instance`` in a Dynamo file-discovery root, as a worker would."""
    folder = root / "v1" / "instances"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / instance_key(instance)).write_bytes(instance.to_json())


def without_nats() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "NATS_SERVER"}


async def counting(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    """``request["n"]`` items, ``request["sleep"]`` seconds apart."""
    for i in range(request["n"]):
        yield {"i": i}
        await trio.sleep(request.get("sleep", 0))


async def first_line(process: trio.Process) -> bytes:
    """What ``process`` printed up to its first newline."""
    assert process.stdout is not None
    seen = b""
    with trio.fail_after(60):
        while b"\n" not in seen:
            chunk = await process.stdout.receive_some()
            assert chunk, seen
            seen += chunk
    return seen


# -- 1. a reader that goes away ------------------------------------------------------------


async def test_a_closed_stdout_ends_call_quietly_with_141(tmp_path: Path) -> None:
    """``trioplane call ... | head -1``: the pipe's reader leaves after one line; the
    command stops with 141 (as ``yes | head -1``) and no BrokenPipeError traceback."""
    async with open_worker({"ns.cli.count": counting}, discovery_root=tmp_path):
        process = await trio.lowlevel.open_process(
            [*COMMAND, "call", "ns.cli.count", '{"n": 100000}', "--discovery-dir", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert json.loads((await first_line(process)).splitlines()[0]) == {"i": 0}
            assert process.stdout is not None
            await process.stdout.aclose()  # as head does after its line
            with trio.fail_after(60):
                assert await process.wait() == 141
            assert process.stderr is not None
            assert await process.stderr.receive_some() == b""
        finally:
            process.kill()
            await process.wait()


# -- 2. discovery folders -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["call", "a.b.c", "{}"],
        ["instances", "a.b.c"],
        ["serve", "tests.handlers:ticks", "--endpoint", "a.b.c"],
    ],
)
@pytest.mark.parametrize(
    "option",
    ["--discovery-dir {}", "--discovery {}", "--discovery file://{}", "--discovery-dir {}/sub"],
)
def test_a_file_as_discovery_folder_is_one_line(
    tmp_path: Path, command: list[str], option: str
) -> None:
    """``--discovery-dir /etc/passwd`` was a 40-line NotADirectoryError: now a bad
    argument, for every command and every way of giving the folder."""
    file = tmp_path / "passwd"
    file.write_text("root:x:0:0\n")
    name, value = option.format(file).split(" ")
    result = run(*command, name, value)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith(f"trioplane {command[0]}: error: argument {name}: ")
    assert f"{file} is not a folder" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
@pytest.mark.parametrize("command", [["call", "a.b.c", "{}"], ["instances", "a.b.c"]])
def test_an_unreadable_discovery_folder_is_one_line(tmp_path: Path, command: list[str]) -> None:
    folder = tmp_path / "kv"
    folder.mkdir(mode=0)
    try:
        result = run(*command, "--discovery-dir", str(folder))
    finally:
        folder.chmod(0o700)
    assert result.returncode == 2
    assert "cannot read the folder" in one_line(result.stderr)


def test_a_missing_discovery_folder_says_so(tmp_path: Path) -> None:
    """A folder no worker has created yet is no instances (a worker may come), and the
    line says the folder is not there; ``instances`` lists nothing, with a note."""
    missing = str(tmp_path / "nothing-here")
    result = run("call", "a.b.c", "{}", "--discovery-dir", missing, "--wait", "0.2")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("trioplane: NoInstances: no instances of a.b.c found in file discovery")
    assert "no such folder yet" in line
    result = run("instances", "a.b.c", "--discovery-dir", missing)
    assert (result.returncode, result.stdout) == (0, "")
    assert "no such folder yet" in one_line(result.stderr)


def test_instances_with_etcd_away_fails_instead_of_listing_nothing() -> None:
    """An etcd that does not answer was an empty list and exit status 0."""
    result = run("instances", "a.b.c", "--discovery", f"etcd://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "no etcd endpoint answered" in one_line(result.stderr)


# -- 3 and 4. bad arguments: exit status 2, one line -----------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["call", "a.b.c", "{}", "--wait", "-1"], "--wait: must be a number of seconds >= 0"),
        (["call", "a.b.c", "{}", "--wait", "nan"], "argument --wait: must be a number of seconds"),
        (["call", "a.b.c", "{}", "--timeout", "0"], "argument --timeout: must be more than 0"),
        (["call", "a.b.c", "{}", "--timeout", "soon"], "argument --timeout: not a number"),
        (["serve", "x:y", "--endpoint", "a.b.c", "--grace", "-1"], "argument --grace:"),
        (["serve", "x:y", "--endpoint", "a.b.c", "--port", "70000"], "argument --port:"),
        (["demo", "--concurrency", "0"], "argument --concurrency: must be at least 1"),
        (["demo", "--requests", "-5"], "argument --requests: must be at least 0"),
        (["call", "ns.comp", "{}"], "argument endpoint: endpoint must be 'namespace.component"),
        (["instances", "a..c"], "argument endpoint: endpoint must be"),
        (["serve", "x:y", "--endpoint", "ab"], "argument --endpoint: endpoint must be"),
        (["call", "a.b.c", "{'q': 1}"], "argument request: the request is not valid JSON"),
        (["call", "a.b.c", "{}", "--instance-id", "0xg1"], "not an instance id: '0xg1'"),
        (["call", "a.b.c", "{}", "--nats-server", "http://x"], "not a NATS server URL"),
        (["call", "a.b.c", "{}", "--discovery", "etcd://h:1", "--discovery-dir", "."],
         "not allowed with argument --discovery"),
        (["serve", "x:y", "--endpoint", "a.b.c", "--transports", "tcp,udp"], "--transports"),
        (["serve", "tests.handlers:ticks", "--endpoint", "a.b.c", "--transports", "nats"],
         "--transports nats needs --nats-server"),
        (["call"], "the following arguments are required: endpoint, request"),
        ([], "give a command: demo, call, instances, serve"),
        (["cal"], "invalid choice: 'cal'"),
        (["call", "a.b.c", "{}", "--json"], "unrecognized arguments: --json"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    """Each is the user's mistake: the line names the argument and points to --help."""
    result = run(*args, env=without_nats())
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert message in line
    prog = " ".join(["trioplane", *args[:1]]) if args and args[0] != "cal" else "trioplane"
    assert line.startswith(f"{prog}: error: ")
    assert line.endswith(f"(see {prog} --help)")


# -- 5. instance ids are hexadecimal ----------------------------------------------------------


@pytest.mark.parametrize("given", ["1234", "0x1234", "0X1234"])
async def test_instance_ids_are_hex_with_or_without_0x(tmp_path: Path, given: str) -> None:
    """``--instance-id 1234`` was read as decimal (0x4d2): it is the instance Dynamo
    and ``trioplane instances`` print as 1234."""

    def script(call: FakeCall) -> list[Action]:
        return stream_frames(call.codec, ["hello"])

    async with open_fake_endpoint_worker(script) as fake:
        write_record(tmp_path, fake.instance("ns.comp.ep", 0x1234))
        listed = await run_async("instances", "ns.comp.ep", "--discovery-dir", str(tmp_path))
        called = await run_async(
            "call", "ns.comp.ep", "{}", "--discovery-dir", str(tmp_path), "--instance-id", given
        )
    assert listed.stdout.decode().split()[0] == "1234"
    assert called.returncode == 0, called.stderr
    assert called.stdout.decode().splitlines() == ['"hello"']


async def test_an_unknown_instance_id_is_echoed_in_hex(tmp_path: Path) -> None:
    async with open_fake_endpoint_worker() as fake:
        write_record(tmp_path, fake.instance("ns.comp.ep", 0x1234))
        result = await run_async(
            "call", "ns.comp.ep", "{}", "--discovery-dir", str(tmp_path), "--instance-id", "99"
        )
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "no instance 99 of ns.comp.ep (known: 1234)" in line


# -- 6. help ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["demo"], ["call"], ["instances"], ["serve"]])
def test_help_is_plain_text_and_says_the_exit_statuses(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    text = result.stdout
    for markup in ("``", ":func:", ":class:", ":mod:"):
        assert markup not in text
    for status in ("0    success", "1    the command failed", "2    bad arguments",
                   "130  interrupted", "141  stdout closed"):  # fmt: skip
        assert status in text


@pytest.mark.parametrize("command", ["call", "instances", "serve"])
def test_help_says_where_discovery_looks_without_options(command: str) -> None:
    """Not ``$DYN_FILE_KV`` alone: Dynamo's rule (etcd unless DYN_DISCOVERY_BACKEND=file)
    and the file backend's real default."""
    text = " ".join(run(command, "--help").stdout.split())
    assert "DYN_DISCOVERY_BACKEND unset or etcd: etcd at $ETCD_ENDPOINTS" in text
    assert "(default http://localhost:2379)" in text
    assert "$DYN_FILE_KV (default $TMPDIR/dynamo_store_kv" in text


def test_every_option_has_help() -> None:
    """Several options had no help text at all."""
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in {"trioplane": parser, **commands.choices}.items():
        for action in sub._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{name} {action.option_strings or action.dest}"


# -- 7. NATS --------------------------------------------------------------------------------


def nats_record(root: Path) -> None:
    write_record(root, Instance("ns", "comp", "ep", 0xA1, "nats_tcp", "ns_comp.ep-a1"))


def test_instances_on_nats_need_nats_server_and_the_line_says_so(tmp_path: Path) -> None:
    """Without a NATS server, a NATS-only endpoint said ``they use ['nats_tcp']``."""
    nats_record(tmp_path)
    for extra in [], ["--instance-id", "a1"]:
        result = run("call", "ns.comp.ep", "{}", "--discovery-dir", str(tmp_path), *extra,
                     env=without_nats())  # fmt: skip
        assert result.returncode == 1
        line = one_line(result.stderr)
        assert line.startswith("trioplane: NoInstances: ")
        assert "on the NATS request plane: pass --nats-server" in line


def test_an_unreachable_nats_server_is_the_only_line(tmp_path: Path) -> None:
    """No "cannot warm up the nats transport" line before the real error."""
    nats_record(tmp_path)
    url = f"nats://127.0.0.1:{free_port()}"
    result = run("call", "ns.comp.ep", "{}", "--discovery-dir", str(tmp_path), "--nats-server", url)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("trioplane: ConnectError: ")
    assert url in line


# -- 8. Ctrl-C, serve --------------------------------------------------------------------------


@pytest.mark.parametrize("watch", [False, True])
async def test_sigint_exits_130_without_a_traceback(tmp_path: Path, watch: bool) -> None:
    """Ctrl-C during a call (or while watching instances) is exit status 130, quietly."""
    async with open_worker({"ns.cli.count": counting}, discovery_root=tmp_path):
        args = (
            ["instances", "ns.cli.count", "--watch"]
            if watch
            else ["call", "ns.cli.count", '{"n": 1000, "sleep": 0.05}']
        )
        process = await trio.lowlevel.open_process(
            [*COMMAND, *args, "--discovery-dir", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            await first_line(process)
            process.send_signal(signal.SIGINT)
            with trio.fail_after(60):
                assert await process.wait() == 130
            assert process.stderr is not None
            assert await process.stderr.receive_some() == b""
        finally:
            process.kill()
            await process.wait()


def test_serve_on_a_foreign_address_is_one_line(tmp_path: Path) -> None:
    """A host not of this machine (192.0.2.1 is TEST-NET-1) was an OSError traceback."""
    result = run("serve", "tests.handlers:ticks", "--endpoint", "a.b.c", "--host", "192.0.2.1",
                 "--discovery-dir", str(tmp_path))  # fmt: skip
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("trioplane: CannotListen: cannot listen on 192.0.2.1 port 0: ")


async def test_serve_logs_a_failing_handler_on_stderr(tmp_path: Path) -> None:
    """Once serving, the worker's log is the server's stderr: a handler's exception
    was nowhere to be seen."""
    (tmp_path / "failing.py").write_text(
        "async def handler(request, context):\n    raise RuntimeError('kaboom')\n    yield\n"
    )
    process = await trio.lowlevel.open_process(
        [*COMMAND, "serve", "failing:handler", "--endpoint", "ns.cli.fail",
         "--discovery-dir", str(tmp_path / "kv")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert (await first_line(process)).startswith(b"serving ns.cli.fail as ")
        kv = str(tmp_path / "kv")
        result = await run_async("call", "ns.cli.fail", "{}", "--discovery-dir", kv)
        assert result.returncode == 1
        assert "RuntimeError: kaboom" in one_line(result.stderr)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            assert await process.wait() == 0
        assert process.stderr is not None
        log = b""
        while chunk := await process.stderr.receive_some():
            log += chunk
        assert b"ERROR trioplane.worker: handler failed on request" in log
        assert b"RuntimeError: kaboom" in log
    finally:
        process.kill()
        await process.wait()
