"""The access screen's services: time-limited grants (issue 16 item 2, docs/access.md).

Requests pending approval (with the seconds left in their window), grants (live, lapsed,
revoked), and the three operations of ``custody access``, through the same library calls
and so the same audit entries: a request (:meth:`GrantFlow.request`, acting as a named
principal, like ``--as NAME``), an approval signed with the approver's participant key
(:meth:`GrantFlow.approve`; the new grant's signed record goes to ``HOME/grants/``), and an
early revocation by the local operator (:meth:`GrantFlow.revoke`). Listing grants first
audits the ones that have lapsed since the last look, as ``custody access grants`` does.

Each call opens the deployment in the worker thread (no token: grants need no PIN) and
closes it before returning. The key's passphrase is an argument, never an attribute; every
string that came from the store is escaped for display.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ceremonies.participants import TokenSigner, load_signer
from ceremonies.secret_rotation import parse_duration
from custody.access.local import local_access
from custody.access.policy import needs_mfa
from custody.access.session import grant_flow, grant_state, save_record
from custody.access.settings import AccessSettings
from custody.audit.scope import actor_name
from custody.clock import to_seconds
from custody.config import Home
from custody.deployment import open_deployment
from custody.errors import UsageError
from custody.textsafe import printable
from tui.services.common import Clock, Field

T = TypeVar("T")
GRANTABLE = ("read", "metadata", "list")
PIN_HINT = "Press p on the dashboard to enter it, or start custody tui with --pin-file."


def _when(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def countdown(seconds: int) -> str:
    """``1h 05m``, ``4m 09s``, ``expired``: what is left of a window."""
    if seconds <= 0:
        return "expired"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestItem:
    """One access request, with who has signed it so far."""

    id: str
    requester: str
    env: str
    path: str
    actions: tuple[str, ...]
    security_class: str
    needed: int
    approvers: tuple[str, ...]
    not_before: int
    not_after: int
    state: str
    reason: str
    digest: str

    @property
    def target(self) -> str:
        return f"{self.env}:{self.path}"

    def seconds_left(self, now: int) -> int:
        return max(0, self.not_after - now)

    def fields(self, now: int) -> list[Field]:
        return [
            Field(label="request", value=self.id),
            Field(label="state", value=self.state),
            Field(label="requester", value=self.requester),
            Field(label="target", value=self.target),
            Field(label="actions", value=", ".join(self.actions)),
            Field(label="class", value=self.security_class),
            Field(label="approvals", value=f"{len(self.approvers)} of {self.needed}"),
            Field(label="approved by", value=", ".join(self.approvers) or "-"),
            Field(label="window", value=f"{_when(self.not_before)} to {_when(self.not_after)}"),
            Field(label="time left", value=countdown(self.seconds_left(now))),
            Field(label="why", value=self.reason),
            Field(label="digest", value=self.digest),
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantItem:
    """One grant and its state (``live``, ``lapsed``, ``revoked``)."""

    id: str
    request_id: str
    principal: str
    env: str
    path: str
    actions: tuple[str, ...]
    not_before: int
    not_after: int
    state: str
    approvers: tuple[str, ...] = ()
    revoked_by: str = ""
    revoke_reason: str = ""

    @property
    def target(self) -> str:
        return f"{self.env}:{self.path}"

    def fields(self, now: int) -> list[Field]:
        out = [
            Field(label="grant", value=self.id),
            Field(label="state", value=self.state),
            Field(label="principal", value=self.principal),
            Field(label="target", value=self.target),
            Field(label="actions", value=", ".join(self.actions)),
            Field(label="window", value=f"{_when(self.not_before)} to {_when(self.not_after)}"),
            Field(label="approved by", value=", ".join(self.approvers) or "-"),
            Field(label="request", value=self.request_id),
        ]
        if self.state == "live":
            out.append(Field(label="time left", value=countdown(self.not_after - now)))
        if self.revoked_by:
            out.append(Field(label="revoked by", value=self.revoked_by))
            out.append(Field(label="revoke reason", value=self.revoke_reason))
        return out


UNVERIFIED_NOTE = "! access rows NOT verified: no token PIN this session (p on the dashboard)"
"""The access screen's notice when its rows were read without the token (as the CLI's
``access_seal: unverified``): the seal was not checked, so they may rest on rows altered on
disk. Fits one line of an 80-column terminal."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessView:
    requests: tuple[RequestItem, ...]  # pending first, then the rest, newest first
    grants: tuple[GrantItem, ...]  # live first
    verified: bool  # the rows were checked against the access seal (the token was open)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApproveOutcome:
    """What an approval did: one more signature, or the grant (and its record file)."""

    request_id: str
    approver: str
    approvals: int
    needed: int
    grant_id: str | None = None
    record: str = ""  # the record file's path

    @property
    def message(self) -> str:
        if self.grant_id:
            return (
                f"Grant {self.grant_id} is active ({self.approvals} of {self.needed} "
                f"approvals); record: {self.record}"
            )
        return f"Approved {self.request_id}: {self.approvals} of {self.needed} approvals"


