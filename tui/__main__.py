"""``custody-tui`` / ``python -m tui``: open the terminal app on a custody home.

The CLI's ``custody tui`` hands over to this entry point (it never imports :mod:`tui`: the
two front ends sit side by side over ``ceremonies`` and ``custody``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from custody.config import Home, resolve_home
from custody.errors import CustodyError
from custody.hardening import harden_process


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="custody-tui",
        allow_abbrev=False,
        description=(
            "Open custody's terminal app on --home. The token PIN comes from --pin-file, "
            "CUSTODY_PIN, or a prompt inside the app (press p); it is never echoed."
        ),
    )
    p.add_argument("--home", metavar="DIR", help="custody home (default: $CUSTODY_HOME)")
    p.add_argument("--pin-file", metavar="FILE", help="file holding the token PIN")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Open the app. Core dumps are turned off first (``custody tui`` hands over here with
    ``execv``, which resets the non-dumpable flag; the app may hold the PIN).

    Returns:
        The exit code.
    """
    harden_process()
    args = build_parser().parse_args(argv)
    home = Home(resolve_home(args.home))
    try:
        home.load()  # fail before the screen is taken over if there is no deployment
    except CustodyError as err:
        print(f"error: {err.title}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return err.exit_code
    from tui.app import run  # Textual loads only when the app really opens

    pin_file = Path(args.pin_file).expanduser().resolve() if args.pin_file else None
    return run(home.root, pin_file)


if __name__ == "__main__":
    sys.exit(main())
