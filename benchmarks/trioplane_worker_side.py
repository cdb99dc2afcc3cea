"""A trioplane worker in a process of its own, for ``worker_vs_dynamo.py``.

    python trioplane_worker_side.py DISCOVERY_ROOT ENDPOINT

serves ENDPOINT (``{"n": n}`` -> ``n`` items) until interrupted.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trioplane.worker import RequestContext, open_worker


async def count(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    for i in range(request["n"]):
        yield {"i": i}


async def main(root: str, endpoint: str) -> None:
    async with open_worker({endpoint: count}, discovery_root=root):
        print("serving", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    # SIGINT stops it even when started in the background of a shell, which ignores
    # SIGINT there (and Python then installs no handler of its own, nor Trio).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, sys.argv[1], sys.argv[2])
