"""Dynamo's own Python client, for trioplane's interop tests (runs in Dynamo's venv).

    python client_script.py ENDPOINT REQUEST_JSON [stop_after] [--batch] [--annotated]
        [--context ID] [--metadata JSON]

Streams one call from an endpoint found by discovery and prints one JSON line per
item (``{"item": ...}``), then ``{"done": true}``, or ``{"error": "Class: text"}``
if the stream raised. With ``stop_after`` it stops reading after that many items
(the Dynamo client then kills the call). ``--batch``: REQUEST_JSON is a list, one
call each, and each call prints one line ``{"call": [its lines]}``. ``--annotated``
prints each item's ``data``, ``event``, ``comments`` and ``id``. ``--context`` and
``--metadata`` pass ``Context(id, metadata)``. ``$CLIENT_LINGER`` seconds are waited
before shutting down (Dynamo's client does not flush its spans on shutdown). With
``$METRICS_HTTP_PORT``, Dynamo's HTTP service runs on that port (its ``/metrics`` are
where a Dynamo process shows its request-plane metrics) and, after the calls, one
more line ``{"metrics": "<exposition text>"}`` is printed.
"""

import argparse
import asyncio
import json
import os
import urllib.request
from typing import Any

from dynamo.runtime import Context, DistributedRuntime


def plain(item: Any, annotated: bool) -> Any:
    data = getattr(item, "data", None)
    if not callable(data):
        return item
    if not annotated:
        return data()
    return {"data": data(), "event": item.event(), "comments": item.comments(), "id": item.id()}


async def one_call(client: Any, request: Any, args: argparse.Namespace) -> list[Any]:
    lines: list[Any] = []
    context = None
    if args.context is not None or args.metadata is not None:
        context = Context(args.context, json.loads(args.metadata or "{}"))
    try:
        count = 0
        stream = await client.round_robin(request, annotated=args.annotated, context=context)
        async for item in stream:
            lines.append({"item": plain(item, args.annotated)})
            count += 1
            if args.stop_after is not None and count >= args.stop_after:
                break
        lines.append({"done": True})
    except Exception as exc:
        lines.append({"error": f"{type(exc).__name__}: {exc}"})
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("request")
    parser.add_argument("stop_after", nargs="?", type=int)
    parser.add_argument("--batch", action="store_true")
    parser.add_argument("--annotated", action="store_true")
    parser.add_argument("--context")
    parser.add_argument("--metadata")
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    backend = os.environ.get("DYN_DISCOVERY_BACKEND", "file")
    runtime = DistributedRuntime(loop, backend, os.environ.get("DYN_REQUEST_PLANE", "tcp"))
    metrics_port = os.environ.get("METRICS_HTTP_PORT")
    if metrics_port:
        from dynamo.llm import HttpService

        service = HttpService(port=int(metrics_port))
        serving = asyncio.ensure_future(service.run(runtime))
    client = await runtime.endpoint(args.endpoint).client()
    await client.wait_for_instances()
    request = json.loads(args.request)
    if args.batch:
        for each in request:
            print(json.dumps({"call": await one_call(client, each, args)}), flush=True)
    else:
        for line in await one_call(client, request, args):
            print(json.dumps(line), flush=True)
    if metrics_port:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
        print(json.dumps({"metrics": text}), flush=True)
        serving.cancel()
    await asyncio.sleep(float(os.environ.get("CLIENT_LINGER", "0")))
    runtime.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
