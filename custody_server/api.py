"""The request path shared by the native API and the Vault KV v2 surface.

Every request runs the same path (:class:`Api.handle`):

1. the client address is checked against lockouts, then the caller is authenticated
   (:class:`custody_server.guard.Guard`) and rate limited;
2. the endpoint's operation runs on the backend's worker thread, which asks
   :meth:`custody.access.AccessControl.authorize` first (roles, grants, environments, MFA
   from ``X-Custody-MFA``; a denial is audited by access control and answered 403);
3. it is audited through :class:`custody.audit.log.AuditLog` (group commit): a change
   writes an ``intent`` entry before it acts and its outcome after; a read writes one entry
   once the value is decrypted and *before* it is sent. If the audit log cannot be written
   the request is refused (503) and no value leaves the server.

Errors are JSON with the error's title and hint (custody's titles never hold a value), or
for unexpected failures a fixed text and a request id; the server log gets the method, the
route, the status, the principal and the time, never a header, a body or a value.
"""

from __future__ import annotations

import json
import logging
import secrets as pysecrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from custody.access import AccessDenied, AuthError, Principal, decide
from custody.audit.log import AuditLog
from custody.errors import (
    AuditError,
    CustodyError,
    IntegrityError,
    PolicyError,
    UsageError,
)
from custody.secrets import CasMismatch, SecretNotFound, SecretUnavailable
from custody.store import open_lockout
from custody.store.sqlite_guard import GuardDb
from custody_server.backend import Backend, Context
from custody_server.guard import Guard, GuardLimits, Refused, token_of
from custody_server.limits_mw import BodyTooLarge
from custody_server.tls import peer_identity

log = logging.getLogger("custody_server")

Op = Callable[[Context], Any]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_body: int = 64 * 1024
    max_headers: int = 64
    guard: GuardLimits = field(default_factory=GuardLimits)
    guard_db: Path | None = None  # shared lockout and rate state (HOME/guard.db)
    processes: int = 1  # how many server processes share it
    # the store's location: a PostgreSQL store keeps the lockout state for every replica
    # (custody.store.postgres_guard); the rate stays in guard_db, per host
    lockout_store: Path | str | None = None
    lockout_password_file: Path | None = None


class ApiError(Exception):
    """An answer other than success: *status*, and the body's title and hint."""

    def __init__(self, status: int, title: str, hint: str = "", *, extra: Any = None) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.hint = hint
        self.extra = extra
        self.retry_after: int | None = None


def status_of(exc: CustodyError) -> int:
    """The HTTP status of a custody error."""
    if isinstance(exc, Refused):
        return exc.status
    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, SecretNotFound):
        return 404
    if isinstance(exc, SecretUnavailable):
        return 404
    if isinstance(exc, CasMismatch):
        return 400
    if isinstance(exc, (AccessDenied, PolicyError)):
        return 403
    if isinstance(exc, AuditError):
        return 503
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, IntegrityError):
        return 500
    return 500


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request presented: its client address, a bearer token or a verified
    certificate's CN. ``repr`` never shows the token."""

    client: str
    token: str | None = field(repr=False)
    cn: str | None


@dataclass(frozen=True, slots=True)
class _AuthFailed:
    error: str


@dataclass
class Call:
    """One authenticated request on its way through :meth:`Api.handle`."""

    request: Request
    principal: Principal
    surface: str  # "native" | "kv2"

    @property
    def mfa(self) -> str | None:
        return self.request.headers.get("x-custody-mfa")


Handler = Callable[[Call], Awaitable[Response]]


