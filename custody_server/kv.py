"""A Vault KV v2-compatible surface under ``/v1/<mount>/...`` (docs/api.md).

Mounts are custody environments (``/v1/prod/data/payments/db``). ``X-Vault-Token`` carries
the bearer token. What is served, for ``hvac``'s ``secrets.kv.v2`` and similar clients:

- ``GET  data/<path>[?version=N]``: read (``{"data": {"data": ..., "metadata": ...}}``);
- ``POST|PUT data/<path>`` with ``{"data": {...}, "options": {"cas": N}}``: a new version;
- ``DELETE data/<path>``: soft-delete (custody deletes the whole secret, recoverably);
- ``POST delete/<path>`` with ``{"versions": [...]}``: the same, when the list holds the
  current version;
- ``POST undelete/<path>``: restore the soft-deleted secret;
- ``POST|PUT destroy/<path>`` with ``{"versions": [...]}``: crypto-shred those versions (only
  versions that no label points to);
- ``GET metadata/<path>``: versions and times; ``LIST metadata/<path>`` (or
  ``GET ...?list=true``): the keys under a prefix.

Values: a secret holds one string. ``{"value": S}`` is stored as S, so a secret written by
the CLI reads back as ``{"value": S}``; any other object is stored as its JSON text, which
only a text category (``configuration-secret``) accepts, and is read back as that object. A
secret created here is a ``configuration-secret`` owned by the caller's first service (or the
caller), unless ``options`` names a ``category`` and an ``owner`` (a custody extension).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from custody.secrets import (
    Category,
    Revealed,
    SecretNotFound,
    SecretUnavailable,
    parse_category,
)
from custody.secrets.standards import RULES
from custody_server.api import Api, ApiError, Call, json_body, permitted

LIST_METHODS = ["GET", "LIST"]


def _env_path(call: Call) -> tuple[str, str]:
    return call.request.path_params["mount"], call.request.path_params["path"].strip("/")


def _is_text(category: str) -> bool:
    try:
        return RULES[Category(category)].kind == "text"
    except ValueError:
        return False


def encode(data: Any, category: str | None) -> str:
    """The stored string for a KV ``data`` object.

    Raises:
        ApiError: 400 for a non-object, or a multi-key object in a one-value category.
    """
    if not isinstance(data, dict) or not data:
        raise ApiError(400, "'data' must be a non-empty JSON object")
    if set(data) == {"value"} and isinstance(data["value"], str):
        return data["value"]
    if category is not None and not _is_text(category):
        raise ApiError(
            400,
            f"A {category} holds one value",
            'Write {"data": {"value": "..."}}; only configuration secrets hold documents.',
        )
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def decode(value: str, category: str) -> dict[str, Any]:
    """The KV ``data`` object for a stored string (see the module doc)."""
    if _is_text(category) and value.startswith("{"):
        try:
            doc = json.loads(value)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            return doc
    return {"value": value}


def _vtime(meta: dict[str, Any], version: int) -> str:
    for v in meta.get("versions", ()):
        if v["version"] == version:
            return str(v["created"])
    return ""


def _version_meta(meta: dict[str, Any], version: int) -> dict[str, Any]:
    state = next((v["state"] for v in meta.get("versions", ()) if v["version"] == version), "")
    deleted = meta["state"] == "deprecated" and version == meta["labels"]["current"]
    return {
        "created_time": _vtime(meta, version),
        "custom_metadata": None,
        "deletion_time": (meta.get("deleted_at") or "") if deleted else "",
        "destroyed": state not in ("live", ""),
        "version": version,
    }


def _versions(body: dict[str, Any]) -> list[int]:
    vs = body.get("versions")
    if not isinstance(vs, list) or not vs or not all(type(v) is int and v > 0 for v in vs):
        raise ApiError(400, "'versions' must be a non-empty list of version numbers")
    return vs


def routes(api: Api) -> list[Route]:
    async def read(call: Call) -> Response:
        if call.request.query_params.get("list") == "true":
            return await listing(call)
        env, path = _env_path(call)
        raw = call.request.query_params.get("version")
        version = None
        if raw not in (None, "", "0"):
            if not raw.isdigit() or len(raw) > 9:
                raise ApiError(400, "'version' must be a positive integer")
            version = int(raw)
        p, mfa = call.principal, call.mfa

        def op(c: Any) -> tuple[Revealed, dict[str, Any]]:
            c.access.authorize(p, "read", env, path, mfa_code=mfa)
            try:
                r = c.vault.get(env, path, version=version)
            except SecretUnavailable as exc:
                meta = c.vault.show(env, path)
                v = version or meta["labels"]["current"] or 0
                exc.kv_body = {"data": {"data": None, "metadata": _version_meta(meta, v)}}  # type: ignore[attr-defined]
                raise
            return r, c.vault.show(env, path)

        r, meta = await api.disclosed(call, "secret get", f"{env}:{path}", op)
        return JSONResponse(
            {
                "data": {
                    "data": decode(r.value, meta["category"]),
                    "metadata": _version_meta(meta, r.version),
                }
            }
        )

    async def write(call: Call) -> Response:
        env, path = _env_path(call)
        body = await json_body(call.request)
        opts = body.get("options") or {}
        if not isinstance(opts, dict):
            raise ApiError(400, "'options' must be an object")
        cas = opts.get("cas")
        if cas is not None and (type(cas) is not int or cas < 0):
            raise ApiError(400, "'cas' must be a version number")
        cat_name = opts.get("category")
        owner = opts.get("owner")
        if cat_name is not None and not isinstance(cat_name, str):
            raise ApiError(400, "'category' must be a string")
        data = body.get("data")
        p, mfa = call.principal, call.mfa

        new_cat = parse_category(cat_name) if cat_name else Category.CONFIGURATION_SECRET

        def authorize(c: Any) -> str | None:
            # a new secret is decided with the category and class it will have (a
            # service-admin may not create an encryption key by naming it here)
            cls = c.vault.policy.class_of(new_cat).value
            c.access.authorize(p, "write", env, path, mfa_code=mfa, category=new_cat.value,
                               security_class=cls)  # fmt: skip
            try:
                return str(c.vault.show(env, path)["category"])
            except SecretNotFound:
                return None

        existing = await api.backend.run(authorize)
        category = existing or new_cat.value
        value = encode(data, category)

        def op(c: Any) -> Any:
            kw: dict[str, Any] = {}
            if existing is None:
                kw["category"] = new_cat
                kw["owner"] = str(owner) if owner else (p.services[0] if p.services else p.name)
            w = c.vault.put(env, path, value, cas=cas, source=f"api:{p.name}", **kw)
            return w.version, c.vault.show(env, path)

        version, meta = await api.audited(
            call, "secret put", f"{env}:{path}", op, {"cas": cas} if cas is not None else None
        )
        return JSONResponse({"data": _version_meta(meta, version)})

    async def delete_latest(call: Call) -> Response:
        env, path = _env_path(call)
        p, mfa = call.principal, call.mfa
        await api.backend.run(lambda c: c.access.authorize(p, "delete", env, path, mfa_code=mfa))
        await api.audited(
            call, "secret delete", f"{env}:{path}", lambda c: c.vault.delete(env, path)
        )
        return Response(status_code=204)

    async def delete_versions(call: Call) -> Response:
        env, path = _env_path(call)
        vs = _versions(await json_body(call.request))
        p, mfa = call.principal, call.mfa

        def check(c: Any) -> None:
            c.access.authorize(p, "delete", env, path, mfa_code=mfa)
            cur = c.vault.show(env, path)["labels"]["current"]
            if cur not in vs:
                raise ApiError(
                    400,
                    "custody soft-deletes a whole secret, not single versions",
                    "Include the current version, or destroy old versions instead.",
                )

        await api.backend.run(check)
        await api.audited(
            call, "secret delete", f"{env}:{path}", lambda c: c.vault.delete(env, path)
        )
        return Response(status_code=204)

    async def undelete(call: Call) -> Response:
        env, path = _env_path(call)
        _versions(await json_body(call.request))
        p, mfa = call.principal, call.mfa
        await api.backend.run(lambda c: c.access.authorize(p, "delete", env, path, mfa_code=mfa))
        await api.audited(
            call, "secret restore", f"{env}:{path}", lambda c: c.vault.restore(env, path)
        )
        return Response(status_code=204)

    async def destroy(call: Call) -> Response:
        env, path = _env_path(call)
        vs = _versions(await json_body(call.request))
        p, mfa = call.principal, call.mfa
        await api.backend.run(lambda c: c.access.authorize(p, "destroy", env, path, mfa_code=mfa))

        def op(c: Any) -> None:
            for v in vs:
                c.vault.destroy(env, path, version=v)

        await api.audited(call, "secret destroy", f"{env}:{path}", op, {"versions": len(vs)})
        return Response(status_code=204)

    async def metadata(call: Call) -> Response:
        if call.request.method == "LIST" or call.request.query_params.get("list") == "true":
            return await listing(call)
        env, path = _env_path(call)
        p, mfa = call.principal, call.mfa

        def op(c: Any) -> dict[str, Any]:
            c.access.authorize(p, "metadata", env, path, mfa_code=mfa)
            return c.vault.show(env, path)  # type: ignore[no-any-return]

        meta = await api.disclosed(call, "secret show", f"{env}:{path}", op)
        versions = {
            str(v["version"]): {
                k: x for k, x in _version_meta(meta, v["version"]).items() if k != "version"
            }
            for v in meta["versions"]
        }
        nums = [v["version"] for v in meta["versions"] if v["state"] == "live"]
        return JSONResponse(
            {
                "data": {
                    "cas_required": False,
                    "created_time": meta["created"],
                    "current_version": meta["labels"]["current"] or 0,
                    "custom_metadata": {
                        "category": meta["category"],
                        "class": meta["class"],
                        "owner": meta["owner"],
                        "state": meta["state"],
                        "expires": meta["expires"],
                    },
                    "delete_version_after": "0s",
                    "max_versions": 0,
                    "oldest_version": min(nums) if nums else 0,
                    "updated_time": meta["updated"],
                    "versions": versions,
                }
            }
        )

    async def listing(call: Call) -> Response:
        env, path = _env_path(call)
        prefix = f"{path}/" if path else ""
        p = call.principal

        def op(c: Any) -> list[str]:
            keys: set[str] = set()
            for i in permitted(c, p, "list", env, c.vault.list_secrets(env, prefix)):
                head, sep, _ = i["path"][len(prefix) :].partition("/")
                keys.add(head + sep)
            return sorted(keys)

        keys = await api.disclosed(call, "secret list", f"{env}:{prefix}", op)
        if not keys:
            raise ApiError(404, "No secrets under this path")
        return JSONResponse({"data": {"keys": keys}})

    r = api.route
    base = "/v1/{mount}"
    return [
        Route("/v1/sys/health", r("kv2", _sys_health, public=True), methods=["GET", "HEAD"]),
        Route(base + "/data/{path:path}", r("kv2", read), methods=["GET"]),
        Route(base + "/data/{path:path}", r("kv2", write), methods=["POST", "PUT"]),
        Route(base + "/data/{path:path}", r("kv2", delete_latest), methods=["DELETE"]),
        Route(base + "/delete/{path:path}", r("kv2", delete_versions), methods=["POST", "PUT"]),
        Route(base + "/undelete/{path:path}", r("kv2", undelete), methods=["POST", "PUT"]),
        Route(base + "/destroy/{path:path}", r("kv2", destroy), methods=["POST", "PUT"]),
        Route(base + "/metadata/{path:path}", r("kv2", metadata), methods=LIST_METHODS),
        Route(base + "/metadata", r("kv2", listing), methods=LIST_METHODS),
    ]


async def _sys_health(call: Call) -> Response:
    return JSONResponse({"initialized": True, "sealed": False, "standby": False})
