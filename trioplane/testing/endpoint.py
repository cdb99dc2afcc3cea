"""A scriptable fake Dynamo endpoint worker, for tests that need broken streams.

A real worker never sends a malformed response stream; this one sends whatever
its *script* says. It listens on the TCP request plane (the test worker of
:mod:`trioplane.testing.worker`), decodes each request's control message and
body, and then either rejects it (the script returns a
:class:`~trioplane.testing.Reply`) or acks it and calls home through the
library's call-home sender (:func:`~trioplane.servers.open_call_home`, as the
worker does), sending the script's frames: bytes are written as they are, a
float pauses that many seconds. After a script ending with the sentinel it
waits (up to 10 s, as Dynamo) for the caller to close; after any other script
it closes at once, like a worker dying mid-stream. It records every call and
every ``"stop"``/``"kill"`` it receives (and then stops sending, as Dynamo does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from trioplane._errors import ConnectError, ProtocolError
from trioplane._types import Instance
from trioplane._util import serving
from trioplane.servers import CallHomeSender, open_call_home
from trioplane.servers.callhome import KILL, STOP
from trioplane.testing.worker import Reply, TcpTestWorker
from trioplane.tls import TcpTls
from trioplane.wire.codecs import PayloadCodec, get_codec
from trioplane.wire.control import ControlMessage
from trioplane.wire.rejections import bad_request
from trioplane.wire.response import encode_end, encode_item, encode_prologue, encode_sentinel
from trioplane.wire.tcp import RequestFrame
from trioplane.wire.twopart import decode_two_part

__all__ = ["FakeCall", "FakeEndpointWorker", "open_fake_endpoint_worker", "stream_frames"]

#: What a script sends on the call-home connection: raw bytes, or a pause in seconds.
Action = bytes | float
Script = Callable[["FakeCall"], "Sequence[Action] | Reply"]


@dataclass
class FakeCall:
    """One request the fake worker received, decoded."""

    path: str
    headers: dict[str, str]
    control: ControlMessage
    request: Any
    #: ``"stop"``/``"kill"`` frames the caller sent on the call-home connection.
    cancels: list[str] = field(default_factory=list)
    #: True once the call-home connection is closed (by either side).
    finished: bool = False

    @property
    def codec(self) -> PayloadCodec:
        return get_codec(self.control.payload_codec)


def stream_frames(codec: PayloadCodec, items: Iterable[Any]) -> list[Action]:
    """A well-formed stream as a Python worker sends it: prologue, items, end, sentinel."""
    return [
        encode_prologue(),
        *(encode_item(codec, {"data": item}) for item in items),
        encode_end(codec),
        encode_sentinel(),
    ]


def echo_script(call: FakeCall) -> Sequence[Action]:
    return stream_frames(call.codec, [call.request])


@dataclass
class FakeEndpointWorker:
    """A running fake worker; make one with :func:`open_fake_endpoint_worker`.

    ``tls`` (:class:`~trioplane.TcpTls`, default plain text) is used as a Dynamo
    worker uses it: a certificate makes the request plane serve TLS, a CA makes
    the call home dial TLS.
    """

    script: Script = echo_script
    calls: list[FakeCall] = field(default_factory=list)
    tcp: TcpTestWorker = field(default_factory=TcpTestWorker)
    tls: TcpTls | None = None
    _nursery: trio.Nursery | None = None

    def instance(
        self,
        endpoint: str = "test.fake.generate",
        instance_id: int = 0x1234,
        *,
        codec: str | None = "msgpack",
    ) -> Instance:
        """An instance record pointing at this worker (for ``StaticDiscovery``)."""
        namespace, component, name = endpoint.split(".")
        return Instance(
            namespace=namespace,
            component=component,
            endpoint=name,
            instance_id=instance_id,
            transport_kind="tcp",
            address=self.tcp.address(f"{instance_id:x}/{namespace}/{component}/{name}"),
            request_plane_codec=codec,
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.tcp.policy = self._on_request
            if self.tls is not None:
                self.tcp.ssl_context = self.tls.server_context
            await nursery.start(self.tcp.serve)
            task_status.started()

    def _on_request(self, frame: RequestFrame) -> Reply:
        try:
            message = decode_two_part(frame.payload)
            control = ControlMessage.decode(message.header)
            request = get_codec(control.payload_codec).decode(message.body)
        except (ProtocolError, ValueError) as exc:
            return Reply.reject(bad_request(exc))
        call = FakeCall(frame.path, dict(frame.headers), control, request)
        self.calls.append(call)
        actions = self.script(call)
        if isinstance(actions, Reply):
            return actions
        assert self._nursery is not None
        self._nursery.start_soon(self._call_home, call, list(actions))
        return Reply.accept()

    async def _call_home(self, call: FakeCall, actions: list[Action]) -> None:
        with trio.CancelScope() as script:

            def on_cancel(why: str) -> None:
                if why in (STOP, KILL):
                    call.cancels.append(why)
                script.cancel()  # as Dynamo: stop sending, close without the end

            try:
                async with open_call_home(
                    call.control.call_home, tls=self.tls, on_cancel=on_cancel
                ) as home:
                    await self._play(home, actions)
            except ConnectError:
                pass
        call.finished = True

    @staticmethod
    async def _play(home: CallHomeSender, actions: list[Action]) -> None:
        """Send the script's frames; as Dynamo, stop at the caller's stop or kill."""
        for action in actions:
            if isinstance(action, bytes):
                await home.send(action)
            else:
                await trio.sleep(action)
        if actions and actions[-1] == encode_sentinel():
            await home.wait_closed()  # as Dynamo: wait for the caller to close


@asynccontextmanager
async def open_fake_endpoint_worker(
    script: Script = echo_script, *, tls: TcpTls | None = None
) -> AsyncIterator[FakeEndpointWorker]:
    """Run a :class:`FakeEndpointWorker` on 127.0.0.1 for the duration of the block."""
    worker = FakeEndpointWorker(script, tls=tls)
    async with serving(worker.serve):
        yield worker
