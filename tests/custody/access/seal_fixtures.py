"""A sealed copy of a test's access control: the same store, log, clock and MFA verifier,
with the access seal (:mod:`custody.access.seal`) on a real SoftHSMv2 token under a label of
its own (the session token is shared by many tests, each with its own store)."""

from __future__ import annotations

import uuid
from typing import Any

from custody.access import AccessControl
from custody.access.seal import AccessSeal


def seal_on(store: Any, token: Any, log: Any) -> AccessSeal:
    return AccessSeal(store, token, f"access-seal-{uuid.uuid4().hex}", log)


def sealed_copy(ac: AccessControl, token: Any, *, mfa: Any = None) -> AccessControl:
    """*ac* with the seal; its first check seals the rows as they are (first use)."""
    s = AccessControl(
        ac.store, ac.audit, clock=ac._clock, mfa=mfa, seal=seal_on(ac.store, token, ac.audit)
    )
    s.check_rows()
    return s
