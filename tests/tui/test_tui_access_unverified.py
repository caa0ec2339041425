"""The access screen says when its rows are NOT verified against the access seal (no token
PIN in this session), as the CLI does (``access_seal: unverified``, a warning on stderr).
With the PIN the rows are checked: the notice goes, and rows altered on disk are refused
on the screen rather than shown. A real home (SoftHSMv2 via ``custody init``), 80x24."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from tests.conftest import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.rekey_fixtures import cli, make_deployment
from tests.tui_fixtures import settle
from tui.app import make_app
from tui.screens.access import AccessScreen
from tui.screens.service_accounts import ServiceAccountsScreen
from tui.services.access import UNVERIFIED_NOTE
from tui.services.home import Settings

pytestmark = pytest.mark.hsm
SIZE = (80, 24)


async def _open(pilot) -> AccessScreen:
    await settle(pilot)
    await pilot.press("G")
    await settle(pilot)
    (scr,) = [s for s in pilot.app.screen_stack if isinstance(s, AccessScreen)]
    return scr


def test_the_access_screen_says_not_verified_without_the_pin(tmp_path: Path):
    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "principal", "add", "svc", "--role", "service-user", "--service-account",
        "--service", "payments", "--token-out", str(tmp_path / "svc.token"))  # fmt: skip
    seen: dict[str, dict[str, Any]] = {}

    async def go(pin_file: Path | None, key: str) -> None:
        app = make_app(Settings(home=home, pin_file=pin_file, deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            scr = await _open(pilot)
            note = scr.query_one("#acc-unverified", Static)
            text = app.export_screenshot().replace("&#160;", " ")
            seen[key] = {
                "shown": note.display,
                "on_screen": UNVERIFIED_NOTE.split(":")[0] in text,
                "region": note.region,
                "verified": scr.view is not None and scr.view.verified,
                "errors": list(app.errors_shown),
            }

    asyncio.run(go(None, "no-pin"))
    got = seen["no-pin"]
    assert got["shown"] and got["on_screen"] and not got["verified"] and not got["errors"]
    # one whole line inside an 80x24 terminal, under the header
    region = got["region"]
    assert len(UNVERIFIED_NOTE) <= 78
    assert region.height == 1 and region.y > 0 and region.right <= 80 and region.bottom <= 24

    asyncio.run(go(pins, "pin"))
    got = seen["pin"]
    assert not got["shown"] and not got["on_screen"] and got["verified"] and not got["errors"]

    # the disk operator deletes a principal: without the PIN nothing can tell (the notice
    # says so); with it the screen refuses the rows instead of showing them
    db = sqlite3.connect(home / "custody.db")
    with db:
        db.execute("DELETE FROM principals WHERE name='svc'")
    db.close()
    asyncio.run(go(None, "tampered"))
    assert seen["tampered"]["shown"]
    asyncio.run(go(pins, "tampered-pin"))
    got = seen["tampered-pin"]
    assert not got["verified"] and any("seal" in t + h for t, h in got["errors"])


def test_the_services_screen_says_not_verified_without_the_pin(tmp_path: Path):
    """The services screen lists service principals (access rows): the same notice without
    the PIN, none with it, and rows altered on disk refused rather than shown."""
    home, pins = make_deployment(tmp_path / "d")
    for name in ("svc", "batch"):
        cli(home, pins, "principal", "add", name, "--role", "service-user",
            "--service-account", "--service", "payments",
            "--token-out", str(tmp_path / f"{name}.token"))  # fmt: skip
    seen: dict[str, dict[str, Any]] = {}

    async def go(pin_file: Path | None, key: str) -> None:
        app = make_app(Settings(home=home, pin_file=pin_file, deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("S")
            await settle(pilot)
            (scr,) = [s for s in pilot.app.screen_stack if isinstance(s, ServiceAccountsScreen)]
            note = scr.query_one("#svc-unverified", Static)
            text = app.export_screenshot().replace("&#160;", " ")
            seen[key] = {
                "shown": note.display,
                "on_screen": UNVERIFIED_NOTE.split(":")[0] in text,
                "region": note.region,
                "names": [s.name for s in scr.items],
                "errors": list(app.errors_shown),
            }

    asyncio.run(go(None, "no-pin"))
    got = seen["no-pin"]
    assert got["shown"] and got["on_screen"] and not got["errors"]
    assert got["names"] == ["batch", "svc"]
    region = got["region"]
    assert region.height == 1 and region.y > 0 and region.right <= 80 and region.bottom <= 24

    asyncio.run(go(pins, "pin"))
    got = seen["pin"]
    assert not got["shown"] and not got["on_screen"] and not got["errors"]
    assert got["names"] == ["batch", "svc"]

    db = sqlite3.connect(home / "custody.db")  # the disk operator deletes a service
    with db:
        db.execute("DELETE FROM principals WHERE name='svc'")
    db.close()
    asyncio.run(go(None, "tampered"))
    assert seen["tampered"]["shown"] and seen["tampered"]["names"] == ["batch"]
    asyncio.run(go(pins, "tampered-pin"))
    got = seen["tampered-pin"]
    assert got["names"] == [] and any("seal" in t + h for t, h in got["errors"])
