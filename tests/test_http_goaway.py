"""HTTP/2 GOAWAY: what the server never processed is sent again, nothing twice.

The server here follows RFC 9113, 6.8, unlike hypercorn (see test_http_client):
every ``every`` requests on a connection it sends GOAWAY naming the highest stream
it has seen, answers every stream up to it, ignores the streams above it, and
closes the connection. It is h2's own server state machine over a Trio socket,
with the GOAWAY frame written by hand (h2 refuses to answer streams once it has
sent one). After its GOAWAY it gives the streams it named 0.2 s to finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httpcore
import hyperframe.frame
import pytest
import trio

import trioplane
from trioplane.transports._httpcore import Attempt, _WatchedStream, attempting
from trioplane.wire.h2frames import GoawayWatch

from .h2servers import LoopbackH2Server


@dataclasses.dataclass
class _Connection:
    conn: h2.connection.H2Connection = dataclasses.field(
        default_factory=lambda: h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
    )
    names: dict[int, bytes] = dataclasses.field(default_factory=dict)  # open streams, by id
    last: int | None = None  # the last stream id of the GOAWAY sent


class GoawayServer(LoopbackH2Server):
    """Each request carries its name in an ``x-name`` header, so the server knows
    even the requests whose bodies never arrived."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.processed: list[bytes] = []
        self.dropped: list[bytes] = []  # at or below a GOAWAY, but never complete
        self.ignored = 0  # above a GOAWAY's last stream id: never processed
        self.connections = 0

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        state = _Connection()
        try:
            with contextlib.suppress(trio.BrokenResourceError):  # a client may reset
                await self._serve_connection(stream, state)
        finally:
            if state.last is not None:
                self.dropped += [name for sid, name in state.names.items() if sid <= state.last]

    async def _serve_connection(self, stream: trio.SocketStream, state: _Connection) -> None:
        conn, names = state.conn, state.names
        conn.initiate_connection()
        answered = 0
        last: int | None = None
        async with stream:
            await stream.send_all(conn.data_to_send())
            while last is None or any(sid <= last for sid in names):
                # After its GOAWAY the server waits a little for the streams it
                # named to finish (an h2 client cannot finish them), then closes.
                data = b""
                with trio.move_on_after(math.inf if last is None else 0.2):
                    data = await stream.receive_some(65536)
                if last is not None and not data:
                    break
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        names[event.stream_id] = dict(event.headers)[b"x-name"]
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        name = names.pop(event.stream_id)
                        if last is not None and event.stream_id > last:
                            self.ignored += 1  # never processed, as the GOAWAY said
                            continue
                        self.processed.append(name)
                        conn.send_headers(event.stream_id, [(":status", "202")], end_stream=True)
                        answered += 1
                        if answered == self.every:
                            last = state.last = conn.highest_inbound_stream_id
                            goaway = hyperframe.frame.GoAwayFrame(0)
                            goaway.last_stream_id = last
                            await stream.send_all(conn.data_to_send() + goaway.serialize())
                await stream.send_all(conn.data_to_send())
            if last is None:
                return
            # Close gracefully: end our side, then read until the client's EOF, so no
            # reset destroys the GOAWAY before the client reads it.
            await stream.send_eof()
            with trio.move_on_after(1):
                while data := await stream.receive_some(65536):
                    with contextlib.suppress(h2.exceptions.ProtocolError):
                        for event in conn.receive_data(data):
                            if isinstance(event, h2.events.RequestReceived):
                                self.ignored += 1  # above the GOAWAY: never processed


