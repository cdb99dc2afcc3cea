"""nats-py (asyncio) request/reply, measured for ``nats_requests.py``.

    python nats_py_side.py URL SUBJECT SECONDS CONCURRENCY

prints the number of replies received within SECONDS.
"""

from __future__ import annotations

import asyncio
import sys
import time

import nats

PAYLOAD = b"x" * 100


async def main() -> None:
    url, subject, seconds, concurrency = (
        sys.argv[1],
        sys.argv[2],
        float(sys.argv[3]),
        int(sys.argv[4]),
    )
    nc = await nats.connect(url)
    await nc.request(subject, PAYLOAD, timeout=5)  # connect and warm up outside the window
    count = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await nc.request(subject, PAYLOAD, timeout=5)
            count += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    await nc.close()
    print(count)


if __name__ == "__main__":
    asyncio.run(main())
