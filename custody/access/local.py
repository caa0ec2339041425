"""Access control for the local front ends (the CLI and the TUI), opened one way.

The local operator holds the token PIN and is super-admin by default
(:meth:`~custody.access.control.AccessControl.operator`); each secret operation still asks
access control, which audits its decision in the home's log. :func:`local_access` builds
that :class:`~custody.access.control.AccessControl` over an open deployment: its store,
its audit log, the TOTP verifier (:mod:`custody.access.mfa`) on its key hierarchy, and the
home's ``[access]`` MFA mode. ``custody_cli.access_session`` and the TUI's services
(``tui.services.secrets``, ``tui.services.access``) all open it here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from custody.access.control import AccessControl
from custody.access.mfa import Mfa, MfaPolicy
from custody.access.roles import valid_name
from custody.access.seal import AccessSeal, SealAudit, seal_label
from custody.access.settings import AccessSettings
from custody.clock import utcnow
from custody.config import Home
from custody.deployment import Deployment, open_audit_log


def access_seal(dep: Deployment, log: SealAudit) -> AccessSeal | None:
    """The access seal of *dep* when its token is open (:mod:`custody.access.seal`), else
    None: without the PIN nothing can check (or renew) the seal."""
    if dep.hsm is None:
        return None
    # a home's token serves that home alone: a first use beside another seal is refused
    return AccessSeal(dep.store, dep.hsm, seal_label(dep.config.deployment_id), log, exclusive=True)


class _HomeLog:
    """The seal's audit port on *home*'s log, opened only for an entry (a refusal)."""

    def __init__(self, home: Home) -> None:
        self.home = home

    def append(
        self,
        op: str,
        target: str,
        actor: str,
        *,
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        log = open_audit_log(self.home)
        try:
            return log.append(op, target, actor, outcome=outcome, details=details)
        finally:
            log.close()


def home_seal(dep: Deployment, home: Home) -> AccessSeal | None:
    """:func:`access_seal` auditing to *home*'s log (opened only when it records), for a
    vault that creates secrets (:func:`custody.secrets.operator.operator_vault`)."""
    return access_seal(dep, _HomeLog(home))


def check_sealed_rows(dep: Deployment) -> None:
    """Refuse when *dep*'s access-control rows, the participants roster among them, fail
    their access seal (audited in the home's log); a no-op without the token. For a
    ceremony about to read the roster: a sealed participant's key, role or validity
    changed on disk must not let anyone approve as them. A home whose rows were never
    sealed is left as it is (its first token-open access command seals them): a
    ceremony refused early must leave the token as it was.

    Raises:
        IntegrityError: the rows fail their seal. HsmError: the token failed.
    """
    seal = home_seal(dep, dep.home)
    if seal is not None and seal.in_use():  # never sealed: nothing to check, none made
        seal.check()


def logged_binding(home: Home) -> str | None:
    """The local operator's TOTP binding as *home*'s audit log last recorded it (the last
    ``access local-mfa`` outcome ``ok``): the principal, or None when never bound or lifted.

    For ``custody access seal`` on rows that fail their seal: the binding row on disk is
    then no evidence (it may be the very row deleted or renamed), the hash-chained log is.

    Raises:
        AuditError: the audit log cannot be opened.
    """
    log = open_audit_log(home)
    try:
        bound: object = None
        for line in log.iter_lines():
            if b"access local-mfa" not in line:
                continue
            e = json.loads(line)
            if e.get("op") == "access local-mfa" and e.get("outcome") == "ok":
                d = e.get("details") or {}
                bound = d.get("principal") if d.get("on") else None
    finally:
        log.close()
    return bound if isinstance(bound, str) and valid_name(bound) else None


@contextmanager
def local_access(
    dep: Deployment, home: Home, *, clock: Callable[[], datetime] = utcnow
) -> Iterator[AccessControl]:
    """Access control over *dep*'s store, auditing to *home*'s log (closed after), on
    *clock* (the TUI passes its settings' clock). One per operation: a TOTP code verified
    once stands for that operation's later decisions (``command_scope``).

    Raises:
        AuditError: the audit log cannot be opened. ConfigError: a bad ``[access]`` table.
    """
    log = open_audit_log(home)
    try:
        rng = dep.hsm.random if dep.hsm is not None else None
        seal = access_seal(dep, log)
        mfa = Mfa(
            dep.store,
            dep.hierarchy,
            log,
            clock,
            policy=MfaPolicy.for_home(home.config_path),
            rng=rng,
            seal=seal,
        )
        settings = AccessSettings.for_home(home.config_path)
        yield AccessControl(
            dep.store,
            log,
            clock=clock,
            mfa=mfa,
            mfa_mode=settings.mfa_mode,
            rng=rng or os.urandom,
            command_scope=True,
            high_approvers=settings.high_approvers,
            seal=seal,
        )
    finally:
        log.close()
