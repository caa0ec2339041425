"""A Python client for custody's native API (``custody serve``), on httpx and tenacity.

It imports no other custody package, so a service can ship it alone::

    from custody_client import CustodyClient

    with CustodyClient("https://vault.internal:8200", token=token, ca="ca.pem") as c:
        db = c.get("prod", "payments/db/password")      # db.value, db.version
        cfg = c.cached("prod", "payments/cfg", ttl=30)  # served from memory for 30 s

- Authentication: a bearer token, or a client certificate (``cert=(crt, key)``) from the
  custody CA; the server's certificate is checked against ``ca``. TLS 1.3 only.
- Retries with exponential backoff and jitter for idempotent calls only (reads, lists,
  metadata, health): connection failures, 429 (after ``Retry-After``), 502, 503 and 504.
  A rotation is never retried: it is not idempotent.
- Each refusal is a typed error (:class:`AuthenticationFailed`, :class:`Forbidden`,
  :class:`LockedOut`, :class:`NotFound`, :class:`BadRequest`, :class:`RateLimited`,
  :class:`AuditUnavailable`, :class:`ServerError`, :class:`Unreachable`), all
  :class:`CustodyClientError`; messages carry the server's title, never a value.
- :meth:`CustodyClient.cached` keeps a value for ``ttl`` seconds; a given *version* never
  changes, so it is kept until evicted; when the server cannot be reached, a cached value no
  older than ``max_stale`` seconds is served (the overlap window in which a rotated
  ``previous`` value still works is the natural bound for it).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

__all__ = [
    "AuditUnavailable",
    "AuthenticationFailed",
    "BadRequest",
    "CustodyClient",
    "CustodyClientError",
    "Forbidden",
    "LockedOut",
    "NotFound",
    "RateLimited",
    "Secret",
    "ServerError",
    "Unreachable",
]


class CustodyClientError(Exception):
    """A refusal or failure. ``status``: the HTTP status (0: no answer); ``title`` and
    ``hint``: the server's words (never a value)."""

    def __init__(
        self, title: str, hint: str = "", *, status: int = 0, retry_after: int | None = None
    ) -> None:
        super().__init__(title)
        self.title = title
        self.hint = hint
        self.status = status
        self.retry_after = retry_after


class BadRequest(CustodyClientError):
    """400 or 413: the request was malformed, too large, or a check-and-set was stale."""


class AuthenticationFailed(CustodyClientError):
    """401: no credentials, or a wrong or revoked token or certificate."""


class Forbidden(CustodyClientError):
    """403: access control denied it (role, grant, environment, or MFA required)."""


class LockedOut(Forbidden):
    """403: too many failed authentications from this address; wait ``retry_after``."""


class NotFound(CustodyClientError):
    """404: no such secret, version or label (or it is deleted)."""


class RateLimited(CustodyClientError):
    """429: over the principal's rate; ``retry_after`` seconds."""


class AuditUnavailable(CustodyClientError):
    """503: the server's audit log cannot be written, so it refuses to serve."""


class ServerError(CustodyClientError):
    """5xx: the server failed (its log has the request id)."""


class Unreachable(CustodyClientError):
    """No answer: connection refused, TLS failure, timeout."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A value read from custody. ``repr`` never shows it."""

    env: str
    path: str
    version: int
    value: str = field(repr=False)


_RETRY_STATUS = (502, 503, 504)


def _error(resp: httpx.Response) -> CustodyClientError:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    title = str(body.get("error") or (body.get("errors") or [""])[0] or resp.reason_phrase)
    hint = str(body.get("hint") or "")
    s = resp.status_code
    retry = resp.headers.get("retry-after")
    cls: type[CustodyClientError]
    if s == 401:
        cls = AuthenticationFailed
    elif s == 403:
        cls = LockedOut if "locked out" in title else Forbidden
    elif s == 404:
        cls = NotFound
    elif s == 429:
        cls = RateLimited
    elif s in (400, 413, 431):
        cls = BadRequest
    elif s == 503 and "audit" in (title + hint).lower():
        cls = AuditUnavailable
    else:
        cls = ServerError
    return cls(title, hint, status=s, retry_after=int(retry) if retry and retry.isdigit() else None)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (Unreachable, RateLimited)):
        return True
    return isinstance(exc, CustodyClientError) and exc.status in _RETRY_STATUS


