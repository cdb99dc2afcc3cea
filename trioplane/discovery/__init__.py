"""Discovery: which worker instances exist, for the client; registration, for the worker.

Three backends, each usable on both sides (:class:`Discovery` for the endpoint
client, :meth:`open_registration` for the worker):

* :class:`StaticDiscovery`: a list you give (and may replace); also an in-memory
  backend a worker can register in;
* :class:`FileDiscovery`: Dynamo's file backend (``DYN_DISCOVERY_BACKEND=file``);
* :class:`EtcdDiscovery`: Dynamo's etcd backend (``DYN_DISCOVERY_BACKEND=etcd``;
  needs the extra ``trioplane[etcd]``).

:func:`discovery_from_env` picks one the way a Dynamo process does; the endpoint
client and the worker use it when given no ``discovery``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from trioplane._errors import BadArgument, BadArgumentType
from trioplane._types import Instance
from trioplane.discovery._base import (
    Discovery,
    Registration,
    RegistrationStatistics,
    Registry,
    random_instance_id,
)
from trioplane.discovery.file import (
    MAX_RECORD_SIZE,
    STALE_AFTER,
    FileDiscovery,
    default_file_root,
    instance_key,
)
from trioplane.discovery.static import StaticDiscovery

if TYPE_CHECKING:
    from trioplane.discovery.etcd import EtcdDiscovery

__all__ = [
    "BACKENDS",
    "MAX_RECORD_SIZE",
    "STALE_AFTER",
    "Discovery",
    "DiscoverySource",
    "EtcdDiscovery",
    "FileDiscovery",
    "Registration",
    "RegistrationStatistics",
    "Registry",
    "StaticDiscovery",
    "as_discovery",
    "default_file_root",
    "discovery_from_env",
    "describe",
    "discovery_from_url",
    "instance_key",
    "random_instance_id",
]

#: What ``DYN_DISCOVERY_BACKEND`` may say (Dynamo 1.6.1's values).
BACKENDS = ("etcd", "file", "mem", "kubernetes")

#: What a caller may pass as ``discovery``: a backend, instances, a file root, or None.
DiscoverySource = Discovery | Sequence[Instance] | str | os.PathLike[str] | None


def discovery_from_env(environ: Mapping[str, str] | None = None) -> FileDiscovery | EtcdDiscovery:
    """The discovery backend a Dynamo process would use, from its environment.

    ``DYN_DISCOVERY_BACKEND`` (as Dynamo 1.6.1 reads it): ``etcd``, also when unset
    (Dynamo's default), is etcd at ``ETCD_ENDPOINTS`` with ``ETCD_AUTH_*`` and
    ``ETCD_LEASE_TTL`` (:meth:`EtcdDiscovery.from_env`); ``file`` is the file backend
    at ``DYN_FILE_KV`` (default ``$TMPDIR/dynamo_store_kv``). ``kubernetes`` and
    ``mem`` raise a ``ValueError`` that says what to use instead, and so does any
    other value.
    """
    env = os.environ if environ is None else environ
    backend = (env.get("DYN_DISCOVERY_BACKEND") or "etcd").strip()
    if backend == "file":
        root = env.get("DYN_FILE_KV")
        return FileDiscovery(root or None)
    if backend == "etcd":
        from trioplane.discovery.etcd import EtcdDiscovery

        return EtcdDiscovery.from_env(env)
    if backend == "kubernetes":
        raise BadArgument(
            "DYN_DISCOVERY_BACKEND=kubernetes is not supported by trioplane yet: use etcd"
            " (DYN_DISCOVERY_BACKEND=etcd, ETCD_ENDPOINTS) or the file backend"
            " (DYN_DISCOVERY_BACKEND=file, DYN_FILE_KV), or pass discovery=..."
        )
    if backend == "mem":
        raise BadArgument(
            "DYN_DISCOVERY_BACKEND=mem lives inside one Dynamo process; trioplane cannot"
            " see it: use etcd or file, or pass discovery=StaticDiscovery(...)"
        )
    raise BadArgument(
        f"DYN_DISCOVERY_BACKEND={backend!r} is not a discovery backend; use one of"
        f" {', '.join(BACKENDS)}"
    )


def discovery_from_url(url: str) -> FileDiscovery | EtcdDiscovery:
    """A backend from a URL: ``etcd://host:port[,host:port...]`` (``etcds://`` for TLS;
    auth and TLS files from ``ETCD_AUTH_*``), or ``file:///dir`` (or a plain path).
    ``ValueError`` for anything else."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return FileDiscovery(url)
    if scheme == "file":
        if not rest.startswith("/"):
            raise BadArgument(f"a file discovery URL is file:///absolute/dir, not {url!r}")
        return FileDiscovery(rest)
    if scheme in ("etcd", "etcds"):
        from trioplane.discovery.etcd import EtcdDiscovery

        web = "https" if scheme == "etcds" else "http"
        endpoints = [
            f"{web}://{_with_etcd_port(host.strip())}" for host in rest.split(",") if host.strip()
        ]
        if not endpoints:
            raise BadArgument(f"no etcd endpoint in {url!r}")
        settings = EtcdDiscovery.from_env()
        return EtcdDiscovery(
            endpoints,
            username=settings.username,
            password=settings.password,
            ssl_context=settings.ssl_context,
        )
    raise BadArgument(f"discovery URLs are etcd://host:port or file:///dir, not {url!r}")


def _with_etcd_port(host: str) -> str:
    """``host`` with etcd's client port (2379) when it names none, as etcdctl reads it."""
    if host.startswith("["):  # [v6]:port
        return host if "]:" in host else f"{host}:2379"
    return host if ":" in host else f"{host}:2379"


def describe(discovery: Discovery) -> str:
    """Where ``discovery`` looks, for messages: a folder, etcd's endpoints, or its type."""
    root = getattr(discovery, "root", None)
    if root is not None:
        return f"file discovery at {root}"
    endpoints = getattr(discovery, "endpoints", None)
    if endpoints is not None:
        names = endpoints if isinstance(endpoints, str) else ",".join(endpoints)
        error = getattr(discovery, "last_error", None)
        return f"etcd at {names}" + (f" ({error})" if error else "")
    return type(discovery).__name__


def as_discovery(source: DiscoverySource) -> Discovery:
    """A :class:`Discovery` from what a caller passed: a backend, instances, a file
    root, or ``None`` (:func:`discovery_from_env`)."""
    if source is None:
        return discovery_from_env()
    if isinstance(source, (str, os.PathLike)):
        return FileDiscovery(source)
    if isinstance(source, Discovery):
        return source
    if isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        instances = list(source)
        wrong = next((i for i in instances if not isinstance(i, Instance)), None)
        if wrong is None:
            return StaticDiscovery(instances)
        what = f"a list holding {type(wrong).__name__}"
    else:
        what = type(source).__name__
    raise BadArgumentType(
        "discovery must be a Discovery (EtcdDiscovery, FileDiscovery...), a list of"
        f" Instance, a file-discovery directory or None, not {what}"
    )


def __getattr__(name: str) -> Any:
    if name == "EtcdDiscovery":  # needs httpx (trioplane[etcd]): imported on first use
        from trioplane.discovery.etcd import EtcdDiscovery

        return EtcdDiscovery
    raise AttributeError(f"module 'trioplane.discovery' has no attribute {name!r}")
