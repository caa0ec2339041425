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

With a shared *state* (:class:`custody.store.sqlite_guard.GuardDb`, ``HOME/guard.db``, what
``custody serve`` uses) the failures, lockouts and rate windows are counted across every
server process (``--workers N``): a token spray spread over the processes is locked out at
the same count. The rate is then a fixed window of the limit's period (``200/second``: each
wall-clock second), shared by leases: a process takes a slice of the window's remaining
requests at a time (1/8 of the limit per process, at least one) and serves from it without
going to the file, so the sum admitted never passes the limit; a slice left unused when the
window ends is lost, so under load a principal may get a little less than the limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from custody.access import AuthError, Principal
from custody.errors import PolicyError
from custody.store.sqlite_guard import GuardDb


class LockoutState(Protocol):
    """Failed authentications and lockouts shared by several server processes:
    :class:`custody.store.sqlite_guard.GuardDb` (one host) or
    :class:`custody.store.postgres_guard.PostgresLockout` (every replica of a PostgreSQL
    store)."""

    def locked_until(self, client: str, now: float) -> float | None: ...

    def fail(
        self, client: str, now: float, *, window: float, after: int, seconds: float
    ) -> bool: ...


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
    """Lockout and rate-limit state: in memory for one process, or in *state* for all the
    processes that share it (*processes* of them: the size of a rate lease). *lockout*,
    when given, keeps the failures and lockouts instead of *state* (the PostgreSQL store
    shared by replicas on several hosts); the rate stays in *state* (per host)."""

    def __init__(
        self,
        limits: GuardLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        state: GuardDb | None = None,
        processes: int = 1,
        lockout: LockoutState | None = None,
    ):
        self.limits = limits
        self._clock = clock
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._rate = parse(limits.rate)
        self._fail = parse(f"{limits.lockout_after - 1}/{limits.lockout_window} seconds")
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._state = state
        self._lockout: LockoutState | None = lockout if lockout is not None else state
        self._slice = max(1, self._rate.amount // (8 * max(1, processes)))
        self._leases: dict[str, tuple[int, int]] = {}  # principal -> (window, requests left)

    def check_locked(self, client: str) -> None:
        """Raises Refused (403) while *client* is locked out."""
        if self._lockout is not None:
            now = time.time()
            until = self._lockout.locked_until(client, now)
            if until is not None:
                raise Refused(
                    "Too many failed authentications: this client is locked out",
                    "Wait for the lockout to end; the attempts were audited.",
                    status=403,
                    retry_after=int(until - now) + 1,
                )
            return
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
        if self._lockout is not None:
            g = self.limits
            return self._lockout.fail(client, time.time(), window=g.lockout_window,
                                    after=g.lockout_after, seconds=g.lockout_seconds)  # fmt: skip
        if self.limits.lockout_after <= 1 or not self._limiter.hit(self._fail, "authfail", client):
            with self._lock:
                self._locked[client] = self._clock() + self.limits.lockout_seconds
            self._limiter.clear(self._fail, "authfail", client)
            return True
        return False

    def admit(self, principal: Principal) -> None:
        """Raises Refused (429) when *principal* is over its rate."""
        if self._state is not None:
            self._admit_shared(principal.name)
            return
        if not self._limiter.hit(self._rate, "principal", principal.name):
            stats = self._limiter.get_window_stats(self._rate, "principal", principal.name)
            raise Refused(
                "Rate limit exceeded",
                "Slow down and retry after the time in Retry-After.",
                status=429,
                retry_after=max(1, int(stats.reset_time - time.time()) + 1),
            )

    def _admit_shared(self, name: str) -> None:
        period = self._rate.get_expiry()
        now = time.time()
        win = int(now // period)
        with self._lock:
            w, left = self._leases.get(name, (-1, 0))
            if w == win and left > 0:
                self._leases[name] = (w, left - 1)
                return
        got = self._state.lease(name, win, self._slice, self._rate.amount)  # type: ignore[union-attr]
        if got == 0:
            raise Refused(
                "Rate limit exceeded",
                "Slow down and retry after the time in Retry-After.",
                status=429,
                retry_after=max(1, int((win + 1) * period - now) + 1),
            )
        with self._lock:
            self._leases[name] = (win, got - 1)


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


__all__ = ["AuthError", "Guard", "GuardLimits", "LockoutState", "Refused", "token_of"]
