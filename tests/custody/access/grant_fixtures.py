"""Real signed grants for tests that need a live grant without running the whole request
flow: a request row, approvals signed by enrolled super-admins' participant keys, and the
grant with its record, as :class:`custody.access.flow.GrantFlow` would leave them (access
control honours a grant only when its signed record checks)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from custody.access.records import approval_input, body_digest, build_record, request_body
from custody.audit.signers import Ed25519Signer
from custody.canonical import canonical_bytes
from custody.store.port import Store
from custody.store.rows import (
    AccessApprovalRow,
    AccessRequestRow,
    GrantRow,
    ParticipantRow,
    PrincipalRow,
)

APPROVERS = tuple(Ed25519Signer.from_seed(n, n.encode().ljust(32, b"#")) for n in ("sa1", "sa2"))


def add_approvers(store: Store, now: int) -> None:
    """Two super-admin person principals, enrolled participants, to sign grants."""
    for k in APPROVERS:
        store.add_participant(ParticipantRow(name=k.name, role="custodian", public=k.public,
                              fingerprint=k.name * 4, valid_from=now - 10**6,
                              valid_until=now + 10**8, revoked_at=None,
                              enrolled_by="root"))  # fmt: skip
        store.add_principal(PrincipalRow(name=k.name, kind="person", role="super-admin",
                            services=(), envs=(), created=now, created_by="root",
                            public=k.public))  # fmt: skip


def signed_grant(
    gid: str,
    principal: str,
    env: str,
    path: str,
    *,
    actions: tuple[str, ...],
    not_before: int,
    not_after: int,
    security_class: str = "high",
    deployment: str = "dep-test",
) -> tuple[AccessRequestRow, list[AccessApprovalRow], GrantRow]:
    """A grant *gid* for *principal* signed by both :data:`APPROVERS`."""
    r = AccessRequestRow(id="req-" + gid, kind="grant", requester=principal, env=env, path=path,
                         actions=tuple(sorted(actions)), not_before=not_before,
                         not_after=not_after, nonce=hashlib.sha256(gid.encode()).hexdigest()[:32],
                         reason="test",
                         security_class=security_class, needed=len(APPROVERS), digest="",
                         state="granted", created=not_before, updated=not_before)  # fmt: skip
    r = replace(r, digest=body_digest(request_body(r, deployment)))
    approvals = [AccessApprovalRow(request_id=r.id, approver=k.name, public=k.public,
                                   sig=k.sign(approval_input(r.digest, k.name, not_before)),
                                   approved_at=not_before) for k in APPROVERS]  # fmt: skip
    record = canonical_bytes(build_record(r, deployment, approvals, grant_id=gid)).decode()
    g = GrantRow(id=gid, request_id=r.id, principal=principal, env=env, path=path,
                 actions=r.actions, not_before=not_before, not_after=not_after,
                 created=not_before, record=record)  # fmt: skip
    return r, approvals, g


def add_signed_grant(store: Store, gid: str, principal: str, env: str, path: str, **kw) -> GrantRow:
    """:func:`signed_grant`, written to *store* (request, approvals, grant)."""
    r, approvals, g = signed_grant(gid, principal, env, path, **kw)
    with store.transaction():
        store.add_access_request(r)
        for a in approvals:
            store.add_access_approval(a)
        store.add_grant(g)
    return g
