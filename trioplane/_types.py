"""Value types and the request-plane interface shared by every transport.

No Trio here: these are plain data and a ``typing.Protocol``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from trioplane._errors import ProtocolError
from trioplane.wire._json import dump_json, load_json

__all__ = ["ClientStats", "Instance", "RequestPlaneClient"]


@dataclass(frozen=True)
class ClientStats:
    """A snapshot of a client's counters (Dynamo's ``ClientStats``).

    ``requests_sent`` counts requests written to the wire, ``responses_received``
    acks read off it (also those whose caller had already given up), ``errors``
    calls that raised a :class:`~trioplane.TrioplaneError`. Bytes count whole
    frames. ``active_connections`` have requests in flight, ``idle_connections``
    are open with none. ``avg_latency_us`` is the mean time from a request's
    write being queued to its ack, over every ack delivered to a caller.
    """

    requests_sent: int = 0
    responses_received: int = 0
    errors: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    active_connections: int = 0
    idle_connections: int = 0
    avg_latency_us: int = 0

    def is_available(self) -> bool:
        """True once there is anything to report, as in Dynamo."""
        return self.requests_sent > 0 or self.active_connections > 0


class StatsRecorder:
    """The mutable counters behind a client's :class:`ClientStats` (every transport's)."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "errors",
        "latency_count",
        "latency_total",
        "requests_sent",
        "responses_received",
    )

    def __init__(self) -> None:
        self.requests_sent = 0
        self.responses_received = 0
        self.errors = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.latency_total = 0.0  # seconds
        self.latency_count = 0

    def snapshot(self, active: int, idle: int) -> ClientStats:
        avg = round(self.latency_total * 1e6 / self.latency_count) if self.latency_count else 0
        return ClientStats(
            requests_sent=self.requests_sent,
            responses_received=self.responses_received,
            errors=self.errors,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            active_connections=active,
            idle_connections=idle,
            avg_latency_us=avg,
        )


#: Dynamo's transports, plus trioplane's own WebSocket plane.
_TRANSPORT_KINDS = ("tcp", "nats_tcp", "http", "websocket")


def _required_str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"instance record needs a string {key!r}")
    return value


def _optional_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"instance field {key!r} must be a string")
    return value


@dataclass(frozen=True)
class Instance:
    """One worker instance of an endpoint, as Dynamo's discovery advertises it.

    ``transport_kind`` is ``"tcp"``, ``"nats_tcp"``, ``"http"`` (Dynamo's) or
    ``"websocket"`` (trioplane's) and ``address``
    the advertised string for it (``host:port/path``, a NATS subject or a URL),
    kept verbatim because workers look handlers up by the exact string.
    """

    namespace: str
    component: str
    endpoint: str
    instance_id: int
    transport_kind: str
    address: str
    device_type: str | None = None
    request_plane_codec: str | None = None

    @property
    def endpoint_path(self) -> str:
        """``namespace.component.endpoint``, the name a caller asks for."""
        return f"{self.namespace}.{self.component}.{self.endpoint}"

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> Instance:
        """Parse Dynamo's instance record; raise :class:`ProtocolError` if malformed."""
        obj = load_json(data, "instance record") if isinstance(data, (str, bytes)) else data
        if not isinstance(obj, Mapping):
            raise ProtocolError("instance record is not a JSON object")
        transport = obj.get("transport")
        if not isinstance(transport, Mapping) or len(transport) != 1:
            raise ProtocolError("instance record needs a one-key 'transport' object")
        ((kind, address),) = transport.items()
        if kind not in _TRANSPORT_KINDS or not isinstance(address, str):
            raise ProtocolError(f"unknown instance transport {kind!r}")
        instance_id = obj.get("instance_id")
        if not isinstance(instance_id, int) or isinstance(instance_id, bool):
            raise ProtocolError("instance record needs an integer 'instance_id'")
        if not 0 <= instance_id < 2**64:
            raise ProtocolError("instance_id out of u64 range")
        return cls(
            namespace=_required_str(obj, "namespace"),
            component=_required_str(obj, "component"),
            endpoint=_required_str(obj, "endpoint"),
            instance_id=instance_id,
            transport_kind=kind,
            address=address,
            device_type=_optional_str(obj, "device_type"),
            request_plane_codec=_optional_str(obj, "request_plane_codec"),
        )

    def to_json(self) -> bytes:
        """Encode as Dynamo writes it (same key order, compact JSON)."""
        obj: dict[str, Any] = {
            "type": "Endpoint",
            "component": self.component,
            "endpoint": self.endpoint,
            "namespace": self.namespace,
            "instance_id": self.instance_id,
            "transport": {self.transport_kind: self.address},
        }
        if self.device_type is not None:
            obj["device_type"] = self.device_type
        if self.request_plane_codec is not None:
            obj["request_plane_codec"] = self.request_plane_codec
        return dump_json(obj)


@runtime_checkable
class RequestPlaneClient(Protocol):
    """What every transport client offers (Dynamo's ``RequestPlaneClient`` trait).

    There are no cancellation tokens: the caller's cancel scope bounds every call,
    and the client's own nursery owns its background tasks. Clients are async
    context managers; leaving the ``async with`` is :meth:`aclose`.
    """

    @property
    def transport_name(self) -> str:
        """``"tcp"``, ``"nats"``, ``"http"``, ``"websocket"``..."""
        ...

    async def send_request(
        self, address: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> bytes:
        """Send one request and return its ack: ``b""`` = accepted, else the rejection text."""
        ...

    def is_healthy(self) -> bool:
        """Cheap check, no I/O: open and able to take requests."""
        ...

    def stats(self) -> ClientStats:
        """A snapshot of the client's counters."""
        ...

    def start_warmup(self, instance_updates: AsyncIterable[Sequence[Instance]]) -> None:
        """Connect ahead of time to instances named by each list of ``instance_updates``."""
        ...

    async def aclose(self) -> None:
        """Refuse new requests, let in-flight ones finish within a grace period, release all."""
        ...

    async def __aenter__(self) -> RequestPlaneClient: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