class AccessServices(Protocol):
    """What the access screen needs. Every method may block and raise a CustodyError."""

    def view(self) -> AccessView: ...
    def request(
        self, principal: str, env: str, path: str, duration: str, why: str, actions: str
    ) -> RequestItem: ...
    def approve_needs_code(self, request_id: str, key_path: str) -> bool: ...
    def approve(
        self, request_id: str, key_path: str, passphrase: str, mfa_code: str | None = None
    ) -> ApproveOutcome: ...
    def revoke(self, grant_id: str, reason: str) -> GrantItem: ...


def request_item(r: Any, approvers: tuple[str, ...]) -> RequestItem:
    p = printable
    return RequestItem(
        id=p(r.id),
        requester=p(r.requester),
        env=p(r.env),
        path=p(r.path),
        actions=tuple(p(a) for a in r.actions),
        security_class=p(r.security_class),
        needed=int(r.needed),
        approvers=tuple(p(a) for a in approvers),
        not_before=int(r.not_before),
        not_after=int(r.not_after),
        state=p(r.state),
        reason=p(r.reason),
        digest=p(r.digest),
    )


def grant_item(g: Any, now: int) -> GrantItem:
    p = printable
    try:
        approvers = tuple(p(str(a["approver"])) for a in json.loads(g.record).get("approvals", []))
    except (ValueError, TypeError, KeyError, AttributeError):
        approvers = ()
    return GrantItem(
        id=p(g.id),
        request_id=p(g.request_id),
        principal=p(g.principal),
        env=p(g.env),
        path=p(g.path),
        actions=tuple(p(a) for a in g.actions),
        not_before=int(g.not_before),
        not_after=int(g.not_after),
        state=grant_state(g, now),
        approvers=approvers,
        revoked_by=p(g.revoked_by or ""),
        revoke_reason=p(g.revoke_reason or ""),
    )


def parse_actions(text: str) -> tuple[str, ...]:
    """``read, metadata`` -> ("read", "metadata"); empty -> the CLI's default.

    Raises:
        UsageError: an action a grant cannot give.
    """
    items = tuple(a.strip() for a in text.replace(",", " ").split() if a.strip())
    bad = [a for a in items if a not in GRANTABLE]
    if bad:
        raise UsageError(
            f"A grant gives only {', '.join(GRANTABLE)}, not {printable(bad[0][:20])}",
            "Leave it empty for read and metadata.",
        )
    return items or ("read", "metadata")


