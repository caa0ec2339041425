"""The dashboard's custodian rows and drill alert, on a home built by ``custody demo``.

The demo enrols six custodians, runs a drill that four of them pass (alice, bob, carol,
dave) and needs T+1 = 5, so the dashboard shows each custodian's last passed drill and a
drill alert (from ``ceremonies.runner.steps.drill_status``). Built once for the module.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from textual.widgets import DataTable

from tests.conftest import ROOT, run_cli

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.tui_fixtures import settle
from tui.app import make_app
from tui.screens.dashboard import DashboardScreen
from tui.screens.modals import DetailScreen
from tui.services.home import Settings

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("tui-dashboard-roster")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, datetime]:
    h = tmp_path_factory.mktemp("tuidemo") / "home"
    r = run_cli("demo", "--home", str(h), "--json", timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    db = sqlite3.connect(h / "custody.db")
    try:
        (at,) = db.execute("SELECT MAX(passed_at) FROM drills").fetchone()
    finally:
        db.close()
    return h, h / "demo-pin", datetime.fromtimestamp(at, UTC)


def cells(table) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def test_custodian_rows_and_drill_alert(demo):
    h, pin, drilled = demo
    day = drilled.date().isoformat()

    async def go():
        app = make_app(
            Settings(
                home=h, pin_file=pin, clock=lambda: drilled + timedelta(days=3), deterministic=True
            )
        )
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            scr = app.screen
            assert isinstance(scr, DashboardScreen) and app.errors_shown == []
            rows = {r[0]: r[1:] for r in cells(scr.query_one("#custodians"))}
            assert rows == {
                "alice": [day, "ok"],
                "bob": [day, "ok"],
                "carol": [day, "ok"],
                "dave": [day, "ok"],
                "erin": ["never", "drill due"],
                "frank": ["never", "drill due"],
            }
            alerts = [r[1] for r in cells(scr.query_one("#alerts"))]
            drill = [a for a in alerts if a.startswith("Drills:")]
            assert drill == ["Drills: 4 of 5 (T+1) custodians passed in the last 180 days"]
            # The alert opens its detail, which names who passed.
            t = scr.query_one("#alerts", DataTable)
            t.focus()
            t.move_cursor(row=alerts.index(drill[0]))
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, DetailScreen)
            d = app.screen.query_one("#detail-table", DataTable)
            hint = next(
                str(d.get_row_at(i)[1])
                for i in range(d.row_count)
                if str(d.get_row_at(i)[0]) == "hint"
            )
            assert "Passed: alice, bob, carol, dave" in hint

    asyncio.run(go())


def test_drills_expire_after_the_policy_period(demo):
    h, pin, drilled = demo

    async def go():
        app = make_app(
            Settings(
                home=h,
                pin_file=pin,
                clock=lambda: drilled + timedelta(days=181),
                deterministic=True,
            )
        )
        async with app.run_test(size=(100, 32)) as pilot:
            await settle(pilot)
            scr = app.screen
            assert isinstance(scr, DashboardScreen)
            v = scr.view
            assert {c.status for c in v.custodians} == {"drill due"}
            assert [a.text for a in v.alerts if a.text.startswith("Drills:")] == [
                "Drills: 0 of 5 (T+1) custodians passed in the last 180 days"
            ]

    asyncio.run(go())


def test_a_drill_on_retired_shares_counts_neither_in_the_row_nor_in_the_alert(demo, tmp_path):
    """The row and the T+1 alert share one rule: only drills of the active epoch count."""
    from types import SimpleNamespace

    from tui.services.status import RETIRED_ONLY, custodian_rows, drill_alerts

    h, _pin, drilled = demo
    db = tmp_path / "custody.db"
    (tmp_path / "custody.toml").write_bytes((h / "custody.toml").read_bytes())  # its store
    src = sqlite3.connect(h / "custody.db")
    dst = sqlite3.connect(db)
    src.backup(dst)
    src.close()
    dst.execute("UPDATE drills SET epoch=epoch+100 WHERE custodian='bob'")  # a retired epoch
    dst.commit()
    dst.close()
    cfg = SimpleNamespace(drill_period_days=180)
    now = drilled + timedelta(days=3)
    rows = {c.name: (c.last_drill, c.status) for c in custodian_rows(db, cfg, now) or ()}
    assert rows["bob"] == (RETIRED_ONLY, "drill due")
    assert rows["alice"] == (drilled.date().isoformat(), "ok")
    assert rows["erin"] == ("never", "drill due")
    (alert,) = drill_alerts(db, cfg, now, tuple(custodian_rows(db, cfg, now) or ()))
    assert alert.text.startswith("Drills: 3 of 5") and "bob" not in alert.hint
    fresh = sum(1 for _d, st in rows.values() if st == "ok")
    assert fresh == 3  # the same count as the alert's
