"""A nats-py test peer: ``serve`` replies to requests, ``request`` sends one.

Run by ``tests.nats`` in a subprocess, with the server's URL and credentials in
``TRIOPLANE_TEST_NATS_*`` environment variables (see ``NatsServer.peer_env``). It
uses asyncio because nats-py does: it is a reference peer, not code under test.

``serve SUBJECT [--mode echo|empty|silent] [--queue Q]`` prints ``ready`` once its
subscription reached the server, and exits when its stdin closes.
``request SUBJECT [--headers JSON] [--timeout S]`` sends stdin as the payload and
prints the reply as JSON: ``{"payload": base64, "headers": {...}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import sys
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

PREFIX = "TRIOPLANE_TEST_NATS_"


def env(name: str) -> str | None:
    return os.environ.get(PREFIX + name)


async def connect() -> Client:
    """Connect with whatever credentials the environment carries."""
    options: dict[str, Any] = {}
    if ca := env("CA"):
        options["tls"] = ssl.create_default_context(cafile=ca)
        options["tls_handshake_first"] = bool(env("TLS_FIRST"))
    return await nats.connect(
        servers=[env("URL") or "nats://127.0.0.1:4222"],
        token=env("TOKEN"),
        user=env("USER"),
        password=env("PASSWORD"),
        nkeys_seed_str=env("NKEY_SEED"),
        connect_timeout=5,
        # nats-py sleeps this long (a float works) between reconnects to one server.
        reconnect_time_wait=0.2,
        max_reconnect_attempts=-1,
        **options,
    )


async def stdin_closed() -> None:
    """Return once stdin reaches EOF (the parent closed it or died)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    fd = sys.stdin.fileno()

    def on_readable() -> None:
        if not os.read(fd, 4096) and not done.done():
            done.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)


async def serve(subject: str, mode: str, queue: str) -> None:
    nc = await connect()

    async def handle(msg: Msg) -> None:
        if not msg.reply or mode == "silent":
            return
        if mode == "echo":
            await nc.publish(msg.reply, msg.data, headers=msg.headers)
        else:
            await nc.publish(msg.reply, b"")

    await nc.subscribe(subject, queue=queue, cb=handle)
    await nc.flush()
    print("ready", flush=True)
    try:
        await stdin_closed()
    finally:
        await nc.close()


async def request(subject: str, headers: dict[str, str] | None, timeout: float) -> None:
    payload = sys.stdin.buffer.read()
    nc = await connect()
    try:
        reply = await nc.request(subject, payload, timeout=timeout, headers=headers)
    finally:
        await nc.close()
    result = {
        "payload": base64.b64encode(reply.data).decode(),
        "headers": reply.headers or {},
    }
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve")
    serve_cmd.add_argument("subject")
    serve_cmd.add_argument("--mode", choices=["echo", "empty", "silent"], default="echo")
    serve_cmd.add_argument("--queue", default="")
    request_cmd = commands.add_parser("request")
    request_cmd.add_argument("subject")
    request_cmd.add_argument("--headers", type=json.loads, default=None)
    request_cmd.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    if args.command == "serve":
        asyncio.run(serve(args.subject, args.mode, args.queue))
    else:
        asyncio.run(request(args.subject, args.headers, args.timeout))


if __name__ == "__main__":
    main()
