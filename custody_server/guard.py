"""Who is calling, and may they call now: authentication, lockout and rate limits.

:class:`Guard` turns a request into a :class:`custody.access.Principal`:

- a bearer token (``X-Vault-Token``, or ``Authorization: Bearer``) is checked by
  :meth:`custody.access.AccessControl.authenticate_token` (tokens are stored only as hashes);
- else a client certificate that the TLS handshake verified against ``--client-ca``
  (:func:`custody_server.tls.peer_identity`) names the principal by its subject CN.

Repeated failures lock the client address out: after ``lockout_after`` failed
authentications within ``lockout_window`` seconds, every request from that address is
refused for ``lockout_seconds`` without being looked at, and the lockout is written to the
audit log. Each failed authentication is audited too. Authenticated principals are rate
limited (the ``limits`` library, a moving window per principal); a refused request is
answered 429 with ``Retry-After``. Tokens never reach a log, an audit entry or an error.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from custody.access import AuthError, Principal
from custody.errors import PolicyError


class Refused(PolicyError):
    """A request refused before it reached access control (lockout, rate limit, no
    credentials). ``status`` is the HTTP status; ``retry_after`` seconds, when known."""

    def __init__(self, title: str, hint: str, *, status: int, retry_after: int | None = None):
        super().__init__(title, hint)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class GuardLimits:
    rate: str = "200/second"
    lockout_after: int = 5
    lockout_window: int = 300
    lockout_seconds: int = 300


class Guard:
    """Lockout and rate-limit state for one server process (in memory)."""

    def __init__(self, limits: GuardLimits, *, clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self._clock = clock
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._rate = parse(limits.rate)
        self._fail = parse(f"{limits.lockout_after - 1}/{limits.lockout_window} seconds")
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    def check_locked(self, client: str) -> None:
        """Raises Refused (403) while *client* is locked out."""
        with self._lock:
            until = self._locked.get(client)
            if until is None:
                return
            left = until - self._clock()
            if left <= 0:
                del self._locked[client]
                return
        raise Refused(
            "Too many failed authentications: this client is locked out",
            "Wait for the lockout to end; the attempts were audited.",
            status=403,
            retry_after=int(left) + 1,
        )

    def failed(self, client: str) -> bool:
        """Count a failed authentication from *client*. Returns True when this failure
        engages a lockout (the caller audits it)."""
        if self.limits.lockout_after <= 1 or not self._limiter.hit(self._fail, "authfail", client):
            with self._lock:
                self._locked[client] = self._clock() + self.limits.lockout_seconds
            self._limiter.clear(self._fail, "authfail", client)
            return True
        return False

    def admit(self, principal: Principal) -> None:
        """Raises Refused (429) when *principal* is over its rate."""
        if not self._limiter.hit(self._rate, "principal", principal.name):
            stats = self._limiter.get_window_stats(self._rate, "principal", principal.name)
            raise Refused(
                "Rate limit exceeded",
                "Slow down and retry after the time in Retry-After.",
                status=429,
                retry_after=max(1, int(stats.reset_time - time.time()) + 1),
            )


def token_of(headers: Mapping[str, str]) -> str | None:
    """The bearer token of a request's headers (``X-Vault-Token`` or ``Authorization:
    Bearer``), or None."""
    get = headers.get
    tok = get("x-vault-token")
    if tok:
        return str(tok)
    auth = get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return str(auth[7:].strip()) or None
    return None


def token_tag(token: str) -> str:
    """A short, non-reversible tag of a token for correlating audit entries (never the
    token): 8 hex digits of its SHA-256."""
    return hashlib.sha256(b"custody/server-token-tag/v1" + token.encode()).hexdigest()[:8]


__all__ = ["AuthError", "Guard", "GuardLimits", "Refused", "token_of", "token_tag"]
