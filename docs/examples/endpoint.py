"""Stream from an endpoint; a fake worker from trioplane.testing stands in for Dynamo."""

import trio

import trioplane
from trioplane.testing import FakeCall, open_fake_endpoint_worker, stream_frames


def count_up(call: FakeCall) -> list[bytes | float]:
    """The fake handler: yield {"i": 0}, {"i": 1}, ... up to the request's n."""
    return stream_frames(call.codec, [{"i": i} for i in range(call.request["n"])])


async def main() -> None:
    async with open_fake_endpoint_worker(count_up) as worker:
        # In a real deployment, discovery=None finds instances as Dynamo does (etcd or file).
        instances = [worker.instance("demo.counter.generate")]
        async with trioplane.open_endpoint_client("demo.counter.generate", instances) as client:
            await client.wait_for_instances()
            async with client.generate({"n": 3}) as responses:
                async for item in responses:
                    print("item:", item)
            print("all at once:", await client.call({"n": 2}))


if __name__ == "__main__":
    trio.run(main)
