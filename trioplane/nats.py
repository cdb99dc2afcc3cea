"""A Trio-native NATS connection (core NATS): publish, subscribe, request/reply.

``async with trioplane.open_nats_connection(["nats://127.0.0.1:4222"]) as nc:``
opens a connection whose nursery owns the reader, the flusher and the pinger.
The protocol itself is :mod:`trioplane.wire.nats` (sans-io); this module drives
it over a socket (or TLS) and adds what a long-lived client needs:

* request/reply over one muxed ``_INBOX.<id>.*`` subscription, no-responders
  (status 503) -> :class:`~trioplane.NoResponders`;
* keep-alive: a PING every ``ping_interval``; more than ``max_outstanding_pings``
  unanswered means the connection is stale and is dropped;
* reconnect with backoff and jitter over the server list (plus servers learned
  from INFO's ``connect_urls``), re-subscribing, and re-sending what was
  published while disconnected (bounded: past ``reconnect_buffer_size`` a publish
  raises :class:`ReconnectBufferFull`); requests in flight when the connection
  died fail with :class:`~trioplane.ConnectionLost`;
* auth by token, user/password, NKey seed (the ``nkeys`` package, extra
  ``trioplane[nats]``) or a ``.creds`` file; TLS with an ``ssl.SSLContext``,
  optionally TLS before anything else (``tls_handshake_first``).

Slow consumers: each subscription queues at most ``max_pending`` messages; when
its consumer falls that far behind, newer messages are dropped, counted in
:attr:`Subscription.dropped`, logged, and reported as a ``slow_consumer`` event.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import random
import re
import secrets
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict

import trio

from trioplane._checks import check_count, check_seconds
from trioplane._errors import (
    BadArgument,
    BadArgumentType,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    MissingExtra,
    NatsServerError,
    NoResponders,
    ProtocolError,
    TrioplaneError,
)
from trioplane._logging import RateLimitedLog
from trioplane._network import open_tcp_stream
from trioplane._sockets import ByteLink
from trioplane._util import AsyncResource, check_options, collapse_groups, reason, running
from trioplane._version import __version__
from trioplane.wire.nats import (
    PING,
    PONG,
    Err,
    Info,
    Msg,
    NatsParser,
    Ping,
    Pong,
    encode_connect,
    encode_pub,
    encode_sub,
    encode_unsub,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "NatsConnection",
    "NatsOptions",
    "NatsStatistics",
    "ReconnectBufferFull",
    "Subscription",
    "SubscriptionStatistics",
    "open_nats_connection",
    "start_nats_connection",
]

log = logging.getLogger(__name__)

DEFAULT_URL = "nats://127.0.0.1:4222"
#: Bytes queued for the socket (while connected) before publishers wait.
MAX_OUTBOX = 4 * 1024 * 1024
_INFO_LINE_LIMIT = 64 * 1024
_CREDS_SECTION = re.compile(
    r"-{3,}BEGIN [A-Z ]+-{3,}\s*\n\s*(\S+)\s*\n\s*-{3,}END [A-Z ]+-{3,}", re.MULTILINE
)


class ReconnectBufferFull(TrioplaneError):
    """Disconnected, and the reconnect buffer cannot hold this message: it was not sent."""


class NatsOptions(TypedDict, total=False):
    """Options of :func:`open_nats_connection`.

    * ``name``: client name shown by the server.
    * ``token``, ``user`` + ``password``, ``nkey_seed`` (``"SU..."``), ``creds_file``:
      authentication (one of them). Credentials in a server URL
      (``nats://user:pass@host``) are used too.
    * ``ssl_context``: TLS (also implied by a ``tls://`` URL); ``tls_handshake_first``
      starts TLS before the server's INFO (servers with ``handshake_first``).
    * ``connect_timeout`` (5 s): per attempt, TCP + TLS + CONNECT/PONG.
    * ``ping_interval`` (20 s), ``max_outstanding_pings`` (2): keep-alive.
    * ``reconnect`` (True), ``max_reconnect_attempts`` (60 per server; -1 = forever),
      ``reconnect_wait`` (2 s, plus up to ``reconnect_jitter`` 0.1 s random),
      ``reconnect_buffer_size`` (8 MiB of publishes kept while disconnected).
    * ``max_pending`` (65,536): messages queued per subscription.
    * ``request_timeout`` (5 s): default bound of :meth:`NatsConnection.request`.
    * ``inbox_prefix`` (``"_INBOX"``).
    * ``on_event``: ``callback(event, detail)`` for ``"connected"``, ``"disconnected"``,
      ``"reconnected"``, ``"slow_consumer"``, ``"server_error"``, ``"closed"``.
    """

    name: str
    token: str
    user: str
    password: str
    nkey_seed: str | bytes
    creds_file: str | os.PathLike[str]
    ssl_context: ssl.SSLContext
    tls_handshake_first: bool
    connect_timeout: float
    ping_interval: float
    max_outstanding_pings: int
    reconnect: bool
    max_reconnect_attempts: int
    reconnect_wait: float
    reconnect_jitter: float
    reconnect_buffer_size: int
    max_pending: int
    request_timeout: float
    inbox_prefix: str
    on_event: Callable[[str, str], None]


@dataclass
class _Server:
    url: str
    host: str
    port: int
    tls: bool
    user: str | None = None
    password: str | None = None
    attempts: int = 0
    learned: bool = False


def parse_server_url(url: str) -> _Server:
    """``nats://[user:pass@]host[:port]`` (also ``tls://``, or a bare ``host:port``)."""
    if "://" not in url:
        url = f"nats://{url}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("nats", "tls") or not parts.hostname:
        raise BadArgument(f"not a NATS server URL: {url!r} (use nats://host:port)")
    try:
        port = parts.port or 4222
    except ValueError:
        raise BadArgument(f"bad port in NATS server URL {url!r}") from None
    return _Server(
        url=url,
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "tls",
        user=urllib.parse.unquote(parts.username) if parts.username else None,
        password=urllib.parse.unquote(parts.password) if parts.password else None,
    )


@dataclass(frozen=True)
class SubscriptionStatistics:
    """A snapshot of one subscription: messages queued for its consumer, and dropped."""

    pending: int
    dropped: int


@dataclass(frozen=True)
class NatsStatistics:
    """A snapshot of a NATS connection (trio-style ``statistics()``; no I/O).

    ``servers`` lists every server it may connect to, learned ones included;
    ``pending_requests`` are requests waiting for their reply; ``subscriptions``
    counts the connection's own muxed inbox too; ``outbox_bytes`` are written and
    not yet flushed to the socket.
    """

    connected: bool
    server: str | None
    servers: tuple[str, ...]
    in_msgs: int
    out_msgs: int
    in_bytes: int
    out_bytes: int
    reconnects: int
    pending_requests: int
    subscriptions: int
    outbox_bytes: int


class Subscription:
    """Messages of one subscription: an async iterator, and an async context manager
    that unsubscribes on exit. Made by :meth:`NatsConnection.subscribe`."""

    def __init__(
        self, connection: NatsConnection, sid: int, subject: str, queue: str | None, size: int
    ) -> None:
        self.connection = connection
        self.sid = sid
        self.subject = subject
        self.queue = queue
        #: Messages dropped because the consumer fell ``max_pending`` behind.
        self.dropped = 0
        self._send, self._receive = trio.open_memory_channel[Msg](size)

    def _deliver(self, msg: Msg) -> None:
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                self.connection._event(
                    "slow_consumer", f"{self.subject}: {self.dropped} messages dropped"
                )
        except trio.ClosedResourceError:
            pass

    def statistics(self) -> SubscriptionStatistics:
        return SubscriptionStatistics(self._receive.statistics().current_buffer_used, self.dropped)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Msg:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def unsubscribe(self) -> None:
        """Stop the subscription; messages already queued can still be read."""
        await self.connection._unsubscribe(self)

    def _close(self) -> None:
        self._send.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.unsubscribe()


class _Request:
    __slots__ = ("deadline", "msg", "task")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.task: trio.lowlevel.Task | None = None
        self.msg: Msg | TrioplaneError | trio.TooSlowError | None = None

    def resolve(self, result: Msg | TrioplaneError | trio.TooSlowError) -> None:
        self.msg = result
        if self.task is not None:
            trio.lowlevel.reschedule(self.task)
            self.task = None


class NatsConnection(AsyncResource):
    """A NATS client connection; made by :func:`open_nats_connection`."""

    def __init__(
        self, servers: str | Sequence[str] | None = None, **options: Unpack[NatsOptions]
    ) -> None:
        check_options(options, NatsOptions, "NATS")
        if not isinstance(servers, (str, Sequence, type(None))):
            raise BadArgumentType(
                f"servers must be a NATS URL or a list of them, not {type(servers).__name__}"
            )
        urls = [servers] if isinstance(servers, str) else list(servers or [DEFAULT_URL])
        if not urls:
            raise BadArgument("no NATS server given")
        self._servers = [parse_server_url(url) for url in urls]
        self.options = options
        self._ssl_context = options.get("ssl_context")
        if self._ssl_context is None and any(s.tls for s in self._servers):
            self._ssl_context = ssl.create_default_context()
        self._nkey_seed, self._jwt = _load_credentials(options)
        self.connect_timeout = options.get("connect_timeout", 5.0)
        self.ping_interval = options.get("ping_interval", 20.0)
        self.max_outstanding_pings = options.get("max_outstanding_pings", 2)
        self.request_timeout = options.get("request_timeout", 5.0)
        self.max_pending = options.get("max_pending", 65536)
        self.reconnect_buffer_size = options.get("reconnect_buffer_size", 8 * 1024 * 1024)
        self.inbox_prefix = options.get("inbox_prefix", "_INBOX")
        for name in ("connect_timeout", "ping_interval", "request_timeout"):
            check_seconds(getattr(self, name), name, zero=False)
        for name in ("max_pending", "max_outstanding_pings"):
            check_count(getattr(self, name), name)
        self.info: Info | None = None
        self.server: str | None = None
        self.stats_in_msgs = 0
        self.stats_out_msgs = 0
        self.stats_in_bytes = 0
        self.stats_out_bytes = 0
        self.reconnects = 0
        self._log = RateLimitedLog(log)  # a server repeating -ERR: a few lines a minute
        self._link: ByteLink | None = None
        self._parser = NatsParser()
        self._outbox = bytearray()
        self._flushing = False
        self._wrote_direct = False
        self._parked_flusher: trio.lowlevel.Task | None = None
        self._outbox_space = trio.Event()
        self._connected = trio.Event()
        self._link_lost = trio.Event()
        self._closing = False
        self._closed = trio.Event()
        self._subs: dict[int, Subscription] = {}
        self._sids = itertools.count(1)
        # One entry per PING in flight, answered in order: a flush's event, or None
        # for a keep-alive PING.
        self._pongs: list[trio.Event | None] = []
        self._outstanding_pings = 0
        self._inbox_sid: int | None = None
        self._inbox_base = f"{self.inbox_prefix}.{secrets.token_hex(11)}"
        self._requests: dict[str, _Request] = {}
        self._no_requests: trio.Event | None = None  # set when draining has waited them out
        self._tokens = itertools.count()
        self._nursery: trio.Nursery | None = None
        #: Why the last connection was lost (the reader's error).
        self._lost_because: BaseException | None = None

    # -- status ------------------------------------------------------------------------

    def is_healthy(self) -> bool:
        """Connected and not closing (no I/O)."""
        return self._link is not None and not self._closing

    async def wait_healthy(self) -> None:
        """Until the connection is up (again); the caller's scope bounds the wait."""
        while not self.is_healthy():
            if self._closing:
                raise ClientClosed("NATS connection is closed")
            await self._connected.wait()

    @property
    def max_payload(self) -> int:
        return self.info.max_payload if self.info is not None else 1024 * 1024

    def statistics(self) -> NatsStatistics:
        """A snapshot of the connection's state and counters."""
        return NatsStatistics(
            connected=self._link is not None,
            server=self.server,
            servers=tuple(s.url for s in self._servers),
            in_msgs=self.stats_in_msgs,
            out_msgs=self.stats_out_msgs,
            in_bytes=self.stats_in_bytes,
            out_bytes=self.stats_out_bytes,
            reconnects=self.reconnects,
            pending_requests=len(self._requests),
            subscriptions=len(self._subs),
            outbox_bytes=len(self._outbox),
        )

    def _event(self, event: str, detail: str = "") -> None:
        warn = event in ("disconnected", "slow_consumer", "server_error")
        self._log.log(logging.WARNING if warn else logging.INFO, event, "nats %s %s", event, detail)
        callback = self.options.get("on_event")
        if callback is not None:
            callback(event, detail)

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, then keep the connection up until :meth:`aclose`; for ``nursery.start``.

        The first connection must succeed (else :class:`~trioplane.ConnectError`);
        later losses are reconnected as the options say.
        """
        try:  # a nursery's group comes out as the error it stands for (ConnectError...)
            with collapse_groups():
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self._connect_any(first=True)
                    nursery.start_soon(self._flush_loop)
                    nursery.start_soon(self._ping_loop)
                    nursery.start_soon(self._timeout_loop)
                    task_status.started()
                    while not self._closing:
                        await self._read_loop()
                        if not self._closing:
                            await self._reconnect()
                    nursery.cancel_scope.cancel()
        finally:
            self._closing = True
            self._drop_link("closed", close_now=True)
            for sub in self._subs.values():
                sub._close()
            self._closed.set()
            self._event("closed")

    async def aclose(self) -> None:
        """Close now: pending requests fail with :class:`~trioplane.ClientClosed`."""
        with trio.CancelScope(shield=True):
            if not self._closing:
                self._closing = True
                with trio.move_on_after(1.0):
                    await self._flush_outbox()
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
                with trio.move_on_after(2.0):
                    await self._closed.wait()

    async def drain(self) -> None:
        """Unsubscribe everything, let in-flight requests finish, then close.

        In-flight requests get up to ``request_timeout``; messages already queued
        on subscriptions can still be read afterwards.
        """
        for sub in list(self._subs.values()):
            if sub.sid != self._inbox_sid:
                await self._unsubscribe(sub)
        with trio.move_on_after(self.request_timeout):
            if self._requests:
                self._no_requests = trio.Event()
                await self._no_requests.wait()
            await self.flush()
        await self.aclose()

    # -- connecting -----------------------------------------------------------------------

    async def _connect_any(self, *, first: bool) -> None:
        errors = []
        for server in list(self._servers):
            try:
                await self._connect(server)
            except (OSError, trio.TooSlowError, TrioplaneError, ssl.SSLError) as exc:
                server.attempts += 1
                why = (
                    f"no answer within {self.connect_timeout:g} s"
                    if isinstance(exc, trio.TooSlowError)
                    else reason(exc)
                )
                errors.append(f"{server.url}: {why}")
                if not first:
                    log.debug("nats reconnect to %s failed: %r", server.url, exc)
                continue
            server.attempts = 0
            return
        raise ConnectError("cannot connect to NATS: " + "; ".join(errors))

    async def _connect(self, server: _Server) -> None:
        with trio.fail_after(self.connect_timeout):
            stream: trio.abc.Stream = await open_tcp_stream(server.host, server.port)
            try:
                parser = NatsParser(max_line=_INFO_LINE_LIMIT)
                use_tls = server.tls or self._ssl_context is not None
                if use_tls and self.options.get("tls_handshake_first"):
                    stream = await self._start_tls(stream, server)
                info = await self._read_info(stream, parser)
                if use_tls and not isinstance(stream, trio.SSLStream):
                    stream = await self._start_tls(stream, server)
                _check_tls(info, stream, server)
                link = ByteLink(stream)
                tls = isinstance(stream, trio.SSLStream)
                options = self._connect_options(server, info, tls=tls)
                await link.send_all(encode_connect(options) + PING)
                await self._await_pong(link, parser)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
                raise
        self._parser = parser
        parser.max_payload = info.max_payload + 64 * 1024  # payload plus a header block
        self.info = info
        self.server = server.url
        self._learn_servers(info)
        self._link = link
        self._link_lost = trio.Event()
        self._outstanding_pings = 0
        # Re-subscribe, then send what was published while disconnected.
        resub = b"".join(encode_sub(sub.subject, sid, sub.queue) for sid, sub in self._subs.items())
        self._outbox[:0] = resub
        self._wake_flusher()
        self._connected.set()
        self._connected = trio.Event()
        self._event("connected", server.url)

    async def _start_tls(self, stream: trio.abc.Stream, server: _Server) -> trio.SSLStream[Any]:
        assert self._ssl_context is not None
        tls = trio.SSLStream(stream, self._ssl_context, server_hostname=server.host)
        await tls.do_handshake()
        return tls

    async def _read_info(self, stream: trio.abc.Stream, parser: NatsParser) -> Info:
        while True:
            event = parser.next_event()
            if isinstance(event, Info):
                return event
            if event is not None:
                raise ProtocolError(f"expected INFO from the NATS server, got {event!r}")
            data = await stream.receive_some(_INFO_LINE_LIMIT)
            if not data:
                raise ConnectionLost("NATS server closed the connection before INFO")
            parser.feed(data)

    async def _await_pong(self, link: ByteLink, parser: NatsParser) -> None:
        while True:
            event = parser.next_event()
            if isinstance(event, Pong):
                return
            if isinstance(event, Err):
                raise NatsServerError(event.message)
            if event is None:
                data = await link.receive()
                if not data:
                    raise ConnectionLost("NATS server closed the connection during CONNECT")
                parser.feed(data)

    def _connect_options(self, server: _Server, info: Info, *, tls: bool) -> dict[str, Any]:
        options: dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "tls_required": tls,
            "lang": "python3-trio",
            "version": __version__,
            "protocol": 1,
            "headers": True,
            "no_responders": True,
        }
        if "name" in self.options:
            options["name"] = self.options["name"]
        user = self.options.get("user", server.user)
        password = self.options.get("password", server.password)
        if "token" in self.options:
            options["auth_token"] = self.options["token"]
        elif user is not None:
            options["user"] = user
            options["pass"] = password or ""
        if self._nkey_seed is not None:
            if info.nonce is None:
                raise ConnectError("the NATS server sent no nonce to sign")
            keys = _nkeys().from_seed(self._nkey_seed)
            signature = keys.sign(info.nonce.encode())
            options["sig"] = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
            if self._jwt is not None:
                options["jwt"] = self._jwt
            else:
                options["nkey"] = keys.public_key.decode()
        return options

    def _learn_servers(self, info: Info) -> None:
        known = {(s.host, s.port) for s in self._servers}
        for url in info.connect_urls:
            try:
                server = parse_server_url(url)
            except ValueError:
                continue
            if (server.host, server.port) not in known:
                server.learned = True
                server.tls = any(s.tls for s in self._servers)
                self._servers.append(server)
                known.add((server.host, server.port))

    async def _reconnect(self) -> None:
        if self._closing or not self.options.get("reconnect", True):
            lost = self._lost_because
            if isinstance(lost, ProtocolError):  # e.g. FrameTooLarge: say what happened
                raise type(lost)(*lost.args)
            raise ConnectionLost(f"NATS connection lost (reconnect is off): {lost}")
        wait = self.options.get("reconnect_wait", 2.0)
        jitter = self.options.get("reconnect_jitter", 0.1)
        limit = self.options.get("max_reconnect_attempts", 60)
        first = True
        while True:
            if limit >= 0 and all(s.attempts >= limit for s in self._servers):
                raise ConnectError("NATS reconnect attempts exhausted")
            if not first:
                await trio.sleep(wait + random.uniform(0, jitter))
            first = False
            try:
                await self._connect_any(first=False)
            except ConnectError:
                continue
            self.reconnects += 1
            self._event("reconnected", self.server or "")
            return

    def _drop_link(self, why: str, *, close_now: bool = False) -> None:
        """Forget the current socket: fail requests in flight, keep subscriptions."""
        link, self._link = self._link, None
        if link is None:
            return
        self._link_lost.set()
        error: TrioplaneError = ConnectionLost(f"NATS connection lost: {why}")
        if self._closing:
            error = ClientClosed("NATS connection closed")
        for request in self._requests.values():
            request.resolve(error)
        self._requests.clear()
        for pong in self._pongs:
            if pong is not None:
                pong.set()
        self._pongs.clear()
        # What is still queued in the outbox goes out after the reconnect.
        if close_now or self._nursery is None:
            link.close_now()
        else:
            self._nursery.start_soon(_close_quietly, link)
        if why != "closed":
            self._event("disconnected", why)

    # -- reading ----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        link = self._link
        assert link is not None
        parser = self._parser
        try:
            while True:
                # Events first: the connect handshake may have read past its PONG.
                for event in parser.events():
                    if event.__class__ is Msg:
                        self._dispatch(event)
                    elif isinstance(event, Ping):
                        self._write(PONG)
                    elif isinstance(event, Pong):
                        self._outstanding_pings = 0
                        if self._pongs:
                            pong = self._pongs.pop(0)
                            if pong is not None:
                                pong.set()
                    elif isinstance(event, Info):
                        self.info = event
                        self._learn_servers(event)
                    elif isinstance(event, Err):
                        self._server_error(event.message)
                data = await link.receive()
                if not data:
                    raise ConnectionLost("the NATS server closed the connection")
                self.stats_in_bytes += len(data)
                self._wrote_direct = False
                parser.feed(data)
        except (TrioplaneError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if not self._closing:
                self._lost_because = exc
                self._drop_link(str(exc))

    def _server_error(self, message: str) -> None:
        self._event("server_error", message)
        lowered = message.lower()
        if "stale connection" in lowered or "authorization" in lowered:
            raise ConnectionLost(f"NATS server: {message}")

    def _dispatch(self, msg: Msg) -> None:
        self.stats_in_msgs += 1
        if msg.sid == self._inbox_sid:
            token = msg.subject[len(self._inbox_base) + 1 :]
            request = self._requests.pop(token, None)
            if request is not None:
                request.resolve(msg)
            return
        sub = self._subs.get(msg.sid)
        if sub is not None:
            sub._deliver(msg)

    # -- writing ----------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Queue protocol bytes for the socket.

        The first write after a quiet spell goes straight to the kernel (no task
        switch: one request at a time stays fast). Writes right behind it join the
        outbox, which the flusher sends in one go, so many callers woken together
        cost one system call, not one each. The reader (on data from the server)
        and the flusher (after a write) reopen the direct path.
        """
        link = self._link
        if link is not None and not self._outbox and not self._flushing and not self._wrote_direct:
            try:
                sent = link.send_nowait(data)
            except trio.BrokenResourceError:
                sent = 0
            self.stats_out_bytes += sent
            if sent == len(data):
                self._wrote_direct = True
                return
            data = data[sent:]
        self._outbox += data
        self._wake_flusher()

    def _wake_flusher(self) -> None:
        if self._parked_flusher is not None:
            trio.lowlevel.reschedule(self._parked_flusher)
            self._parked_flusher = None

    async def _flush_loop(self) -> None:
        while True:
            if not self._outbox or self._link is None:
                self._parked_flusher = trio.lowlevel.current_task()

                def abort(_: object) -> trio.lowlevel.Abort:
                    self._parked_flusher = None
                    return trio.lowlevel.Abort.SUCCEEDED

                await trio.lowlevel.wait_task_rescheduled(abort)
                continue
            await self._flush_outbox()

    async def _flush_outbox(self) -> None:
        link = self._link
        if link is None or not self._outbox or self._flushing:
            await trio.lowlevel.checkpoint()
            return
        data = bytes(self._outbox)
        self._outbox.clear()
        self._flushing = True
        try:
            with trio.CancelScope(shield=self._closing):
                await link.send_all(data)
            self.stats_out_bytes += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # At most once, as NATS: part of this write may have reached the server,
            # so it is not sent again. Say so, as the reader reports the loss.
            log.warning("nats: %d bytes being written were lost with the connection", len(data))
        finally:
            self._flushing = False
            self._wrote_direct = False
            if not self._outbox:
                self._outbox_space.set()
                self._outbox_space = trio.Event()

    async def _timeout_loop(self) -> None:
        """Fail requests older than ``request_timeout`` with ``trio.TooSlowError``.

        Requests share one timeout, so deadlines grow in insertion order; with none
        waiting this sleeps one timeout, and no new request ever needs to wake it.
        """
        while True:
            oldest = next(iter(self._requests.values()), None)
            if oldest is None:
                await trio.sleep(self.request_timeout)
                continue
            await trio.sleep_until(oldest.deadline)
            now = trio.current_time()
            for token, request in list(self._requests.items()):
                if request.deadline > now:
                    break
                del self._requests[token]
                request.resolve(trio.TooSlowError())

    async def _ping_loop(self) -> None:
        while True:
            await trio.sleep(self.ping_interval)
            if self._link is None:
                continue
            if self._outstanding_pings >= self.max_outstanding_pings:
                self._drop_link("stale connection (no PONG)")
                continue
            self._outstanding_pings += 1
            self._pongs.append(None)
            self._write(PING)

    async def _room_for(self, size: int) -> None:
        """Apply the buffer bounds before queueing ``size`` bytes."""
        if self._closing:
            raise ClientClosed("NATS connection is closed")
        if self._link is None:
            if len(self._outbox) + size > self.reconnect_buffer_size:
                raise ReconnectBufferFull(
                    f"disconnected from NATS and the reconnect buffer "
                    f"({self.reconnect_buffer_size} bytes) is full"
                )
            return
        while len(self._outbox) + size > MAX_OUTBOX and self._outbox:
            await self._outbox_space.wait()

    # -- the API -------------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        reply: str | None = None,
        headers: Mapping[str, str | list[str]] | None = None,
    ) -> None:
        """Publish a message (buffered; :meth:`flush` to wait until the server has it)."""
        data = encode_pub(
            subject, payload, reply=reply, headers=headers, max_payload=self.max_payload
        )
        await self._room_for(len(data))
        self.stats_out_msgs += 1
        self._write(data)
        await trio.lowlevel.checkpoint()

    async def flush(self) -> None:
        """Until the server has processed everything sent so far (a PING/PONG round trip).

        Bounded by ``request_timeout`` (``trio.TooSlowError``), or your own scope.
        """
        if self._link is None:
            await trio.lowlevel.checkpoint()
            raise ConnectionLost("not connected to NATS")
        pong = trio.Event()
        self._pongs.append(pong)
        self._write(PING)
        with trio.fail_after(self.request_timeout):
            await pong.wait()
        if self._link is None:
            raise ConnectionLost("NATS connection lost during flush")

    async def subscribe(
        self, subject: str, *, queue: str | None = None, max_pending: int | None = None
    ) -> Subscription:
        """Subscribe to ``subject`` (wildcards allowed), optionally in a queue group.

        ``async with await nc.subscribe("a.>") as sub: async for msg in sub: ...``
        """
        if self._closing:
            raise ClientClosed("NATS connection is closed")
        sid = next(self._sids)
        line = encode_sub(subject, sid, queue)
        sub = Subscription(self, sid, subject, queue, max_pending or self.max_pending)
        self._subs[sid] = sub
        if self._link is not None:
            self._write(line)
        await trio.lowlevel.checkpoint()
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.pop(sub.sid, None) is not None and self._link is not None:
            self._write(encode_unsub(sub.sid))
        sub._close()
        await trio.lowlevel.checkpoint()

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        headers: Mapping[str, str | list[str]] | None = None,
    ) -> Msg:
        """Send a request and wait for the first reply, for up to ``request_timeout``
        (a tighter cancel scope of yours applies too).

        Raises :class:`~trioplane.NoResponders` (nobody subscribed),
        ``trio.TooSlowError`` (no reply in time), :class:`~trioplane.ConnectionLost`.
        """
        if self._inbox_sid is None:
            self._subscribe_inbox()
        token = format(next(self._tokens), "x")
        data = encode_pub(
            subject,
            payload,
            reply=f"{self._inbox_base}.{token}",
            headers=headers,
            max_payload=self.max_payload,
        )
        await self._room_for(len(data))
        request = _Request(trio.current_time() + self.request_timeout)
        self._requests[token] = request
        self.stats_out_msgs += 1
        self._write(data)
        try:
            if request.msg is None:
                request.task = trio.lowlevel.current_task()

                def abort(_: object) -> trio.lowlevel.Abort:
                    request.task = None
                    return trio.lowlevel.Abort.SUCCEEDED

                await trio.lowlevel.wait_task_rescheduled(abort)
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._requests.pop(token, None)
            if not self._requests and self._no_requests is not None:
                self._no_requests.set()
        result = request.msg
        if isinstance(result, (TrioplaneError, trio.TooSlowError)):
            raise result
        assert result is not None
        if result.status == 503:
            raise NoResponders(f"no responders on NATS subject {subject!r}")
        return result

    def _subscribe_inbox(self) -> None:
        sid = next(self._sids)
        sub = Subscription(self, sid, f"{self._inbox_base}.*", None, 1)
        self._subs[sid] = sub
        self._inbox_sid = sid
        if self._link is not None:
            self._write(encode_sub(sub.subject, sid))


