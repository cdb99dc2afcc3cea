"""The first hour with trioplane (issue 16): each mistake a user made gets an error that
says what is wrong and what to do, from the library's own hierarchy.

* a missing extra on the worker side names the extra to install (:class:`MissingExtra`);
* a TCP client pointed at an HTTP, WebSocket, HTTP/2, NATS or other text port says
  what the peer speaks (:class:`WrongProtocol`), not ``FrameTooLarge``;
* ``await client.generate(req)`` (Dynamo's idiom) shows trioplane's (:class:`WrongIdiom`);
* a NATS-only endpoint without a NATS server says how to give one; a NATS server that
  cannot be reached is one plain error, and warm-up logs it plainly, at INFO;
* bad arguments are :class:`UsageError` subclasses naming the argument.
"""

from __future__ import annotations

import gc
import logging
import socket
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.exceptions
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import trioplane
from trioplane import (
    BadArgument,
    BadArgumentType,
    ConnectError,
    Instance,
    MissingExtra,
    ProtocolError,
    TrioplaneError,
    UsageError,
    WrongIdiom,
    WrongProtocol,
)
from trioplane.testing import FakeEndpointWorker, TcpTestWorker, stream_frames
from trioplane.testing.http import open_http_test_worker
from trioplane.transports.unified import _log_warmup_failure
from trioplane.wire import AckDecoder, encode_ack
from trioplane.wire.sniff import Foreign, foreign_answer
from trioplane.wire.tcp import DEFAULT_MAX_FRAME_SIZE

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

ENDPOINT = "test.fake.generate"

# -- 1. missing extras ---------------------------------------------------------------------

_WORKER = """
import trio, trioplane
async def handler(request, context):
    yield request
async def main():
    async with trioplane.open_worker({{"a.b.c": handler}}, transports={transports!r},
                                     register=False):
        pass
trio.run(main)
"""

MISSING_EXTRA_CASES = [
    ("hypercorn", _WORKER.format(transports=["tcp", "http"]), "http-worker", "hypercorn"),
    ("trio_websocket", _WORKER.format(transports=["websocket"]), "websocket", "trio-websocket"),
    ("hypercorn", "import trioplane.servers.http", "http-worker", "hypercorn"),
    ("trio_websocket", "import trioplane.servers.websocket", "websocket", "trio-websocket"),
    ("hypercorn", "import trioplane.testing.http", "http-worker", "hypercorn"),
    (
        "trio_websocket",
        "trioplane.testing.open_websocket_test_worker",
        "websocket",
        "trio-websocket",
    ),
    ("httpx", "trioplane.open_http_client", "http", "httpx"),  # the client side, same class
]


@pytest.mark.parametrize(("blocked", "code", "extra", "package"), MISSING_EXTRA_CASES)
def test_a_missing_extra_names_the_extra_to_install(
    blocked: str, code: str, extra: str, package: str
) -> None:
    """The module is made unimportable (``None`` in ``sys.modules``) in a fresh interpreter."""
    script = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "import trioplane, trioplane.testing\n"
        "try:\n"
        + "".join(f"    {line}\n" for line in code.strip().splitlines())
        + "except BaseException as exc:\n"
        "    print(type(exc).__name__, isinstance(exc, ImportError),"
        " isinstance(exc, trioplane.TrioplaneError))\n"
        "    print(exc)\n"
        "    print(exc.extra, exc.package)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "MissingExtra True True", result.stdout + result.stderr
    assert lines[1].endswith(f"needs {package}: pip install 'trioplane[{extra}]'")
    assert lines[2] == f"{extra} {package}"


def test_missing_extra_is_an_import_error_that_pickles() -> None:
    import pickle

    error = MissingExtra("serving the HTTP request plane", "hypercorn", "http-worker")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert "pip install 'trioplane[http-worker]'" in str(error)
    assert (copy.feature, copy.package, copy.extra) == (error.feature, "hypercorn", "http-worker")


# -- 2. a TCP client on another protocol's port ------------------------------------------


