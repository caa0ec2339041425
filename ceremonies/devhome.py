"""``make run``: set up (once) and open custody on the embedded default home.

The first run creates a development deployment under ``.custody-home``: random token PINs
in ``HOME/dev-pin`` (mode 0600, a development convenience only, like the demo's PIN file),
a SoftHSMv2 token under the home, and a development root key. Later runs reuse it. At a
terminal it opens the TUI; otherwise it prints ``custody status``.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from ceremonies.cli import main as cli_main


def ensure_home(root: Path) -> Path:
    """Create the development home if needed; return its PIN file."""
    from custody.config import Home

    home = Home(root)
    pin_file = root / "dev-pin"
    if home.exists():
        return pin_file
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not pin_file.exists():
        fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"pin={secrets.token_hex(8)}\nso_pin={secrets.token_hex(8)}\n")
    rc = cli_main(["init", "--home", str(root), "--pin-file", str(pin_file), "--dev-root"])
    if rc != 0:
        raise SystemExit(rc)
    print(f"(development home: the token PINs are in {pin_file})")
    return pin_file


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else ".custody-home").resolve()
    pin_file = ensure_home(root)
    base = ["--home", str(root), "--pin-file", str(pin_file)]
    if sys.stdin.isatty() and sys.stdout.isatty():
        import importlib.util

        if importlib.util.find_spec("tui.app") is not None:
            return cli_main(["tui", *base])
    return cli_main(["status", *base])


if __name__ == "__main__":
    sys.exit(main())
