"""The ``custody`` command line.

A front end beside the TUI (:mod:`tui`), over ``ceremonies`` and ``custody``. Each command
group lives in its own module under :mod:`custody_cli` and exposes ``register(subparsers)``.
Handlers take the parsed ``argparse.Namespace`` and return an exit code. The CLI never
imports Textual: ``custody tui`` hands over to ``python -m tui``.

Exit codes are documented in ``docs/cli.md`` and come from :mod:`custody.errors`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from custody.errors import CustodyError
from custody.hardening import harden_process
from custody.textsafe import printable_lines
from custody_cli.audited import run_audited

# Command-group modules (custody_cli.NAME), in --help order. Each has register(subparsers).
# They are imported when a parser needs them: a command imports only its own group.
COMMAND_MODULES: tuple[str, ...] = (
    "core_cmds",
    "hsm_cmds",
    "key_cmds",
    "shamir_cmds",
    "share_cmds",
    "transcript_cmds",
    "audit_cmds",
    "participant_cmds",
    "ceremony_cmds",
    "rekey_cmds",
    "backup_cmds",
    "recovery_cmds",
    "secret_cmds",
    "principal_cmds",
    "access_cmds",
    "mfa_cmds",
    "report_cmds",
    "alerts_cmds",
    "schedule_cmds",
    "serve_cmds",
    "ca_cmds",
    "exec_cmds",
    "agent_cmds",
    "tui_cmds",
)


# The command-group module that registers each top-level command. ``main`` registers only
# that module's commands when argv names one of them, so a command neither imports the
# other modules nor builds their parsers (about 55 ms CPU of every run). Anything
# else (no command, -h, an unknown name) gets the whole parser. tests/cli/
# test_parser_commands.py checks that this table is exactly what the modules register.
COMMAND_OF: dict[str, str] = {
    "init": "core_cmds",
    "status": "core_cmds",
    "hsm": "hsm_cmds",
    "kek": "key_cmds",
    "dek": "key_cmds",
    "shamir": "shamir_cmds",
    "share": "share_cmds",
    "transcript": "transcript_cmds",
    "audit": "audit_cmds",
    "participant": "participant_cmds",
    "ceremony": "ceremony_cmds",
    "demo": "ceremony_cmds",
    "rotate": "rekey_cmds",
    "rekey": "rekey_cmds",
    "backup": "backup_cmds",
    "root": "recovery_cmds",
    "store": "recovery_cmds",
    "secret": "secret_cmds",
    "scan": "secret_cmds",
    "principal": "principal_cmds",
    "access": "access_cmds",
    "mfa": "mfa_cmds",
    "report": "report_cmds",
    "alerts": "alerts_cmds",
    "schedule": "schedule_cmds",
    "serve": "serve_cmds",
    "ca": "ca_cmds",
    "exec": "exec_cmds",
    "agent": "agent_cmds",
    "tui": "tui_cmds",
}


class _Parser(argparse.ArgumentParser):
    """No abbreviated options: '--pin' must never silently mean '--pin-file'."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``custody`` parser; with *command* (a name in :data:`COMMAND_OF`), only the
    commands of the module that registers it (the same parser for that command)."""
    parser = _Parser(
        prog="custody",
        description=(
            "Threshold key custody and recovery ceremonies. PINs and passphrases are read "
            "from files, the environment or a prompt, never from arguments."
        ),
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 config, 4 storage, 5 HSM, "
        "6 integrity, 7 policy, 8 ceremony, 10 ceremony waiting for others (not an "
        "error), 11 a remote hand-in waiting for its SAS to be confirmed (not an error), "
        "130 interrupted. See docs/cli.md.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    group = COMMAND_OF.get(command) if command is not None else None
    for name in COMMAND_MODULES if group is None else (group,):
        command_module(name).register(sub)
    return parser


def command_module(name: str) -> ModuleType:
    """The command-group module ``custody_cli.NAME`` (one of :data:`COMMAND_MODULES`)."""
    if name not in COMMAND_MODULES:
        raise ValueError(f"not a command group: {name!r}")
    return importlib.import_module(f"custody_cli.{name}")


def print_error(err: CustodyError) -> None:
    # An error can quote a bundle or a log: its lines are printed escaped (custody.textsafe).
    print(f"error: {printable_lines(err.title)}", file=sys.stderr)
    if err.hint:
        print(f"hint: {printable_lines(err.hint)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI. Returns the process exit code.

    First of all, core dumps are turned off (:func:`custody.hardening.harden_process`):
    any command may come to hold a PIN, a share, RK or a KEK in memory.
    """
    harden_process()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        build_parser().print_help()  # the whole parser's help, whatever argv named
        return 0 if not argv else 2
    try:
        return int(run_audited(argv, args, lambda a: int(func(a) or 0)))
    except CustodyError as err:
        if getattr(args, "json", False):
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
