"""A Trio test worker for Dynamo's HTTP request plane (as served by Dynamo up to 1.2.1).

:class:`HttpTestWorker` runs hypercorn's Trio server on 127.0.0.1 (a free port by
default) with a small ASGI app that answers like Dynamo 1.2.1's worker (checked
against the real one; spec, section 4.3): ``202`` for a ``POST {root}/{endpoint}``
(or what its ``policy`` says), ``404`` for a path outside the root or (``Endpoint
not found``) an endpoint it does not serve, ``405`` for other methods, ``413``
over ``max_body_size``. One port speaks HTTP/1.1 and h2c, or https with
``certfile``/``keyfile``. It is the same server as the worker side's HTTP plane
(``trioplane._http_plane``, where the details are); it needs hypercorn.
"""

from __future__ import annotations

from trioplane._http_plane import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_ROOT,
    HttpPolicy,
    HttpReply,
    HttpRequest,
)
from trioplane._http_plane import HttpPlaneServer as HttpTestWorker
from trioplane._http_plane import open_http_plane_server as open_http_test_worker

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_ROOT",
    "HttpPolicy",
    "HttpReply",
    "HttpRequest",
    "HttpTestWorker",
    "open_http_test_worker",
]
