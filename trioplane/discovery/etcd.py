"""Dynamo's etcd discovery backend (``DYN_DISCOVERY_BACKEND=etcd``), both sides.

The layout is Dynamo 1.6.1's (captured against a real worker and etcd 3.5; spec,
section 6.1): one key per instance, ``v1/instances/{ns}/{comp}/{ep}/{id:x}`` (raw,
not percent-encoded), holding the instance JSON; each key is attached to a lease
and **the lease id is the instance id**.

* The client (:meth:`EtcdDiscovery.changes`) gets the prefix, then watches it from
  the next revision. A broken watch resumes from the last revision seen; when that
  revision was compacted it gets everything again and carries on from there. While
  etcd is away it keeps the instances it knows.
* The worker (:meth:`EtcdDiscovery.open_registration`) grants a lease per instance
  id, creates each record with a create-if-absent transaction, keeps the leases
  alive (every ``lease_ttl / 3``), and revokes them when it stops, so callers see
  the instances go at once. A lease lost while etcd was away longer than its TTL is
  granted again with the same id and the records published again, with a warning;
  :class:`~trioplane.discovery.RegistrationStatistics` counts it.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from trioplane._errors import BadArgument, ProtocolError
from trioplane._logging import RateLimitedLog
from trioplane._types import Instance
from trioplane.discovery._base import RegistrationStatistics, registered
from trioplane.etcd import (
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    open_etcd_client,
    parse_endpoints,
)

__all__ = ["INSTANCES_PREFIX", "EtcdDiscovery", "etcd_key"]

log = logging.getLogger(__name__)

INSTANCES_PREFIX = b"v1/instances/"
#: Dynamo's default server list (``ETCD_ENDPOINTS``).
DEFAULT_ENDPOINTS = "http://localhost:2379"
#: Seconds between attempts while etcd is away (doubling up to ``MAX_RETRY_WAIT``).
RETRY_WAIT = 0.5
MAX_RETRY_WAIT = 5.0


def etcd_key(instance: Instance) -> bytes:
    """The etcd key of ``instance``: ``v1/instances/{ns}/{comp}/{ep}/{id:x}`` (raw)."""
    return (
        f"v1/instances/{instance.namespace}/{instance.component}/{instance.endpoint}/"
        f"{instance.instance_id:x}"
    ).encode()


@dataclass
class EtcdDiscovery:
    """Dynamo's etcd backend (see the module doc), for the endpoint client and the worker.

    ``endpoints``: ``http://host:port`` (``https://`` for TLS), ``host:port``, a list
    of them, or a comma-separated string (as ``ETCD_ENDPOINTS``). ``username`` and
    ``password``: etcd's auth; ``ssl_context``: TLS (a CA, and a client certificate
    for etcd's client-cert auth). ``lease_ttl`` (30 s, Dynamo's): a worker that
    dies is gone from every client this long after. ``request_timeout``: each etcd
    call.
    """

    endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS
    username: str | None = None
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None
    lease_ttl: int = 30
    request_timeout: float = 5.0
    _log: RateLimitedLog = field(
        default_factory=lambda: RateLimitedLog(log), init=False, repr=False
    )
    #: Why the last etcd call of :meth:`changes` failed (``None``: it works).
    last_error: str | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        if self.lease_ttl < 2:
            raise BadArgument("lease_ttl must be at least 2 seconds")
        if (self.username is None) != (self.password is None):
            raise BadArgument("etcd auth needs both a username and a password")
        parse_endpoints(self.endpoints)  # a ValueError now, not at the first call

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EtcdDiscovery:
        """The settings a Dynamo 1.6.1 process reads (captured against real ones):

        * ``ETCD_ENDPOINTS``: comma-separated, scheme optional (``https://`` is TLS);
          default ``http://localhost:2379``;
        * ``ETCD_AUTH_USERNAME`` and ``ETCD_AUTH_PASSWORD`` (both, or neither);
        * ``ETCD_AUTH_CA``, ``ETCD_AUTH_CLIENT_CERT``, ``ETCD_AUTH_CLIENT_KEY``: TLS, as
          PEM text (Dynamo's form) or file paths; used only when all three are set, as
          Dynamo does (a CA alone is ignored, with a warning). Unlike Dynamo, which drops
          the TLS files when a username is set, trioplane uses both;
        * ``ETCD_LEASE_TTL``: a worker's lease, in seconds (default 30; not a number:
          30, with a warning, as Dynamo).
        """
        env = os.environ if environ is None else environ
        names = ("CA", "CLIENT_CERT", "CLIENT_KEY")
        ca, cert, key = (env.get(f"ETCD_AUTH_{name}") or None for name in names)
        context = None
        if ca is not None and cert is not None and key is not None:
            context = _tls_context(ca, cert, key)
        elif ca is not None or cert is not None or key is not None:
            log.warning(
                "ETCD_AUTH_CA, ETCD_AUTH_CLIENT_CERT and ETCD_AUTH_CLIENT_KEY are used only"
                " together (as Dynamo); with some missing, etcd is dialled without them"
            )
        ttl_text = env.get("ETCD_LEASE_TTL") or "30"
        if not ttl_text.isdigit() or int(ttl_text) < 2:
            log.warning("invalid ETCD_LEASE_TTL=%r; falling back to 30", ttl_text)
            ttl_text = "30"
        return cls(
            endpoints=env.get("ETCD_ENDPOINTS") or DEFAULT_ENDPOINTS,
            username=env.get("ETCD_AUTH_USERNAME") or None,
            password=env.get("ETCD_AUTH_PASSWORD") or None,
            ssl_context=context,
            lease_ttl=int(ttl_text),
        )

    def client(self) -> AbstractAsyncContextManager[EtcdClient]:
        """An :class:`~trioplane.etcd.EtcdClient` with these settings, for a block."""
        return open_etcd_client(
            self.endpoints,
            username=self.username,
            password=self.password,
            ssl_context=self.ssl_context,
            request_timeout=self.request_timeout,
        )

    # -- the client side ------------------------------------------------------------------

    async def instances(self) -> list[Instance]:
        """Every instance registered now (one range request)."""
        async with self.client() as etcd:
            kvs, _ = await etcd.range(INSTANCES_PREFIX, prefix=True)
        return self._parse_all(kvs)

    async def changes(self) -> AsyncIterator[list[Instance]]:
        """The current list, then the full list each time it changes (see the module doc).

        While etcd cannot be reached the list is the last one known (empty at first,
        so a client starts and can wait for instances); :attr:`last_error` says why.
        """
        known: dict[bytes, Instance] = {}
        wait = RETRY_WAIT
        first = True
        async with self.client() as etcd:
            while True:
                try:
                    kvs, revision = await etcd.range(INSTANCES_PREFIX, prefix=True)
                    known = {kv.key: i for kv in kvs if (i := self._parse(kv)) is not None}
                    self.last_error = None
                    first = False
                    yield _sorted(known)
                    wait = RETRY_WAIT
                    async with aclosing(etcd.watch(INSTANCES_PREFIX, revision + 1)) as batches:  # type: ignore[type-var]
                        async for _, events in batches:
                            changed = False
                            for event in events:
                                if event.kind == "delete":
                                    changed |= known.pop(event.kv.key, None) is not None
                                elif (instance := self._parse(event.kv)) is not None:
                                    changed |= known.get(event.kv.key) != instance
                                    known[event.kv.key] = instance
                            if changed:
                                yield _sorted(known)
                except EtcdCompacted:
                    continue  # the history we needed is gone: get everything again
                except EtcdError as exc:
                    self.last_error = str(exc)
                    self._log.warning(
                        "unavailable", "etcd discovery: %s; keeping %d instances", exc, len(known)
                    )
                    if first:
                        first = False
                        yield []
                    await trio.sleep(wait)
                    wait = min(wait * 2, MAX_RETRY_WAIT)

    def _parse(self, kv: KeyValue) -> Instance | None:
        try:
            return Instance.from_json(kv.value)
        except ProtocolError as exc:
            self._log.warning("record", "skipping etcd record %r: %s", kv.key, exc)
            return None

    def _parse_all(self, kvs: Sequence[KeyValue]) -> list[Instance]:
        return _sorted({kv.key: i for kv in kvs if (i := self._parse(kv)) is not None})

    # -- the worker side ------------------------------------------------------------------

    @asynccontextmanager
    async def open_registration(self) -> AsyncIterator[_EtcdRegistration]:
        """Register a worker's instances (see the module doc)."""
        async with self.client() as etcd:
            registration = _EtcdRegistration(etcd, self.lease_ttl, self._log)
            async with registered(registration, registration.keep_alive):
                yield registration


def _tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """A client context from PEM text (Dynamo's form) or file paths."""
    context = ssl.create_default_context()
    if ca.lstrip().startswith("-----BEGIN"):
        context.load_verify_locations(cadata=ca)
    else:
        context.load_verify_locations(cafile=ca)
    if cert.lstrip().startswith("-----BEGIN") or key.lstrip().startswith("-----BEGIN"):
        with tempfile.TemporaryDirectory() as folder:  # ssl loads a key only from a file
            paths = []
            for name, text in (("cert.pem", cert), ("key.pem", key)):
                path = Path(folder) / name
                if text.lstrip().startswith("-----BEGIN"):
                    path.write_text(text)
                    path.chmod(0o600)
                    paths.append(str(path))
                else:
                    paths.append(text)
            context.load_cert_chain(paths[0], paths[1])
    else:
        context.load_cert_chain(cert, key)
    return context


def _sorted(known: Mapping[bytes, Instance]) -> list[Instance]:
    return [known[key] for key in sorted(known)]


class _EtcdRegistration:
    """A worker's leases and records in etcd."""

    def __init__(self, etcd: EtcdClient, ttl: int, log_: RateLimitedLog) -> None:
        self.etcd = etcd
        self.ttl = ttl
        self.log = log_
        #: the instance ids (lease ids) this worker was given
        self.owned: set[int] = set()
        #: lease id -> the instances published with it (the leases granted now)
        self.leases: dict[int, list[Instance]] = {}
        self.losses = 0
        self.lost: set[int] = set()

    async def new_instance_id(self) -> int:
        lease_id, _ = await self.etcd.lease_grant(self.ttl)
        self.owned.add(lease_id)
        self.leases[lease_id] = []
        return lease_id

    async def publish(self, instances: Sequence[Instance]) -> None:
        """Create the records; a lease withdrawn before is granted again under its id."""
        for instance in instances:
            lease_id = instance.instance_id
            if lease_id not in self.owned:
                raise BadArgument(f"instance id {lease_id:x} is no lease of ours")
            if lease_id not in self.leases:
                await self._grant_again(lease_id)
                self.leases[lease_id] = []
            await self._create(instance)
            self.leases[lease_id].append(instance)

    async def _grant_again(self, lease_id: int) -> None:
        try:
            await self.etcd.lease_grant(self.ttl, lease_id)
        except EtcdError as exc:  # granted already by an earlier attempt: go on
            if isinstance(exc, EtcdUnavailable) or "lease already exists" not in str(exc):
                raise

    async def _create(self, instance: Instance) -> None:
        key = etcd_key(instance)
        if not await self.etcd.create(key, instance.to_json(), lease=instance.instance_id):
            raise EtcdError(f"etcd key {key.decode()} exists already (another worker's?)")

    async def keep_alive(self) -> None:
        """Refresh every lease every ``ttl / 3``; restore one that was lost."""
        while True:
            await trio.sleep(self.ttl / 3)
            for lease_id in list(self.leases):
                try:
                    alive = await self.etcd.lease_keepalive(lease_id) > 0
                    if not alive or lease_id in self.lost:
                        await self._restore(lease_id)
                except EtcdError as exc:  # etcd away: the lease may outlive it
                    self.log.warning("keepalive", "cannot keep lease %x alive: %s", lease_id, exc)

    async def _restore(self, lease_id: int) -> None:
        """The lease expired (etcd was away longer than its TTL): grant it again under
        the same id, so the instance ids and addresses stay, and publish again."""
        if lease_id not in self.lost:
            self.lost.add(lease_id)
            self.losses += 1
            log.warning("etcd lease %x was lost; registering its instances again", lease_id)
        await self._grant_again(lease_id)
        for instance in self.leases[lease_id]:
            try:
                await self._create(instance)
            except EtcdError as exc:
                if "exists already" not in str(exc):
                    raise
        self.lost.discard(lease_id)
        log.warning(
            "etcd lease %x restored; %d instance(s) registered again",
            lease_id,
            len(self.leases[lease_id]),
        )

    async def withdraw(self) -> None:
        """Revoke every lease: etcd deletes the records at once (bounded, shielded)."""
        leases, self.leases = self.leases, {}
        with trio.CancelScope(shield=True), trio.move_on_after(self.etcd.request_timeout):
            for lease_id in leases:
                try:
                    await self.etcd.lease_revoke(lease_id)
                except EtcdError as exc:  # they expire on their own within the TTL
                    self.log.warning("revoke", "cannot revoke lease %x: %s", lease_id, exc)

    def statistics(self) -> RegistrationStatistics:
        records = sum(len(v) for v in self.leases.values())
        return RegistrationStatistics(
            registered=records > 0 and not self.lost, losses=self.losses, records=records
        )
