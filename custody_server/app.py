"""The ASGI application: the native API and the Vault KV v2 surface behind size limits."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from custody.audit.log import AuditLog
from custody_server import kv, native
from custody_server.api import Api, ServerLimits
from custody_server.backend import Backend
from custody_server.limits_mw import SizeLimits
from custody_server.tls import App


def make_app(
    backend: Backend,
    audit: AuditLog,
    *,
    limits: ServerLimits | None = None,
    bare_endpoint: bool = False,
) -> App:
    """The ASGI application: native API, KV v2 surface, size limits around both."""
    lim = limits or ServerLimits()
    api = Api(backend, audit, lim)
    routes: list[Route] = [*native.routes(api, bare_endpoint=bare_endpoint), *kv.routes(api)]
    app = Starlette(routes=routes)
    return SizeLimits(app, max_body=lim.max_body, max_headers=lim.max_headers)
