"""Emergency response for one secret (issue 16 item 8, docs/access.md).

When a secret is rotated in an emergency, every grant on it is revoked at once (before the
new value exists, so nobody holding a grant reads during the rotation), and an incident
record says who held access (by a grant, live or past, and by role) and who read it, from
the audit log: the principals of ``access decide`` entries that allowed a ``read`` of it and
of quorum releases, and the OS users who ran ``secret get`` on it. The front end delivers
the record through the alert hook to the secret's owner and consumers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from custody.access.flow import GrantFlow
from custody.access.policy import decide
from custody.access.roles import Principal
from custody.store.rows import GrantRow

INCIDENT_TYPE = "custody/secret-incident/v1"


def revoke_grants(flow: GrantFlow, env: str, path: str, *, by: str, reason: str) -> list[GrantRow]:
    """Revoke every unrevoked grant on (env, path), audited one by one."""
    return flow.revoke_all_on(env, path, by=by, reason=f"emergency rotation: {reason}"[:200])


def readers_of(entries: Iterable[Mapping[str, Any]], env: str, path: str) -> dict[str, list[str]]:
    """Who the audit log shows reading (env, path): ``principals`` (allowed ``read``
    decisions and delivered quorum releases) and ``operators`` (the OS users who ran a
    ``secret get`` that succeeded, which also covers reads from before access control)."""
    target = f"{env}:{path}"
    principals: set[str] = set()
    operators: set[str] = set()
    for e in entries:
        if e.get("target") != target or e.get("outcome") != "ok":
            continue
        op, det = e.get("op"), e.get("details") or {}
        if (op == "access decide" and det.get("action") == "read") or op == "access release":
            principals.add(str(e.get("actor")))
        elif op == "secret get":
            operators.add(str(e.get("actor")))
    return {"principals": sorted(principals), "operators": sorted(operators)}


def incident(
    flow: GrantFlow,
    env: str,
    path: str,
    *,
    by: str,
    reason: str,
    revoked: list[GrantRow],
    entries: Iterable[Mapping[str, Any]],
    bundle: str = "",
) -> dict[str, Any]:
    """The incident record (no value in it), audited as ``access incident``.

    Args:
        flow: the grant flow (store, audit log, clock).
        env, path: the secret.
        by: who ran the emergency rotation.
        reason: why.
        revoked: the grants :func:`revoke_grants` revoked.
        entries: the audit log's entries (parsed).
        bundle: the rotation's signed record, if any.
    """
    store = flow.store
    row = store.secret(env, path)
    now = flow.ac.now()
    covering = [
        g
        for g in store.grants(env=env)
        if g.path == path or (g.path.endswith("/") and path.startswith(g.path))
    ]
    by_role = []
    for p in store.principals():
        if p.revoked_at is not None:
            continue
        pr = Principal(name=p.name, kind=p.kind, role=p.role, services=p.services, envs=p.envs)
        d = decide(pr, "read", env, path, grants=(), now=now, mfa_ok=True,
                   security_class=row.security_class if row else None,
                   category=row.category if row else None)  # fmt: skip
        if d.allow:
            by_role.append(p.name)
    readers = readers_of(entries, env, path)
    record: dict[str, Any] = {
        "type": INCIDENT_TYPE,
        "env": env,
        "path": path,
        "owner": row.owner if row else None,
        "class": row.security_class if row else None,
        "reason": reason[:500],
        "by": by,
        "at": now,
        "bundle": bundle,
        "revoked_grants": [{"grant": g.id, "principal": g.principal} for g in revoked],
        "held_access": {
            "by_grant": sorted({g.principal for g in covering}),
            "by_role": sorted(by_role),
        },
        "readers": readers["principals"],
        "operators": readers["operators"],
    }
    flow.ac.audit.append(
        "access incident", f"{env}:{path}", by,
        details={"revoked_grants": len(revoked), "readers": len(record["readers"]),
                 "held_by_grant": len(record["held_access"]["by_grant"]), "bundle": bundle},
    )  # fmt: skip
    return record


__all__ = ["INCIDENT_TYPE", "incident", "readers_of", "revoke_grants"]
