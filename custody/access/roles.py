"""Roles, actions and the value types of access control (docs/access.md).

A :class:`Principal` is who asks: a *person* (bound to an enrolled participant's Ed25519
signing key, so their approvals verify offline) or a *service* (an API token of 256 bits,
stored only as a salted hash). A :class:`Grant` is a time-limited, approved permission on one
path (or a path prefix ending in ``/``) in one environment. A :class:`Decision` is what
:func:`custody.access.policy.decide` answers. The names here are binding: the server, MFA and
monitoring code against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES: tuple[str, ...] = ("super-admin", "service-admin", "service-user", "auditor")
ACTIONS: tuple[str, ...] = (
    "read",
    "write",
    "list",
    "metadata",
    "rotate",
    "delete",
    "destroy",
    "audit",
    "keys",
    "recover",
    "approve",
    "grant",
)
KINDS: tuple[str, ...] = ("person", "service")
GRANTABLE: tuple[str, ...] = ("read", "metadata", "list")
"""What a grant may give: read-only access (never write, rotate, delete or approve)."""

ENCRYPTION_KEY_CATEGORIES: frozenset[str] = frozenset(
    {"data-encryption-key", "transport-key", "backup-key", "signing-key"}
)
"""Categories a service-admin never touches (the policy: "no access to encryption keys")."""

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")


def valid_name(name: str) -> bool:
    """A principal name: 1-64 of ``[A-Za-z0-9._@-]``, starting with a letter or digit."""
    return bool(name) and len(name) <= 64 and set(name) <= _NAME_CHARS and name[0].isalnum()


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who acts. ``services``: the service path prefixes it owns (service-admin) or belongs to
    (service-user), e.g. ``("payments",)`` covers ``payments/...``. ``envs``: the environments
    it may act in at all (empty: every one). ``mfa``: enrolled in TOTP."""

    name: str
    kind: str
    role: str
    services: tuple[str, ...] = ()
    mfa: bool = False
    envs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise ValueError(f"invalid principal name {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """A live or past grant: ``principal`` may do ``actions`` on ``path`` (a prefix when it
    ends in ``/``) in ``env`` from ``not_before`` until ``not_after`` (Unix seconds), unless
    ``revoked_at``."""

    id: str
    principal: str
    env: str
    path: str
    actions: tuple[str, ...]
    not_before: int
    not_after: int
    revoked_at: int | None = None
    request_id: str = ""

    def covers(self, path: str) -> bool:
        if self.path.endswith("/"):
            return path.startswith(self.path)
        return path == self.path

    def live_at(self, now: int) -> bool:
        if self.revoked_at is not None and now >= self.revoked_at:
            return False
        return self.not_before <= now < self.not_after


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The policy's answer. ``reason`` says why in words (recorded in the audit log);
    ``needs_mfa``: the action needs a TOTP code as well as the credential; ``grant``: the id
    of the grant that allowed it, if one did."""

    allow: bool
    reason: str
    needs_mfa: bool = False
    grant: str | None = field(default=None)


__all__ = [
    "ACTIONS",
    "ENCRYPTION_KEY_CATEGORIES",
    "GRANTABLE",
    "KINDS",
    "ROLES",
    "Decision",
    "Grant",
    "Principal",
    "valid_name",
]
