"""Snapshot tests of the re-key screen at 80x24 and 120x40, on fixed data.

A job of another process is running (its rate comes from the job row's own timestamps,
so the shot is deterministic), versions are in every retirement stage, and the policy
panel shows due, upcoming and ok branches. Plus the confirmation dialog with its plan.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST_PIN

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tui.app import make_app
from tui.fakes import StaticServices
from tui.services.home import (
    JobView,
    PlanView,
    RekeyView,
    RotationRow,
    Settings,
    VersionRow,
)

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
SIZES = [(80, 24), (120, 40)]
SNAPDIR = Path(__file__).parent / "__snapshots__" / "test_tui_rekey_snapshots"


def sample_rekey() -> RekeyView:
    v = VersionRow
    versions = (
        v(  # issue 12: retired roots are in the table, their destruction cancellable (x)
            branch="root",
            version=1,
            state="destroy-scheduled",
            objects=0,
            created="2026-01-05T09:00:00+00:00",
            destroy_after="2027-03-08T12:00:00+00:00",
        ),
        v(
            branch="backup",
            version=1,
            state="active",
            objects=14,
            created="2026-06-02T09:00:00+00:00",
        ),
        v(
            branch="data",
            version=1,
            state="destroyed",
            objects=0,
            created="2026-01-05T09:00:00+00:00",
        ),
        v(
            branch="data",
            version=2,
            state="destroy-scheduled",
            objects=0,
            created="2026-06-02T09:00:00+00:00",
            destroy_after="2027-03-06T03:17:00+00:00",
        ),
        v(
            branch="data",
            version=3,
            state="decrypt-only",
            objects=90_000,
            created="2026-09-10T09:00:00+00:00",
        ),
        v(
            branch="data",
            version=4,
            state="active",
            objects=30_000,
            created="2027-03-01T11:58:00+00:00",
        ),
        v(
            branch="secrets",
            version=2,
            state="disabled",
            objects=0,
            created="2026-08-01T09:00:00+00:00",
            hold=True,
        ),
        v(
            branch="secrets",
            version=3,
            state="active",
            objects=42,
            created="2026-11-20T09:00:00+00:00",
        ),
    )
    jobs = (
        JobView(
            id=12,
            branch="data",
            to_version=4,
            state="running",
            done=30_000,
            total=120_000,
            started="2027-03-01T11:59:58+00:00",
            updated="2027-03-01T12:00:00+00:00",
        ),
        JobView(
            id=11,
            branch="data",
            to_version=3,
            state="done",
            done=118_000,
            total=118_000,
            started="2026-09-10T09:01:00+00:00",
            updated="2026-09-10T09:01:09+00:00",
            finished="2026-09-10T09:01:10+00:00",
            verified=1000,
        ),
    )
    policy = (
        RotationRow(
            key="secrets/v3",
            key_class="high",
            period_days=90,
            last_rotation="2026-11-20",
            due="2027-02-18",
            days_left=-11,
            status="overdue",
        ),
        RotationRow(
            key="data/v4",
            key_class="medium",
            period_days=180,
            last_rotation="2027-03-01",
            due="2027-08-28",
            days_left=180,
            status="ok",
        ),
        RotationRow(
            key="backup/v1",
            key_class="low",
            period_days=365,
            last_rotation="2026-06-02",
            due="2027-06-02",
            days_left=93,
            status="ok",
        ),
        RotationRow(
            key="root/v2",
            key_class="low",
            period_days=365,
            last_rotation="2026-03-20",
            due="2027-03-20",
            days_left=19,
            status="upcoming",
        ),
    )
    return RekeyView(
        versions=versions,
        jobs=jobs,
        policy=policy,
        pending=(("data", 3, 90_000),),
        lease="pid 4242 on vault-1 to 12:05Z",
    )


def sample_plan() -> PlanView:
    return PlanView(
        branch=None,
        items=(("data", 3, 4, 90_000), ("secrets", 3, 4, 42)),
        rotate=("secrets",),
        total=90_042,
        rate=112_000.0,
        eta_seconds=90_042 / 112_000,
        retire=(("data/v3", "destroy scheduled"), ("root/v2", "destroy scheduled")),
        destroy_delay_days=7,
    )


def app_for():
    from tests.tui.test_tui_snapshots import sample_view

    settings = Settings(home=Path("/srv/custody"), clock=lambda: NOW, deterministic=True)
    return make_app(
        settings,
        StaticServices(
            settings=settings, view=sample_view(), rekey=sample_rekey(), plan=sample_plan()
        ),
    )


async def settled(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def open_rekey(pilot) -> None:
    await settled(pilot)
    await pilot.press("j")
    await settled(pilot)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_rekey(snap_compare, size):
    assert snap_compare(app_for(), terminal_size=size, run_before=open_rekey)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_rekey_confirm(snap_compare, size):
    async def before(pilot):
        await open_rekey(pilot)
        await pilot.press("u")
        await settled(pilot)

    assert snap_compare(app_for(), terminal_size=size, run_before=before)


def test_no_secret_in_the_rekey_snapshots():
    svgs = sorted(SNAPDIR.glob("*.svg"))
    assert len(svgs) >= 4, "run with --snapshot-update first"
    for svg in svgs:
        assert TEST_PIN not in svg.read_text(encoding="utf-8"), svg.name