@asynccontextmanager
async def answering_server(
    answer: bytes, *, piecewise: bool = False, greets: bool = False
) -> AsyncIterator[int]:
    """A peer on 127.0.0.1 (a free port) that answers every connection's request with
    ``answer`` (one byte per write with ``piecewise``; before the request with
    ``greets``, as SSH or SMTP servers do), then closes; its port."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            if greets:
                await stream.send_all(answer)
            await stream.receive_some(65536)  # read before closing: no RST
            if piecewise:
                for byte in answer:
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.005)
            elif not greets:
                await stream.send_all(answer)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def h2_server_handle(stream: trio.SocketStream) -> None:
    """An HTTP/2 server (the h2 state machine): its SETTINGS, then GOAWAY on a bad preface."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    async with stream:
        await stream.send_all(conn.data_to_send())
        data = await stream.receive_some(65536)
        try:
            conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            conn.close_connection(error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR)
            await stream.send_all(conn.data_to_send())


async def tcp_error(address: str, calls: int = 1) -> list[BaseException]:
    """The errors of ``calls`` concurrent requests from one TCP client to ``address``."""
    errors: list[BaseException] = []

    async def one(client: trioplane.TcpClient) -> None:
        try:
            await client.send_request(address, b"{}", {"request-id": "1"})
        except TrioplaneError as exc:
            errors.append(exc)

    async with trioplane.open_tcp_client(ack_timeout=10) as client, trio.open_nursery() as n:
        for _ in range(calls):
            n.start_soon(one, client)
    return errors


def check_wrong_protocol(error: BaseException, port: int, protocol: str) -> WrongProtocol:
    assert isinstance(error, WrongProtocol), repr(error)
    assert isinstance(error, ConnectError)
    assert isinstance(error, ProtocolError)
    assert not isinstance(error, trioplane.FrameTooLarge)
    assert error.protocol == protocol
    assert error.peer == f"127.0.0.1:{port}"
    assert str(error).startswith(f"127.0.0.1:{port} answered with {protocol}")
    return error


async def test_tcp_client_on_a_worker_http_plane_says_http() -> None:
    """The library's own worker, its HTTP plane's port dialled as a TCP one."""

    async def handler(request: Any, context: Any) -> AsyncIterator[Any]:
        yield request

    async with trioplane.open_worker(
        {ENDPOINT: handler}, transports=["tcp", "http"], register=False
    ) as worker:
        port = worker.http_port
        errors = await tcp_error(f"127.0.0.1:{port}/{ENDPOINT}", calls=3)
    assert len(errors) == 3  # each caller gets its own copy, attributes and all
    for error in errors:
        check_wrong_protocol(error, port, "HTTP")
    message = str(errors[0])
    assert "('HTTP/1.1 400')" in message
    assert "not Dynamo's TCP request plane" in message
    assert f"http://127.0.0.1:{port}/v1/rpc/<endpoint>" in message
    assert len({id(e) for e in errors}) == 3


async def test_tcp_client_on_the_http_test_worker_and_a_websocket_worker() -> None:
    async with open_http_test_worker() as http:
        (error,) = await tcp_error(f"127.0.0.1:{http.port}/generate")
    check_wrong_protocol(error, http.port, "HTTP")
    async with trioplane.testing.open_websocket_test_worker() as ws:
        (error,) = await tcp_error(f"127.0.0.1:{ws.port}/generate")
    assert f"ws://127.0.0.1:{ws.port}/<endpoint>" in str(
        check_wrong_protocol(error, ws.port, "HTTP")
    )


@pytest.mark.nats
async def test_tcp_client_on_a_nats_server_says_nats(nats_server: str) -> None:
    port = int(nats_server.rsplit(":", 1)[1])
    (error,) = await tcp_error(f"127.0.0.1:{port}/generate")
    message = str(check_wrong_protocol(error, port, "NATS"))
    assert "('INFO {" in message
    assert f"nats_servers='nats://127.0.0.1:{port}'" in message
    assert "NATS_SERVER" in message


async def test_an_http_answer_trickled_byte_by_byte_is_still_http() -> None:
    """The first read held fewer bytes than "HTTP/": this was the FrameTooLarge of
    1213486160 bytes ("HTTP" read as a length)."""
    async with answering_server(b"HTTP/1.0 400 Bad Request\r\n\r\n", piecewise=True) as port:
        (error,) = await tcp_error(f"127.0.0.1:{port}/generate")
    assert "('HTTP" in str(check_wrong_protocol(error, port, "HTTP"))


async def test_an_http2_server_is_recognised() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, h2_server_handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        (error,) = await tcp_error(f"127.0.0.1:{port}/generate")
        nursery.cancel_scope.cancel()
    check_wrong_protocol(error, port, "HTTP/2")


