"""Shared argument helpers for CLI command modules: home, PIN sources, ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from custody.config import Home, resolve_home
from custody.secretsource import read_secret

if TYPE_CHECKING:
    from custody.deployment import Deployment
    from custody.hsm import Hsm


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


def add_check_pin(p: argparse.ArgumentParser) -> None:
    """An optional ``--pin-file`` for a read-only command: given, the token is opened and
    the access-control rows are checked against the access seal before they are shown."""
    p.add_argument(
        "--pin-file",
        metavar="FILE",
        help="file holding the token PIN: open the token and check the access seal first "
        "(without it the access-control rows shown are NOT verified)",
    )


def pin_given(args: argparse.Namespace) -> bool:
    """Whether a read-only command was given ``--pin-file`` (:func:`add_check_pin`)."""
    return getattr(args, "pin_file", None) is not None


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


def open_home(args: argparse.Namespace, *, pin: bool) -> Deployment:
    """Open ``--home`` through the one door (:func:`custody.deployment.open_deployment`),
    logged in to its token when *pin*: the PIN (``--pin-file``, ``$CUSTODY_PIN``, else a
    prompt) is read only once the home and its store have opened.

    Raises:
        ConfigError, StorageError, HsmError: see :func:`~custody.deployment.open_deployment`.
    """
    from custody.deployment import open_deployment

    return open_deployment(home_of(args), (lambda: user_pin(args)) if pin else None)


def open_home_token(args: argparse.Namespace) -> Hsm:
    """Log in to ``--home``'s token alone (no store) through
    :func:`custody.deployment.open_token`; the PIN is read once the config has loaded.

    Raises:
        ConfigError, HsmError: see :func:`~custody.deployment.open_token`.
    """
    from custody.deployment import open_token

    return open_token(home_of(args), lambda: user_pin(args))


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
