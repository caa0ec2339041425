"""Time-limited grants: request, signed approvals, activation, expiry and revocation.

A principal requests read-only access to a path in one environment for a duration, with a
justification (:meth:`GrantFlow.request`). The window is fixed at request time
(``not_before`` = now, ``not_after`` = now + duration), so approvers sign exactly what will be
granted. Each approver is a person principal (never the requester) allowed to ``approve`` on
that path; they sign the request's digest with their participant key
(:func:`custody.access.records.approval_input`). Once enough distinct approvers have signed
(high class: ``high_approvers``, default 2; medium and low: 1), the grant is active and its
signed record (:func:`custody.access.records.build_record`) is kept with it. Each step is in
the audit log: ``access request``, ``access approve``, ``access grant``, ``access grant
revoke`` (and, through :class:`~custody.access.control.AccessControl`, ``access grant use``
and ``access grant expire``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from custody.access.auditing import intended
from custody.access.control import AccessControl, AccessDenied, AuthError
from custody.access.records import (
    approval_input,
    body_digest,
    build_record,
    needed_for,
    request_body,
)
from custody.access.roles import GRANTABLE, Principal
from custody.access.settings import AccessSettings
from custody.audit.signers import ALGORITHMS, ED25519, verify_signature
from custody.canonical import canonical_bytes
from custody.errors import PolicyError, UsageError
from custody.secrets.categories import check_path
from custody.store.rows import AccessApprovalRow, AccessRequestRow, GrantRow

_CLASS_RANK = {"low": 0, "medium": 1, "high": 2}


class ApproverKey(Protocol):
    """A participant's signing key (:class:`custody.audit.signers.Signer`)."""

    @property
    def public(self) -> bytes: ...

    @property
    def alg(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


class GrantFlow:
    """Requests, approvals and grants of one deployment.

    Args:
        ac: access control (its store, audit log, clock and RNG).
        deployment: the deployment id (bound into every request's digest).
        settings: approvers needed, the longest grant.
    """

    def __init__(
        self, ac: AccessControl, deployment: str, settings: AccessSettings | None = None
    ) -> None:
        self.ac = ac
        self.store = ac.store
        self.deployment = deployment
        self.settings = settings or AccessSettings()
        self._rng: Callable[[int], bytes] = ac._rng

    def _class_of(self, env: str, path: str) -> str:
        """The secret's class; for a prefix, the highest class under it (high if none)."""
        if path.endswith("/"):
            rows = self.store.secrets(env, path)
            if not rows:
                return "high"
            return max((self.ac.class_of(r) for r in rows), key=lambda c: _CLASS_RANK.get(c, 2))
        row = self.store.secret(env, path)
        if row is None:
            raise UsageError(f"No secret {env}:{path}", "Check the environment and path.")
        return self.ac.class_of(row)

    def request(
        self,
        principal: Principal,
        env: str,
        path: str,
        *,
        seconds: int,
        why: str,
        actions: tuple[str, ...] = ("read",),
        kind: str = "grant",
        needed: int | None = None,
    ) -> AccessRequestRow:
        """Record a request (audited). Returns it, with its digest and approvers needed.

        Raises:
            UsageError: bad path, actions, duration or justification; no such secret.
            AccessDenied: the requester's role cannot hold a grant (an auditor), or it is
                bound to other environments.
        """
        check_path(path.rstrip("/"))
        why = why.strip()
        if not why or len(why) > 500:
            raise UsageError("Say why in --why (1 to 500 characters)", "It is recorded.")
        bad = sorted(set(actions) - set(GRANTABLE))
        if bad or not actions:
            raise UsageError(
                f"A grant gives only {', '.join(GRANTABLE)}, not {', '.join(bad) or 'nothing'}",
                "Ask a service-admin or super-admin for other changes.",
            )
        if not 60 <= seconds <= self.settings.max_grant_seconds:
            raise UsageError(
                f"A grant lasts 1 minute to {self.settings.max_grant_seconds // 3600} hours",
                "Use a shorter --for ([access] max_grant_seconds).",
            )
        holders: tuple[str, ...] = ("service-admin", "service-user")
        if kind == "release":
            rule = self.store.release_rule(env, path)
            if rule is None:
                raise UsageError(
                    f"{env}:{path} is not marked for quorum release",
                    "Ask for a grant instead (without --release).",
                )
            needed, actions, holders = rule[1], ("read",), ("super-admin", *holders)
        if principal.role not in holders:
            self.ac.audit.append(
                "access request", f"{env}:{path}", principal.name, outcome="denied",
                details={"reason": f"a {principal.role} does not hold grants"},
            )  # fmt: skip
            raise AccessDenied(
                f"A {principal.role} does not hold grants",
                "Grants are for service-admins and service-users.",
            )
        if principal.envs and env not in principal.envs:
            raise AccessDenied(f"{principal.name} may act only in {', '.join(principal.envs)}")
        cls = self._class_of(env, path)
        now = self.ac.now()
        row = AccessRequestRow(
            id="req-" + self._rng(8).hex(),
            kind=kind,
            requester=principal.name,
            env=env,
            path=path,
            actions=tuple(sorted(set(actions))),
            not_before=now,
            not_after=now + seconds,
            nonce=self._rng(16).hex(),
            reason=why,
            security_class=cls,
            needed=needed or needed_for(cls, high_approvers=self.settings.high_approvers),
            digest="",
            state="pending",
            created=now,
            updated=now,
        )
        digest = body_digest(request_body(row, self.deployment))
        row = replace(row, digest=digest)
        details = {"request": row.id, "kind": kind, "actions": list(row.actions),
                   "not_after": row.not_after, "class": cls, "needed": row.needed,
                   "digest": digest, "why": why}  # fmt: skip
        target = f"{env}:{path}"
        with intended(self.ac.audit, "access request", target, principal.name, details) as ref:
            self.store.add_access_request(row)
        self.ac.audit.append("access request", target, principal.name,
                             details={**details, **ref})  # fmt: skip
        return row

    def get(self, request_id: str) -> AccessRequestRow:
        r = self.store.access_request(request_id)
        if r is None:
            raise UsageError(f"No request {request_id[:40]!r}", "See 'custody access requests'.")
        return r

    def expire_requests(self) -> list[AccessRequestRow]:
        """Mark pending (or approved, undelivered) requests whose window has passed as
        ``expired``, each audited once (``access request expire``)."""
        now = self.ac.now()
        out = []
        for r in self.store.access_requests():
            if r.state in ("pending", "approved") and now >= r.not_after:
                self.store.set_access_request_state(r.id, "expired", now=now)
                self.ac.audit.append("access request expire", f"{r.env}:{r.path}",
                                     r.requester, details={"request": r.id})  # fmt: skip
                out.append(r)
        return out

    def approver_of(self, key: ApproverKey) -> Principal:
        """The live person principal whose participant key *key* is.

        Raises:
            AuthError: no principal has this key, or its participant key was revoked.
        """
        now = self.ac.now()
        row = next(
            (p for p in self.store.principals() if p.public == key.public and p.kind == "person"),
            None,
        )
        if row is None or row.revoked_at is not None:
            raise AuthError(
                "This key is not a live person principal's",
                "Add the approver with 'custody principal add NAME --key NAME.pub.json'.",
            )
        member = next((m for m in self.ac.participants() if m.name == row.name), None)
        if member is None or member.public != key.public or member.revoked_at is not None:
            raise AuthError(f"{row.name}'s participant key is not enrolled", "Enrol it again.")
        if member.alg not in ALGORITHMS or key.alg != member.alg:
            raise AuthError(
                f"{row.name}'s participant key is enrolled as {member.alg}, this key signs "
                f"{key.alg[:20]}",
                "Approve with the enrolled participant key (Ed25519 or ECDSA P-256).",
            )
        if not member.valid_from <= now < member.valid_until:
            raise AuthError(f"{row.name}'s participant key is not valid now", "Enrol a new key.")
        return self.ac.principal(row.name)

    def valid_approvals(self, r: AccessRequestRow) -> list[AccessApprovalRow]:
        """The request's approvals that verify under their principal's current key, one per
        approver, never the requester's."""
        out, seen = [], set()
        algs = self.approver_algs()
        for a in self.store.access_approvals(r.id):
            p = self.store.principal(a.approver)
            if p is None or p.revoked_at is not None or p.public != a.public:
                continue
            if a.approver == r.requester or a.approver in seen:
                continue
            alg = algs.get(a.public, ED25519)
            if verify_signature(
                alg, a.public, a.sig, approval_input(r.digest, a.approver, a.approved_at)
            ):
                out.append(a)
                seen.add(a.approver)
        return out

    def approver_algs(self) -> dict[bytes, str]:
        """Public key -> algorithm of the trusted roster's keys that are not Ed25519 (an
        approval verifies under its approver's enrolled algorithm only)."""
        return {m.public: m.alg for m in self.ac.participants() if m.alg != ED25519}

    def needed(self, r: AccessRequestRow) -> int:
        """Approvers *r* needs: what it says, but never fewer than its class needs under this
        deployment's settings, or a release rule's quorum (the row's ``needed`` and its
        digest are store state: lowering both before anyone signs must not lower the bar)."""
        try:
            now_cls = self._class_of(r.env, r.path)
        except UsageError:
            now_cls = r.security_class
        cls = max(r.security_class, now_cls, key=lambda c: _CLASS_RANK.get(c, 2))
        n = max(r.needed, needed_for(cls, high_approvers=self.settings.high_approvers))
        if r.kind == "release":
            rule = self.store.release_rule(r.env, r.path)
            n = max(n, rule[1] if rule is not None else n)
        return n

    def _refuse(self, r: AccessRequestRow, who: str, title: str, hint: str) -> PolicyError:
        self.ac.audit.append(
            "access approve", f"{r.env}:{r.path}", who, outcome="denied",
            details={"request": r.id, "reason": title},
        )  # fmt: skip
        return PolicyError(title, hint)

    def approve(
        self, request_id: str, key: ApproverKey, *, mfa_code: str | None = None
    ) -> dict[str, Any]:
        """Sign *request_id* with *key*; activate the grant once enough have signed.

        Returns:
            ``{"request", "approver", "approvals", "needed", "grant", "record"}``;
            ``grant`` and ``record`` are None until the grant is active.

        Raises:
            AuthError: the key is not a live, enrolled person principal's.
            PolicyError: the requester approving their own request; the request is not
                pending or its window has passed; this approver already approved.
            AccessDenied: the approver may not approve on this path (audited).
            IntegrityError: access-control rows fail their seal (with the token).
        """
        self.ac.check_rows()  # the approver's principal row and the release rule are sealed
        r = self.get(request_id)
        approver = self.approver_of(key)
        now = self.ac.now()
        if approver.name == r.requester:
            raise self._refuse(
                r, approver.name, "The requester cannot approve their own request",
                "Another approver must sign it.",
            )  # fmt: skip
        if r.state != "pending":
            raise self._refuse(r, approver.name, f"Request {r.id} is {r.state}", "Nothing to do.")
        if now >= r.not_after:
            self.store.set_access_request_state(r.id, "expired", now=now)
            raise self._refuse(r, approver.name, f"Request {r.id} has expired", "Ask again.")
        if body_digest(request_body(r, self.deployment)) != r.digest:
            raise self._refuse(
                r, approver.name, f"Request {r.id} was altered in the store",
                "Do not approve it; investigate who changed it.",
            )  # fmt: skip
        self.ac.authorize(approver, "approve", r.env, r.path, mfa_code=mfa_code)
        sig = key.sign(approval_input(r.digest, approver.name, now))
        if not verify_signature(key.alg, key.public, sig, approval_input(r.digest,
                                approver.name, now)):  # fmt: skip
            raise self._refuse(r, approver.name, "The approval signature does not verify", "")
        target = f"{r.env}:{r.path}"
        det = {"request": r.id, "digest": r.digest}
        with (
            intended(self.ac.audit, "access approve", target, approver.name, det) as ref,
            self.store.transaction(),
        ):
            if not self.store.add_access_approval(
                AccessApprovalRow(
                    request_id=r.id,
                    approver=approver.name,
                    public=key.public,
                    sig=sig,
                    approved_at=now,
                )
            ):
                raise PolicyError(f"{approver.name} already approved {r.id}", "Nothing to do.")
            good = self.valid_approvals(r)
            grant = None
            record = None
            needed = self.needed(r)
            if len(good) >= needed and r.kind == "grant":
                gid = "grant-" + self._rng(8).hex()
                doc = build_record(
                    r, self.deployment, good, grant_id=gid, algs=self.approver_algs()
                )
                record = canonical_bytes(doc).decode()
                grant = GrantRow(
                    id=gid,
                    request_id=r.id,
                    principal=r.requester,
                    env=r.env,
                    path=r.path,
                    actions=r.actions,
                    not_before=r.not_before,
                    not_after=r.not_after,
                    created=now,
                    record=record,
                )
                self.store.add_grant(grant)
                self.store.set_access_request_state(r.id, "granted", now=now)
            elif len(good) >= needed:
                self.store.set_access_request_state(r.id, "approved", now=now)
        approved = {**det, "approvals": len(good), "needed": needed, **ref}
        self.ac.audit.append("access approve", target, approver.name, details=approved)
        if grant is not None:
            self.ac.audit.append(
                "access grant", target, r.requester,
                details={"grant": grant.id, "request": r.id, "actions": list(r.actions),
                         "not_after": r.not_after, "approvers": [a.approver for a in good]},
            )  # fmt: skip
        return {
            "request": r.id,
            "approver": approver.name,
            "approvals": len(good),
            "needed": needed,
            "grant": grant.id if grant else None,
            "record": record,
        }

    def revoke(
        self, grant_id: str, by: Principal, *, reason: str, mfa_code: str | None = None
    ) -> GrantRow:
        """Revoke a grant early (audited); *by* needs ``grant`` on its path.

        Raises:
            UsageError: no such grant, or already revoked.
            AccessDenied: *by* may not manage grants there.
        """
        g = self.store.grant(grant_id)
        if g is None:
            raise UsageError(f"No grant {grant_id[:40]!r}", "See 'custody access grants'.")
        if by.name != g.principal:  # giving up one's own grant needs no permission
            self.ac.authorize(by, "grant", g.env, g.path, mfa_code=mfa_code)
        target = f"{g.env}:{g.path}"
        det = {"grant": g.id, "reason": reason[:200]}
        with intended(self.ac.audit, "access grant revoke", target, by.name, det) as ref:
            with self.ac.sealed():
                done = self.store.revoke_grant(g.id, now=self.ac.now(), by=by.name,
                                               reason=reason)  # fmt: skip
            if not done:
                raise UsageError(f"Grant {g.id} is already revoked", "Nothing was changed.")
        self.ac.audit.append("access grant revoke", target, by.name,
                             details={"grant": g.id, "principal": g.principal, **ref})  # fmt: skip
        return g

    def revoke_all_on(self, env: str, path: str, *, by: str, reason: str) -> list[GrantRow]:
        """Revoke every grant on (env, path) at once (an emergency rotation), audited."""
        target = f"{env}:{path}"
        det = {"all": True, "reason": reason[:200]}
        with (
            intended(self.ac.audit, "access grant revoke", target, by, det) as ref,
            self.ac.sealed(),
        ):
            hit = self.store.revoke_grants_on(env, path, now=self.ac.now(), by=by, reason=reason)
        for g in hit:
            self.ac.audit.append("access grant revoke", target, by,
                                 details={"grant": g.id, "principal": g.principal,
                                          "reason": reason[:200], **ref})  # fmt: skip
        if not hit:  # the intent's outcome, when there was nothing to revoke
            self.ac.audit.append("access grant revoke", target, by,
                                 details={"all": True, "revoked": 0, **ref})  # fmt: skip
        return hit


__all__ = ["ApproverKey", "GrantFlow"]