@pytest.mark.parametrize(
    ("greeting", "protocol", "line"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n", "SSH", "SSH-2.0-OpenSSH_9.6"),
        (b"220 mail.example.org ESMTP ready\r\n", "text", "220 mail.example.org ESMTP ready"),
        (b"-ERR unknown command\r\n", "text", "-ERR unknown command"),
    ],
)
async def test_servers_that_greet_first_are_named(
    greeting: bytes, protocol: str, line: str
) -> None:
    async with answering_server(greeting, greets=True) as port:
        (error,) = await tcp_error(f"127.0.0.1:{port}/generate")
    assert f"answered with {protocol} ('{line}')" in str(
        check_wrong_protocol(error, port, protocol)
    )


async def test_the_endpoint_client_reports_the_wrong_port() -> None:
    """An instance record pointing at an HTTP port (a typo in a static list)."""
    async with open_http_test_worker() as http:
        instance = Instance("test", "fake", "generate", 0x1, "tcp", f"127.0.0.1:{http.port}/x")
        async with trioplane.open_endpoint_client(
            ENDPOINT, [instance], tls=trioplane.TcpTls()
        ) as c:
            with pytest.raises(WrongProtocol, match="answered with HTTP"):
                await c.call({"q": 1})


async def test_a_real_worker_is_not_mistaken_for_another_protocol(worker: TcpTestWorker) -> None:
    """The echo worker rejects with the payload as its text: an ack that reads as HTTP."""
    async with trioplane.open_tcp_client() as client:
        for text in (b"HTTP/1.1 200 OK", b"INFO {}", b"\x15\x03\x03", b""):
            assert await client.send_request(worker.address("p"), text) == text


# the sans-io part: every verdict, and acks are never taken for another protocol

FOREIGN = [
    (
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
        Foreign("HTTP", "HTTP/1.1 400 Bad Request"),
    ),
    (b"HTTP", Foreign("HTTP", "HTTP")),
    (b'INFO {"server_id":"N"}\r\n', Foreign("NATS", 'INFO {"server_id":"N"}')),
    (b"SSH-2.0-x\r\n", Foreign("SSH", "SSH-2.0-x")),
    (b"\x15\x03\x03\x00\x02\x02\x32", Foreign("TLS")),
    (b"\x16\x03\x01\x00\x10", Foreign("TLS")),
    (b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03", Foreign("HTTP/2")),  # SETTINGS
    (b"\x00\x00\x08\x07\x00\x00\x00\x00\x00", Foreign("HTTP/2")),  # GOAWAY
    (b"+OK POP3 ready\r\n", Foreign("text", "+OK POP3 ready")),
    (b"\x80bin" + b"x" * 100, None),  # binary, under no rule: left to the ack decoder
    (b"ok", Foreign("text", "ok")),  # 2 bytes at the end of the stream
    (b"\x00\x00\x00\x00", None),  # an accepting ack
    (encode_ack("Server overloaded: busy"), None),
    (b"x" * 200, Foreign("text", "x" * 60 + "...")),
    (b"220 \x01\xff\r\n", Foreign("text", "220 \\x01\\xff")),
]


@pytest.mark.parametrize(("answer", "verdict"), FOREIGN)
def test_foreign_answer(answer: bytes, verdict: Foreign | None) -> None:
    assert foreign_answer(answer, max_frame_size=DEFAULT_MAX_FRAME_SIZE) == verdict


def feed_to_the_end(decoder: AckDecoder, pieces: list[bytes]) -> None:
    for piece in pieces:
        decoder.feed(piece)
        assert list(decoder.acks()) == []
    decoder.check_eof()


@pytest.mark.parametrize(("answer", "verdict"), [(a, v) for a, v in FOREIGN if v is not None])
def test_the_ack_decoder_names_the_protocol_however_the_bytes_arrive(
    answer: bytes, verdict: Foreign
) -> None:
    for pieces in ([answer], [answer[i : i + 1] for i in range(len(answer))]):
        decoder = AckDecoder(peer="worker:1")
        with pytest.raises(WrongProtocol) as caught:
            feed_to_the_end(decoder, pieces)
        assert caught.value.protocol == verdict.protocol
        assert str(caught.value).startswith(f"worker:1 answered with {verdict.protocol}")
        with pytest.raises(WrongProtocol):  # poisoned
            decoder.next_ack()


def test_without_sniffing_the_length_is_what_it_was() -> None:
    decoder = AckDecoder(sniff=False)
    decoder.feed(b"HTTP/1.1 400")
    with pytest.raises(trioplane.FrameTooLarge, match="ack of 1213486160 bytes"):
        decoder.next_ack()


ack_texts = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=300)


