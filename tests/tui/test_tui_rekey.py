"""Pilot tests of the re-key screen against a real home (SoftHSMv2 via ``custody init``).

The home has objects under an old KEK version (``kek rotate``, ``dek generate``,
``kek rotate``). The screen shows them pending, plans the job in a confirmation dialog,
runs it in a thread worker with its own deployment, shows per-batch progress, and the
store then has every object under the current version (asserted on the store itself).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable, ProgressBar

from tests.conftest import ROOT, TEST_PIN, run_cli

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.tui_fixtures import dev_home, settle
from tui.app import make_app
from tui.screens.modals import ConfirmModal, PinPrompt
from tui.screens.rekey import RekeyScreen, fmt_eta, job_rate
from tui.services.home import JobView, Settings

# The tests share one module-scoped home and build on each other in file order: one worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("tui-rekey")]
SIZE = (100, 32)
OBJECTS = 240


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return dev_home(tmp_path_factory.mktemp("tuirekey"), OBJECTS, rotate_after=True)


def versions_in_store(h: Path) -> dict[int, int]:
    db = sqlite3.connect(h / "custody.db")
    try:
        return dict(
            db.execute(
                "SELECT kek_version, COUNT(*) FROM objects WHERE branch='data' GROUP BY kek_version"
            ).fetchall()
        )
    finally:
        db.close()


def audit_ops(h: Path) -> list[tuple[str, str, dict]]:
    db = sqlite3.connect(h / "audit.db")
    try:
        out = []
        for (line,) in db.execute("SELECT line FROM entries ORDER BY seq"):
            e = json.loads(line)
            out.append((e["op"], e["outcome"], e["details"]))
        return out
    finally:
        db.close()


async def open_rekey(pilot) -> RekeyScreen:
    await settle(pilot)
    await pilot.press("j")
    await settle(pilot)
    assert isinstance(pilot.app.screen, RekeyScreen)
    return pilot.app.screen


def stage(scr: RekeyScreen, name: str) -> tuple[str, int]:
    v = next(v for v in scr.view.versions if v.name == name)
    return v.state, v.objects


def test_starts_a_job_after_confirmation_and_moves_every_object(home):
    h, pins = home
    assert versions_in_store(h) == {1: OBJECTS}

    async def go():
        app = make_app(Settings(home=h, pin_file=pins, deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            scr = await open_rekey(pilot)
            assert app.errors_shown == []
            assert stage(scr, "data/v1") == ("decrypt-only", OBJECTS)
            assert stage(scr, "data/v2") == ("active", 0)
            assert stage(scr, "root/v1") == ("active", 0)  # roots are in the inventory
            assert scr.view.pending == (("data", 1, OBJECTS),)
            assert {r.key: r.status for r in scr.view.policy}["data/v2"] == "ok"
            # Declining the dialog changes nothing.
            await pilot.press("s")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("n")
            await settle(pilot)
            assert versions_in_store(h) == {1: OBJECTS}
            # Confirm: the dialog shows the plan; the job runs with per-batch progress.
            scr.batch_size = 50
            await pilot.press("s")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmModal)
            shown = " ".join(str(w.render()) for w in app.screen.query(".dialog Static"))
            assert f"data: {OBJECTS} objects  v1 -> v2" in shown and f"total {OBJECTS}" in shown
            # issue 12: every version the run will schedule for destruction is named
            assert "schedules for destruction after 7 days: data/v1" in shown, shown
            await pilot.press("y")
            await settle(pilot)
            await settle(pilot)
            assert app.errors_shown == []
            assert scr.last_run is not None and scr.last_run.status == "done"
            assert scr.last_run.moved == OBJECTS and scr._moved == OBJECTS
            bar = scr.query_one("#rk-bar", ProgressBar)
            assert bar.total == OBJECTS and bar.progress == OBJECTS
            assert f"{OBJECTS}/{OBJECTS} objects" in str(scr.query_one("#rk-rate").render())
            # The job and the retirement stage on screen, after the refresh.
            assert scr.jobs[0].state == "done" and scr.jobs[0].done == OBJECTS
            assert stage(scr, "data/v1") == ("destroy-scheduled", 0)
            assert scr.view.pending == ()
            # Cancel the scheduled destruction of data/v1 (x on its row, confirmed).
            t = scr.query_one("#rk-versions", DataTable)
            t.focus()
            t.move_cursor(
                row=[str(t.get_row_at(i)[0]) for i in range(t.row_count)].index("data/v1")
            )
            await pilot.press("x")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("y")
            await settle(pilot)
            await settle(pilot)
            v1 = next(v for v in scr.view.versions if v.name == "data/v1")
            assert (v1.state, v1.hold) == ("disabled", True)

    asyncio.run(go())
    # Domain state: every object is under the new version, and the run was audited.
    assert versions_in_store(h) == {2: OBJECTS}
    runs = [(o, d) for op, o, d in audit_ops(h) if op == "rekey run"]
    assert [o for o, _ in runs] == ["intent", "ok"] and runs[0][1]["via"] == "tui"
    assert [o for op, o, _ in audit_ops(h) if op == "rekey cancel-destroy"] == ["intent", "ok"]


def test_asks_for_the_pin_when_none_is_known(home, monkeypatch):
    h, pins = home
    monkeypatch.delenv("CUSTODY_PIN", raising=False)
    r = run_cli("kek", "rotate", "--branch", "data", "--home", str(h), "--pin-file", str(pins))
    assert r.returncode == 0, r.stderr
    assert versions_in_store(h) == {2: OBJECTS}

    async def go():
        app = make_app(Settings(home=h, pin_file=None, deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            scr = await open_rekey(pilot)
            assert stage(scr, "data/v2") == ("decrypt-only", OBJECTS)
            await pilot.press("s")
            await settle(pilot)
            await pilot.press("y")
            await pilot.pause()
            assert isinstance(app.screen, PinPrompt)
            await pilot.press(*TEST_PIN, "enter")
            await settle(pilot)
            await settle(pilot)
            assert app.errors_shown == []
            assert scr.last_run is not None and scr.last_run.moved == OBJECTS
            assert TEST_PIN not in app.export_screenshot() and TEST_PIN not in repr(app.services)
            for node in scr.walk_children():
                for name in getattr(node, "_reactives", {}):
                    assert getattr(node, name, None) != TEST_PIN

    asyncio.run(go())
    assert versions_in_store(h) == {3: OBJECTS}


def test_rate_and_eta_of_another_process_job():
    j = JobView(
        id=7,
        branch="data",
        to_version=3,
        state="running",
        done=30_000,
        total=120_000,
        started="2027-03-01T12:00:00+00:00",
        updated="2027-03-01T12:00:02+00:00",
    )
    assert job_rate(j) == 15_000
    assert fmt_eta((j.total - j.done) / 15_000) == "0m06s" and fmt_eta(7260) == "2h01m"
    assert fmt_eta(None) == "-"
