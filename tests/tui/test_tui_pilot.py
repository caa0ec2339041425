"""Pilot tests of the TUI against a real home (SoftHSMv2 token via ``custody init``).

pytest-asyncio is not a dependency: each test is a sync function running ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from tests.conftest import ROOT, TEST_PIN

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ceremonies.transcript import CHECK_IDS
from tests.tui_fixtures import dev_home, settle
from tui.app import make_app
from tui.screens.auditor import AuditorScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.keys import KeysScreen
from tui.screens.modals import DetailScreen, ErrorModal, HelpScreen, PinPrompt
from tui.services.home import Field, Settings

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("tui-pilot")]
FIX = ROOT / "tests" / "fixtures" / "transcripts"
SIZE = (100, 32)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return dev_home(tmp_path_factory.mktemp("tuihome"), 20)


def run(coro) -> None:
    asyncio.run(coro)


def test_dashboard_shows_real_token_root_and_keks(home):
    h, pins = home

    async def go():
        app = make_app(Settings(home=h, pin_file=pins, deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert app.errors_shown == []
            scr = app.screen
            assert isinstance(scr, DashboardScreen)
            v = scr.view
            assert v.hsm.state == "ok" and "root/v1" in v.hsm.root_keys_on_token
            assert v.current_root is not None and v.current_root.name == "root/v1"
            assert [(k.name, k.state, k.objects) for k in v.keks] == [("data/v1", "active", 20)]
            rot = {r.key: r.status for r in v.rotations}
            assert rot["data/v1"] == "ok" and rot["backup/-"] == "missing"
            assert any("Development root key" in a.text for a in v.alerts)
            assert v.custodians is None  # no roster yet, shown gracefully
            # Every item opens its detail: KEKs table, first row.
            scr.query_one("#keks").focus()
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, DetailScreen)
            table = app.screen.query_one("#detail-table", DataTable)
            values = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
            assert "data/v1" in values and "20" in values
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, DashboardScreen)

    run(go())


def test_help_theme_and_navigation(home):
    h, pins = home

    async def go():
        app = make_app(Settings(home=h, pin_file=pins, deterministic=True))
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            keys = app.screen.query_one("#help-keys", DataTable)
            descs = {str(keys.get_row_at(i)[1]) for i in range(keys.row_count)}
            assert {"Refresh", "PIN", "Quit", "Theme"} <= descs
            await pilot.press("escape")
            assert app.theme == "textual-dark"
            await pilot.press("t")
            assert app.theme == "textual-light"
            await pilot.press("t")
            assert app.theme == "textual-dark"
            await pilot.press("k")
            await settle(pilot)
            assert isinstance(app.screen, KeysScreen)
            inv = app.screen.query_one("#inventory", DataTable)
            names = [str(inv.get_row_at(i)[0]) for i in range(inv.row_count)]
            assert names == ["data/v1", "root/v1"]  # by class: medium, then root
            cal = app.screen.query_one("#calendar", DataTable)
            assert cal.row_count == 4  # data, backup, secrets, root
            await pilot.press("a")
            await pilot.pause()
            assert isinstance(app.screen, AuditorScreen)
            await pilot.press("escape", "d")
            await pilot.pause()
            assert isinstance(app.screen, DashboardScreen)

    run(go())


def test_pin_prompt_logs_in_without_keeping_the_pin_visible(home, monkeypatch):
    h, _ = home
    monkeypatch.delenv("CUSTODY_PIN", raising=False)

    async def go():
        app = make_app(Settings(home=h, pin_file=None, deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            scr = app.screen
            assert isinstance(scr, DashboardScreen)
            assert scr.view.hsm.state == "not checked"
            # A wrong PIN: error modal with title and hint, nothing kept.
            await pilot.press("p")
            await pilot.pause()
            assert isinstance(app.screen, PinPrompt)
            await pilot.press(*"wrong-pin-0000", "enter")
            await settle(pilot)
            assert isinstance(app.screen, ErrorModal)
            title, hint = app.errors_shown[-1]
            assert "PIN" in title or "pin" in title.lower()
            assert hint
            await pilot.press("escape")
            await pilot.pause()
            assert not app.services.has_pin()
            # The right PIN: the token is checked.
            await pilot.press("p")
            await pilot.pause()
            await pilot.press(*TEST_PIN, "enter")
            await settle(pilot)
            await settle(pilot)
            assert isinstance(app.screen, DashboardScreen)
            assert app.screen.view.hsm.state == "ok"
            # The PIN is nowhere on screen, in reprs, or on any widget's reactive.
            assert TEST_PIN not in repr(app.services) and TEST_PIN not in repr(app)
            shot = app.export_screenshot()
            assert TEST_PIN not in shot
            for node in app.screen.walk_children():
                for name in getattr(node, "_reactives", {}):
                    assert getattr(node, name, None) != TEST_PIN

    run(go())


def test_missing_home_shows_config_error_modal(tmp_path):
    async def go():
        app = make_app(Settings(home=tmp_path / "nowhere", deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert isinstance(app.screen, ErrorModal)
            title, hint = app.errors_shown[0]
            assert title.startswith("No custody deployment") and "custody init" in hint

    run(go())


def _auditor(app) -> AuditorScreen:
    assert isinstance(app.screen, AuditorScreen)
    return app.screen


async def _verify(pilot, bundle: Path, trust: list[Path]) -> None:
    await pilot.press("a")
    await pilot.pause()
    scr = _auditor(pilot.app)
    # Paths are set as a paste would (typing 80 characters key by key is slow); Enter is real.
    scr.query_one("#trust").focus()
    for t in trust:
        scr.query_one("#trust", Input).value = str(t)
        await pilot.press("enter")
        await settle(pilot)  # the key is read as it is pinned
    scr.query_one("#bundle").focus()
    scr.query_one("#bundle", Input).value = str(bundle)
    await pilot.press("enter")
    await settle(pilot)


def test_auditor_verifies_good_bundle_filters_and_exports(home, tmp_path):
    h, pins = home

    async def go():
        app = make_app(Settings(home=h, pin_file=pins, deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await _verify(pilot, FIX / "golden" / "rotate-root", [FIX / "trust" / "pins.json"])
            scr = _auditor(app)
            assert app.errors_shown == []
            v = scr.view
            assert v.ok and all(c.ok for c in v.checks)
            assert "rotate-root a17: 3/3 custodians (alice, bob, carol)" in v.quorums
            tl = scr.query_one("#timeline", DataTable)
            assert tl.row_count == len(v.events) == 10
            scr.query_one("#filter").focus()
            await pilot.press(*"actor=carol")
            await pilot.pause()
            actors = {str(tl.get_row_at(i)[4]) for i in range(tl.row_count)}
            assert actors == {"carol"} and 0 < tl.row_count < 10
            tl.focus()
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, DetailScreen)
            await pilot.press("escape")
            await pilot.pause()
            # Export (Ctrl+S), to a path typed into the prompt.
            out = tmp_path / "report.json"
            await pilot.press("ctrl+s")
            await pilot.pause()
            inp = app.screen.query_one("#text-input", Input)
            inp.value = str(out)
            await pilot.press("enter")
            await settle(pilot)
            rep = json.loads(out.read_text())
            assert rep["ok"] is True and len(rep["checks"]) == len(CHECK_IDS)

    run(go())


def test_auditor_names_the_failing_check_on_a_tampered_bundle(home):
    h, pins = home

    async def go():
        app = make_app(Settings(home=h, pin_file=pins, deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await _verify(
                pilot, FIX / "tampered" / "forged-approval", [FIX / "trust" / "pins.json"]
            )
            v = _auditor(app).view
            assert not v.ok
            failed = {c.id: c.detail for c in v.checks if not c.ok}
            assert set(failed) == {"quorum"}
            assert "carol" in failed["quorum"] and "below threshold" in failed["quorum"]

    run(go())


def test_auditor_without_trust_key_is_a_usage_error(home):
    h, pins = home

    async def go():
        app = make_app(Settings(home=h, pin_file=pins, deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await _verify(pilot, FIX / "golden" / "rotate-root", [])
            assert isinstance(app.screen, ErrorModal)
            assert app.errors_shown[-1][0] == "No trust key pinned"

    run(go())


def test_auditor_shows_bundle_strings_escaped_and_as_plain_text(home):
    """Issue 11: escape sequences and markup in a bundle are shown, never obeyed."""
    h, pins = home
    unsafe = ("\x1b", "\r", "\x07", "\u202e")

    async def go():
        app = make_app(Settings(home=h, pin_file=pins, deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await _verify(
                pilot, FIX / "tampered" / "escape-sequences", [FIX / "trust" / "pins.json"]
            )
            scr = _auditor(app)
            assert not scr.view.ok
            cells = []
            for tid in ("#checks", "#quorums", "#timeline"):
                t = scr.query_one(tid, DataTable)
                cells += [c for i in range(t.row_count) for c in t.get_row_at(i)]
            shown = [c.plain if hasattr(c, "plain") else str(c) for c in cells]
            assert any("\\x1b[2J" in s for s in shown)
            assert any("\\u001b[2J" in e.body for e in scr.view.events)  # a body, JSON-escaped
            assert not any(ch in s for s in shown for ch in unsafe)
            app.push_screen(DetailScreen("x", [Field(label="v", value="[red]x[/red]")]))
            await pilot.pause()
            row = app.screen.query_one("#detail-table", DataTable).get_row_at(0)
            assert row[1].plain == "[red]x[/red]"  # markup shown literally

    run(go())


def test_auditor_refuses_a_directory_or_pin_file_as_trust_key(home, tmp_path):
    """issue 12: a trust key is validated as it is pinned: a directory and a PIN file are
    refused with a typed error and not pinned; a real key shows its name and role."""
    h, pins = home

    async def go():
        app = make_app(Settings(home=h, pin_file=pins, deterministic=True))
        async with app.run_test(size=(100, 32)) as pilot:
            await settle(pilot)
            await pilot.press("a")
            await settle(pilot)
            scr = _auditor(app)
            for bad in (tmp_path, pins):
                scr.query_one("#trust").focus()
                scr.query_one("#trust", Input).value = str(bad)
                await pilot.press("enter")
                await settle(pilot)
                assert scr.trust_keys == [], bad
                await pilot.press("escape")
                await settle(pilot)
            titles = [t for t, _ in app.errors_shown]
            assert titles[0].endswith("is not a file"), titles
            assert len(titles) == 2, titles
            assert TEST_PIN not in " ".join(t + h_ for t, h_ in app.errors_shown)
            scr.query_one("#trust").focus()
            scr.query_one("#trust", Input).value = str(FIX / "trust" / "pins.json")
            await pilot.press("enter")
            await settle(pilot)
            assert scr.trust_keys == [str(FIX / "trust" / "pins.json")]
            shown = str(scr.query_one("#pinned").render())
            assert "(custodian)" in shown or "(super-admin)" in shown, shown

    asyncio.run(go())
