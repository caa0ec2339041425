"""The CLI must never import Textual (or the tui package) unless ``custody tui`` runs."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, cli_env

PROBE = """
import sys
from custody_cli import main, build_parser
build_parser()
try:
    main(["--help"])
except SystemExit:
    pass
bad = sorted(m for m in sys.modules if m == "textual" or m.startswith(("textual.", "tui")))
print("IMPORTED:" + ",".join(bad))
"""


def test_custody_help_does_not_import_textual():
    r = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=cli_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "IMPORTED:", r.stdout[-500:]


def test_importtime_of_custody_help_has_no_textual():
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "custody_cli", "--help"],
        env=cli_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    mods = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line]
    assert "tui" in r.stdout  # the command is listed ...
    assert not [m for m in mods if m.split(".")[0] in {"textual", "tui"}]  # ... but not loaded