async def test_requests_above_the_goaway_are_sent_again_and_none_twice() -> None:
    """Every request reaches the server exactly once; only processed ones may fail.

    A request above a GOAWAY's last stream id is sent again on a fresh connection,
    whether httpcore read the GOAWAY first or the request's write failed because
    the server had closed (then the client's watch finds the GOAWAY in what the
    server sent). A request at or below it was processed; its answer is lost if
    it comes after the GOAWAY (h2, httpcore's HTTP/2 library, takes a GOAWAY as
    the end of the connection), and it fails with ConnectionLost, never re-sent.

    httpcore also leaves a few requests waiting on such a connection until their
    timeout (bare httpx does the same here): they fail with AckTimeout, and what
    they did is unknown, as for any timeout.
    """
    server = GoawayServer(every=20)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        async with trioplane.open_http_client(http2=True, ack_timeout=2) as client:
            succeeded: list[bytes] = []
            failed: list[bytes] = []
            timed_out: list[bytes] = []  # see the docstring

            async def caller(n: int) -> None:
                for i in range(25):
                    body = b"%d-%d" % (n, i)
                    try:
                        ack = await client.send_request(
                            server.url(), b"", {"x-name": body.decode()}
                        )
                        assert ack == b""
                        succeeded.append(body)
                    except trioplane.ConnectionLost:
                        failed.append(body)
                    except trioplane.AckTimeout:
                        timed_out.append(body)

            async with trio.open_nursery() as callers:
                for n in range(16):
                    callers.start_soon(caller, n)
        nursery.cancel_scope.cancel()
    assert len(succeeded) + len(failed) + len(timed_out) == 400
    assert len(server.processed) == len(set(server.processed))  # nothing twice
    assert set(succeeded) <= set(server.processed)
    # What failed was processed, or was at most the GOAWAY's last stream and never finished.
    assert set(failed) <= set(server.processed) | set(server.dropped)
    assert len(failed) + len(timed_out) < 100
    # A connection answers its 20, then the streams (of 16 callers) its GOAWAY named.
    assert server.connections >= len(server.processed) // (20 + 16)
    assert succeeded  # (requests above a GOAWAY are rare here: see test_h2_client)


@pytest.mark.parametrize("split", [1, 5, 9, 13, 17])
def test_the_watch_reads_the_server_bytes_of_this_test(split: int) -> None:
    """The test server's GOAWAY, as the client's watch sees it (cut anywhere)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    goaway = hyperframe.frame.GoAwayFrame(0)
    goaway.last_stream_id = 41
    blob = conn.data_to_send() + goaway.serialize()
    watch = GoawayWatch()
    watch.feed(blob[:split])
    watch.feed(blob[split:])
    assert watch.last_stream_id == 41


class _ClosedPeer(httpcore.AsyncNetworkStream):
    """A connection whose server sent ``sent`` and closed: writes fail, reads drain."""

    def __init__(self, sent: bytes) -> None:
        self.sent = sent

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        await trio.lowlevel.checkpoint()
        data, self.sent = self.sent[:max_bytes], self.sent[max_bytes:]
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await trio.lowlevel.checkpoint()
        raise httpcore.WriteError("broken pipe")


async def test_a_failed_write_finds_the_goaway_the_server_sent_before_closing() -> None:
    """The attempt learns the GOAWAY httpcore never read; httpcore still gets the bytes."""
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    goaway = hyperframe.frame.GoAwayFrame(0)
    goaway.last_stream_id = 7
    sent = server.data_to_send() + goaway.serialize()
    stream = _WatchedStream(_ClosedPeer(sent))
    attempt = Attempt()
    with attempting(attempt), pytest.raises(httpcore.WriteError) as caught:
        await stream.write(b"HEADERS for stream 9")
    assert attempt.goaway_last_stream_id(caught.value) == 7
    assert await stream.read(1 << 20) == sent  # nothing is lost for httpcore


async def test_without_a_goaway_nothing_is_judged() -> None:
    stream = _WatchedStream(_ClosedPeer(b""))
    attempt = Attempt()
    with attempting(attempt), pytest.raises(httpcore.WriteError) as caught:
        await stream.write(b"x")
    assert attempt.goaway_last_stream_id(caught.value) is None
