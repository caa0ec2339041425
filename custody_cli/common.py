"""Shared argument helpers for CLI command modules: home, PIN sources, ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from custody.config import Home, resolve_home
from custody.secretsource import read_secret


def add_home(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--home",
        metavar="DIR",
        help="custody home (default: $CUSTODY_HOME, else ./.custody-home)",
    )


def add_pin(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pin-file",
        metavar="FILE",
        help="file holding the token PIN (or 'pin=' and 'so_pin=' lines); "
        "else $CUSTODY_PIN / $CUSTODY_SO_PIN, else a prompt",
    )


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object for scripts")


def add_standard(p: argparse.ArgumentParser, *, pin: bool = False) -> None:
    """``--home``, ``--pin-file`` (for commands that open the token) and ``--json``."""
    add_home(p)
    if pin:
        add_pin(p)
    add_json(p)


def home_of(args: argparse.Namespace) -> Home:
    return Home(resolve_home(getattr(args, "home", None)))


def _token_pin(args: argparse.Namespace, what: str, key: str, env: str, confirm: bool) -> str:
    """A PIN from ``--pin-file`` (its *key* line), else *env*, else a prompt."""
    return read_secret(
        what=what,
        file=getattr(args, "pin_file", None),
        file_key=key,
        env=env,
        confirm=confirm,
    )


def user_pin(args: argparse.Namespace, *, confirm: bool = False) -> str:
    return _token_pin(args, "token user PIN", "pin", "CUSTODY_PIN", confirm)


def so_pin(args: argparse.Namespace, *, confirm: bool = False) -> str:
    return _token_pin(args, "token SO PIN", "so_pin", "CUSTODY_SO_PIN", confirm)


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
