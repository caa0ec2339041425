"""Every CLI command that touches keys is written to the deployment's audit log first.

:func:`audit_scope` wraps a command: it commits an ``intent`` entry *before* the command
runs (so an unwritable audit log refuses the operation, exit 6), then an ``ok``, ``denied``
(PolicyError) or ``failed`` entry with the error's class and title. Entries carry the
command, the operator, and non-secret arguments (branch, count, paths, ids); never PINs,
passphrases, share words or key material.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from custody.errors import AuditError, CustodyError, PolicyError

# "group action" (or "group" alone) of commands that touch keys, tokens or ceremonies.
AUDITED: frozenset[str] = frozenset(
    {
        "status",
        "hsm selftest",
        "kek rotate",
        "dek generate",
        "dek verify",
        "rekey run",
        "rekey verify",
        "rekey cancel-destroy",
        "backup create",
        "backup restore",
        "backup verify",
        "backup rekey",
        "ceremony generate",
        "ceremony recover",
        "ceremony reshare",
        "ceremony rotate-root",
        "ceremony emergency-rotate",
        "ceremony drill",
        "ceremony enrol",
        "ceremony resume",
        "ceremony abort",
        "ceremony approve",
        "ceremony offer",
        "audit checkpoint",
    }
)

# Argument names that are safe to record (identifiers, counts, paths), never values.
_RECORDED_ARGS = (
    "branch",
    "count",
    "all",
    "due",
    "batch",
    "full",
    "version",
    "kind",
    "ceremony_id",
    "ceremony",
    "reason",
    "src",
    "file",
    "out",
    "scheme",
)


def command_name(argv: Sequence[str]) -> str:
    words = [a for a in argv[:2] if not a.startswith("-")]
    return " ".join(words)


def actor_name() -> str:
    """The operator named in audit entries: $CUSTODY_ACTOR, else the OS user."""
    name = os.environ.get("CUSTODY_ACTOR")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def _details(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {}
    for k in _RECORDED_ARGS:
        v = getattr(args, k, None)
        if v is None or v is False or callable(v):
            continue
        out[k] = v if isinstance(v, (int, bool)) else str(v)[:200]
    return out


def run_audited(
    argv: Sequence[str], args: argparse.Namespace, func: Callable[[argparse.Namespace], int]
) -> int:
    """Run *func* inside the audit log of its home when the command is audited.

    Raises:
        AuditError: the intent could not be logged; *func* was not run.
        CustodyError: whatever *func* raised (after logging it).
    """
    op = command_name(argv)
    home_arg = getattr(args, "home", None)
    if op not in AUDITED or not hasattr(args, "home"):
        return func(args)
    from custody.config import Home, resolve_home

    home = Home(resolve_home(home_arg))
    if not home.exists():
        return func(args)  # the command reports the missing deployment itself
    from custody.audit.log import AuditLog

    details = _details(args)
    target = str(
        details.get("branch")
        or details.get("ceremony_id")
        or details.get("file")
        or details.get("src")
        or home.root.name
    )
    actor = actor_name()
    try:
        log = AuditLog.for_home(home)
    except AuditError as err:
        raise AuditError(
            f"The audit log cannot be written; '{op}' was refused",
            f"{err.title}. {err.hint} Nothing was changed.",
        ) from err
    try:
        first = log.append(op, target, actor, outcome="intent", details=details)
        ref = {"intent_seq": first["seq"]}
        try:
            rc = func(args)
        except PolicyError as err:
            log.append(
                op,
                target,
                actor,
                outcome="denied",
                details={**ref, "error": type(err).__name__, "title": err.title},
            )
            raise
        except CustodyError as err:
            log.append(
                op,
                target,
                actor,
                outcome="failed",
                details={**ref, "error": type(err).__name__, "title": err.title},
            )
            raise
        except BaseException as exc:
            log.append(
                op, target, actor, outcome="failed", details={**ref, "error": type(exc).__name__}
            )
            raise
        log.append(
            op, target, actor, outcome="ok" if rc == 0 else "failed", details={**ref, "exit": rc}
        )
        return rc
    finally:
        log.close()


def warning_sink(home: Any) -> Callable[[Mapping[str, Any]], None]:
    """An append function that records each rotation-policy warning in *home*'s audit log.

    Raises (when called):
        AuditError: the warning could not be recorded (fails closed).
    """
    from custody.audit.log import AuditLog

    def sink(w: Mapping[str, Any]) -> None:
        details = {k: v for k, v in w.items() if isinstance(v, (str, int, float, bool))}
        target = str(w.get("key") or w.get("branch") or "policy")
        with AuditLog.for_home(home) as log:
            log.append("rotation.warning", target, actor_name(), details=details)

    return sink