@given(st.lists(ack_texts, min_size=1, max_size=6), st.integers(1, 50))
def test_ack_streams_are_never_foreign(texts: list[str], cut: int) -> None:
    """Dynamo's acks (empty, or a human-readable rejection), however they are cut."""
    stream = b"".join(encode_ack(t) for t in texts)
    assert foreign_answer(stream, max_frame_size=DEFAULT_MAX_FRAME_SIZE) is None
    decoder = AckDecoder()
    got: list[bytes] = []
    for start in range(0, len(stream), cut):
        decoder.feed(stream[start : start + cut])
        got += decoder.acks()
    decoder.check_eof()
    assert got == [t.encode() for t in texts]


# -- 3. await client.generate(...) ---------------------------------------------------------


async def test_awaiting_generate_shows_the_idiom(fake_endpoint_worker: FakeEndpointWorker) -> None:
    fake = fake_endpoint_worker
    fake.script = lambda call: stream_frames(call.codec, [{"i": 0}])
    async with trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(WrongIdiom) as raised:
                async for _ in await client.generate({"q": 1}):
                    pass
            gc.collect()
        assert not [w for w in caught if "never awaited" in str(w.message)]
        assert isinstance(raised.value, TypeError)
        assert isinstance(raised.value, UsageError)
        message = str(raised.value)
        assert "not awaited" in message
        assert "async with client.generate(request) as stream:" in message
        assert "async for item in stream:" in message
        assert client.statistics().calls_in_flight == 0
        assert fake.calls == []  # nothing was sent
        async with client.generate({"q": 2}) as stream:  # the right idiom still works
            assert [item async for item in stream] == [{"i": 0}]


async def test_iterating_without_async_with_shows_the_idiom(
    fake_endpoint_worker: FakeEndpointWorker,
) -> None:
    fake = fake_endpoint_worker
    async with trioplane.open_endpoint_client(ENDPOINT, [fake.instance(ENDPOINT)]) as client:
        with pytest.raises(WrongIdiom, match=r"async with client.generate\(request\) as stream"):
            async for _ in client.generate({}):
                pass
        assert fake.calls == []


# -- 4. NATS: no server, an unreachable server ----------------------------------------------

NATS_INSTANCE = Instance("test", "fake", "generate", 0x1A2B, "nats_tcp", "test_fake.generate-1a2b")


async def test_a_nats_only_endpoint_without_a_server_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NATS_SERVER", raising=False)
    async with trioplane.open_endpoint_client(ENDPOINT, [NATS_INSTANCE]) as client:
        with pytest.raises(trioplane.NoInstances) as caught:
            await client.call({})
    message = str(caught.value)
    assert "(they use ['nats_tcp'])" in message
    assert "nats_servers='nats://host:4222'" in message
    assert "NATS_SERVER" in message


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_nats_server_is_one_plain_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioplane")
    url = f"nats://127.0.0.1:{closed_port()}"
    async with trioplane.open_endpoint_client(
        ENDPOINT, [NATS_INSTANCE], nats_servers=url
    ) as client:
        with trio.fail_after(10):  # warm-up opens the NATS transport when it sees the instance
            while not warmup_records(caplog):  # noqa: ASYNC110 - a log record has no event
                await trio.sleep(0.01)
        with pytest.raises(ConnectError, match=f"cannot connect to NATS: {url}: ") as caught:
            await client.call({})
    assert not isinstance(caught.value, BaseExceptionGroup)
    assert "OSError(" not in str(caught.value)  # the reason, not a repr
    for record in warmup_records(caplog):
        assert record.levelno == logging.INFO  # the caller gets the error itself
        assert "sub-exception" not in record.getMessage()
        assert f"ConnectError: cannot connect to NATS: {url}" in record.getMessage()
    assert not [r for r in caught_records(caplog) if r.levelno >= logging.WARNING]


def caught_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("trioplane")]


def warmup_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caught_records(caplog) if "cannot warm up" in r.getMessage()]


async def test_open_request_plane_raises_the_nats_connect_error_itself() -> None:
    url = f"nats://127.0.0.1:{closed_port()}"
    async with trioplane.open_request_plane(nats_servers=url) as plane:
        with pytest.raises(ConnectError, match="cannot connect to NATS"):
            await plane.send_request("nats:a.b", b"x")