def _wait(base: float) -> Any:
    backoff = wait_exponential_jitter(multiplier=base, max=5.0, jitter=base)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        after = exc.retry_after if isinstance(exc, CustodyClientError) else None
        return float(min(after, 5)) if after else float(backoff(state))

    return wait


class CustodyClient:
    """A connection to ``custody serve``'s native API.

    Args:
        url: ``https://host:port``.
        token: a bearer token (else ``cert`` must be given).
        ca: the CA file that signed the server's certificate (default: the system store).
        cert: a client certificate and its key, for mutual TLS.
        timeout: seconds per request.
        retries: attempts for idempotent calls (1: no retry).
        backoff: the first retry's delay in seconds (exponential, with jitter).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ca: str | None = None,
        cert: tuple[str, str] | None = None,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.1,
    ) -> None:
        ctx = ssl.create_default_context(cafile=ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if cert is not None:
            ctx.load_cert_chain(*cert)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url, verify=ctx, headers=headers, timeout=timeout)
        self._retries = max(1, retries)
        self._backoff = backoff
        self._cache: dict[tuple[str, str, int | None, str | None], tuple[Secret, float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CustodyClient({str(self._http.base_url)!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CustodyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------------
    def _once(self, method: str, url: str, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise Unreachable(
                f"Cannot reach custody ({type(exc).__name__})", "Check the URL, CA and network."
            ) from None
        if resp.status_code >= 400:
            raise _error(resp)
        return resp.json()

    def _idempotent(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        for attempt in Retrying(
            stop=stop_after_attempt(self._retries),
            wait=_wait(self._backoff),
            retry=retry_if_exception(_retryable),
            reraise=True,
        ):
            with attempt:
                return self._once("GET", url, params=dict(params or {}))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the API ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return dict(self._idempotent("/api/v1/health"))

    def whoami(self) -> dict[str, Any]:
        return dict(self._idempotent("/api/v1/whoami"))

    def get(
        self, env: str, path: str, *, version: int | None = None, label: str | None = None
    ) -> Secret:
        """One value: ``current``, a *version*, or a *label* (``previous``, ``pending``)."""
        params: dict[str, Any] = {}
        if version is not None:
            params["version"] = version
        if label is not None:
            params["label"] = label
        d = self._idempotent(f"/api/v1/secrets/{env}/{path}", params)
        return Secret(env=d["env"], path=d["path"], version=int(d["version"]), value=d["value"])

    def list(self, env: str, prefix: str = "") -> list[dict[str, Any]]:
        """Metadata of the secrets in *env* the caller may read."""
        return list(self._idempotent(f"/api/v1/secrets/{env}", {"prefix": prefix})["secrets"])

    def metadata(self, env: str, path: str) -> dict[str, Any]:
        return dict(self._idempotent(f"/api/v1/metadata/{env}/{path}"))

    def rotate(
        self, env: str, path: str, *, overlap_seconds: int = 86400, value: str | None = None
    ) -> dict[str, Any]:
        """Rotate (roles that may): a new ``current``; the old value stays ``previous`` for
        *overlap_seconds*. Not retried."""
        body: dict[str, Any] = {"overlap_seconds": overlap_seconds}
        if value is not None:
            body["value"] = value
        return dict(self._once("POST", f"/api/v1/rotate/{env}/{path}", json=body))

    def cached(
        self,
        env: str,
        path: str,
        *,
        version: int | None = None,
        label: str | None = None,
        ttl: float = 30.0,
        max_stale: float = 0.0,
    ) -> Secret:
        """:meth:`get` through a cache (see the module doc).

        A fixed *version* is immutable and kept; ``current`` or a label is fetched again
        after *ttl* seconds, and a newer version replaces the cached one. When that fetch
        cannot reach the server (or it is overloaded), a cached value fetched no more than
        *max_stale* seconds ago is returned instead of the error.
        """
        key = (env, path, version, label)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and (version is not None or now - hit[1] < ttl):
            return hit[0]
        try:
            got = self.get(env, path, version=version, label=label)
        except (Unreachable, ServerError, AuditUnavailable, RateLimited):
            if hit is not None and now - hit[1] <= max_stale:
                return hit[0]
            raise
        with self._lock:
            self._cache[key] = (got, now)
        return got

    def forget(self) -> None:
        """Drop every cached value."""
        with self._lock:
            self._cache.clear()
