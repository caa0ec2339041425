"""The services screen's services (issue 17 item 8): the registered service principals,
their last access, the secrets under their prefixes with the versions they read and the
rotation status.

The principals come from the store (as ``custody principal list``), the use from the audit
log (:func:`custody.monitor.usage.usage_of`), the secrets' metadata from the store (no
value is decrypted). With the session's token PIN the access-control rows (the principals
shown here) are first checked against the access seal, as on the access screen: a tampered
row is refused with an IntegrityError; without it :attr:`verified` is False and the screen
says "access rows NOT verified". The view does not show each consumer's
acknowledgement (that state is checked against the token: ``custody serve`` and
``custody secret rotate --due`` read it); :data:`ACK_NOTE` says how acknowledgements work
(:mod:`custody.secrets.consumers`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from custody.access.local import local_access
from custody.clock import parse
from custody.config import Home
from custody.deployment import open_audit_log, open_deployment
from custody.monitor.usage import usage_of
from custody.textsafe import printable
from tui.services.common import Clock, Field

WARN_DAYS = 30
# what custody.secrets.consumers does (kept in step with it: tests/tui/test_tui_access.py)
ACK_NOTE = (
    "acks are per version, in a signed consumers' state anchored on a token counter; "
    "previous is revoked early only when every registered consumer acked current, "
    "else at the end of the overlap window with the stragglers named"
)


def _when(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") if t else "-"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSecret:
    """One secret under a service's prefixes, and the service's use of it."""

    target: str  # ENV:PATH
    security_class: str
    state: str
    current: int | None
    read_versions: tuple[int, ...]
    last_read: int  # Unix seconds; 0: never
    days_left: int | None

    @property
    def rotation(self) -> str:
        if self.days_left is None:
            return "-"
        if self.days_left < 0:
            return f"overdue {-self.days_left} d"
        if self.days_left <= WARN_DAYS:
            return f"due in {self.days_left} d"
        return "ok"

    @property
    def in_use(self) -> str:
        """The versions it read (``v3``, ``v2,v3``); ``old`` when one is not current."""
        if not self.read_versions:
            return "-"
        text = ",".join(f"v{v}" for v in self.read_versions)
        stale = self.current is not None and any(v < self.current for v in self.read_versions)
        return text + (" old" if stale else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceItem:
    """One service principal and its use of custody."""

    name: str
    role: str
    prefixes: tuple[str, ...]
    envs: tuple[str, ...]
    credential: str  # "token 1a2b3c4d", "token revoked", "revoked", "no token"
    last_time: int
    last_op: str
    last_target: str
    last_outcome: str
    reads: int
    refused: int
    secrets: tuple[ServiceSecret, ...]

    @property
    def last(self) -> str:
        return _when(self.last_time)

    @property
    def due(self) -> int:
        return sum(1 for s in self.secrets if s.rotation not in ("ok", "-"))

    def fields(self) -> list[Field]:
        return [
            Field(label="service", value=self.name),
            Field(label="role", value=self.role),
            Field(label="prefixes", value=", ".join(self.prefixes) or "-"),
            Field(label="environments", value=", ".join(self.envs) or "all"),
            Field(label="credential", value=self.credential),
            Field(label="last access", value=self.last),
            Field(
                label="last operation",
                value=f"{self.last_op} {self.last_target} ({self.last_outcome})"
                if self.last_op
                else "-",
            ),
            Field(label="reads", value=str(self.reads)),
            Field(label="refused", value=str(self.refused)),
            Field(label="secrets", value=str(len(self.secrets))),
            Field(label="rotation due", value=str(self.due)),
            Field(label="acknowledgements", value=ACK_NOTE),
        ]


class ServiceAccountServices(Protocol):
    #: whether the last :meth:`services` checked the rows against the access seal
    verified: bool

    def services(self) -> tuple[ServiceItem, ...]: ...


def _credential(p: Any) -> str:
    if p.revoked_at is not None:
        return "revoked"
    if p.token_revoked_at is not None:
        return "token revoked"
    return f"token {printable(p.token_id[:8])}" if p.token_id else "no token"


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


class HomeServiceAccountServices:
    def __init__(
        self, home: Path, clock: Clock, pin: Callable[[], str | None] = lambda: None
    ) -> None:
        self.home = Path(home)
        self.clock = clock
        self._pin = pin  # the app's PIN box (Services.pin): read per load, never kept
        self.verified = False

    def __repr__(self) -> str:
        return f"HomeServiceAccountServices(home={str(self.home)!r})"

    def services(self) -> tuple[ServiceItem, ...]:
        """Every service principal (live first), with its use and its secrets; with the
        session's PIN, after the access rows passed their seal.

        Raises:
            IntegrityError: the access rows fail their seal (audited; nothing is shown).
        """
        home = Home(self.home)
        now = self.clock()
        pin = self._pin()
        with open_deployment(home, pin) as dep:
            verified = dep.hsm is not None
            if verified:
                with local_access(dep, home, clock=self.clock) as ac:
                    ac.check_rows()
            rows = [p for p in dep.store.principals() if p.kind == "service"]
            secrets = [s for s in dep.store.secrets() if s.deleted_at is None]
        log = open_audit_log(home)
        try:
            usage = usage_of(log.iter_lines(), {p.name for p in rows})
        finally:
            log.close()
        out = []
        for p in sorted(rows, key=lambda p: (p.revoked_at is not None, p.name)):
            u = usage[p.name]
            mine = []
            for s in secrets:
                if not _under(s.path, p.services) or (p.envs and s.env not in p.envs):
                    continue
                target = f"{s.env}:{s.path}"
                try:
                    days: int | None = (parse(s.expires) - now).days if s.expires else None
                except ValueError:
                    days = None
                mine.append(
                    ServiceSecret(
                        target=printable(target),
                        security_class=printable(s.security_class),
                        state=printable(s.state),
                        current=s.current_version,
                        read_versions=tuple(sorted(u.versions.get(target, ()))),
                        last_read=u.last_read.get(target, 0),
                        days_left=days,
                    )
                )
            out.append(
                ServiceItem(
                    name=printable(p.name),
                    role=printable(p.role),
                    prefixes=tuple(printable(x) for x in p.services),
                    envs=tuple(printable(x) for x in p.envs),
                    credential=_credential(p),
                    last_time=u.last_time,
                    last_op=printable(u.last_op),
                    last_target=printable(u.last_target),
                    last_outcome=printable(u.last_outcome),
                    reads=u.reads,
                    refused=u.refused,
                    secrets=tuple(sorted(mine, key=lambda s: s.target)),
                )
            )
        self.verified = verified
        return tuple(out)


def service_account_services(app: Any) -> ServiceAccountServices:
    """The app's service-account services, created on first use (tests may preset
    ``app.service_account_services``)."""
    svc = getattr(app, "service_account_services", None)
    if svc is None:
        svc = HomeServiceAccountServices(app.settings.home, app.settings.clock, app.services.pin)
        app.service_account_services = svc
    return svc


__all__ = [
    "ACK_NOTE",
    "HomeServiceAccountServices",
    "ServiceAccountServices",
    "ServiceItem",
    "ServiceSecret",
    "service_account_services",
]
