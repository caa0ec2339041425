"""The native API under ``/api/v1`` (docs/api.md; ``/api/v1/openapi.json`` describes it).

- ``GET /api/v1/health``: ``{"status": "ok"}`` and nothing else (no version, no counts).
- ``GET /api/v1/whoami``: the caller's principal (name, kind, role, services).
- ``GET /api/v1/secrets/{env}?prefix=P``: the secrets of *env* the caller may list and
  read (metadata only; each decided by the policy with the caller's grants).
- ``GET /api/v1/secrets/{env}/{path}?version=N|label=L``: one value (``current`` by
  default), audited as ``secret get`` like the CLI's reads.
- ``GET /api/v1/metadata/{env}/{path}``: labels, versions, class, owner, expiry; no value.
- ``POST /api/v1/rotate/{env}/{path}``: a new version (made to the category's standard,
  or ``{"value": ...}``) becomes ``current``; the old one stays ``previous`` for
  ``overlap_seconds`` (default 86400).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from custody.secrets import Revealed
from custody_server.api import Api, ApiError, Call, json_body, permitted
from custody_server.openapi import OPENAPI
from custody_server.tls import App, Receive, Scope, Send

MAX_OVERLAP_S = 30 * 86400


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise ApiError(400, f"'{name}' must be a positive integer")
    return int(raw)


class BareEndpoint:
    """``GET /api/v1/bare``: a constant through the same server stack, for the load test's
    baseline (``custody serve --bare-endpoint``)."""

    body = b'{"ok":true}'

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self.body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


def routes(api: Api, *, bare_endpoint: bool = False) -> list[Route]:
    async def health(call: Call) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi(call: Call) -> Response:
        return JSONResponse(OPENAPI)

    async def whoami(call: Call) -> Response:
        p = call.principal
        return JSONResponse(
            {"name": p.name, "kind": p.kind, "role": p.role, "services": list(p.services)}
        )

    async def read(call: Call) -> Response:
        env = call.request.path_params["env"]
        path = call.request.path_params["path"]
        version = _int_param(call.request, "version")
        label = call.request.query_params.get("label") or None
        mfa = call.mfa

        def op(c: Any) -> Revealed:
            c.access.authorize(call.principal, "read", env, path, mfa_code=mfa)
            return c.vault.get(env, path, version=version, label=label)  # type: ignore[no-any-return]

        r = await api.read_once(call, "secret get", f"{env}:{path}", op, _lab(label))
        return JSONResponse({"env": r.env, "path": r.path, "version": r.version, "value": r.value})

    async def listing(call: Call) -> Response:
        env = call.request.path_params["env"]
        prefix = call.request.query_params.get("prefix", "")
        p = call.principal

        def op(c: Any) -> list[dict[str, Any]]:
            items = permitted(c, p, "list", env, c.vault.list_secrets(env, prefix))
            return permitted(c, p, "read", env, items)

        items = await api.disclosed(call, "secret list", f"{env}:{prefix}", op)
        keep = ("path", "category", "class", "owner", "state", "labels", "expires")
        return JSONResponse({"env": env, "secrets": [{k: i[k] for k in keep} for i in items]})

    async def metadata(call: Call) -> Response:
        env = call.request.path_params["env"]
        path = call.request.path_params["path"]
        p, mfa = call.principal, call.mfa

        def op(c: Any) -> dict[str, Any]:
            c.access.authorize(p, "metadata", env, path, mfa_code=mfa)
            return c.vault.show(env, path)  # type: ignore[no-any-return]

        return JSONResponse(await api.disclosed(call, "secret show", f"{env}:{path}", op))

    async def rotate(call: Call) -> Response:
        env = call.request.path_params["env"]
        path = call.request.path_params["path"]
        body = await json_body(call.request)
        overlap = body.get("overlap_seconds", 86400)
        if type(overlap) is not int or not 0 <= overlap <= MAX_OVERLAP_S:
            raise ApiError(400, f"overlap_seconds must be 0..{MAX_OVERLAP_S}")
        value = body.get("value")
        if value is not None and not isinstance(value, str):
            raise ApiError(400, "value must be a string")
        p, mfa = call.principal, call.mfa

        def authorize(c: Any) -> None:
            c.access.authorize(p, "rotate", env, path, mfa_code=mfa)

        def op(c: Any) -> dict[str, Any]:
            v = c.vault
            if value is None:
                v.generate(env, path, label="pending")
            else:
                v.put(env, path, value, label="pending", source=f"api:{p.name}")
            return v.promote(env, path, overlap_seconds=overlap)  # type: ignore[no-any-return]

        await api.backend.run(authorize)
        out = await api.audited(
            call, "secret rotate", f"{env}:{path}", op, {"overlap_seconds": overlap}
        )
        return JSONResponse({"env": env, "path": path, **out})

    r = api.route
    out = [
        Route("/api/v1/health", r("native", health, public=True), methods=["GET"]),
        Route("/api/v1/openapi.json", r("native", openapi, public=True), methods=["GET"]),
        Route("/api/v1/whoami", r("native", whoami), methods=["GET"]),
        Route("/api/v1/secrets/{env}", r("native", listing), methods=["GET"]),
        Route(
            "/api/v1/secrets/{env}/{path:path}",
            r("native", read, deferred=True),
            methods=["GET"],
        ),
        Route("/api/v1/metadata/{env}/{path:path}", r("native", metadata), methods=["GET"]),
        Route("/api/v1/rotate/{env}/{path:path}", r("native", rotate), methods=["POST"]),
    ]
    if bare_endpoint:
        bare: App = BareEndpoint()
        out.append(Route("/api/v1/bare", bare, methods=["GET"]))
    return out


def _lab(label: str | None) -> dict[str, Any]:
    return {"label": label[:20]} if label else {}
