"""Snapshot tests (pytest-textual-snapshot) of each main screen, at 80x24 and 120x40.

The state is deterministic: fixed data through :class:`tui.fakes.StaticServices`, a
fixed clock through the settings, no cursor blink, workers finished before the shot. The
real auditor verification runs on the committed golden fixture (its output is fixed too).
Textual is pinned (8.2.8) in pyproject, so the SVGs are stable. Regenerate with
``python -m pytest tests/tui/test_tui_snapshots.py --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from textual.widgets import Input

from tests.conftest import ROOT, TEST_PIN

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tui.app import make_app
from tui.fakes import StaticServices
from tui.services.home import (
    Alert,
    CustodianRow,
    DashboardView,
    Field,
    HsmView,
    KeyRow,
    Settings,
    alerts_for,
    rotation_rows,
    verify_bundle_view,
)

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
FIX = ROOT / "tests" / "fixtures" / "transcripts"
SIZES = [(80, 24), (120, 40)]
SNAPDIR = Path(__file__).parent / "__snapshots__" / "test_tui_snapshots"


def _key(name: str, state: str, created: str, objects: int, kcv: str, cls: str = "-") -> KeyRow:
    branch, _, v = name.partition("/v")
    age = (NOW - datetime.fromisoformat(created)).days
    return KeyRow(
        name=name,
        branch=branch,
        version=int(v),
        key_class=cls,
        state=state,
        kcv=kcv,
        created=created,
        age_days=age,
        objects=objects,
        extra=(Field(label="wrapped under", value="root/v2"),) if branch != "root" else (),
    )


def sample_view() -> DashboardView:
    from custody.config import BranchPolicy

    branches = {
        "data": BranchPolicy(key_class="medium"),
        "backup": BranchPolicy(key_class="low"),
        "secrets": BranchPolicy(key_class="high"),
    }
    roots = (
        _key("root/v1", "decrypt-only", "2026-06-01T09:00:00+00:00", 0, "3f9a1c"),
        _key("root/v2", "active", "2026-12-01T09:00:00+00:00", 0, "a07b52"),
    )
    keks = (
        _key("data/v1", "decrypt-only", "2026-06-02T09:00:00+00:00", 120, "91c4d0", "medium"),
        _key("data/v2", "active", "2026-09-10T09:00:00+00:00", 880, "5be217", "medium"),
        _key("backup/v1", "active", "2026-06-02T09:00:00+00:00", 14, "0d66ae", "low"),
        _key("secrets/v3", "active", "2026-11-20T09:00:00+00:00", 42, "e2f819", "high"),
    )
    hsm = HsmView(
        state="ok",
        token_label="custody",
        module="/usr/lib/softhsm/libsofthsm2.so",
        embedded=True,
        token=(
            Field(label="manufacturer", value="SoftHSM project"),
            Field(label="serial", value="0000000000000001"),
        ),
        root_keys_on_token=("root/v1", "root/v2"),
    )
    rotations = rotation_rows(keks, roots, branches, NOW)
    custodians = (
        CustodianRow(name="alice", role="custodian", last_drill="2027-01-15", status="ok"),
        CustodianRow(name="bob", role="custodian", last_drill="2027-01-15", status="ok"),
        CustodianRow(name="carol", role="custodian", last_drill="2026-07-02", status="drill due"),
        CustodianRow(name="dan", role="custodian", last_drill="never", status="drill due"),
        CustodianRow(name="erin", role="custodian", last_drill="2027-02-20", status="ok"),
    )
    alerts = (
        *alerts_for(hsm, rotations, keks, roots, False, custodians),
        Alert(
            level="warning",
            text="2 of 5 custodians have no drill within 180 days",
            hint="Schedule a drill ceremony.",
        ),
    )
    return DashboardView(
        deployment_id="5d1e0c3a9b7f4e2c8a6d",
        home="/srv/custody",
        now=NOW.isoformat(),
        hsm=hsm,
        roots=roots,
        keks=keks,
        rotations=rotations,
        custodians=custodians,
        alerts=alerts,
        objects=(("dek", 1000), ("secret", 42), ("backup-key", 14)),
    )


def app_for(**kw):
    settings = Settings(home=Path("/srv/custody"), clock=lambda: NOW, deterministic=True)
    return make_app(settings, StaticServices(settings=settings, view=sample_view(), **kw))


async def settled(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def open_auditor(pilot) -> None:
    await settled(pilot)
    await pilot.press("a")
    await pilot.pause()
    scr = pilot.app.screen
    scr.pin_trust_key(str((FIX / "trust" / "pins.json").relative_to(ROOT)))
    await settled(pilot)
    scr.query_one("#bundle", Input).value = str(
        (FIX / "tampered" / "forged-approval").relative_to(ROOT)
    )
    scr.action_verify()
    await settled(pilot)


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(ROOT)  # relative fixture paths in the auditor shots


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard(snap_compare, size):
    assert snap_compare(app_for(), terminal_size=size, run_before=settled)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_light_theme(snap_compare, size):
    async def before(pilot):
        await settled(pilot)
        await pilot.press("t")
        await pilot.pause()

    assert snap_compare(app_for(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_keys(snap_compare, size):
    async def before(pilot):
        await settled(pilot)
        await pilot.press("k")
        await settled(pilot)

    assert snap_compare(app_for(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_auditor_tampered(snap_compare, size):
    assert snap_compare(app_for(), terminal_size=size, run_before=open_auditor)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap_compare, size):
    async def before(pilot):
        await settled(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app_for(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_detail(snap_compare, size):
    async def before(pilot):
        await settled(pilot)
        pilot.app.screen.query_one("#keks").focus()
        await pilot.press("down", "enter")
        await pilot.pause()

    assert snap_compare(app_for(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_pin_prompt_with_typed_pin(snap_compare, size):
    async def before(pilot):
        await settled(pilot)
        await pilot.press("p")
        await pilot.pause()
        await pilot.press(*TEST_PIN)
        await pilot.pause()

    assert snap_compare(app_for(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_error_modal(snap_compare, size):
    from custody.errors import PinIncorrect

    err = PinIncorrect(
        "The token refused the PIN", "Check the PIN; the token locks after a few failures."
    )

    async def before(pilot):
        await settled(pilot)
        pilot.app.report_error(err)
        await pilot.pause()

    assert snap_compare(app_for(), terminal_size=size, run_before=before)


def test_no_secret_in_any_snapshot():
    """The PIN typed in test_pin_prompt_with_typed_pin (and any PIN) never reaches an SVG."""
    svgs = sorted(SNAPDIR.glob("*.svg"))
    assert len(svgs) >= 16, "run with --snapshot-update first"
    for svg in svgs:
        text = svg.read_text(encoding="utf-8")
        assert TEST_PIN not in text, svg.name
        assert "so_pin" not in text and "test-so-pin" not in text, svg.name


def test_fixed_auditor_fixture_is_what_the_shot_shows():
    v = verify_bundle_view(
        str(FIX / "tampered" / "forged-approval"), [str(FIX / "trust" / "pins.json")]
    )
    assert not v.ok and [c.id for c in v.checks if not c.ok] == ["quorum"]
