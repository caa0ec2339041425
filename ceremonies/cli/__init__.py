"""The ``custody`` command line.

Each command group lives in its own module under :mod:`ceremonies.cli` and exposes
``register(subparsers)``. Handlers take the parsed ``argparse.Namespace`` and return an
exit code. Heavy imports (``pkcs11``, ``textual``) happen inside handlers only, so
``custody --help`` stays fast and never imports Textual.

Exit codes are documented in ``docs/cli.md`` and come from :mod:`custody.errors`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from custody.errors import CustodyError

# Command-group modules, in --help order. Each has register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "ceremonies.cli.core_cmds",
    "ceremonies.cli.hsm_cmds",
    "ceremonies.cli.key_cmds",
    "ceremonies.cli.shamir_cmds",
    "ceremonies.cli.share_cmds",
    "ceremonies.cli.transcript_cmds",
    "ceremonies.cli.audit_cmds",
    "ceremonies.cli.participant_cmds",
    "ceremonies.cli.ceremony_cmds",
    "ceremonies.cli.rekey_cmds",
    "ceremonies.cli.backup_cmds",
    "ceremonies.cli.tui_cmds",
)


class _Parser(argparse.ArgumentParser):
    """No abbreviated options: '--pin' must never silently mean '--pin-file'."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="custody",
        description=(
            "Threshold key custody and recovery ceremonies. PINs and passphrases are read "
            "from files, the environment or a prompt, never from arguments."
        ),
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 config, 4 storage, 5 HSM, "
        "6 integrity, 7 policy, 8 ceremony, 130 interrupted. See docs/cli.md.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a group not built yet
                continue
            raise
        mod.register(sub)
    return parser


def print_error(err: CustodyError) -> None:
    print(f"error: {err.title}", file=sys.stderr)
    if err.hint:
        print(f"hint: {err.hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI. Returns the process exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0 if not argv else 2
    try:
        from ceremonies.cli.audited import run_audited

        return int(run_audited(argv, args, lambda a: int(func(a) or 0)))
    except CustodyError as err:
        if getattr(args, "json", False):
            import json

            print(
                json.dumps(
                    {"ok": False, "error": type(err).__name__, "title": err.title, "hint": err.hint}
                )
            )
        print_error(err)
        return err.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
