"""Sphinx configuration for the trioplane documentation.

Build it with ``pip install -e '.[docs]'``, then
``python -m sphinx -n -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trioplane

project = "trioplane"
release = trioplane.__version__
version = release

# No napoleon: the docstrings are plain reST, and it would read "text: more" on the
# first line of an attribute's docstring as "type: description".
extensions = ["sphinx.ext.autodoc"]

exclude_patterns = ["_build"]

autodoc_typehints = "description"
autodoc_member_order = "bysource"


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


# The optional extras' packages: documented from the real ones when installed
# (pip install -e '.[dev]'), else mocked, so that the docs build with '.[docs]' alone.
autodoc_mock_imports = [
    module
    for module in (
        "httpx",
        "httpcore",
        "h2",
        "trio_websocket",
        "hypercorn",
        "prometheus_client",
        "opentelemetry",
        "nkeys",
    )
    if _missing(module)
]
# Names the signatures use (type aliases, and types imported only for type checkers)
# shown as these documented or external names rather than expanded or unresolved.
autodoc_type_aliases = {
    "DiscoverySource": "trioplane.discovery.DiscoverySource",
    "Handler": "trioplane.worker.Handler",
    "Policy": "trioplane.servers.Policy",
    "Script": "trioplane.testing.endpoint.Script",
    "Items": "trioplane.testing.faults.Items",
    "RouterMode": "trioplane.routing.RouterMode",
    "EtcdOptions": "trioplane.etcd.EtcdOptions",
    "HttpPlaneStatistics": "trioplane.servers.http.HttpPlaneStatistics",
    "HttpPlaneServer": "trioplane.servers.http.HttpPlaneServer",
    "ResponsePlaneStatistics": "trioplane.response_plane.ResponsePlaneStatistics",
    "Span": "opentelemetry.trace.Span",
    "Tracer": "opentelemetry.trace.Tracer",
    "TracerProvider": "opentelemetry.trace.TracerProvider",
    "CollectorRegistry": "prometheus_client.CollectorRegistry",
    "Metric": "prometheus_client.Metric",
}

# Every cross-reference must resolve (sphinx -n), except to the standard library and
# third-party packages: there is no intersphinx without a network.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:(class|mod|exc|func|meth|obj|data)",
        r"(collections|contextlib|os|ssl|random|urllib|typing|typing_extensions|logging"
        r"|pathlib|types|socket|concurrent|asyncio|enum|dataclasses|ipaddress)(\..*)?",
    ),
    (
        r"py:(class|mod|exc|func|meth|obj|data)",
        r"(trio|trio_websocket|httpx|httpcore|h11|h2|hypercorn|prometheus_client"
        r"|opentelemetry|msgpack|pytest)(\..*)?",
    ),
]

# opentelemetry's Span, named as its module imports it only for type checkers.
nitpick_ignore = [("py:class", "Span")]

html_theme = "furo"
html_title = f"trioplane {release}"

_ITERATOR = re.compile(r"^~?(?:collections\.abc\.|typing\.)?(Async)?Iterator\[(.*)\]$")
_FORWARD_REF = re.compile(r"TypeAliasForwardRef\('([^']*)'\)")
# Shown as (in recorded type hints only): names not worth a type alias of their own.
_SHOWN_AS = {
    **autodoc_type_aliases,
    "AbstractAsyncContextManager": "contextlib.AbstractAsyncContextManager",
    "ByteLink": "trioplane._sockets.ByteLink",
    "SocketIO": "trioplane._sockets.SocketIO",
    # What open_registration() yields: private classes, documented as the protocol.
    "trioplane.discovery.file._FileRegistration": "trioplane.discovery.Registration",
    "trioplane.discovery.etcd._EtcdRegistration": "trioplane.discovery.Registration",
}
_ALIAS = re.compile(r"(?<![\w.~])~?(" + "|".join(map(re.escape, _SHOWN_AS)) + r")(?![\w.])")


def _annotations(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: Any, retann: Any
) -> None:
    """Tidy the recorded type hints of ``name`` before they become its field list.

    * Type aliases are shown by their documented names (Sphinx expands them, or leaves
      the bare name when a signature uses names imported only for type checkers, or
      shows ``TypeAliasForwardRef(...)`` inside another type).
    * An ``@asynccontextmanager`` function returns an async context manager of what it
      yields (``AbstractAsyncContextManager[EndpointClient]``), not the
      ``AsyncIterator[EndpointClient]`` of the generator it wraps; likewise for
      ``@contextmanager``.
    """
    annotations = app.env.current_document.autodoc_annotations.get(name)
    if not annotations:
        return
    for key, value in annotations.items():
        value = _FORWARD_REF.sub(r"~\1", value)
        annotations[key] = _ALIAS.sub(lambda m: "~" + _SHOWN_AS[m.group(1)], value)
    if what not in ("function", "method") or not callable(obj):
        return
    wrapped = inspect.unwrap(obj)
    if wrapped is obj or not (
        inspect.isasyncgenfunction(wrapped) or inspect.isgeneratorfunction(wrapped)
    ):
        return
    match = _ITERATOR.match(annotations.get("return", ""))
    if match is not None:
        manager = "AbstractAsyncContextManager" if match.group(1) else "AbstractContextManager"
        annotations["return"] = f"~contextlib.{manager}[{match.group(2)}]"


def _python_object(path: str) -> Any:
    """The object a dotted path names (a module, or attributes of one), else a sentinel."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                # A module's own getattr (lazy names); a class's dict (properties as such).
                get = getattr if inspect.ismodule(obj) else inspect.getattr_static
                obj = get(obj, attribute)
        except AttributeError:
            return _MISSING
        return obj
    return _MISSING


_MISSING = object()
#: Constants are told apart by name only (equal small ints and strings are one object).
_VALUES = (int, float, str, bytes, tuple, frozenset, type(None))
_DOCSTRING_OF = re.compile(r"docstring of ([\w.]+)")


def _documented_under_another_name(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a reference to a trioplane object by what it *is*: a name it is also
    importable as (``trioplane.servers.ServerLimits``, documented as
    ``trioplane.ServerLimits``), or a short name in a module that imports it
    (``ProtocolError`` in ``trioplane.wire.tcp``). Names that are not real trioplane
    objects, or objects documented nowhere, still warn."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    module, cls = node.get("py:module"), node.get("py:class")
    scopes = [f"{module}.{cls}" if module and cls else None, module]
    # A docstring's names are those of the module it was written in.
    written_in = _DOCSTRING_OF.search(node.source or "")
    if written_in is not None:
        parts = written_in.group(1).split(".")
        scopes += [".".join(parts[:cut]) for cut in range(len(parts), 0, -1)]
    candidates = [f"{scope}.{target}" for scope in scopes if scope] + [target]
    domain = env.get_domain("py")
    documented = getattr(app, "_trioplane_documented", None)  # built once, all read
    if documented is None:
        documented = {}
        for name, entry in domain.objects.items():
            if entry.aliased or not name.startswith("trioplane"):
                continue
            obj = _python_object(name)
            if obj is not _MISSING and not isinstance(obj, _VALUES):
                documented.setdefault(id(obj), name)
        app._trioplane_documented = documented
    for candidate in candidates:
        if not candidate.startswith("trioplane"):
            continue
        obj = _python_object(candidate)
        if obj is _MISSING or isinstance(obj, _VALUES):
            continue
        name = documented.get(id(obj))
        if name is not None:
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, "obj", name, node, contnode
            )
    return None


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _annotations)
    app.connect("missing-reference", _documented_under_another_name)
