"""A worker's /metrics and /health, scraped after a few calls.

Needs ``pip install 'trioplane[metrics,http]'`` (prometheus-client, and httpx to scrape).
"""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio
from prometheus_client import CollectorRegistry

import trioplane
from trioplane.metrics import Metrics
from trioplane.status import StatusOptions
from trioplane.worker import RequestContext, open_worker


async def count(request: Any, context: RequestContext) -> AsyncIterator[Any]:
    for i in range(request["n"]):
        yield {"i": i}


async def main() -> None:
    metrics = Metrics(CollectorRegistry())  # or Metrics.default(): prometheus-client's own
    with trio.fail_after(30):
        async with open_worker(
            {"demo.counter.generate": count},
            discovery=trioplane.StaticDiscovery(),
            status=StatusOptions(port=0),  # or DYN_SYSTEM_PORT=0 in the environment
            metrics=metrics,
        ) as worker:
            async with trioplane.open_endpoint_client(
                "demo.counter.generate", worker.instances, metrics=metrics
            ) as client:
                for n in (1, 5, 10):
                    await client.call({"n": n})
            assert worker.status is not None
            async with httpx.AsyncClient(base_url=worker.status.url) as http:
                health = await http.get("/health")
                print("GET /health:", health.status_code, health.text)
                scraped = await http.get("/metrics")
    for line in scraped.text.splitlines():
        if line.startswith(("dynamo_component_requests_total", "dynamo_component_response_bytes")):
            print(line)
        if line.startswith("dynamo_request_plane_roundtrip_ttft_seconds_count"):
            print(line)


if __name__ == "__main__":
    trio.run(main)
