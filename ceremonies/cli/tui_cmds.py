"""``custody tui``: open the Textual app.

Textual (and :mod:`tui`) are imported only inside the handler, through ``importlib``, so
the CLI never imports Textual for other commands and ``ceremonies`` never imports ``tui``
statically (the layering is ``tui -> ceremonies -> custody``).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ceremonies.cli import common


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
    app = importlib.import_module("tui.app")
    pin_file = Path(args.pin_file).expanduser().resolve() if args.pin_file else None
    return int(app.run(home.root, pin_file))