def _check_tls(info: Info, stream: trio.abc.Stream, server: _Server) -> None:
    if info.tls_required and not isinstance(stream, trio.SSLStream):
        raise ConnectError(f"{server.url} requires TLS: pass ssl_context")


async def _close_quietly(link: ByteLink) -> None:
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + 1.0
        with suppress(trio.BrokenResourceError, OSError):
            await link.aclose()


def _nkeys() -> Any:
    try:
        import nkeys  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise MissingExtra("NKey authentication", "nkeys", "nats") from exc
    return nkeys


def _load_credentials(options: NatsOptions) -> tuple[bytes | None, str | None]:
    """The NKey seed and user JWT from ``nkey_seed`` or ``creds_file``."""
    if "creds_file" in options:
        text = Path(options["creds_file"]).read_text()
        sections = _CREDS_SECTION.findall(text)
        if len(sections) < 2:
            raise BadArgument("creds file needs a user JWT and an NKey seed section")
        _nkeys()
        return sections[1].encode(), sections[0]
    seed = options.get("nkey_seed")
    if seed is None:
        return None, None
    _nkeys()
    return (seed.encode() if isinstance(seed, str) else seed), None


async def start_nats_connection(
    nursery: trio.Nursery,
    servers: str | Sequence[str] | None = None,
    **options: Unpack[NatsOptions],
) -> NatsConnection:
    """Connect in ``nursery`` (its tasks live there); ``aclose`` it yourself."""
    connection = NatsConnection(servers, **options)
    await nursery.start(connection.run)
    return connection


@asynccontextmanager
async def open_nats_connection(
    servers: str | Sequence[str] | None = None, **options: Unpack[NatsOptions]
) -> AsyncIterator[NatsConnection]:
    """Connect to NATS (``servers``: URLs, default ``nats://127.0.0.1:4222``).

    Raises :class:`~trioplane.ConnectError` if no server can be reached.
    Leaving the block closes the connection and ends its tasks.
    """
    async with running(NatsConnection(servers, **options)) as connection:
        yield connection