def test_warmup_failures_are_unwrapped_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioplane")
    group = ExceptionGroup("Exceptions from Trio nursery", [ConnectError("cannot connect")])
    for _ in range(20):
        _log_warmup_failure("rate-test", group)
    lines = [r.getMessage() for r in caught_records(caplog)]
    assert 1 <= len(lines) <= 5
    assert lines[0] == "cannot warm up the rate-test transport: ConnectError: cannot connect"


# -- 5. bad arguments -----------------------------------------------------------------------

Case = tuple[str, Callable[..., Any], type[UsageError], str]


async def _handler(request: Any, context: Any) -> AsyncIterator[Any]:
    yield request


def bad_argument_cases(address: str) -> list[Case]:
    """(name, async call, error, message) for what users got wrong."""

    async def tcp(payload: Any = b"x", headers: Any = None, addr: Any = address, **o: Any) -> Any:
        async with trioplane.open_tcp_client(**o) as client:
            return await client.send_request(addr, payload, headers)

    async def plane(payload: Any = b"x", headers: Any = None, addr: Any = address, **o: Any) -> Any:
        async with trioplane.open_request_plane(**o) as client:
            return await client.send_request(addr, payload, headers)

    async def http(payload: Any = b"x", headers: Any = None, **o: Any) -> Any:
        async with trioplane.open_http_client(**o) as client:
            return await client.send_request("http://127.0.0.1:1/v1/rpc/x", payload, headers)

    async def websocket(payload: Any = b"x", **o: Any) -> Any:
        async with trioplane.open_websocket_client(**o) as client:
            return await client.send_request("ws://127.0.0.1:1/x", payload)

    async def endpoint(call: dict[str, Any] | None = None, discovery: Any = None, **o: Any) -> Any:
        instance = Instance("test", "fake", "generate", 1, "tcp", address)
        async with trioplane.open_endpoint_client(ENDPOINT, discovery or [instance], **o) as c:
            return await c.call({}, **(call or {}))

    async def worker(**o: Any) -> Any:
        async with trioplane.open_worker({ENDPOINT: _handler}, register=False, **o):
            pass

    async def nats(servers: Any = "nats://127.0.0.1:1", **o: Any) -> Any:
        async with trioplane.open_nats_connection(servers, **o):
            pass

    return [
        ("address", lambda: tcp(addr="localhost"), BadArgument, "needs host:port"),
        ("address type", lambda: tcp(addr=5), BadArgumentType, "address must be str, not int"),
        ("scheme", lambda: plane(addr="nats://x"), BadArgument, "unknown scheme"),
        (
            "str payload",
            lambda: tcp("x"),
            BadArgumentType,
            r"payload must be bytes, not str \(encode it",
        ),
        ("None payload", lambda: tcp(None), BadArgumentType, "payload must be bytes, not NoneType"),
        ("dict payload", lambda: plane({"a": 1}), BadArgumentType, "not dict"),
        (
            "header list",
            lambda: tcp(headers=[("a", "b")]),
            BadArgumentType,
            "headers must be a mapping",
        ),
        ("header str", lambda: plane(headers="a: b"), BadArgumentType, "headers must be a mapping"),
        ("header value", lambda: tcp(headers={"a": 1}), BadArgumentType, "must be str"),
        (
            "negative timeout",
            lambda: tcp(ack_timeout=-1),
            BadArgument,
            "ack_timeout must be .* >= 0",
        ),
        (
            "str timeout",
            lambda: tcp(ack_timeout="5"),
            BadArgumentType,
            "ack_timeout must be a number",
        ),
        ("NaN timeout", lambda: tcp(connect_timeout=float("nan")), BadArgument, "connect_timeout"),
        ("zero in flight", lambda: tcp(max_in_flight_per_connection=0), BadArgument, "at least 1"),
        (
            "unknown option",
            lambda: tcp(ack_timout=1),
            BadArgumentType,
            "unknown TCP client options",
        ),
        ("http payload", lambda: http("x"), BadArgumentType, "payload must be bytes"),
        ("http headers", lambda: http(headers=["a"]), BadArgumentType, "headers must be a mapping"),
        ("http timeout", lambda: http(ack_timeout=None), BadArgumentType, "ack_timeout"),
        ("ws payload", lambda: websocket("x"), BadArgumentType, "payload must be bytes"),
        ("ws ping", lambda: websocket(ping_interval="1"), BadArgumentType, "ping_interval"),
        ("nats servers", lambda: plane(nats_servers=5), BadArgumentType, "nats_servers must be"),
        ("tcp options", lambda: plane(tcp=[1]), BadArgumentType, "tcp must be a dict"),
        ("nats url", lambda: nats(4222), BadArgumentType, "servers must be a NATS URL"),
        ("nats timeout", lambda: nats(request_timeout="5"), BadArgumentType, "request_timeout"),
        (
            "instance_id",
            lambda: endpoint({"instance_id": "1a2b"}),
            BadArgumentType,
            "int\\('1a2b', 16\\)",
        ),
        (
            "metadata",
            lambda: endpoint({"metadata": "x"}),
            BadArgumentType,
            "metadata must be a mapping",
        ),
        (
            "call headers",
            lambda: endpoint({"headers": [("a", "b")]}),
            BadArgumentType,
            "headers must",
        ),
        (
            "reserved header",
            lambda: endpoint({"headers": {"request-id": "x"}}),
            BadArgument,
            "set by",
        ),
        ("call home", lambda: endpoint(call_home_timeout=-1), BadArgument, "call_home_timeout"),
        (
            "attempts",
            lambda: endpoint(max_attempts="3"),
            BadArgumentType,
            "max_attempts must be an int",
        ),
        (
            "response port",
            lambda: endpoint(response_port=-1),
            BadArgument,
            "response_port must be 0",
        ),
        ("endpoint tcp", lambda: endpoint(tcp=[1]), BadArgumentType, "tcp must be a dict"),
        (
            "discovery",
            lambda: endpoint(discovery=5),
            BadArgumentType,
            "discovery must be a Discovery",
        ),
        ("discovery list", lambda: endpoint(discovery=["a"]), BadArgumentType, "holding str"),
        (
            "transports str",
            lambda: worker(transports="tcp"),
            BadArgumentType,
            r"\['tcp'\], not a str",
        ),
        ("worker port", lambda: worker(port=70000), BadArgument, "port must be 0"),
        ("grace", lambda: worker(grace_period=-1), BadArgument, "grace_period"),
        ("concurrency", lambda: worker(max_concurrency="10"), BadArgumentType, "max_concurrency"),
        ("codec", lambda: worker(codec="yaml"), BadArgument, "unknown payload codec 'yaml'"),
    ]


