"""``make run``: set up (once) and open custody on the embedded default home.

The first run builds the home with ``custody demo``: a SoftHSMv2 token under the home, a
root key made by a real generate ceremony (3-of-5 custodians), KEKs, 1,000 wrapped data keys,
and the signed transcripts of every ceremony in the story. The token PIN is in
``HOME/demo-pin`` (a demonstration convenience only). Later runs reuse the home. At a
terminal it opens the TUI; otherwise it prints ``custody status``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from custody_cli import main as cli_main


def ensure_home(root: Path) -> Path:
    """Create the home with the demo story if needed; return its PIN file."""
    from custody.config import Home

    pin_file = root / "demo-pin"
    if Home(root).exists() and pin_file.exists():
        return pin_file
    if root.exists() and any(root.iterdir()):
        raise SystemExit(
            f"error: {root} exists but is not a finished custody home\n"
            f"hint: remove it (rm -r {root}) and run 'make run' again"
        )
    print(f"Setting up the embedded default home in {root} (runs 'custody demo' once)...")
    rc = cli_main(["demo", "--home", str(root)])
    if rc != 0:
        raise SystemExit(rc)
    return pin_file


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else ".custody-home").resolve()
    pin_file = ensure_home(root)
    base = ["--home", str(root), "--pin-file", str(pin_file)]
    if sys.stdin.isatty() and sys.stdout.isatty() and importlib.util.find_spec("tui.app"):
        return cli_main(["tui", *base])
    return cli_main(["status", *base])


if __name__ == "__main__":
    sys.exit(main())
