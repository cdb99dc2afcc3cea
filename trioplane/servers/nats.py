"""The NATS request-plane server: Dynamo's subjects, the reply is the ack.

:class:`NatsPlaneServer` subscribes to each instance's subject
(``{ns}_{comp}.{ep}-{instance_id:x}``) on a :class:`~trioplane.NatsConnection` and
answers each request as its policy says, as Dynamo's worker does: an empty
reply payload = accepted, a refusal text otherwise; the request's NATS headers
(first value of each) become the frame's headers and its payload is the
TwoPart payload, unframed. A ``drop`` sends no reply (the caller times out);
``raw`` sends its bytes as the reply; a ``delay`` delays that reply alone (each
request has its own reply subject, so there is no order to keep). A payload over
``max_frame_size`` gets Dynamo's ``Read error`` refusal.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable

import trio

from trioplane._errors import TrioplaneError
from trioplane.nats import NatsConnection, Subscription
from trioplane.servers._base import Policy, Reply, ServerStatistics, accept_all
from trioplane.wire.rejections import read_error
from trioplane.wire.tcp import DEFAULT_MAX_FRAME_SIZE, RequestFrame

__all__ = ["NatsPlaneServer"]

log = logging.getLogger("trioplane.server")


class NatsPlaneServer:
    """Serves ``subjects`` on ``connection`` until cancelled (``nursery.start(server.serve)``)."""

    def __init__(
        self,
        connection: NatsConnection,
        subjects: Iterable[str],
        policy: Policy = accept_all,
        *,
        on_frame: Callable[[RequestFrame], None] | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self.connection = connection
        self.max_frame_size = max_frame_size
        self.subjects = tuple(subjects)
        self.policy = policy
        self.on_frame = on_frame
        self.counters = ServerStatistics()

    def statistics(self) -> ServerStatistics:
        """A snapshot of the server's counters (requests, refusals)."""
        return dataclasses.replace(self.counters)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe (flushed: the server knows before anyone can discover us), then serve."""
        async with trio.open_nursery() as nursery:
            for subject in self.subjects:
                requests = await self.connection.subscribe(subject)
                nursery.start_soon(self._serve_subject, requests, nursery)
            await self.connection.flush()
            task_status.started()

    async def _serve_subject(self, requests: Subscription, nursery: trio.Nursery) -> None:
        counters = self.counters
        async with requests:
            async for msg in requests:
                headers = {k: v[0] for k, v in (msg.headers or {}).items() if v}
                frame = RequestFrame(requests.subject, headers, msg.payload)
                counters.requests += 1
                if self.on_frame is not None:
                    self.on_frame(frame)
                if len(msg.payload) > self.max_frame_size:
                    counters.read_errors += 1
                    reply = Reply.reject(read_error(f"request of {len(msg.payload)} bytes"))
                else:
                    reply = self.policy(frame)
                if not reply.accepted:
                    counters.rejected += 1
                if msg.reply is None or reply.kind == "drop":
                    continue
                if reply.delay:
                    nursery.start_soon(self._reply_later, msg.reply, reply)
                else:
                    await self._reply(msg.reply, reply)

    async def _reply(self, subject: str, reply: Reply) -> None:
        try:
            await self.connection.publish(subject, reply.data)
        except TrioplaneError as exc:  # disconnected: the caller's request fails on its own
            log.debug("cannot reply on %s: %s", subject, exc)

    async def _reply_later(self, subject: str, reply: Reply) -> None:
        await trio.sleep(reply.delay)
        await self._reply(subject, reply)
