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
- ``POST /api/v1/ack/{env}/{path}`` ``{"version": N}``: a registered consumer (a service
  that read the secret here) acknowledges the version it now uses; once every consumer
  acknowledged ``current``, ``previous`` is revoked at once, not at the window's end.
  ``GET /api/v1/consumers/{env}/{path}``: who consumes it and at which version.
- ``POST /api/v1/access/requests`` ``{"env", "path", "seconds", "why", "actions"}``: ask
  for a time-limited read-only grant (:class:`custody.access.flow.GrantFlow`); people
  approve it by signing with their participant keys (``custody access approve``), and
  ``GET /api/v1/access/requests/{id}`` shows the requester its state.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from custody.access.flow import GrantFlow
from custody.access.settings import AccessSettings
from custody.errors import UsageError
from custody.secrets import Revealed
from custody.secrets.consumers import record_name
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
            got: Revealed = c.vault.get(env, path, version=version, label=label)
            if call.principal.kind == "service":  # a service that reads is a consumer
                c.consumers.register(env, path, call.principal.name)
            return got

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
            # promote revokes an older previous: whoever had not acknowledged the old
            # current may still use it, and is named (acks are per version)
            drop = c.consumers.on_promote(env, path)
            out: dict[str, Any] = v.promote(env, path, overlap_seconds=overlap)
            if drop["dropped"] is not None:
                out["revoked"] = drop["dropped"]
                out["stragglers"] = drop["stragglers"]
                if drop["stragglers"]:
                    row = v._row(env, path)
                    v.alert("rotation-stragglers", row, stragglers=drop["stragglers"],
                            revoked_version=drop["dropped"])  # fmt: skip
            return out

        await api.backend.run(authorize)
        out = await api.audited(
            call, "secret rotate", f"{env}:{path}", op, {"overlap_seconds": overlap}
        )
        return JSONResponse({"env": env, "path": path, **out})

    async def ack(call: Call) -> Response:
        env = call.request.path_params["env"]
        path = call.request.path_params["path"]
        body = await json_body(call.request)
        version = body.get("version")
        if type(version) is not int or version < 1:
            raise ApiError(400, "version must be a version number")
        p = call.principal

        def check(c: Any) -> None:
            st = c.consumers.state(env, path)
            if p.name not in st["consumers"]:
                raise ApiError(403, "Only a registered consumer acknowledges",
                               "Read the secret through the API first.")  # fmt: skip
            if version not in (st["current"], st["previous"]):
                raise ApiError(400, f"Version {version} is neither current nor previous")

        def op(c: Any) -> dict[str, Any]:
            cons = c.consumers
            cons.ack(env, path, p.name, version)
            revoked = cons.settle(env, path, record_dir=c.dep.home.transcripts_dir,
                                  deployment=c.dep.config.deployment_id)  # fmt: skip
            return {**_public(cons.state(env, path)), "revoked": revoked}

        await api.backend.run(check)
        out = await api.audited(call, "secret ack", f"{env}:{path}", op, {"version": version})
        if out["revoked"] is not None:  # the last ack: previous was revoked early, on record
            rec = record_name(env, path, out["revoked"])
            await api.record("secret revoke", f"{env}:{path}", p.name, "ok",
                             {"via": call.surface, "early": True, "revoked_version": out["revoked"],
                              "record": rec})  # fmt: skip
        return JSONResponse({"env": env, "path": path, **out})

    async def acks(call: Call) -> Response:
        env = call.request.path_params["env"]
        path = call.request.path_params["path"]
        p, mfa = call.principal, call.mfa

        def op(c: Any) -> dict[str, Any]:
            c.access.authorize(p, "metadata", env, path, mfa_code=mfa)
            return _public(c.consumers.state(env, path))

        out = await api.disclosed(call, "secret consumers", f"{env}:{path}", op)
        return JSONResponse({"env": env, "path": path, **out})

    async def request_access(call: Call) -> Response:
        body = await json_body(call.request)
        env, path, why = body.get("env"), body.get("path"), body.get("why")
        seconds, actions = body.get("seconds", 3600), body.get("actions", ["read"])
        if not (isinstance(env, str) and isinstance(path, str) and isinstance(why, str)):
            raise ApiError(400, "Give env, path and why as strings")
        if type(seconds) is not int or not isinstance(actions, list):
            raise ApiError(400, "seconds must be an integer and actions a list")
        p = call.principal

        def op(c: Any) -> Any:
            return _flow(c).request(p, env, path, seconds=seconds, why=why,
                                actions=tuple(str(a) for a in actions))  # fmt: skip

        return JSONResponse(_request_view(await api.backend.run(op)))

    async def request_status(call: Call) -> Response:
        rid = call.request.path_params["rid"]
        p = call.principal

        def op(c: Any) -> Any:
            try:
                r = _flow(c).get(rid)
            except UsageError:
                r = None
            if r is None or r.requester != p.name:  # only the requester sees it here
                raise ApiError(404, "No such request of yours")
            return r

        return JSONResponse(_request_view(await api.backend.run(op)))

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
        Route("/api/v1/ack/{env}/{path:path}", r("native", ack), methods=["POST"]),
        Route("/api/v1/consumers/{env}/{path:path}", r("native", acks), methods=["GET"]),
        Route("/api/v1/access/requests", r("native", request_access), methods=["POST"]),
        Route("/api/v1/access/requests/{rid}", r("native", request_status), methods=["GET"]),
    ]
    if bare_endpoint:
        bare: App = BareEndpoint()
        out.append(Route("/api/v1/bare", bare, methods=["GET"]))
    return out


def _flow(c: Any) -> GrantFlow:
    home = c.dep.home
    return GrantFlow(
        c.access, c.dep.config.deployment_id, AccessSettings.for_home(home.config_path)
    )


def _request_view(r: Any) -> dict[str, Any]:
    keep = ("id", "kind", "requester", "env", "path", "actions", "not_before", "not_after",
            "security_class", "needed", "digest", "state")  # fmt: skip
    out = {k: getattr(r, k) for k in keep}
    out["actions"] = list(out["actions"])
    out["approve_with"] = f"custody access approve {r.id} --key NAME.key.pem"
    return out


def _public(st: dict[str, Any]) -> dict[str, Any]:
    return {k: st[k] for k in ("current", "previous", "consumers", "stragglers", "verified")}


def _lab(label: str | None) -> dict[str, Any]:
    return {"label": label[:20]} if label else {}
