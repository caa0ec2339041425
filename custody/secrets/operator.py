"""The local operator's vault, opened the same way by both front ends.

``custody secret ...`` (the CLI) and the TUI's secrets screen act on the vault as the
local operator who holds the token PIN. They share what makes that safe:

- :func:`operator_vault`: a :class:`~custody.secrets.vault.Vault` on an open deployment,
  with the home's ``[secrets]`` policy, the token's RNG, and alerts (a read during the
  recovery window, an expiry warning, a leak) recorded in the audit log as
  ``secret alert`` and sent to the configured alert hook;
- :func:`audited`: audit before act with the CLI's operation names (``secret put``,
  ``secret get`` ...) and target (``ENV:PATH``), through
  :func:`custody.audit.scope.run_audited`, so an unwritable audit log refuses the
  operation and every outcome (``ok``, ``denied``, ``failed``) is recorded;
- :data:`OPS`: the operations the front ends audit under those names.

Nothing here sees a value except as an argument handed straight to the vault.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from custody.audit.log import AuditLog
from custody.audit.scope import actor_name, run_audited
from custody.clock import utcnow
from custody.config import Home
from custody.deployment import Deployment
from custody.errors import UsageError
from custody.policy import emit_warnings
from custody.secrets.categories import SecretPolicy
from custody.secrets.vault import CreationSeal, Vault

T = TypeVar("T")

OPS = (
    "secret put",
    "secret generate",
    "secret get",
    "secret list",
    "secret show",
    "secret versions",
    "secret delete",
    "secret restore",
    "secret destroy",
    "secret due",
    "secret rotate",
)
# the alert fields that go to the audit log (never a value; env and path are the target)
_ALERT_FIELDS = ("kind", "days_left", "class", "stragglers")


def target(env: str, path: str) -> str:
    """The audit target of a secret operation: ``ENV:PATH``."""
    return f"{env}:{path}"


def operator_vault(
    dep: Deployment,
    home: Home,
    *,
    actor: str | None = None,
    clock: Callable[[], datetime] = utcnow,
    seal: CreationSeal | None = None,
) -> Vault:
    """The vault of *dep* as the local operator (named *actor*, default
    :func:`~custody.audit.scope.actor_name`) acts on it.

    Alerts are appended to *home*'s audit log (``secret alert``, target ``ENV:PATH``, the
    kind, days left and class only) and run the configured alert hook. *seal*: the access
    seal, where the token is open, so that a secret created here has its class sealed
    (:func:`custody.access.local.home_seal`); without it a new secret counts as ``high``.

    Raises:
        ConfigError: the home's ``[secrets]`` table is invalid.
    """
    who = actor or actor_name()

    def alert(w: Mapping[str, Any]) -> None:
        def record(x: Mapping[str, Any]) -> None:
            log = AuditLog.for_home(home)
            try:
                log.append(
                    "secret alert",
                    target(str(x["env"]), str(x["path"])),
                    who,
                    details={k: v for k, v in x.items() if k in _ALERT_FIELDS},
                )
            finally:
                log.close()

        emit_warnings([w], alert_hook=dep.config.alert_hook, audit=record)

    rng = dep.hsm.random if dep.hsm is not None else None
    return Vault(
        dep.store,
        dep.hierarchy,
        policy=SecretPolicy.for_home(home.config_path),
        actor=who,
        alert=alert,
        rng=rng,
        clock=clock,
        seal=seal,
    )


def audited(
    home: Home,
    op: str,
    where: str,
    details: Mapping[str, object],
    func: Callable[[], T],
    *,
    actor: str | None = None,
) -> T:
    """Run *func* inside *home*'s audit log as the secret operation *op* on *where* (the
    :func:`target` ``ENV:PATH``, or the home's name for a listing), as the CLI records it.

    The intent entry (op, *where*, *details*) is committed before *func* runs; then ``ok``,
    ``denied`` (a PolicyError) or ``failed``. *details* must never hold a value.

    Raises:
        UsageError: *op* is not a secret operation.
        AuditError: the intent could not be logged; *func* was not run.
        CustodyError: whatever *func* raised (after logging it).
    """
    if op not in OPS:
        raise UsageError(f"Not a secret operation: {op[:40]!r}", f"Use one of {', '.join(OPS)}.")
    box: list[T] = []

    def run() -> int:
        box.append(func())
        return 0

    run_audited(home, op, where, details, run, actor=actor)
    return box[0]
