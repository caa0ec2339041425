"""The grant flow of an opened deployment, shared by the front ends (CLI and TUI).

Access control itself is opened by :func:`custody.access.local.local_access`;
:func:`grant_flow` builds the deployment's
:class:`~custody.access.flow.GrantFlow` with the home's ``[access]`` settings. The JSON
forms of requests and grants (:func:`request_doc`, :func:`grant_doc`) and where a new grant's
signed record is written (:func:`save_record`, ``HOME/grants/GRANT.json``) live here too, so
``custody access`` and the TUI's access screen say and do the same things.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from custody.access.control import AccessControl
from custody.access.flow import GrantFlow
from custody.access.settings import AccessSettings
from custody.privatefile import write_private
from custody.store.rows import AccessRequestRow, GrantRow

if TYPE_CHECKING:
    from custody.config import Home
    from custody.deployment import Deployment


def grant_flow(dep: Deployment, ac: AccessControl) -> GrantFlow:
    """The deployment's grant flow, with the home's ``[access]`` settings."""
    return GrantFlow(ac, dep.config.deployment_id, AccessSettings.for_home(dep.home.config_path))


def grant_state(g: GrantRow, now: int) -> str:
    """``revoked``, ``live`` (before its window ends) or ``lapsed``."""
    if g.revoked_at is not None:
        return "revoked"
    return "live" if now < g.not_after else "lapsed"


def request_doc(r: AccessRequestRow) -> dict[str, Any]:
    """A request as ``custody access requests --json`` prints it (no nonce, no signature)."""
    return {
        "id": r.id,
        "kind": r.kind,
        "requester": r.requester,
        "env": r.env,
        "path": r.path,
        "actions": list(r.actions),
        "not_before": r.not_before,
        "not_after": r.not_after,
        "reason": r.reason,
        "class": r.security_class,
        "needed": r.needed,
        "digest": r.digest,
        "state": r.state,
    }


def grant_doc(g: GrantRow, now: int) -> dict[str, Any]:
    """A grant as ``custody access grants --json`` prints it."""
    return {
        "id": g.id,
        "request": g.request_id,
        "principal": g.principal,
        "env": g.env,
        "path": g.path,
        "actions": list(g.actions),
        "not_before": g.not_before,
        "not_after": g.not_after,
        "state": grant_state(g, now),
        "revoked_by": g.revoked_by,
    }


def save_record(home: Home, grant_id: str, record: str) -> Path:
    """Write a new grant's signed record to ``HOME/grants/GRANT.json`` (mode 0600), for
    ``custody access verify``. Returns the path."""
    d = home.root / "grants"
    d.mkdir(exist_ok=True)
    f = d / f"{Path(grant_id).name}.json"
    write_private(f, (record + "\n").encode("utf-8"))
    return f


__all__ = ["grant_doc", "grant_flow", "grant_state", "request_doc", "save_record"]
