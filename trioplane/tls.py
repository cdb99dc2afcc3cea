"""TLS on Dynamo's TCP planes: the request plane and the call home, as Dynamo 1.6.1 does it.

Each process decides its own side from its own settings; nothing on the wire
or in discovery says whether a peer speaks TLS (captured against real 1.6.1
processes; docs/security.rst has the details):

* a process **serves** TLS (the worker's request plane, the caller's call-home
  listener) when it has a certificate and key (``DYN_TCP_TLS_CERT_PATH``,
  ``DYN_TCP_TLS_KEY_PATH``), and requires client certificates signed by
  ``DYN_TCP_TLS_CLIENT_CA_CERT_PATH`` when that is set;
* a process **dials** with TLS (the caller to a worker, the worker calling
  home) when it has a CA (``DYN_TCP_TLS_CA_CERT_PATH``: trusted alone, no system
  roots), or ``DYN_TCP_TLS_INSECURE`` (no verification), or a client identity
  (``DYN_TCP_TLS_CLIENT_CERT_PATH``/``_KEY_PATH``, presented when asked). The name
  checked is the dialled host (an IP address: its IP SAN, no SNI) unless
  ``DYN_TCP_TLS_SERVER_NAME`` names another;
* every TLS handshake has ``DYN_TCP_TLS_HANDSHAKE_TIMEOUT_SECS`` (3 s).

:class:`TcpTls` holds these settings; :meth:`TcpTls.from_env` reads them as a
Dynamo process does. No Trio here.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from trioplane._errors import BadArgument

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "ENV", "TcpTls"]

#: Dynamo's default for ``DYN_TCP_TLS_HANDSHAKE_TIMEOUT_SECS``.
DEFAULT_HANDSHAKE_TIMEOUT = 3.0
#: The variable Dynamo reads for each setting.
ENV = {
    "cert_path": "DYN_TCP_TLS_CERT_PATH",
    "key_path": "DYN_TCP_TLS_KEY_PATH",
    "client_ca_path": "DYN_TCP_TLS_CLIENT_CA_CERT_PATH",
    "ca_path": "DYN_TCP_TLS_CA_CERT_PATH",
    "client_cert_path": "DYN_TCP_TLS_CLIENT_CERT_PATH",
    "client_key_path": "DYN_TCP_TLS_CLIENT_KEY_PATH",
    "server_name": "DYN_TCP_TLS_SERVER_NAME",
    "insecure": "DYN_TCP_TLS_INSECURE",
    "handshake_timeout": "DYN_TCP_TLS_HANDSHAKE_TIMEOUT_SECS",
}
_TRUTHY = ("1", "true", "on", "yes")


@dataclass(frozen=True)
class TcpTls:
    """TLS settings of one process's TCP planes, with Dynamo's meanings (module doc).

    ``TcpTls()`` is plain text both ways. Bad combinations (a certificate without
    its key, a client CA with nothing to serve, a client identity with neither a
    CA nor ``insecure``) raise ``ValueError`` at once, as a Dynamo worker refuses
    to start; so do files that do not load, when their context is first built.
    """

    cert_path: str | None = None
    key_path: str | None = None
    client_ca_path: str | None = None
    ca_path: str | None = None
    client_cert_path: str | None = None
    client_key_path: str | None = None
    server_name: str | None = None
    insecure: bool = False
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT

    def __post_init__(self) -> None:
        pairs = (("cert_path", "key_path"), ("client_cert_path", "client_key_path"))
        for first, second in pairs:
            if (getattr(self, first) is None) != (getattr(self, second) is None):
                raise BadArgument(f"TLS needs both {ENV[first]} and {ENV[second]}, or neither")
        if self.client_ca_path is not None and not self.serves:
            raise BadArgument(f"{ENV['client_ca_path']} needs a server certificate and key too")
        if self.client_cert_path is not None and self.ca_path is None and not self.insecure:
            raise BadArgument(
                f"a TLS client identity needs {ENV['ca_path']} (or {ENV['insecure']}) too"
            )
        if not self.handshake_timeout >= 0:
            raise BadArgument("handshake_timeout must be a number of seconds >= 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TcpTls:
        """The settings a Dynamo process reads (``os.environ`` by default).

        Empty variables count as unset; ``DYN_TCP_TLS_INSECURE`` is true for
        ``1``/``true``/``on``/``yes``; a handshake timeout that is not a whole
        number of seconds falls back to 3 s, as in Dynamo.
        """
        env = os.environ if environ is None else environ
        values: dict[str, str] = {k: env[v] for k, v in ENV.items() if env.get(v)}
        insecure = values.pop("insecure", "").strip().lower() in _TRUTHY
        timeout_text = values.pop("handshake_timeout", "")
        timeout = int(timeout_text) if timeout_text.isdigit() else DEFAULT_HANDSHAKE_TIMEOUT
        return cls(insecure=insecure, handshake_timeout=float(timeout), **values)

    @property
    def serves(self) -> bool:
        """Listeners speak TLS (a certificate and key are set)."""
        return self.cert_path is not None

    @property
    def dials(self) -> bool:
        """Outgoing connections speak TLS (a CA, ``insecure``, or a client identity)."""
        return self.ca_path is not None or self.insecure or self.client_cert_path is not None

    @property
    def enabled(self) -> bool:
        return self.serves or self.dials

    @functools.cached_property
    def server_context(self) -> ssl.SSLContext | None:
        """The context listeners wrap connections in (``None``: plain text). Built once."""
        if not self.serves:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        _load(context.load_cert_chain, "cert_path", self.cert_path, self.key_path)
        if self.client_ca_path is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            _load(context.load_verify_locations, "client_ca_path", self.client_ca_path)
        return context

    @functools.cached_property
    def client_context(self) -> ssl.SSLContext | None:
        """The context outgoing connections use (``None``: plain text). Built once.

        It trusts ``ca_path`` alone (no system roots), as Dynamo's client does.
        """
        if not self.dials:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            _load(context.load_verify_locations, "ca_path", self.ca_path)
        if self.client_cert_path is not None:
            _load(
                context.load_cert_chain,
                "client_cert_path",
                self.client_cert_path,
                self.client_key_path,
            )
        return context

    def describe(self) -> str:
        """What is set, for logs and errors (paths only, never key material)."""
        set_ = [
            f"{ENV[f.name]}={getattr(self, f.name)}"
            for f in fields(self)
            if f.name not in ("insecure", "handshake_timeout") and getattr(self, f.name)
        ]
        if self.insecure:
            set_.append(f"{ENV['insecure']}=true")
        return ", ".join(set_) or "plain text"


def _load(method: Callable[..., object], name: str, *paths: str | None) -> None:
    """Call ``method(*paths)`` (a context's loader), naming the variable if it fails."""
    try:
        method(*paths)
    except (OSError, ssl.SSLError) as exc:
        raise BadArgument(f"cannot load {ENV[name]} ({paths[0]}): {exc}") from exc
