"""Preflight: a ceremony refuses an unsuitable token before anything is recorded.

:func:`check_token` runs the token's known-answer tests (:meth:`custody.hsm.Hsm.preflight`:
key wrap and unwrap, in-token AES-GCM, key check values, P-256 ECDH and the in-token seal
of a rotated root, all on session objects) when a ceremony that uses the token starts,
after login and before its row, bundle or any token object exists. A token that fails is
refused with :class:`custody.errors.MechanismUnsupported` naming each missing or broken
mechanism. The results are cached per token, so the tests run once per process.
"""

from __future__ import annotations

from custody.deployment import Deployment
from custody.errors import UsageError

# Ceremonies that make, seal or open keys on the deployment's token.
TOKEN_KINDS = frozenset(
    {"generate", "recover", "reshare", "rotate-root", "emergency-rotate", "drill"}
)


def check_token(dep: Deployment, kind: str) -> dict[str, str]:
    """Refuse the deployment's token for a *kind* ceremony unless it passes the
    known-answer tests; return what custody uses on it (empty when not logged in, or
    the kind does not use the token).

    Raises:
        MechanismUnsupported: a needed mechanism is missing or fails its test.
        UsageError: a drill on a non-embedded HSM without the token PIN.
    """
    if kind == "drill" and dep.hsm is None and not dep.config.hsm.embedded:
        raise UsageError(
            "A drill on this HSM needs the token PIN",
            "Without the embedded SoftHSM there is no scratch token: the drill rebuilds the "
            "root in a session object of the deployment's token. Give --pin-file or "
            "CUSTODY_PIN.",
        )
    if kind not in TOKEN_KINDS or dep.hsm is None:
        return {}
    return dep.hsm.preflight()