class Api:
    """The routes' shared machinery: backend, audit log, guard."""

    def __init__(self, backend: Backend, audit: AuditLog, limits: ServerLimits) -> None:
        self.backend = backend
        self.audit = audit
        self.limits = limits
        state = GuardDb(limits.guard_db) if limits.guard_db is not None else None
        lockout = (
            open_lockout(limits.lockout_store, password_file=limits.lockout_password_file)
            if limits.lockout_store is not None
            else None
        )
        self.guard = Guard(limits.guard, state=state, processes=limits.processes, lockout=lockout)

    # -- audit -------------------------------------------------------------------------
    async def record(
        self,
        op: str,
        target: str,
        actor: str,
        outcome: str,
        details: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one audit entry from the thread pool (group commit).

        Raises:
            AuditError: it could not be written (the request is refused).
        """
        det = dict(details or {})
        return await anyio.to_thread.run_sync(
            lambda: self.audit.append(op, target, actor, outcome=outcome, details=det)
        )

    async def audited(
        self, call: Call, op: str, target: str, fn: Op, details: Mapping[str, Any] | None = None
    ) -> Any:
        """A change: ``intent`` before it runs on the worker, its outcome after."""
        who = call.principal.name
        det = {"via": call.surface, **(details or {})}
        first = await self.record(op, target, who, "intent", det)
        ref = {"intent_seq": first["seq"]}
        try:
            out = await self.backend.run(fn)
        except PolicyError as exc:
            await self.record(op, target, who, "denied", {**ref, "error": type(exc).__name__})
            raise
        except BaseException as exc:
            await self.record(op, target, who, "failed", {**ref, "error": type(exc).__name__})
            raise
        await self.record(op, target, who, "ok", ref)
        return out

    async def disclosed(
        self, call: Call, op: str, target: str, fn: Op, details: Mapping[str, Any] | None = None
    ) -> Any:
        """A read: run on the worker, then one audit entry before the answer leaves."""
        who = call.principal.name
        det = {"via": call.surface, **(details or {})}
        try:
            out = await self.backend.run(fn)
        except (AccessDenied, AuthError):
            raise  # access control audited the denial itself
        except CustodyError as exc:
            await self.record(op, target, who, "failed", {**det, "error": type(exc).__name__})
            raise
        version = getattr(out, "version", None)
        if isinstance(version, int):
            det["version"] = version
        await self.record(op, target, who, "ok", det)
        return out

    # -- authentication ----------------------------------------------------------------
    def credential(self, request: Request) -> Credential:
        """The request's credential (on the event loop; the lockout is checked by
        :meth:`resolve` on a worker, here only for a request without any credential).

        Raises:
            Refused: the client is locked out, or sent no credential.
        """
        client = request.client.host if request.client else "unknown"
        token = token_of(request.headers)
        cn = peer_identity(request.scope)
        if token is None and cn is None:
            self.guard.check_locked(client)
            raise Refused(
                "No credentials",
                "Send a token (X-Vault-Token or Authorization: Bearer) or a client certificate.",
                status=401,
            )
        return Credential(client=client, token=token, cn=cn)

    def resolve(self, c: Context, cred: Credential) -> Principal | _AuthFailed:
        """On a worker: the credential's principal, rate limited (Refused 429 when over);
        a refused credential is returned as :class:`_AuthFailed` for :meth:`failed_auth`.
        A locked-out client is refused first (Refused 403), its credential not looked at;
        the lockout state is read here, off the event loop (it may be the shared file)."""
        self.guard.check_locked(cred.client)
        try:
            if cred.token is not None:
                p = c.access.authenticate_token(cred.token)
            else:
                p = c.access.principal(str(cred.cn))
        except (AuthError, UsageError) as exc:
            return _AuthFailed(type(exc).__name__)
        self.guard.admit(p)
        return p

    async def failed_auth(self, cred: Credential, failed: _AuthFailed) -> AuthError:
        """Audit a refused credential, count it towards the client's lockout (audited when
        it engages), and return the error to raise."""
        how = "token" if cred.token is not None else "certificate"
        await self.record(
            "api authenticate", cred.client, "anonymous", "denied",
            {"by": how, "error": failed.error},
        )  # fmt: skip
        if await anyio.to_thread.run_sync(self.guard.failed, cred.client):  # off the loop
            g = self.guard.limits
            await self.record(
                "api lockout", cred.client, "anonymous", "denied",
                {"failures": g.lockout_after, "seconds": g.lockout_seconds},
            )  # fmt: skip
        return AuthError("Authentication failed", "Check the token or certificate.")

    async def authenticate(self, request: Request) -> Principal:
        cred = self.credential(request)
        got = await self.backend.run(lambda c: self.resolve(c, cred), cached=True)
        if isinstance(got, _AuthFailed):
            raise await self.failed_auth(cred, got)
        return got

    async def read_once(
        self, call: Call, op: str, target: str, fn: Op, details: Mapping[str, Any] | None = None
    ) -> Any:
        """A read in one trip to a worker: authenticate, rate-limit, run *fn* (which asks
        access control), then commit access control's entries and the read's own in one
        batch before the answer leaves (:class:`custody_server.backend.Staging`). For a
        route made with ``deferred=True``; ``call.principal`` is set before *fn* runs."""
        cred = self.credential(call.request)
        det = {"via": call.surface, **(details or {})}

        def job(c: Context) -> Any:
            got = self.resolve(c, cred)
            if isinstance(got, _AuthFailed):
                return got
            call.principal = got
            failure: BaseException | None = None
            with c.staging.held() as staged:  # access control's entries, held back
                try:
                    out = fn(c)
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    failure = exc
            entries = list(staged)
            if failure is not None:
                if isinstance(failure, CustodyError) and not isinstance(
                    failure, (AccessDenied, AuthError, Refused)
                ):
                    why = {**det, "error": type(failure).__name__}
                    entries.append({"op": op, "target": target, "actor": got.name,
                                    "outcome": "failed", "details": why})  # fmt: skip
                if entries:  # the denial is on record before the answer
                    c.commit_before_answer(entries)
                raise failure
            version = getattr(out, "version", None)
            extra = {"version": version} if isinstance(version, int) else {}
            entries.append({"op": op, "target": target, "actor": got.name, "outcome": "ok",
                            "details": {**det, **extra}})  # fmt: skip
            # decision and disclosure: durable before the value leaves, in one commit with
            # the other requests the worker took at the same time
            c.commit_before_answer(entries)
            return out

        out = await self.backend.run(job, cached=True)
        if isinstance(out, _AuthFailed):
            raise await self.failed_auth(cred, out)
        return out

    # -- the request path ------------------------------------------------------------
    def route(
        self, surface: str, handler: Handler, *, public: bool = False, deferred: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint for *handler*: authenticated first, unless *public* (no credential)
        or *deferred* (the handler authenticates through :meth:`read_once`)."""

        async def endpoint(request: Request) -> Response:
            t0 = time.perf_counter()
            who = "-"
            try:
                if public or deferred:
                    call = Call(request, _ANON, surface)
                    resp = await handler(call)
                    who = call.principal.name if deferred else who
                else:
                    principal = await self.authenticate(request)  # rate limited there
                    who = principal.name
                    resp = await handler(Call(request, principal, surface))
            except BodyTooLarge:
                resp = self.error(surface, ApiError(413, "Request body too large"))
            except ApiError as exc:
                resp = self.error(surface, exc)
            except CustodyError as exc:
                err = ApiError(status_of(exc), exc.title, exc.hint)
                if surface == "kv2" and isinstance(exc, AuthError):
                    err.status = 403  # Vault answers a bad token with 403 "permission denied"
                err.retry_after = getattr(exc, "retry_after", None)
                err.extra = getattr(exc, "kv_body", None)
                resp = self.error(surface, err)
            except Exception as exc:  # noqa: BLE001 - never a traceback or value to the client
                rid = pysecrets.token_hex(6)
                log.error("request %s failed: %s", rid, type(exc).__name__)
                resp = self.error(
                    surface,
                    ApiError(500, "Internal error", f"request id {rid}; see the server log"),
                )
            log.info(
                "%s %s %d %s %.1fms",
                request.method,
                _template(request),
                resp.status_code,
                who,
                (time.perf_counter() - t0) * 1000,
            )
            return resp

        return endpoint

    def error(self, surface: str, err: ApiError) -> Response:
        headers = {"retry-after": str(err.retry_after)} if err.retry_after else None
        if surface == "kv2":
            body: dict[str, Any] = {"errors": [err.title]}
            if err.extra is not None:
                body.update(err.extra)
        else:
            body = {"error": err.title, "hint": err.hint, "status": err.status}
        return JSONResponse(body, status_code=err.status, headers=headers)


# The caller of a public route (health, OpenAPI): those handlers never ask access control,
# and no route that does is public. The least role, with no services and every env denied.
_ANON = Principal(name="anonymous", kind="service", role="auditor", envs=("-",))


def permitted(
    ctx: Context, principal: Principal, action: str, env: str, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The listed secrets (:meth:`custody.secrets.Vault.list_secrets` items) on which the
    policy (:func:`custody.access.decide`, with the principal's grants) allows *action*.
    A listing carries no TOTP code: an MFA-enrolled principal (or any, in ``always`` mode)
    sees only what needs none."""
    grants = ctx.access.honoured(principal.name)  # a bare grant row is not a grant
    now = ctx.access.now()
    mfa_ok = ctx.mfa_mode == "enrolled" and not principal.mfa
    return [
        i
        for i in items
        if decide(principal, action, env, i["path"], security_class=i["class"], grants=grants,
                  now=now, mfa_ok=mfa_ok, category=i["category"]).allow
    ]  # fmt: skip


def _template(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "?"))


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object body ({} when empty).

    Raises:
        ApiError: 400 when it is not a JSON object.
    """
    raw = await request.body()
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The body is not JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "The body must be a JSON object")
    return doc
