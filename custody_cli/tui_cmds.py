"""``custody tui``: hand over to the terminal app's own entry point (``python -m tui``).

The CLI and the TUI are front ends side by side; neither imports the other. This command
checks the home, then replaces the process with the TUI (same interpreter, same
environment), so the terminal belongs to the app and its exit code is the command's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from custody_cli import common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tui",
        help="open the terminal app (dashboard, key inventory, auditor view)",
        description=(
            "Open custody's terminal app on --home. The token PIN comes from --pin-file, "
            "CUSTODY_PIN, or a prompt inside the app (press p); it is never echoed."
        ),
    )
    common.add_home(p)
    common.add_pin(p)
    p.set_defaults(func=cmd_tui)


def cmd_tui(args: argparse.Namespace) -> int:
    home = common.home_of(args)
    home.load()  # fail here, before the screen is taken over, if there is no deployment
    argv = [sys.executable, "-m", "tui", "--home", str(home.root)]
    if args.pin_file:
        argv += ["--pin-file", str(Path(args.pin_file).expanduser().resolve())]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter, an argument list
