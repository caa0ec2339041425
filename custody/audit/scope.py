"""Audit before act: every key-touching operation is written to the audit log first.

:func:`run_audited` commits an ``intent`` entry *before* the operation runs (so an unwritable
audit log refuses the operation), then an ``ok``, ``denied`` (PolicyError) or ``failed``
entry with the error's class and title. Both front ends (the CLI and the TUI) use it.
Entries carry the operation, the operator and non-secret details (branch, count, paths,
ids); never PINs, passphrases, share words or key material.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from custody.audit.log import AuditLog, attempt
from custody.config import Home
from custody.errors import AuditError, CustodyError, PolicyError

T = TypeVar("T")


def actor_name() -> str:
    """The operator named in audit entries: $CUSTODY_ACTOR, else the OS user."""
    name = os.environ.get("CUSTODY_ACTOR")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def run_audited(
    home: Home,
    op: str,
    target: str,
    details: Mapping[str, object],
    func: Callable[[], int],
    *,
    actor: str | None = None,
) -> int:
    """Run *func* (returning an exit code) inside *home*'s audit log.

    Raises:
        AuditError: the intent could not be logged; *func* was not run.
        CustodyError: whatever *func* raised (after logging it).
    """
    who = actor or actor_name()
    try:
        log = AuditLog.for_home(home)
    except AuditError as err:
        raise AuditError(
            f"The audit log cannot be written; '{op}' was refused",
            f"{err.title}. {err.hint} Nothing was changed.",
        ) from err
    try:
        first = log.append(op, target, who, outcome="intent", details=dict(details))
        ref = {"intent_seq": first["seq"]}
        try:
            with attempt(first["seq"]):
                rc = func()
        except PolicyError as err:
            log.append(
                op,
                target,
                who,
                outcome="denied",
                details={**ref, "error": type(err).__name__, "title": err.title},
            )
            raise
        except CustodyError as err:
            log.append(
                op,
                target,
                who,
                outcome="failed",
                details={**ref, "error": type(err).__name__, "title": err.title},
            )
            raise
        except BaseException as exc:
            log.append(
                op, target, who, outcome="failed", details={**ref, "error": type(exc).__name__}
            )
            raise
        log.append(
            op, target, who, outcome="ok" if rc == 0 else "failed", details={**ref, "exit": rc}
        )
        return rc
    finally:
        log.close()


def warning_sink(home: Home) -> Callable[[Mapping[str, Any]], None]:
    """An append function that records each rotation-policy warning in *home*'s audit log.

    Raises (when called):
        AuditError: the warning could not be recorded (fails closed).
    """

    def sink(w: Mapping[str, Any]) -> None:
        details = {k: v for k, v in w.items() if isinstance(v, (str, int, float, bool))}
        target = str(w.get("key") or w.get("branch") or "policy")
        with AuditLog.for_home(home) as log:
            log.append("rotation.warning", target, actor_name(), details=details)

    return sink
