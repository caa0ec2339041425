"""Access control over a deployment's store: principals, tokens, and audited decisions.

:class:`AccessControl` is the one place front ends (CLI, TUI, server) ask. It loads the
principal (a service by its token, a person by name), gathers their grants, calls the pure
:func:`custody.access.policy.decide`, and records the answer in the audit log before anything
acts on it: ``access decide`` with outcome ``ok`` or ``denied`` and the reason, and ``access
grant use`` when a grant allowed it. A denial raises :class:`AccessDenied`; an unknown,
revoked or wrong token raises :class:`AuthError` (audited too, without the token).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from custody.access import tokens
from custody.access.auditing import intended
from custody.access.policy import decide, needs_mfa
from custody.access.records import DEFAULT_HIGH_APPROVERS, needed_for, verify_record
from custody.access.roles import ROLES, Decision, Grant, Principal, valid_name
from custody.access.seal import LOCAL_MFA_META, AccessSeal, Binding, SealAudit
from custody.canonical import strict_loads
from custody.clock import to_seconds, utcnow
from custody.errors import IntegrityError, PolicyError, UsageError
from custody.store.port import Store
from custody.store.rows import GrantRow, ParticipantRow, PrincipalRow, SecretRow

MFA_MODES = ("enrolled", "always")


class AuthError(PolicyError):
    """The credential was refused: unknown, revoked or wrong token, or no such principal."""


class AccessDenied(PolicyError):
    """The policy denied the action (the reason is in the title and in the audit log)."""

    def __init__(self, title: str, hint: str = "", *, decision: Decision | None = None) -> None:
        super().__init__(title, hint)
        self.decision = decision


#: The part of :class:`custody.audit.log.AuditLog` access control writes to: the
#: same audit port the seal writes to, declared once in :mod:`custody.access.seal`.
AuditSink = SealAudit


class MfaVerifier(Protocol):
    """The part of :class:`custody.access.mfa.Mfa` access control uses."""

    def verify(self, name: str, code: str, *, now: datetime | None = None) -> None: ...
    def enrolled(self, name: str) -> bool: ...


def to_grant(g: GrantRow) -> Grant:
    return Grant(
        id=g.id,
        principal=g.principal,
        env=g.env,
        path=g.path,
        actions=g.actions,
        not_before=g.not_before,
        not_after=g.not_after,
        revoked_at=g.revoked_at,
        request_id=g.request_id,
    )


def _check_services(items: tuple[str, ...], what: str) -> tuple[str, ...]:
    for s in items:
        segs = s.split("/")
        if not s or "," in s or any(not x or x in (".", "..") for x in segs):
            raise UsageError(f"Not a {what}: {s[:60]!r}", "Use e.g. payments or payments/api.")
    return tuple(items)


class AccessControl:
    """Principals and decisions of one deployment.

    Args:
        store: the deployment's store.
        audit_log: where every decision is recorded (an unwritable log refuses the action).
        clock: the current time.
        mfa: TOTP verification (:mod:`custody.access.mfa`), when set up.
        mfa_mode: ``enrolled`` (default): a principal enrolled in TOTP must give a code
            where the policy asks for one; ``always``: so must one that is not (it is
            denied until enrolled).
        rng: random bytes for tokens (the HSM's RNG when the token is logged in).
        command_scope: this instance serves ONE command (the CLI): a code verified once
            stands for the command's later decisions, so a command that decides several
            times asks for one code. Never for a long-lived caller (the server, the TUI):
            there every code is checked, and a replayed one is refused.
        high_approvers: the fewest approvers a live high-class grant's signed record must
            carry to be honoured (``[access] high_approvers``).
        seal: the access seal (:mod:`custody.access.seal`) where the token is open: every
            decision first checks the access-control rows against it (IntegrityError on a
            mismatch) and every write re-seals them. None (no token): not checked.
    """

    def __init__(
        self,
        store: Store,
        audit_log: AuditSink,
        *,
        clock: Callable[[], datetime] = utcnow,
        mfa: MfaVerifier | None = None,
        mfa_mode: str = "enrolled",
        rng: Callable[[int], bytes] = os.urandom,
        command_scope: bool = False,
        high_approvers: int = DEFAULT_HIGH_APPROVERS,
        seal: AccessSeal | None = None,
    ) -> None:
        if mfa_mode not in MFA_MODES:
            raise ValueError(f"mfa_mode must be one of {MFA_MODES}")
        self.store = store
        self.audit = audit_log
        self._clock = clock
        self._mfa = mfa
        self._mfa_mode = mfa_mode
        self._rng = rng
        self._command_scope = command_scope
        self._verified: set[str] = set()  # only with command_scope
        self._high_approvers = high_approvers
        self.seal = seal

    def check_rows(self) -> None:
        """Refuse if the access-control rows fail their seal (no-op without the token).

        Raises:
            IntegrityError: a row was added, changed or deleted without the token (audited).
        """
        if self.seal is not None:
            self.seal.check()

    @contextmanager
    def sealed(self, *, participants: Collection[str] = ()) -> Iterator[None]:
        """A write to access-control rows: checked first, re-sealed in its transaction
        (*participants*: roster entries the writer vouches for, see
        :meth:`~custody.access.seal.AccessSeal.reseal`)."""
        if self.seal is None:
            yield
            return
        with self.seal.write(participants=participants):
            yield

    def class_of(self, row: SecretRow) -> str:
        """*row*'s security class as decisions may trust it: the sealed one (an unsealed
        secret counts as ``high``); the row's own without the token."""
        return self.seal.trusted_class(row) if self.seal is not None else row.security_class

    def participants(self) -> list[ParticipantRow]:
        """The roster as decisions may trust it: the sealed participants (one enrolled since
        the last seal approves nothing until sealed); every row without the token."""
        rows = self.store.participants()
        if self.seal is None:
            return rows
        names = self.seal.trusted_participants()
        return [m for m in rows if m.name in names]

    def __repr__(self) -> str:
        return f"AccessControl({self.store!r})"

    def now(self) -> int:
        return to_seconds(self._clock())

    # -- principals -------------------------------------------------------------------
    def _to_principal(self, row: PrincipalRow) -> Principal:
        enrolled = self._mfa.enrolled(row.name) if self._mfa is not None else False
        return Principal(
            name=row.name,
            kind=row.kind,
            role=row.role,
            services=row.services,
            mfa=enrolled,
            envs=row.envs,
        )

    def principal(self, name: str) -> Principal:
        """The live principal *name*.

        Raises:
            AuthError: unknown or revoked.
        """
        self.check_rows()
        row = self.store.principal(name)
        if row is None or row.revoked_at is not None:
            state = "unknown" if row is None else "revoked"
            raise AuthError(f"Principal {name[:64]!r} is {state}", "See 'custody principal list'.")
        return self._to_principal(row)

    def operator(self, actor: str) -> Principal:
        """The local operator who holds the token PIN: super-admin (the default when no
        principal is named), named *actor*.

        Once a super-admin has bound the local operator to a TOTP enrolment
        (:meth:`bind_local_mfa`, kept under the access seal), the local operator is that
        principal's second factor: named after it whatever *actor* says, and marked
        enrolled, so every super-admin action needs its current TOTP code."""
        bound = self.store.get_meta(LOCAL_MFA_META) if self.seal is not None else None
        if bound:
            return Principal(name=bound, kind="person", role="super-admin", mfa=True)
        name = actor if valid_name(actor) else "operator"
        return Principal(name=name, kind="person", role="super-admin")

    def bind_local_mfa(self, name: str | None, *, by: Principal, mfa_code: str | None) -> None:
        """Require *name*'s TOTP code from the local PIN holder for super-admin actions
        (None: lift that). Needs the token (the binding is sealed), a super-admin, a
        confirmed enrolment of *name* and its current code (checked here: it proves the
        binder holds that factor, and it is single-use).

        Raises:
            PolicyError: no token, not a super-admin, no confirmed enrolment, or no/bad code.
        """
        if self.seal is None or self._mfa is None:
            raise PolicyError("Binding the local operator's TOTP needs the token",
                              "Give the token PIN (--pin-file).")  # fmt: skip
        if by.role != "super-admin":
            raise PolicyError(f"{by.name} may not bind the local operator", "A super-admin may.")
        bound = self.store.get_meta(LOCAL_MFA_META) or None
        if name is not None and bound is not None and name != bound:
            raise PolicyError(
                f"The local operator is bound to {bound}'s TOTP",
                "Lift it first ('custody access local-mfa --off' with its code).",
            )
        if name is not None and not self._mfa.enrolled(name):
            raise PolicyError(
                f"{name} has no confirmed TOTP enrolment",
                "Enrol and verify it first ('custody mfa enrol/verify').",
            )
        who = name if name is not None else bound
        if who is not None:  # the code of the factor bound now, or about to be
            factor = Principal(name=who, kind="person", role="super-admin", mfa=True)
            ok, err = self.mfa_check(factor, mfa_code)
            if not ok:
                raise PolicyError(
                    f"{who}'s current TOTP code is needed" + (f" ({err.title})" if err else ""),
                    "Give it with --mfa-code-file or $CUSTODY_MFA_CODE.",
                )
        det = {"principal": name or bound, "on": name is not None}
        with (
            intended(self.audit, "access local-mfa", "access", by.name, det) as ref,
            self.sealed(),
        ):
            if name is not None and self.seal is not None:
                # the token learns the new binding before the store commits it: whoever
                # stops this process in between is left with the stricter anchor
                row = self.store.mfa_enrolment(name)
                uid = None if row is None else bytes(row.object_uid)
                self.seal.anchor(Binding(name, uid))
            self.store.set_meta(LOCAL_MFA_META, name or "")
        self.audit.append("access local-mfa", "access", by.name, details={**det, **ref})

    def local_bound(self) -> str | None:
        """The principal whose TOTP the local PIN holder is bound to (:meth:`bind_local_mfa`),
        or None: not bound, or no token (the binding is read only under the seal)."""
        if self.seal is None:
            return None
        return self.store.get_meta(LOCAL_MFA_META) or None

    def resealer(self, by: Principal, *, logged: Callable[[], str | None]) -> Principal:
        """Whom ``custody access seal`` asks for a code: *by* while the rows pass their
        seal (the sealed binding already named it); else the binding the token anchors
        (:meth:`~custody.access.seal.AccessSeal.anchored_binding`), never the binding row on
        disk, which may be the very row deleted or renamed. Its enrolment must be the one
        anchored (not an older secret put back by the disk operator). *logged*: the binding
        the home's audit log last recorded, asked only when the token anchors none (a home
        bound before the anchor existed and not checked since; a truncated log defeats it).

        Raises:
            IntegrityError: the bound principal's enrolment is not the anchored one (audited).
            HsmError: the token failed.
        """
        if self.seal is None:
            return by
        try:
            self.seal.check()
            return by
        except IntegrityError:
            pass
        anchored = self.seal.anchored_binding()
        bound = anchored.principal if anchored is not None else logged()
        if bound is None:
            return by
        row = self.store.mfa_enrolment(bound)
        uid = None if row is None else bytes(row.object_uid)
        if anchored is not None and uid != anchored.object_uid:
            reason = f"the TOTP enrolment of {bound} is not the one sealed"
            self.audit.append(
                "access seal", "access", bound, outcome="failed", details={"reason": reason}
            )
            raise IntegrityError(
                f"Cannot re-seal: {reason}",
                f"The local operator is bound to {bound}'s TOTP, and its enrolment in "
                "custody.db was replaced or deleted. Restore custody.db from a backup; "
                "nothing was sealed.",
            )
        return Principal(name=bound, kind="person", role="super-admin", mfa=True)

    def acting_as(self, name: str) -> Principal:
        """The live principal *name*, as the local PIN holder names it (``--as NAME``).

        Once the local operator is bound to a TOTP enrolment, naming a super-admin does
        not escape it: that super-admin is marked enrolled, so each super-admin action
        needs its own current code (refused outright when it has no confirmed enrolment).

        Raises:
            AuthError: unknown or revoked.
        """
        p = self.principal(name)
        if p.role == "super-admin" and not p.mfa and self.local_bound() is not None:
            p = replace(p, mfa=True)
        return p

    def require_admin(
        self, by: Principal, op: str, target: str, mfa_code: str | None, *, check: bool = True
    ) -> None:
        """Gate a super-admin action that the policy table does not cover (enrolling a
        second factor, adding or revoking a principal, re-sealing the rows): *by* must be a
        super-admin and, when enrolled (the bound local operator is), give its current
        TOTP code. A refusal is audited (``access decide``, denied, with the reason) and
        nothing changes. *check* False: skip the seal check (``access seal`` itself, which
        re-seals rows that fail it).

        Raises:
            IntegrityError: the rows fail their seal.
            AccessDenied: not a super-admin, or no code. MfaError: a wrong or reused code.
        """
        if check:
            self.check_rows()
        if by.role != "super-admin":
            self._deny_admin(by, op, target, f"{op} is a super-admin action")
            raise AccessDenied(f"{by.name} may not {op} {target}", "Only a super-admin may.")
        enrolled = by.mfa or (self._mfa is not None and self._mfa.enrolled(by.name))
        if not enrolled:
            return
        if mfa_code is None:
            self._deny_admin(by, op, target, "a super-admin action needs a TOTP code")
            raise AccessDenied(
                f"{by.name}'s current TOTP code is needed to {op} {target}",
                "Give it with --mfa-code-file or $CUSTODY_MFA_CODE.",
            )
        ok, err = self.mfa_check(by, mfa_code)
        if not ok:
            why = err.title if err is not None else "MFA unavailable"
            self._deny_admin(by, op, target, f"a super-admin action needs a TOTP code: {why}")
            if err is not None:
                raise err
            raise AccessDenied(f"{by.name} may not {op} {target}: {why}", "")

    def _deny_admin(self, by: Principal, op: str, target: str, reason: str) -> None:
        self.audit.append(
            "access decide",
            target,
            by.name,
            outcome="denied",
            details={"action": op, "role": by.role, "kind": by.kind, "reason": reason},
        )

    def add_principal(
        self,
        name: str,
        *,
        kind: str,
        role: str,
        by: str,
        services: tuple[str, ...] = (),
        envs: tuple[str, ...] = (),
        public: bytes | None = None,
        x25519: bytes | None = None,
    ) -> tuple[Principal, str | None]:
        """Add a principal; a service gets a token, returned once (never stored).

        A person must be an enrolled participant (the roster), and *public* their key.

        Returns:
            The principal, and the service's token (None for a person).

        Raises:
            UsageError: bad name, kind, role, services or environments; a person without an
                enrolled participant key; a service-admin or service-user without services.
            StorageError: the name is taken.
        """
        if not valid_name(name):
            raise UsageError(f"Invalid principal name {name[:64]!r}", "Use [A-Za-z0-9._@-].")
        if role not in ROLES:
            raise UsageError(f"Unknown role {role!r}", f"Use one of: {', '.join(ROLES)}.")
        if kind not in ("person", "service"):
            raise UsageError(f"Unknown kind {kind!r}", "Use person or service.")
        _check_services(services, "service path")
        _check_services(envs, "environment")
        if role in ("service-admin", "service-user") and not services:
            raise UsageError(
                f"A {role} needs --service", "Name the service path prefixes it works on."
            )
        if kind == "service" and role == "super-admin":
            raise UsageError(
                "A service cannot be a super-admin", "Super-admins are people with keys and MFA."
            )
        now = self.now()
        minted = None
        if kind == "person":
            if public is None:
                raise UsageError(
                    f"A person principal needs their participant key ({name}.pub.json)",
                    "Use --key NAME.pub.json of an enrolled participant.",
                )
            member = next((p for p in self.store.participants() if p.name == name), None)
            if member is None or member.public != public:
                raise UsageError(
                    f"{name} is not an enrolled participant with this key",
                    "Enrol them first ('custody ceremony enrol --add NAME.pub.json').",
                )
            if member.revoked_at is not None or not member.valid_from <= now < member.valid_until:
                raise UsageError(
                    f"{name}'s participant key is revoked or not valid now", "Enrol a new key."
                )
        else:
            minted = tokens.mint(self._rng)
        row = PrincipalRow(
            name=name,
            kind=kind,
            role=role,
            services=services,
            envs=envs,
            created=now,
            created_by=by,
            public=public,
            x25519=x25519 if kind == "person" else None,
            token_id=minted.token_id if minted else None,
            token_salt=minted.salt if minted else None,
            token_hash=minted.digest if minted else None,
            token_created=now if minted else None,
        )
        details = {"kind": kind, "role": role, "services": list(services), "envs": list(envs)}
        vouched = (name,) if kind == "person" else ()
        with (
            intended(self.audit, "principal add", name, by, details) as ref,
            self.sealed(participants=vouched),
        ):
            self.store.add_principal(row)
        self.audit.append("principal add", name, by, details={**details, **ref})
        return self._to_principal(row), (minted.token if minted else None)

    def new_token(self, name: str, *, by: str) -> str:
        """Replace *name*'s token (a service) and return the new one, once.

        Raises:
            AuthError: unknown or revoked principal.
            UsageError: a person (people authenticate with their key, not a token).
        """
        p = self.principal(name)
        if p.kind != "service":
            raise UsageError(f"{name} is a person", "People sign with their participant key.")
        minted = tokens.mint(self._rng)
        with intended(self.audit, "principal token", name, by) as ref, self.sealed():
            self.store.set_principal_token(
                name,
                token_id=minted.token_id,
                salt=minted.salt,
                digest=minted.digest,
                now=self.now(),
            )
        self.audit.append("principal token", name, by,
                          details={"token_id": minted.token_id, **ref})  # fmt: skip
        return minted.token

    def revoke(self, name: str, *, by: str, token_only: bool = False) -> bool:
        """Revoke the principal (and its token), or only its token; audited. The
        principal's grants are revoked with it, and its TOTP enrolment is removed with its
        wrapped secret (audited as ``mfa reset``, reason ``principal revoked``): a revoked
        principal keeps no second factor that a later mix-up could bring back."""
        now = self.now()
        op = "principal revoke-token" if token_only else "principal revoke"
        # the enrolment dropped with it is re-sealed in the same step
        with intended(self.audit, op, name, by) as ref, self.sealed():
            if token_only:
                done = self.store.revoke_principal_token(name, now=now)
            else:
                done = self.store.revoke_principal(name, now=now)
                for g in self.store.grants(principal=name):
                    if g.revoked_at is None:
                        self.store.revoke_grant(g.id, now=now, by=by, reason="principal revoked")
                if done:
                    self._drop_mfa(name, by)
        self.audit.append(op, name, by, outcome="ok" if done else "failed", details=ref)
        return done

    def _drop_mfa(self, name: str, by: str) -> None:
        """Remove *name*'s TOTP enrolment and shred its wrapped secret (audited first)."""
        if self.store.mfa_enrolment(name) is None:
            return
        details = {"reason": "principal revoked"}
        with (
            intended(self.audit, "mfa reset", name, by, details) as ref,
            self.store.transaction(),
        ):
            self.store.delete_mfa_enrolment(name)
        self.audit.append("mfa reset", name, by, details={**details, **ref})

    # -- authentication ---------------------------------------------------------------
    def authenticate_token(self, token: str) -> Principal:
        """The service principal holding *token*.

        Raises:
            AuthError: malformed, unknown, wrong, or revoked (each audited; the token never
                appears in the entry, only its public id when it has one).
        """
        self.check_rows()
        parsed = tokens.parse(token)
        row = self.store.principal_by_token_id(parsed[0]) if parsed else None
        why = None
        if parsed is None:
            why = "malformed token"
        elif row is None or row.token_salt is None or row.token_hash is None:
            why = "unknown token"
        elif not tokens.matches(parsed[1], row.token_salt, row.token_hash):
            why = "wrong token"
        elif row.revoked_at is not None:
            why = "revoked principal"
        elif row.token_revoked_at is not None:
            why = "revoked token"
        if why is not None or row is None:
            who = row.name if row is not None else "unknown"
            self.audit.append(
                "access authenticate",
                who,
                who,
                outcome="denied",
                details={"reason": why, "token_id": parsed[0] if parsed else None},
            )
            raise AuthError("The token was refused", "Ask a super-admin for a new token.")
        return self._to_principal(row)

    # -- decisions --------------------------------------------------------------------
    def grants_of(self, name: str) -> list[Grant]:
        return [to_grant(g) for g in self.store.grants(principal=name)]

    def _approvers(
        self, names: set[str], env: str, path: str, category: str | None, now: int
    ) -> dict[bytes, str]:
        """Key -> name of those of *names* who are live person principals whose key is their
        enrolled, valid participant key and who may ``approve`` *env*:*path* (of *category*)
        now."""
        members = [m for m in self.participants() if m.name in names]
        out: dict[bytes, str] = {}
        for name in sorted({m.name for m in members}):
            p = self.store.principal(name)
            if p is None or p.kind != "person" or p.revoked_at is not None or p.public is None:
                continue
            if not any(
                m.name == name
                and m.public == p.public
                and m.revoked_at is None
                and m.valid_from <= now < m.valid_until
                for m in members
            ):
                continue
            who = Principal(name=p.name, kind=p.kind, role=p.role, services=p.services,
                            envs=p.envs)  # fmt: skip
            if decide(who, "approve", env, path, security_class=None, grants=(), now=now,
                      mfa_ok=True, category=category).allow:  # fmt: skip
                out[p.public] = p.name
        return out

    def _record_check(
        self,
        g: GrantRow,
        now: int,
        path: str,
        category: str | None,
        security_class: str | None = None,
    ) -> str | None:
        """Why *g*'s signed record does not stand for it on *path* (None: it does). The row
        alone is store state anyone with the disk can write: a grant is honoured only when
        its record names exactly this grant and enough live approvers signed that very
        request, each of whom may approve *path* itself (a prefix grant signed by a
        service-admin never opens an encryption key under it), as many as *path*'s class
        needs (a prefix approved while all under it was low never opens a high secret put
        there later)."""
        try:
            doc = strict_loads(g.record)
            names = {
                str(a.get("approver")) for a in doc.get("approvals", []) if isinstance(a, dict)
            }
            pinned = self._approvers(names, g.env, path, category, now)
            algs = {m.public: m.alg for m in self.participants() if m.public in pinned}
            got = verify_record(doc, pinned, algs=algs, high_approvers=self._high_approvers)
        except (AttributeError, TypeError):
            return "the grant record is malformed"
        except IntegrityError as err:
            return err.title
        except ValueError:
            return "the grant record is not JSON"
        if security_class is not None:
            need = needed_for(security_class, high_approvers=self._high_approvers)
            if len(got["approvers"]) < need:
                return (
                    f"{len(got['approvers'])} approvers, and a {security_class} secret needs {need}"
                )
        window = {"not_before": g.not_before, "not_after": g.not_after}
        same = (
            got["grant"] == g.id
            and doc["request"].get("id") == g.request_id
            and doc["request"].get("kind") == "grant"
            and (got["requester"], got["env"], got["path"]) == (g.principal, g.env, g.path)
            and sorted(got["actions"]) == sorted(g.actions)
            and got["window"] == window
        )
        return None if same else "the grant row differs from its signed record"

    def _honoured(
        self,
        name: str,
        now: int,
        env: str | None = None,
        path: str | None = None,
        category: str | None = None,
        security_class: str | None = None,
    ) -> list[Grant]:
        """*name*'s grants, without any live one whose signed record does not check for
        *env*:*path* (each such refusal audited). *path* None: each grant for its own path.
        Grants that cannot allow anything there (lapsed, elsewhere) are kept unchecked, for
        the reasons they give."""
        out = []
        for row in self.store.grants(principal=name):
            g = to_grant(row)
            here = path is None or (g.env == env and g.covers(path))
            if g.live_at(now) and here:
                at = g.path if path is None else path
                why = self._record_check(row, now, at, category, security_class)
                if why is not None:
                    self.audit.append(
                        "access grant use", f"{g.env}:{g.path}", name, outcome="denied",
                        details={"grant": g.id, "reason": f"not honoured: {why}"},
                    )  # fmt: skip
                    continue
            out.append(g)
        return out

    def honoured(self, name: str) -> list[Grant]:
        """*name*'s grants as the policy may count them (:meth:`grants_of` without any live
        grant whose signed record does not check): what a front end that calls
        :func:`~custody.access.policy.decide` itself must pass it."""
        return self._honoured(name, self.now())

    def lapse(self) -> list[GrantRow]:
        """Audit every grant whose window has ended since the last look (once each)."""
        lapsed = self.store.lapse_grants(now=self.now())
        for g in lapsed:
            self.audit.append(
                "access grant expire",
                f"{g.env}:{g.path}",
                g.principal,
                details={"grant": g.id, "not_after": g.not_after},
            )
        return lapsed

    def mfa_check(
        self, principal: Principal, mfa_code: str | None
    ) -> tuple[bool, PolicyError | None]:
        """(mfa_ok, the MFA error if a code was refused). Without a code, mfa_ok holds only
        in the ``enrolled`` mode for a principal that is not enrolled."""
        if self._command_scope and principal.name in self._verified:
            return True, None  # one code per command: it is single-use
        if mfa_code is None:
            # enrolled now, in the store: not the flag of a Principal loaded earlier (a
            # long-lived caller's copy from before the enrolment was confirmed)
            enrolled = principal.mfa or (
                self._mfa is not None and self._mfa.enrolled(principal.name)
            )
            return self._mfa_mode == "enrolled" and not enrolled, None
        if self._mfa is None:
            return False, None
        try:
            self._mfa.verify(principal.name, mfa_code, now=self._clock())
        except PolicyError as err:
            return False, err
        if self._command_scope:
            self._verified.add(principal.name)
        return True, None

    def authorize(
        self,
        principal: Principal,
        action: str,
        env: str,
        path: str,
        *,
        mfa_code: str | None = None,
        now: int | datetime | None = None,
        category: str | None = None,
        security_class: str | None = None,
    ) -> Decision:
        """Decide and audit; return the allowing :class:`Decision`.

        The secret's category and class come from the store (*category* and
        *security_class* are for a secret that does not exist yet).

        Raises:
            AccessDenied: the policy denied it (audited with the reason first).
            MfaError: from the TOTP check (wrong, reused, locked out), audited as a denial.
            AuditError: the decision could not be recorded (nothing may act on it).
        """
        t = self.now() if now is None else (to_seconds(now) if isinstance(now, datetime) else now)
        self.check_rows()
        held = self.store.principal(principal.name)
        if held is not None and held.revoked_at is not None:
            self.refuse(principal, action, env, path, f"{principal.name} is revoked")
        row = self.store.secret(env, path) if path and not path.startswith("@") else None
        if row is not None:
            category, security_class = row.category, self.class_of(row)
        wants = needs_mfa(principal, action, security_class)
        mfa_ok, mfa_error = self.mfa_check(principal, mfa_code if wants else None)
        self.lapse()
        d = decide(
            principal,
            action,
            env,
            path,
            security_class=security_class,
            grants=self._honoured(principal.name, t, env, path, category, security_class),
            now=t,
            mfa_ok=mfa_ok,
            category=category,
        )
        if d.allow and action == "read" and row is not None and self.store.release_rule(env, path):
            # only for one the policy would let read: to others, a marked secret looks like
            # any other secret out of reach
            self.refuse(
                principal, action, env, path,
                "released only by quorum ('custody access request PATH --release')",
            )  # fmt: skip
        reason = d.reason if mfa_error is None or d.allow else f"{d.reason}: {mfa_error.title}"
        details: dict[str, Any] = {
            "action": action,
            "role": principal.role,
            "kind": principal.kind,
            "reason": reason,
            "class": security_class,
            "mfa": bool(mfa_ok and mfa_code is not None),
        }
        if d.grant:
            details["grant"] = d.grant
        target = f"{env}:{path}"
        self.audit.append(
            "access decide",
            target,
            principal.name,
            outcome="ok" if d.allow else "denied",
            details=details,
        )
        if not d.allow:
            if mfa_error is not None:
                raise mfa_error
            hint = (
                "Give a TOTP code (--mfa-code-file or $CUSTODY_MFA_CODE)."
                if d.needs_mfa and "TOTP" in d.reason
                else "Ask for a grant: 'custody access request PATH --env ENV --for 1h --why ...'."
            )
            raise AccessDenied(
                f"{principal.name} may not {action} {target}: {d.reason}", hint, decision=d
            )
        if d.grant:
            self.audit.append(
                "access grant use", target, principal.name, details={"grant": d.grant,
                                                                      "action": action}
            )  # fmt: skip
        return d

    def audit_view(
        self, principal: Principal, *, mfa_code: str | None = None
    ) -> Callable[[Mapping[str, Any]], bool]:
        """Which audit entries *principal* may read: the whole log (super-admin, auditor), its
        services' entries and its own (service-admin), or its own (service-user). The
        decision is audited (``access decide``, action ``audit``).

        Raises:
            AccessDenied: a super-admin enrolled in TOTP without a code.
        """
        if principal.role in ("super-admin", "auditor"):
            self.authorize(principal, "audit", "*", "", mfa_code=mfa_code)
            return lambda e: True
        services = principal.services if principal.role == "service-admin" else ()
        scope = "its services' and its own entries" if services else "its own entries"
        self.audit.append(
            "access decide",
            f"*:@{principal.name}",
            principal.name,
            details={"action": "audit", "role": principal.role, "kind": principal.kind,
                     "reason": f"{principal.role} reads {scope}", "filtered": True},
        )  # fmt: skip

        def visible(e: Mapping[str, Any]) -> bool:
            if e.get("actor") == principal.name:
                return True
            path = str(e.get("target", "")).partition(":")[2]
            return any(path == x or path.startswith(x.rstrip("/") + "/") for x in services)

        return visible

    def refuse(self, principal: Principal, action: str, env: str, path: str, reason: str) -> None:
        """Deny outright, for a rule the front end applies on top of the table (e.g. only a
        super-admin runs an emergency rotation); audited like any denial.

        Raises:
            AccessDenied: always.
        """
        self.audit.append(
            "access decide",
            f"{env}:{path}",
            principal.name,
            outcome="denied",
            details={"action": action, "role": principal.role, "kind": principal.kind,
                     "reason": reason},
        )  # fmt: skip
        raise AccessDenied(f"{principal.name} may not {action} {env}:{path}: {reason}", "")

    def visible(
        self,
        principal: Principal,
        action: str,
        rows: list[Any],
        *,
        scope: str,
        mfa_code: str | None = None,
    ) -> list[Any]:
        """The secret rows (``env``, ``path``, ``category``, ``security_class``) *principal*
        may *action* (``list``, ``metadata``), decided row by row, audited as one entry."""
        t = self.now()
        self.check_rows()
        self.lapse()
        grants = self._honoured(principal.name, t)
        mfa_ok, _err = self.mfa_check(principal, mfa_code)
        out = [
            r
            for r in rows
            if decide(principal, action, r.env, r.path, security_class=self.class_of(r),
                      grants=grants, now=t, mfa_ok=mfa_ok, category=r.category).allow
        ]  # fmt: skip
        self.audit.append(
            "access decide",
            scope,
            principal.name,
            details={"action": action, "role": principal.role, "kind": principal.kind,
                     "reason": f"{len(out)} of {len(rows)} visible", "filtered": True},
        )  # fmt: skip
        return out


__all__ = ["MFA_MODES", "AccessControl", "AccessDenied", "AuthError", "MfaVerifier", "to_grant"]
