"""A Trio-native etcd v3 client: what discovery needs, over etcd's JSON gateway.

etcd serves its v3 API as JSON on its client port (``POST /v3/kv/range`` and so
on; keys and values base64, 64-bit integers as strings), so an HTTP client is
enough: this one rides on httpx (HTTP/1.1, extra ``trioplane[etcd]``), with no
threads and no asyncio. It offers what discovery needs and no more:

* :meth:`EtcdClient.range` (a key or a prefix), :meth:`~EtcdClient.create`
  (a transaction: put only if the key does not exist), :meth:`~EtcdClient.put`,
  :meth:`~EtcdClient.delete`;
* leases: :meth:`~EtcdClient.lease_grant` (optionally with a chosen id),
  :meth:`~EtcdClient.lease_keepalive`, :meth:`~EtcdClient.lease_revoke`;
* :meth:`~EtcdClient.watch`: a prefix's changes as a stream that resumes from the
  last revision seen after a broken connection (or a silent one: see
  ``watch_timeout``), and raises :class:`EtcdCompacted` when that revision is gone,
  so the caller can get everything again.

Several endpoints: a call that cannot reach one tries the next; when none
answers, :class:`EtcdUnavailable`. Username and password: a token is fetched
and fetched again when etcd says it expired. TLS: an ``ssl_context`` (with a CA,
and a client certificate for etcd's client-cert auth). Every call has
``request_timeout``; a dead etcd is a named error, never a hang.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar

import trio

from trioplane._errors import BadArgument, MissingExtra, TrioplaneError
from trioplane._util import AsyncResource, reason
from trioplane.addresses import split_url

if TYPE_CHECKING:
    from typing_extensions import Unpack

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtra("the etcd client", "httpx", "etcd") from exc

__all__ = [
    "EtcdAuthError",
    "EtcdClient",
    "EtcdCompacted",
    "EtcdError",
    "EtcdOptions",
    "EtcdUnavailable",
    "KeyValue",
    "WatchEvent",
    "open_etcd_client",
    "parse_endpoints",
    "prefix_end",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

ENDPOINT_FORMS = "'http://host:port', 'https://host:port', 'host:port'"
#: etcd's client port.
DEFAULT_PORT = 2379
#: gRPC status codes the gateway reports.
_UNAUTHENTICATED = 16
_INVALID_TOKEN = "invalid auth token"


class EtcdError(TrioplaneError):
    """etcd refused a request (its message says why)."""


class EtcdUnavailable(EtcdError):
    """No etcd endpoint answered (each one's reason is in the message)."""


class EtcdAuthError(EtcdError):
    """etcd refused the username or password (or requires them)."""


class EtcdCompacted(EtcdError):
    """A watch's start revision was compacted away: get everything again.

    ``compact_revision`` is the oldest revision etcd still has.
    """

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted; the oldest kept is {compact_revision}")
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    """One key in etcd, as a range or a watch reports it."""

    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> KeyValue:
        return cls(
            key=_unb64(obj.get("key")),
            value=_unb64(obj.get("value")),
            create_revision=int(obj.get("create_revision", 0)),
            mod_revision=int(obj.get("mod_revision", 0)),
            version=int(obj.get("version", 0)),
            lease=int(obj.get("lease", 0)),
        )


@dataclass(frozen=True)
class WatchEvent:
    """A key was put (created or changed) or deleted (also by its lease expiring)."""

    kind: Literal["put", "delete"]
    kv: KeyValue
    prev: KeyValue | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    return base64.b64decode(text) if isinstance(text, str) else b""


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range of every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # every key


def parse_endpoints(endpoints: str | Sequence[str], *, secure: bool = False) -> list[str]:
    """Base URLs of ``endpoints`` (a list, or a comma-separated string as ``ETCD_ENDPOINTS``);
    ``ValueError`` for none, or a malformed one."""
    names = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    names = [n.strip() for name in names for n in name.split(",") if n.strip()]
    if not names:
        raise BadArgument("no etcd endpoint given")
    return [parse_endpoint(name, secure) for name in names]


def parse_endpoint(endpoint: str, secure: bool) -> str:
    """``host[:port]`` or ``http[s]://host[:port]`` -> a base URL (port 2379 when absent);
    ``ValueError`` otherwise."""
    url = endpoint if "://" in endpoint else f"{'https' if secure else 'http'}://{endpoint}"
    try:
        parts, _ = split_url(url, ("http", "https"), ENDPOINT_FORMS, "an etcd")
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise BadArgument(f"bad etcd endpoint {endpoint!r}: {exc}") from None
    if parts.path not in ("", "/") or parts.query:
        raise BadArgument(f"an etcd endpoint has no path: {endpoint!r}")
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{port}"


class EtcdClient(AsyncResource):
    """A client of one etcd cluster; made by :func:`open_etcd_client`."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        request_timeout: float = 5.0,
        watch_timeout: float = 30.0,
    ) -> None:
        if (username is None) != (password is None):
            raise BadArgument("etcd auth needs both a username and a password")
        if not request_timeout > 0 or not watch_timeout > 0:
            raise BadArgument("request_timeout and watch_timeout must be positive")
        self.endpoints = parse_endpoints(endpoints, secure=ssl_context is not None)
        self.username = username
        self.password = password
        self.request_timeout = request_timeout
        self.watch_timeout = watch_timeout
        self._http = httpx.AsyncClient(
            verify=ssl_context if ssl_context is not None else True,
            timeout=httpx.Timeout(request_timeout),
            limits=httpx.Limits(max_keepalive_connections=8),
        )
        self._current = 0  # the endpoint that answered last
        self._token: str | None = None
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await self._http.aclose()

    # -- requests ------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    async def _authenticate(self, base: str) -> None:
        response = await self._http.post(
            f"{base}/v3/auth/authenticate", json={"name": self.username, "password": self.password}
        )
        body = _json(response)
        if response.status_code != 200 or "token" not in body:
            raise EtcdAuthError(f"etcd at {base} refused the credentials: {_message(body)}")
        self._token = body["token"]

    async def call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/{path}`` on the first endpoint that answers; its JSON.

        Raises :class:`EtcdUnavailable` when none answers within ``request_timeout``,
        :class:`EtcdError` for a refusal.
        """
        return await self._on_any_endpoint(self._call_one, path, body)

    async def _call_one(self, base: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        for attempt in range(2):
            if self.username is not None and self._token is None:
                await self._authenticate(base)
            response = await self._http.post(
                f"{base}/v3/{path}", json=body, headers=self._headers()
            )
            result = _json(response)
            if response.status_code == 200:
                return result
            if self._token_expired(result) and attempt == 0 and self.username is not None:
                self._token = None  # expired: fetch another and try once more
                continue
            if result.get("code") == _UNAUTHENTICATED or "user name is empty" in _message(result):
                raise EtcdAuthError(f"etcd at {base} requires auth: {_message(result)}")
            raise EtcdError(f"etcd at {base} refused {path}: {_message(result)}")
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _token_expired(result: Mapping[str, Any]) -> bool:
        return _INVALID_TOKEN in _message(result) or "permission denied" in _message(result)

    async def _on_any_endpoint(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``call(base, *args)`` on each endpoint in turn, from the one that answered last."""
        if self._closed:
            raise EtcdError("etcd client is closed")
        failures = []
        n = len(self.endpoints)
        for i in range(n):
            index = (self._current + i) % n
            base = self.endpoints[index]
            try:
                with trio.fail_after(self.request_timeout * 2):  # auth, then the call
                    result = await call(base, *args)
            except (httpx.TransportError, trio.TooSlowError) as exc:
                why = "timed out" if isinstance(exc, trio.TooSlowError) else reason(exc)
                failures.append(f"{base}: {why}")
                self._token = None  # a token is per member when a cluster fails over
                continue
            self._current = index
            return result
        raise EtcdUnavailable(f"no etcd endpoint answered ({'; '.join(failures)})")

    # -- keys -------------------------------------------------------------------------------

    async def range(self, key: bytes, *, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """The key (or every key under ``prefix``), and the store's revision."""
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        result = await self.call("kv/range", body)
        kvs = [KeyValue.from_json(kv) for kv in result.get("kvs", [])]
        return kvs, _revision(result)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Set ``key``; the new revision."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return _revision(await self.call("kv/put", body))

    async def create(self, key: bytes, value: bytes, *, lease: int = 0) -> bool:
        """Put ``key`` only if it does not exist (a transaction); whether it was created."""
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        txn = {
            "compare": [{"key": _b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}],
            "success": [{"request_put": put}],
        }
        return bool((await self.call("kv/txn", txn)).get("succeeded"))

    async def delete(self, key: bytes, *, prefix: bool = False) -> int:
        """Delete the key (or every key under ``prefix``); how many were deleted."""
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        return int((await self.call("kv/deleterange", body)).get("deleted", 0))

    async def compact(self, revision: int) -> None:
        """Drop the history before ``revision`` (for tests and operators)."""
        await self.call("kv/compaction", {"revision": str(revision), "physical": True})

    # -- leases -----------------------------------------------------------------------------

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> tuple[int, int]:
        """A new lease (with ``lease_id`` if given, else one etcd picks): its id and TTL.

        Raises :class:`EtcdError` if ``lease_id`` is in use.
        """
        body: dict[str, Any] = {"TTL": str(ttl)}
        if lease_id:
            body["ID"] = str(lease_id)
        result = await self.call("lease/grant", body)
        return int(result["ID"]), int(result.get("TTL", ttl))

    async def lease_keepalive(self, lease_id: int) -> int:
        """Refresh the lease; its TTL now, or 0 if it is gone (expired or revoked)."""
        result = await self.call("lease/keepalive", {"ID": str(lease_id)})
        ttl = int(result.get("result", {}).get("TTL", 0))
        if ttl == 0 and self.username is not None:
            # With an expired token etcd answers a keep-alive as if the lease were gone:
            # ask in a way that does check the token before believing it.
            ttl = await self.lease_ttl(lease_id)
            if ttl > 0:
                result = await self.call("lease/keepalive", {"ID": str(lease_id)})
                ttl = int(result.get("result", {}).get("TTL", 0))
        return ttl

    async def lease_ttl(self, lease_id: int) -> int:
        """The lease's remaining TTL, or 0 if it is gone."""
        result = await self.call("lease/timetolive", {"ID": str(lease_id)})
        return max(0, int(result.get("TTL", -1)))

    async def lease_revoke(self, lease_id: int) -> None:
        """Revoke the lease, deleting its keys at once (no error if it is already gone)."""
        try:
            await self.call("lease/revoke", {"ID": str(lease_id)})
        except EtcdError as exc:
            if "lease not found" not in str(exc):
                raise

    # -- watch -----------------------------------------------------------------------------

    async def watch(
        self, prefix: bytes, start_revision: int
    ) -> AsyncIterator[tuple[int, list[WatchEvent]]]:
        """Changes under ``prefix`` from ``start_revision`` on: ``(revision, events)`` batches.

        A broken or silent (``watch_timeout``) connection is resumed from the revision
        after the last one seen, on any endpoint, without losing or repeating events.
        Raises :class:`EtcdCompacted` when the revision to resume from is gone, and
        :class:`EtcdUnavailable` when no endpoint answers.
        """
        next_revision = start_revision
        while True:
            response, lines = await self._on_any_endpoint(self._open_watch, prefix, next_revision)
            try:
                while True:
                    with trio.fail_after(self.watch_timeout):
                        line = await anext(lines)
                    batch = self._watch_message(line)
                    if batch is None:
                        continue
                    revision, events = batch
                    next_revision = max(next_revision, revision + 1)
                    if events:
                        yield revision, events
            except (
                httpx.TransportError,
                trio.TooSlowError,
                StopAsyncIteration,
                _WatchBroke,
            ) as exc:
                log.debug("etcd watch of %r broke (%s); resuming at %d", prefix, exc, next_revision)
            except _WatchRefused:
                self._token = None  # the token expired: fetch another and watch again
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await response.aclose()

    async def _open_watch(
        self, base: str, prefix: bytes, start_revision: int
    ) -> tuple[httpx.Response, AsyncIterator[str]]:
        if self.username is not None and self._token is None:
            await self._authenticate(base)
        create = {
            "key": _b64(prefix),
            "range_end": _b64(prefix_end(prefix)),
            "start_revision": str(start_revision),
            "prev_kv": True,
        }
        request = self._http.build_request(
            "POST",
            f"{base}/v3/watch",
            json={"create_request": create},
            headers=self._headers(),
            timeout=httpx.Timeout(self.request_timeout, read=None),
        )
        response = await self._http.send(request, stream=True)
        if response.status_code != 200:
            body = _json_text(await response.aread())
            await response.aclose()
            raise EtcdError(f"etcd at {base} refused a watch: {_message(body)}")
        return response, aiter(response.aiter_lines())

    @staticmethod
    def _watch_message(line: str) -> tuple[int, list[WatchEvent]] | None:
        if not line.strip():
            return None
        message = _json_text(line.encode())
        result = message.get("result")
        if not isinstance(result, dict):  # the gateway lost etcd (restarting): resume
            raise _WatchBroke(f"etcd ended the watch: {_message(message)}")
        if result.get("compact_revision"):
            raise EtcdCompacted(int(result["compact_revision"]))
        if result.get("canceled"):
            why = str(result.get("cancel_reason", ""))
            if "permission denied" in why or _INVALID_TOKEN in why:
                raise _WatchRefused(why)
            raise EtcdError(f"etcd canceled the watch: {why or 'no reason given'}")
        events = [
            WatchEvent(
                "delete" if event.get("type") == "DELETE" else "put",
                KeyValue.from_json(event.get("kv", {})),
                KeyValue.from_json(event["prev_kv"]) if event.get("prev_kv") else None,
            )
            for event in result.get("events", [])
        ]
        return _revision(result), events


_BROKEN = (httpx.TransportError, trio.TooSlowError, StopAsyncIteration)


class _WatchBroke(Exception):
    """The gateway reported an error in the stream (etcd going away): resume it."""


class _WatchRefused(Exception):
    """The watch was refused for its token (expired): authenticate again."""


def _revision(result: Mapping[str, Any]) -> int:
    return int(result.get("header", {}).get("revision", 0))


def _json(response: httpx.Response) -> dict[str, Any]:
    return _json_text(response.content)


def _json_text(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        return {"error": data[:200].decode("utf-8", "replace")}
    return body if isinstance(body, dict) else {"error": str(body)[:200]}


def _message(body: Mapping[str, Any]) -> str:
    error = body.get("error")
    if isinstance(error, Mapping):  # a streaming call's error: {"error": {"message": ...}}
        return _message(error)
    return str(body.get("message") or error or "no reason given")


class EtcdOptions(TypedDict, total=False):
    """Options of :func:`open_etcd_client` (and :class:`EtcdClient`).

    * ``username``, ``password``: etcd's auth (both, or neither);
    * ``ssl_context``: TLS for ``https`` endpoints (and bare ``host:port`` ones);
    * ``request_timeout`` (5 s): each call, on each endpoint tried;
    * ``watch_timeout`` (30 s): a watch silent this long is resumed (a dead link).
    """

    username: str | None
    password: str | None
    ssl_context: ssl.SSLContext | None
    request_timeout: float
    watch_timeout: float


@asynccontextmanager
async def open_etcd_client(
    endpoints: str | Sequence[str], **options: Unpack[EtcdOptions]
) -> AsyncIterator[EtcdClient]:
    """An :class:`EtcdClient` for the duration of the block.

    ``endpoints``: ``http://host:port`` (``https`` for TLS), ``host[:port]``, or a
    comma-separated list of them (as ``ETCD_ENDPOINTS``).
    """
    async with EtcdClient(endpoints, **options) as client:
        yield client
