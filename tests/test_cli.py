"""The ``trioplane`` command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import trioplane
from trioplane import Instance
from trioplane.cli import main
from trioplane.discovery import instance_key
from trioplane.testing import FakeCall, Reply, open_fake_endpoint_worker, stream_frames
from trioplane.testing.endpoint import Action, Script
from trioplane.wire.response import encode_item, encode_prologue


def test_demo_runs_end_to_end() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trioplane",
            "demo",
            "--requests",
            "500",
            "--concurrency",
            "8",
            "--calls",
            "20",
            "--items",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "-> b'' (empty = accepted)" in result.stdout
    assert "b'Server overloaded: worker at capacity'" in result.stdout
    assert "worker received 502 requests on 1 connection(s)" in result.stdout
    # The whole loop: a trioplane worker, the endpoint client, one row per plane.
    assert "the whole loop: a trioplane worker serving demo.loop.generate" in result.stdout
    assert "tcp        [##############################] 20/20" in result.stdout
    assert "websocket  [##############################] 20/20" in result.stdout
    assert "http       [##############################] 20/20" in result.stdout
    table = result.stdout.split("plane       calls")[1]
    assert "  tcp            20" in table
    # What the metrics recorded: 20 calls per plane, 5 items of each.
    planes = sum(f"{plane} " in table for plane in ("tcp", "websocket", "http", "nats"))
    assert re.search(rf"dynamo_component_requests_total +{planes * 20}\n", table)
    assert re.search(rf"dynamo_request_plane_roundtrip_ttft_seconds +{planes * 20} samples", table)


def test_bad_arguments_exit_non_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioplane", "demo", "--concurrency", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--concurrency" in result.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == trioplane.__version__


def write_record(root: Path, instance: Instance) -> None:
    """Register ``instance`` in a Dynamo file-discovery root, as a worker would."""
    folder = root / "v1" / "instances"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / instance_key(instance)).write_bytes(instance.to_json())


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "trioplane", *args], capture_stdout=True, capture_stderr=True,
        check=False,
    )  # fmt: skip


async def test_call_prints_one_json_line_per_item(tmp_path: Path) -> None:
    def script(call: FakeCall) -> list[Action]:
        return stream_frames(call.codec, [{"i": i, "echo": call.request} for i in range(3)])

    async with open_fake_endpoint_worker(script) as fake:
        write_record(tmp_path, fake.instance("ns.comp.ep", 0xABC))
        result = await run_cli(
            "call", "ns.comp.ep", '{"q": "é"}', "--discovery-dir", str(tmp_path),
            "--instance-id", "abc", "--codec", "json",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert [json.loads(line) for line in lines] == [{"i": i, "echo": {"q": "é"}} for i in range(3)]
    assert fake.calls[0].control.payload_codec == "json"
    assert result.stderr == b""  # no --stats


async def test_call_stats_time_the_call_on_stderr(tmp_path: Path) -> None:
    def script(call: FakeCall) -> list[Action]:
        return stream_frames(call.codec, [{"i": i} for i in range(5)])

    async with open_fake_endpoint_worker(script) as fake:
        write_record(tmp_path, fake.instance("ns.comp.ep", 0xABC))
        result = await run_cli(
            "call", "ns.comp.ep", "{}", "--discovery-dir", str(tmp_path), "--stats"
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.decode().splitlines()) == 5  # stdout keeps only the items
    (line,) = result.stderr.decode().splitlines()
    assert re.fullmatch(
        r"ack \d+\.\d ms, first item \d+\.\d ms, total \d+\.\d ms, 5 items \([\d,]+ items/s\)",
        line,
    ), line


@pytest.mark.parametrize(
    ("script", "extra", "message"),
    [
        (None, ["--wait", "0.2"], "NoInstances: no instances of ns.comp.ep found in"),
        (
            lambda call: [encode_prologue(), encode_item(call.codec, {"event": "error",
                          "error": {"message": "ValueError: boom"}})],
            [],
            "RemoteUnknown: ValueError: boom",
        ),
        (lambda call: Reply.reject("Server overloaded: busy"), [], "WorkerOverloaded"),
        (lambda call: [encode_prologue()], [], "StreamIncomplete"),
        (lambda call: [encode_prologue(), 5.0], ["--timeout", "0.3"], "longer than 0.3 s"),
    ],
)  # fmt: skip
async def test_call_failures_print_one_line_and_exit_1(
    tmp_path: Path, script: Script | None, extra: list[str], message: str
) -> None:
    async with open_fake_endpoint_worker(script or (lambda call: [])) as fake:
        if script is not None:
            write_record(tmp_path, fake.instance("ns.comp.ep"))
        result = await run_cli("call", "ns.comp.ep", "{}", "--discovery-dir", str(tmp_path), *extra)
    assert result.returncode == 1
    stderr = result.stderr.decode().strip().splitlines()
    assert len(stderr) == 1, stderr
    assert message in stderr[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ns.comp.ep", "{not json"], "not valid JSON"),
        (["ns.comp.ep", "{}", "--instance-id", "xyz"], "not an instance id"),
        (["ns.comp.ep", "{}", "--codec", "xml"], "invalid choice"),
    ],
)
def test_call_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioplane", "call", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_bad_endpoint_name_is_one_line(tmp_path: Path) -> None:
    """A bad endpoint name is a bad argument: exit status 2, as the docs promise."""
    result = subprocess.run(
        [sys.executable, "-m", "trioplane", "call", "nodots", "{}", "--discovery-dir", "."],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("trioplane call: error: argument endpoint: endpoint must be")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.nats
async def test_call_over_nats(tmp_path: Path) -> None:
    """``trioplane call`` reaches an instance on the NATS plane with --nats-server."""
    from trioplane.testing.nats_server import nats_server_binary, run_nats_server
    from trioplane.worker import RequestContext, open_worker

    if nats_server_binary() is None:
        pytest.skip("no nats-server binary")

    async def hello(request: object, context: RequestContext) -> AsyncIterator[object]:
        yield {"hello": request}

    with run_nats_server() as url:
        async with open_worker(
            {"ns.cli.hello": hello}, discovery_root=tmp_path, transports=("nats",), nats_servers=url
        ):
            result = await run_cli(
                "call", "ns.cli.hello", '"you"', "--discovery-dir", str(tmp_path),
                "--nats-server", url,
            )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"hello": "you"}


async def test_instances_lists_an_endpoints_instances(tmp_path: Path) -> None:
    records = [
        Instance("ns", "comp", "ep", 0xB2, "tcp", "127.0.0.1:1/b2/ns/comp/ep", "cpu", "msgpack"),
        Instance("ns", "comp", "ep", 0xA1, "nats_tcp", "ns_comp.ep-a1"),
        Instance("ns", "comp", "other", 0xC3, "tcp", "127.0.0.1:1/c3/ns/comp/other"),
    ]
    for record in records:
        write_record(tmp_path, record)
    result = await run_cli("instances", "ns.comp.ep", "--discovery", f"file://{tmp_path}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "a1  nats_tcp  ns_comp.ep-a1  json",
        "b2  tcp  127.0.0.1:1/b2/ns/comp/ep  msgpack",
    ]


@pytest.mark.etcd
async def test_instances_watch_and_call_through_etcd(tmp_path: Path) -> None:
    from trioplane import EtcdDiscovery
    from trioplane.discovery.etcd import etcd_key
    from trioplane.etcd import open_etcd_client
    from trioplane.worker import RequestContext, open_worker

    from .etcd import run_etcd

    async def hello(request: object, context: RequestContext) -> AsyncIterator[object]:
        yield {"hello": request}

    with run_etcd(tmp_path / "etcd") as etcd:
        url = f"etcd://127.0.0.1:{etcd.client_port}"
        already = Instance("ns", "cli", "hello", 0xA, "tcp", "127.0.0.1:1/a/ns/cli/hello")
        async with open_etcd_client(etcd.url) as tool:
            await tool.put(etcd_key(already), already.to_json())
        watcher = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trioplane", "instances", "ns.cli.hello", "--watch",
             "--discovery", url],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert watcher.stdout is not None
        output = watcher.stdout
        seen = b""

        async def lines(n: int) -> list[str]:
            nonlocal seen
            with trio.fail_after(20):
                while seen.count(b"\n") < n:
                    seen += await output.receive_some()
            return seen.decode().splitlines()

        try:
            assert await lines(1) == ["a  tcp  127.0.0.1:1/a/ns/cli/hello  json"]
            async with open_worker({"ns.cli.hello": hello}, discovery=EtcdDiscovery(etcd.url)) as w:
                (instance,) = w.instances
                result = await run_cli("call", "ns.cli.hello", '"you"', "--discovery", url)
                assert result.returncode == 0, result.stderr
                assert json.loads(result.stdout) == {"hello": "you"}
            line = f"{instance.instance_id:x}  tcp  {instance.address}  msgpack"
            assert (await lines(3))[1:] == [f"+ {line}", f"- {line}"]
        finally:
            watcher.kill()
            await watcher.wait()


@pytest.mark.parametrize("url", ["zk://x:1", "file://relative/dir", "etcd://", "etcd://h:x"])
def test_bad_discovery_urls_are_one_line(url: str) -> None:
    """A discovery URL that cannot be is a bad argument (exit status 2)."""
    result = subprocess.run(
        [sys.executable, "-m", "trioplane", "instances", "a.b.c", "--discovery", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("trioplane instances: error: argument --discovery:")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_a_dead_etcd_is_one_line_not_a_hang() -> None:
    from .etcd import free_port

    with trio.fail_after(20):
        result = await run_cli(
            "call", "a.b.c", "{}", "--wait", "0.5", "--discovery", f"etcd://127.0.0.1:{free_port()}"
        )
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "NoInstances" in lines[0]
    assert "no etcd endpoint answered" in lines[0]
