"""Addresses and names, parsed and formatted once for the client and the worker side.

* ``host:port`` (``[v6]:port``): :func:`split_host_port`, :func:`format_host_port`;
* the TCP request plane's ``[tcp://]host:port/path``: :func:`parse_tcp_address`;
* ``scheme://host[:port]/path`` URLs (HTTP, WebSocket): :func:`split_url`;
* endpoint names ``namespace.component.endpoint``: :func:`parse_endpoint`.

Bad input raises ``ValueError`` naming the accepted forms (``TypeError`` for a
non-string), before any I/O. No Trio here.
"""

from __future__ import annotations

import functools
import urllib.parse

from trioplane._errors import BadArgument, BadArgumentType

__all__ = [
    "TCP_ADDRESS_FORMS",
    "format_host_port",
    "parse_endpoint",
    "parse_port",
    "parse_tcp_address",
    "split_host_port",
    "split_url",
]

TCP_ADDRESS_FORMS = "'host:port/path', 'tcp://host:port/path', '[v6addr]:port/path'"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def parse_port(text: str, address: str, forms: str) -> int:
    """A TCP port 1-65535 from ``text``, or ``ValueError`` naming the accepted forms."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise BadArgument(f"bad port in address {address!r}; accepted forms: {forms}")
    return int(text)


def split_host_port(
    hostport: str, address: str = "", forms: str = "'host:port'"
) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ``ValueError`` otherwise.

    ``address`` (default: ``hostport``) is what errors quote, ``forms`` what they accept.
    """
    address = address or hostport
    if hostport.startswith("["):
        host, sep, rest = hostport[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise BadArgument(f"bad IPv6 address {address!r}; accepted forms: {forms}")
        return host, parse_port(rest[1:], address, forms)
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or ":" in host:
        raise BadArgument(f"address {address!r} needs host:port; accepted forms: {forms}")
    return host, parse_port(port, address, forms)


def format_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@functools.lru_cache(maxsize=4096)
def parse_tcp_address(address: str) -> tuple[str, int, str]:
    """Split a TCP request-plane address into host, port and path; ``ValueError`` if malformed.

    Cached: a client sends to the same few addresses over and over.
    """
    if not isinstance(address, str):
        raise BadArgumentType(f"address must be str, not {type(address).__name__}")
    rest = address.removeprefix("tcp://")
    if "://" in rest:
        raise BadArgument(f"not a TCP address: {address!r}; accepted forms: {TCP_ADDRESS_FORMS}")
    if any(c.isspace() for c in rest):
        raise BadArgument(
            f"address {address!r} contains whitespace; accepted forms: {TCP_ADDRESS_FORMS}"
        )
    hostport, _, path = rest.partition("/")
    host, port = split_host_port(hostport, address, TCP_ADDRESS_FORMS)
    return host, port, path


def split_url(
    address: str, schemes: tuple[str, ...], forms: str, what: str
) -> tuple[urllib.parse.SplitResult, int]:
    """Check a ``scheme://host[:port]/path`` address: its parts and its port (the
    scheme's default when absent); ``ValueError`` naming ``forms`` if malformed."""
    if not isinstance(address, str):
        raise BadArgumentType(f"address must be str, not {type(address).__name__}")
    if any(c.isspace() for c in address):
        raise BadArgument(f"address {address!r} contains whitespace; accepted: {forms}")
    parts = urllib.parse.urlsplit(address)
    if parts.scheme not in schemes or not parts.hostname:
        raise BadArgument(f"not {what} address: {address!r}; accepted: {forms}")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise BadArgument(f"bad port in {address!r}; accepted: {forms}") from None
    return parts, port


def parse_endpoint(endpoint: str) -> tuple[str, str, str]:
    """``"ns.comp.ep"`` (optionally ``dyn://ns.comp.ep``) -> its three parts."""
    if not isinstance(endpoint, str):
        raise BadArgumentType(f"endpoint must be str, not {type(endpoint).__name__}")
    name = endpoint.removeprefix("dyn://")
    parts = name.split(".")
    if len(parts) != 3 or not all(parts) or any(c.isspace() for c in name):
        raise BadArgument(f"endpoint must be 'namespace.component.endpoint', not {endpoint!r}")
    return parts[0], parts[1], parts[2]