CASE_NAMES = [case[0] for case in bad_argument_cases("127.0.0.1:1/x")]


@pytest.mark.parametrize("name", CASE_NAMES)
async def test_bad_arguments_raise_usage_errors(name: str, worker: TcpTestWorker) -> None:
    cases = {case[0]: case for case in bad_argument_cases(worker.address("generate"))}
    _, call, error, match = cases[name]
    with pytest.raises(error, match=match) as caught:
        await call()
    assert isinstance(caught.value, TrioplaneError)
    builtin = ValueError if isinstance(caught.value, BadArgument) else TypeError
    assert isinstance(caught.value, builtin)  # what the same mistake raised before
    assert worker.received == []  # raised before any request went out


def test_usage_errors_are_raised_before_io() -> None:
    """The sans-io encoders check too, so every transport gets the same errors."""
    from trioplane.wire.nats import encode_pub
    from trioplane.wire.tcp import encode_request_frame

    with pytest.raises(BadArgumentType, match="payload must be bytes"):
        encode_pub("a.b", "text")  # type: ignore[arg-type]
    with pytest.raises(BadArgumentType, match="headers must be a mapping"):
        encode_pub("a.b", b"x", headers=[("a", "b")])  # type: ignore[arg-type]
    with pytest.raises(BadArgumentType, match="payload must be bytes"):
        encode_request_frame("p", None, "text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: trioplane.ServerLimits(idle_timeout="1"), BadArgumentType, "idle_timeout"),  # type: ignore[arg-type]
        (lambda: trioplane.ServerLimits(max_connections=0), BadArgument, "max_connections"),
        (lambda: trioplane.CallHomeLimits(write_timeout=-1), BadArgument, "write_timeout"),
        (lambda: trioplane.HealthCheck({}, interval=0), BadArgument, "health check's interval"),
        (lambda: trioplane.TcpTls(handshake_timeout=-1), BadArgument, "handshake_timeout"),
    ],
)
def test_limits_and_settings_check_their_values(
    make: Callable[[], object], error: type[UsageError], match: str
) -> None:
    with pytest.raises(error, match=match):
        make()
