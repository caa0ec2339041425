"""Access control for the local front ends (the CLI and the TUI), opened one way.

The local operator holds the token PIN and is super-admin by default
(:meth:`~custody.access.control.AccessControl.operator`); each secret operation still asks
access control, which audits its decision in the home's log. :func:`local_access` builds
that :class:`~custody.access.control.AccessControl` over an open deployment: its store,
its audit log, the TOTP verifier (:mod:`custody.access.mfa`) on its key hierarchy, and the
home's ``[access]`` MFA mode. ``custody_cli.access_session`` and ``tui.services.secrets``
both open it here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from custody.access.control import AccessControl
from custody.access.mfa import Mfa, MfaPolicy
from custody.access.settings import AccessSettings
from custody.config import Home
from custody.deployment import Deployment, open_audit_log


@contextmanager
def local_access(dep: Deployment, home: Home) -> Iterator[AccessControl]:
    """Access control over *dep*'s store, auditing to *home*'s log (closed after).

    Raises:
        AuditError: the audit log cannot be opened. ConfigError: a bad ``[access]`` table.
    """
    log = open_audit_log(home)
    try:
        rng = dep.hsm.random if dep.hsm is not None else None
        mfa = Mfa(
            dep.store, dep.hierarchy, log, policy=MfaPolicy.for_home(home.config_path), rng=rng
        )
        settings = AccessSettings.for_home(home.config_path)
        yield AccessControl(
            dep.store,
            log,
            mfa=mfa,
            mfa_mode=settings.mfa_mode,
            rng=rng or os.urandom,
            command_scope=True,
            high_approvers=settings.high_approvers,
        )
    finally:
        log.close()