class HomeAccessServices:
    """The access screen's services on a real home (no token, no PIN)."""

    def __init__(
        self, home: Path, clock: Clock, pin: Callable[[], str | None] = lambda: None
    ) -> None:
        self.home = Path(home)
        self.clock = clock
        self._pin = pin  # the app's PIN box (Services.pin): read per operation, never kept

    def __repr__(self) -> str:
        return f"HomeAccessServices(home={str(self.home)!r})"

    def _run(self, act: Callable[[Any, Any], T], *, token: bool = False) -> T:
        """Run *act* on the opened deployment; with *token*, logged in with the session's
        PIN (a TOTP code is checked against its secret, wrapped under the token's KEK)."""
        home = Home(self.home)
        pin = None
        if token:
            pin = self._pin()
            if pin is None:
                raise UsageError("Checking a TOTP code needs the token PIN", PIN_HINT)
        with open_deployment(home, pin) as dep, local_access(dep, home, clock=self.clock) as ac:
            return act(dep, ac)

    def view(self) -> AccessView:
        """Requests and grants; with the session's PIN the rows are checked against the
        access seal first (IntegrityError on tampering), else the view says unverified."""

        def act(dep: Any, ac: Any) -> AccessView:
            verified = dep.hsm is not None
            if verified:
                ac.check_rows()
            ac.lapse()  # audits each grant that lapsed since the last look, once
            flow = grant_flow(dep, ac)
            flow.expire_requests()  # and each request whose window passed unapproved
            now = ac.now()
            rows = sorted(
                dep.store.access_requests(state=None),
                key=lambda r: (r.state != "pending", -r.created, r.id),
            )
            reqs = tuple(
                request_item(r, tuple(a.approver for a in flow.valid_approvals(r)))
                for r in rows
                if r.kind == "grant"
            )
            grants = sorted(
                (grant_item(g, now) for g in dep.store.grants()),
                key=lambda g: (g.state != "live", -g.not_after, g.id),
            )
            return AccessView(requests=reqs, grants=tuple(grants), verified=verified)

        return self._run(act, token=self._pin() is not None)

    def request(
        self, principal: str, env: str, path: str, duration: str, why: str, actions: str
    ) -> RequestItem:
        """``custody access request PATH --env ENV --for DURATION --why TEXT --as NAME``."""
        if not principal.strip():
            raise UsageError("Name the requesting principal", "The local operator holds no grants.")
        seconds = parse_duration(duration)
        acts = parse_actions(actions)

        def act(dep: Any, ac: Any) -> RequestItem:
            who = ac.principal(principal.strip())
            r = grant_flow(dep, ac).request(
                who, env.strip(), path.strip(), seconds=seconds, why=why, actions=acts
            )
            return request_item(r, ())

        return self._run(act)

    def approve_needs_code(self, request_id: str, key_path: str) -> bool:
        """Whether to ask the approver for a TOTP code before signing: the principal named
        by the key file (``NAME.key.pem``, ``NAME.token.json``) must give one for this
        request (a super-admin enrolled in MFA, or anyone under ``mfa_mode = "always"``).
        Only the prompt depends on this guess; the library checks the code either way."""
        name = Path(key_path).name.removesuffix(".key.pem").removesuffix(".token.json")

        def act(dep: Any, ac: Any) -> bool:
            r = dep.store.access_request(request_id)
            row = dep.store.principal(name)
            if r is None or row is None or row.revoked_at is not None:
                return False
            who = ac.principal(name)
            if not needs_mfa(who, "approve", r.security_class):
                return False
            mode = AccessSettings.for_home(dep.home.config_path).mfa_mode
            return bool(who.mfa) or mode == "always"

        return self._run(act)

    def approve(
        self, request_id: str, key_path: str, passphrase: str, mfa_code: str | None = None
    ) -> ApproveOutcome:
        """``custody access approve REQUEST --key FILE [--mfa-code-file F]``: the passphrase
        (or a token key's PIN) unlocks the key for this one signature."""
        signer = load_signer(Path(key_path).expanduser(), passphrase)
        try:

            def act(dep: Any, ac: Any) -> ApproveOutcome:
                code = mfa_code.strip() if mfa_code else None
                out = grant_flow(dep, ac).approve(request_id, signer, mfa_code=code)
                record = ""
                if out["record"] is not None:
                    record = str(save_record(dep.home, out["grant"], out["record"]))
                return ApproveOutcome(
                    request_id=printable(out["request"]),
                    approver=printable(out["approver"]),
                    approvals=int(out["approvals"]),
                    needed=int(out["needed"]),
                    grant_id=out["grant"],
                    record=record,
                )

            return self._run(act, token=bool(mfa_code))
        finally:
            if isinstance(signer, TokenSigner):
                signer.close()

    def revoke(self, grant_id: str, reason: str) -> GrantItem:
        """``custody access revoke GRANT --reason TEXT`` by the local operator."""

        def act(dep: Any, ac: Any) -> GrantItem:
            who = ac.operator(actor_name())
            g = grant_flow(dep, ac).revoke(grant_id, who, reason=reason or "revoked early")
            row = dep.store.grant(g.id)
            return grant_item(row if row is not None else g, ac.now())

        return self._run(act)


def access_services(app: Any) -> AccessServices:
    """The app's access services, created on first use (tests may preset
    ``app.access_services``)."""
    svc = getattr(app, "access_services", None)
    if svc is None:
        svc = HomeAccessServices(app.settings.home, app.settings.clock, app.services.pin)
        app.access_services = svc
    return svc


def now_seconds(app: Any) -> int:
    """The app's clock, as Unix seconds (the countdowns)."""
    return to_seconds(app.settings.clock())


__all__ = [
    "UNVERIFIED_NOTE",
    "AccessServices",
    "AccessView",
    "ApproveOutcome",
    "GrantItem",
    "HomeAccessServices",
    "RequestItem",
    "access_services",
    "countdown",
    "grant_item",
    "now_seconds",
    "parse_actions",
    "request_item",
]
