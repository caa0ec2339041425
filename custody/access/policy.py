"""The policy engine: (principal, action, environment, path, time) -> allow or deny, and why.

Pure and table-driven: :data:`RULES` gives each role, for each action, a *scope*:

- ``any``: everywhere;
- ``own``: paths under one of the principal's services (``payments`` covers ``payments`` and
  ``payments/...``); for ``audit``, the audit scope of one of those services (or ``@NAME``,
  the principal's own entries);
- ``self``: only ``audit`` of the principal's own entries (scope ``@NAME``);
- ``grant``: only what a live grant for exactly this environment and path gives;
- ``never``.

On top of the table: a service-admin never touches an encryption-key category (even with a
grant); a principal restricted to some environments acts in no other; a grant gives only
read-only actions (:data:`~custody.access.roles.GRANTABLE`) in its own environment, so a
grant in ``dev`` never reaches ``prod``; super-admin actions, recovery and reads of
high-class secrets need a TOTP code (``needs_mfa``), and without ``mfa_ok`` they are denied.

:func:`decide` takes the time and the grants as parameters and does no I/O; the audit of its
answer is :class:`custody.access.control.AccessControl`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from custody.access.roles import (
    ACTIONS,
    ENCRYPTION_KEY_CATEGORIES,
    GRANTABLE,
    ROLES,
    Decision,
    Grant,
    Principal,
)

_ALL = dict.fromkeys(ACTIONS, "any")
RULES: Mapping[str, Mapping[str, str]] = {
    "super-admin": _ALL,
    "service-admin": {
        "read": "own",
        "write": "own",
        "list": "own",
        "metadata": "own",
        "rotate": "own",  # routine rotation only: emergency rotation is super-admin's
        "delete": "own",  # soft delete (recoverable); crypto-shredding is not theirs
        "destroy": "never",
        "audit": "own",
        "keys": "never",
        "recover": "never",
        "approve": "own",
        "grant": "own",
    },
    "service-user": {
        "read": "grant",
        "write": "never",
        "list": "grant",
        "metadata": "grant",
        "rotate": "never",
        "delete": "never",
        "destroy": "never",
        "audit": "self",
        "keys": "never",
        "recover": "never",
        "approve": "never",
        "grant": "never",
    },
    "auditor": {
        "read": "never",
        "write": "never",
        "list": "any",
        "metadata": "any",
        "rotate": "never",
        "delete": "never",
        "destroy": "never",
        "audit": "any",
        "keys": "never",
        "recover": "never",
        "approve": "never",
        "grant": "never",
    },
}
"""Role x action -> scope. Every role names every action (checked at import)."""

GRANT_ROLES = frozenset({"service-admin", "service-user"})
"""Roles a grant can extend (an auditor never gets a value, whatever was approved)."""

if set(RULES) != set(ROLES) or any(set(r) != set(ACTIONS) for r in RULES.values()):
    raise RuntimeError("RULES must give every role a scope for every action")


def _under(path: str, service: str) -> bool:
    return bool(service) and (path == service or path.startswith(service.rstrip("/") + "/"))


def _own(p: Principal, action: str, path: str) -> bool:
    if action == "audit" and path == f"@{p.name}":
        return True
    return any(_under(path, s) for s in p.services)


def needs_mfa(p: Principal, action: str, security_class: str | None) -> bool:
    """Super-admin actions, recovery, and reads of high-class secrets."""
    return (
        p.role == "super-admin"
        or action == "recover"
        or (action == "read" and security_class == "high")
    )


def _by_grant(
    p: Principal,
    action: str,
    env: str,
    path: str,
    grants: Iterable[Grant],
    now: int,
    category: str | None,
) -> tuple[Grant | None, str]:
    """The live grant that allows *action*, or None and the reason none does. An
    encryption key is reached only by a grant on its exact path, never by a prefix (a key
    added under the prefix later would otherwise come with it)."""
    mine = [g for g in grants if g.principal == p.name and g.covers(path)]
    if category in ENCRYPTION_KEY_CATEGORIES:
        if any(g.path.endswith("/") for g in mine) and not any(g.path == path for g in mine):
            return None, f"a prefix grant never covers an encryption key ({category})"
        mine = [g for g in mine if g.path == path]
    for g in mine:
        if g.env == env and action in g.actions and g.live_at(now):
            return g, f"grant {g.id} allows {action} until {g.not_after}"
    here = [g for g in mine if g.env == env and action in g.actions]
    if any(g.revoked_at is not None and now >= g.revoked_at for g in here):
        return None, f"the grant on {env}:{path} was revoked"
    if any(now >= g.not_after for g in here):
        return None, f"the grant on {env}:{path} has expired"
    if any(now < g.not_before for g in here):
        return None, f"the grant on {env}:{path} is not valid yet"
    other = sorted({g.env for g in mine if g.env != env})
    if other:
        return None, f"the grant is for {', '.join(other)}, not {env}"
    if any(g.env == env for g in mine):
        return None, f"the grant does not give {action}"
    return None, f"no live grant gives {p.name} {action} on {env}:{path}"


def decide(
    principal: Principal,
    action: str,
    env: str,
    path: str,
    *,
    security_class: str | None,
    grants: Iterable[Grant],
    now: int,
    mfa_ok: bool,
    category: str | None = None,
) -> Decision:
    """Decide whether *principal* may do *action* on *env*:*path* at *now*.

    Args:
        principal: who asks.
        action: one of :data:`~custody.access.roles.ACTIONS`.
        env: the environment.
        path: the secret path (or path prefix; for ``audit``: ``""`` for the whole log, a
            service prefix, or ``@NAME`` for one principal's entries).
        security_class: the secret's class (``high``, ``medium``, ``low``), None when the
            action is not on one secret.
        grants: grants to consider (others' and lapsed ones are ignored, with a reason).
        now: Unix seconds.
        mfa_ok: a TOTP code was verified for this request (or none is required of this
            principal by the deployment's MFA mode).
        category: the secret's category, when the action is on one secret.

    Returns:
        The :class:`Decision`; ``reason`` is fit for the audit log (no value in it).

    Raises:
        ValueError: *action* is not one of the actions (a caller's bug).
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    p = principal
    mfa = needs_mfa(p, action, security_class)
    if p.envs and env not in p.envs:
        return Decision(
            allow=False, reason=f"{p.name} may act only in {', '.join(p.envs)}", needs_mfa=mfa
        )
    scope = RULES[p.role][action]
    allow, grant_id = False, None
    if scope == "any":
        allow, reason = True, f"{p.role} may {action} anywhere"
    elif scope == "own" and _own(p, action, path):
        allow, reason = True, f"{p.role} may {action} within its services"
    elif scope == "self" and path == f"@{p.name}":
        allow, reason = True, f"{p.role} may {action} its own entries"
    elif action in GRANTABLE and p.role in GRANT_ROLES:
        g, reason = _by_grant(p, action, env, path, grants, now, category)
        if g is not None:
            allow, grant_id = True, g.id
        elif scope == "own":
            reason = f"{env}:{path} is outside {p.name}'s services and {reason}"
    elif scope == "never":
        reason = f"{p.role} may never {action}"
    else:
        reason = f"{path or 'this'} is outside {p.name}'s services"
    if allow and p.role == "service-admin" and category in ENCRYPTION_KEY_CATEGORIES:
        # only once the path is within reach: a denial outside it never tells what is there
        return Decision(
            allow=False,
            reason=f"service-admins have no access to encryption keys ({category})",
            needs_mfa=mfa,
        )
    if allow and mfa and not mfa_ok:
        return Decision(allow=False, reason=f"{action} needs a TOTP code as well", needs_mfa=True)
    return Decision(allow=allow, reason=reason, needs_mfa=mfa, grant=grant_id)


__all__ = ["GRANT_ROLES", "RULES", "decide", "needs_mfa"]
