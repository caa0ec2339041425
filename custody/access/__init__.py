"""Access control (issue 16, docs/access.md): principals and roles, the pure policy engine,
time-limited grants approved by signatures bound to the request's digest, and quorum release.

Front ends and the API ask :class:`AccessControl`; they never decide themselves.
"""

from __future__ import annotations

from custody.access.control import AccessControl, AccessDenied, AuthError
from custody.access.policy import RULES, decide
from custody.access.roles import ACTIONS, ROLES, Decision, Grant, Principal

__all__ = [
    "ACTIONS",
    "ROLES",
    "RULES",
    "AccessControl",
    "AccessDenied",
    "AuthError",
    "Decision",
    "Grant",
    "Principal",
    "decide",
]
