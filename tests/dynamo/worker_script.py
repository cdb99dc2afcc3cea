"""A real Dynamo worker for trioplane's interop tests.

Runs under the Dynamo virtual environment's Python (not trioplane's), Dynamo 1.6.1
or 1.2.1 (same ``DistributedRuntime(loop, discovery, request_plane)`` and
``serve_endpoint``): serves the endpoints named on the command line, the
discovery backend named by ``DYN_DISCOVERY_BACKEND`` (``file`` by default), the
request plane named by ``DYN_REQUEST_PLANE`` (``tcp``, ``nats``,
or ``http`` on 1.2.1). The handler's behaviour is
picked by the request's ``op`` (no ``op``: echo the request once):

* ``count``: yield ``{"i": i}`` for ``i < n``;
* ``error_after``: yield one item, then raise ``ValueError("boom")``;
* ``error_before``: raise ``ValueError("boom")`` before the first item;
* ``context``: yield the context's id and metadata;
* ``trace``: yield the context's trace id, span id and parent span id (``None``
  unless the worker traces: ``DYN_LOGGING_JSONL`` or ``OTEL_EXPORT_ENABLED``);
* ``size``: yield the length of the request's ``blob``;
* ``raise``: yield ``after`` items, then raise ``exc`` (a builtin exception's or
  Dynamo's exception class name) with the text ``msg``;
* ``slow``: yield an item every ``interval`` seconds until stopped or killed,
  then write ``stopped``, ``killed`` (or ``closed`` if the generator was closed
  otherwise) to ``marker``, a file path.

An endpoint whose name ends in ``notgen`` is served by a coroutine instead of an
async generator (a handler that cannot start a stream).
"""

import asyncio
import builtins
import contextlib
import os
import sys
from pathlib import Path

import dynamo._core
from dynamo.runtime import DistributedRuntime


async def handler(request, context):  # type: ignore[no-untyped-def]
    op = request.get("op") if isinstance(request, dict) else None
    if op is None:
        yield {"echo": request}
    elif op == "count":
        for i in range(request["n"]):
            yield {"i": i}
    elif op == "error_after":
        yield {"i": 0}
        raise ValueError("boom")
    elif op == "error_before":
        raise ValueError("boom")
    elif op == "context":
        # Dynamo 1.2.1's Context has no metadata.
        metadata = getattr(context, "metadata", None)
        yield {"id": context.id(), "metadata": dict(metadata.items()) if metadata else {}}
    elif op == "raise":
        for i in range(request.get("after", 0)):
            yield {"i": i}
        name = request["exc"]
        cls = getattr(dynamo._core, name, None) or getattr(builtins, name)
        raise cls(request["msg"])
    elif op == "trace":
        yield {
            "trace_id": context.trace_id,
            "span_id": context.span_id,
            "parent_span_id": context.parent_span_id,
        }
    elif op == "size":
        yield {"size": len(request["blob"])}
    elif op == "slow":
        i = 0
        try:
            while not (context.is_stopped() or context.is_killed()):
                yield {"i": i}
                i += 1
                await asyncio.sleep(request.get("interval", 0.05))
        finally:
            state = (
                "killed" if context.is_killed() else "stopped" if context.is_stopped() else "closed"
            )
            # A few bytes for the test to read; no await is allowed while closing.
            Path(request["marker"]).write_text(state)  # noqa: ASYNC240
    else:
        raise RuntimeError(f"unknown op {op!r}")


async def notgen(request, context):  # type: ignore[no-untyped-def]
    return {"never": "streamed"}


async def main() -> None:
    loop = asyncio.get_running_loop()
    backend = os.environ.get("DYN_DISCOVERY_BACKEND", "file")
    runtime = DistributedRuntime(loop, backend, os.environ.get("DYN_REQUEST_PLANE", "tcp"))
    endpoints = [runtime.endpoint(name) for name in sys.argv[1:]]
    print("serving", flush=True)
    await asyncio.gather(
        *(
            endpoint.serve_endpoint(notgen if name.endswith("notgen") else handler)
            for name, endpoint in zip(sys.argv[1:], endpoints, strict=True)
        )
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT is how the tests stop it
        asyncio.run(main())
