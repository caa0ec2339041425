"""Every CLI command that touches keys is written to the deployment's audit log first.

:func:`run_audited` maps a command to :func:`custody.audit.scope.run_audited`, which
commits an ``intent`` entry *before* the command runs (so an unwritable audit log refuses
the operation, exit 6), then an ``ok``, ``denied`` (PolicyError) or ``failed`` entry.
Entries carry the command, the operator, and non-secret arguments (branch, count, paths,
ids); never PINs, passphrases, share words or key material.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from custody.audit.scope import run_audited as run_audited_op
from custody.config import Home, resolve_home

# "group action" (or "group" alone) of commands that touch keys, tokens or ceremonies.
AUDITED: frozenset[str] = frozenset(
    {
        "status",
        "hsm selftest",
        "hsm provision",
        "root export",
        "root import",
        "store snapshot",
        "store restore",
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
        "backup test-restore",
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
        "scan",
        "secret export",
        "secret import",
        "exec",
        "report compliance",
        "report export",
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
    "env",
    "path",
    "label",
    "category",
    "owner",
    "cas",
    "prefix",
    "within",
    "notify",
    "as_principal",
    "bundle",
    "dir",
)


def command_name(argv: Sequence[str]) -> str:
    words = [a for a in argv[:2] if not a.startswith("-")]
    return " ".join(words)


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
    home = Home(resolve_home(home_arg))
    if not home.exists():
        return func(args)  # the command reports the missing deployment itself
    details = _details(args)
    target = str(
        (f"{details['env']}:{details['path']}" if "env" in details and "path" in details else "")
        or details.get("branch")
        or details.get("ceremony_id")
        or details.get("file")
        or details.get("src")
        or home.root.name
    )
    return run_audited_op(home, op, target, details, lambda: func(args))
