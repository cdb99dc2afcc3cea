"""HTTP/2 uploads waiting for flow-control window do not stall.

httpcore (1.0.x) lets a request waiting for window read the connection after
another request's read already brought the WINDOW_UPDATE it waits for
(pydantic/httpx2 issue 1133). When the server has nothing more to send, that
read blocks until its timeout, holding the connection's read lock. trioplane's
watched stream sends such a read's server a PING after a moment; its answer ends
the read. The server here (h2's own state machine over Trio) makes the stall
certain: it opens the window only once both uploads wait for it, in one write,
and answers only when both bodies are complete.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import trio

import trioplane

from .h2servers import LoopbackH2Server

#: Enough window for every body of the test at once.
WIDE_OPEN = 16 * 1024 * 1024
#: HTTP/2's initial window: what a client may send before the first WINDOW_UPDATE.
INITIAL_WINDOW = 65535


class WindowHoldingServer(LoopbackH2Server):
    def __init__(self, uploads: int) -> None:
        self.uploads = uploads
        self.pings = 0
        self.bodies: list[int] = []

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        conn.initiate_connection()
        sizes: dict[int, int] = {}  # body bytes by stream
        ended: list[int] = []
        opened = False
        async with stream:
            await stream.send_all(conn.data_to_send())
            while data := await stream.receive_some(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        sizes[event.stream_id] = 0
                    elif isinstance(event, h2.events.DataReceived):
                        sizes[event.stream_id] += len(event.data)
                    elif isinstance(event, h2.events.PingReceived):
                        self.pings += 1  # h2 queues the answer itself
                    elif isinstance(event, h2.events.StreamEnded):
                        ended.append(event.stream_id)
                window_used = sum(sizes.values()) >= INITIAL_WINDOW
                if not opened and len(sizes) == self.uploads and window_used:
                    opened = True
                    await trio.sleep(0.3)  # every upload now waits for window
                    conn.increment_flow_control_window(WIDE_OPEN)
                    for stream_id in sizes:
                        conn.increment_flow_control_window(WIDE_OPEN, stream_id=stream_id)
                if len(ended) == self.uploads:
                    for stream_id in ended:
                        conn.send_headers(stream_id, [(":status", "202")], end_stream=True)
                        self.bodies.append(sizes[stream_id])
                    ended.clear()
                await stream.send_all(conn.data_to_send())


async def test_an_upload_whose_window_another_read_brought_does_not_stall() -> None:
    server = WindowHoldingServer(uploads=2)
    body = b"x" * (200 * 1024)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        async with (
            trioplane.open_http_client(http2=True, ack_timeout=5.0) as client,
            trio.open_nursery() as uploads,  # AckTimeout if one stalls
        ):
            for _ in range(2):
                uploads.start_soon(client.send_request, server.url(), body)
        nursery.cancel_scope.cancel()
    assert server.bodies == [len(body), len(body)]
    assert server.pings >= 1  # the nudge ended the stalled read
