"""The OpenAPI 3.1 description of the native API (served at ``/api/v1/openapi.json``)."""

from __future__ import annotations

from typing import Any

_ERR = {"$ref": "#/components/schemas/Error"}
_ENV = {"name": "env", "in": "path", "required": True, "schema": {"type": "string"}}
_PATH = {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
_MFA = {
    "name": "X-Custody-MFA",
    "in": "header",
    "required": False,
    "description": "a TOTP code, where the policy asks for MFA",
    "schema": {"type": "string"},
}


def _refusals(*codes: int) -> dict[str, Any]:
    text = {
        400: "bad input",
        401: "no or wrong credentials",
        403: "denied by access control, or locked out",
        404: "no such secret or version",
        413: "request body too large",
        429: "rate limited (Retry-After)",
        503: "the audit log cannot be written: refused",
    }
    return {
        str(c): {"description": text[c], "content": {"application/json": {"schema": _ERR}}}
        for c in codes
    }


def _ok(schema: dict[str, Any], what: str) -> dict[str, Any]:
    return {"200": {"description": what, "content": {"application/json": {"schema": schema}}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "custody API",
        "version": "1",
        "description": "Secrets over TLS 1.3. Bearer token (Authorization: Bearer, or "
        "X-Vault-Token) or a client certificate from the custody CA. Every request is "
        "authorised by custody's access control and audited. A Vault KV v2-compatible "
        "surface is served under /v1 (docs/api.md).",
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "mtls": {"type": "mutualTLS"},
        },
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {"type": "string"},
                    "hint": {"type": "string"},
                    "status": {"type": "integer"},
                },
            },
            "Value": {
                "type": "object",
                "properties": {
                    "env": {"type": "string"},
                    "path": {"type": "string"},
                    "version": {"type": "integer"},
                    "value": {"type": "string"},
                },
            },
        },
    },
    "security": [{"bearer": []}, {"mtls": []}],
    "paths": {
        "/api/v1/health": {
            "get": {
                "summary": "liveness; reveals nothing",
                "security": [],
                "responses": _ok({"type": "object"}, '{"status": "ok"}'),
            }
        },
        "/api/v1/whoami": {
            "get": {
                "summary": "the caller's principal",
                "responses": {**_ok({"type": "object"}, "principal"), **_refusals(401, 429)},
            }
        },
        "/api/v1/secrets/{env}": {
            "get": {
                "summary": "the secrets of env the caller may read (metadata only)",
                "parameters": [
                    _ENV,
                    {"name": "prefix", "in": "query", "schema": {"type": "string"}},
                    _MFA,
                ],
                "responses": {
                    **_ok({"type": "object"}, "list"),
                    **_refusals(400, 401, 403, 429, 503),
                },
            }
        },
        "/api/v1/secrets/{env}/{path}": {
            "get": {
                "summary": "read a value: current, a version, or a label",
                "parameters": [
                    _ENV,
                    _PATH,
                    {"name": "version", "in": "query", "schema": {"type": "integer"}},
                    {
                        "name": "label",
                        "in": "query",
                        "schema": {"enum": ["current", "pending", "previous"]},
                    },
                    _MFA,
                ],
                "responses": {
                    **_ok({"$ref": "#/components/schemas/Value"}, "the value"),
                    **_refusals(400, 401, 403, 404, 429, 503),
                },
            }
        },
        "/api/v1/metadata/{env}/{path}": {
            "get": {
                "summary": "labels, versions, class, owner, expiry (no value)",
                "parameters": [_ENV, _PATH, _MFA],
                "responses": {
                    **_ok({"type": "object"}, "metadata"),
                    **_refusals(401, 403, 404, 429, 503),
                },
            }
        },
        "/api/v1/rotate/{env}/{path}": {
            "post": {
                "summary": "rotate: a new current, the old one previous for the overlap",
                "parameters": [_ENV, _PATH, _MFA],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "overlap_seconds": {"type": "integer"},
                                    "value": {"type": "string"},
                                },
                            }
                        }
                    }
                },
                "responses": {
                    **_ok({"type": "object"}, "current, previous, until"),
                    **_refusals(400, 401, 403, 404, 413, 429, 503),
                },
            }
        },
    },
}
