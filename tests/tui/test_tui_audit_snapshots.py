"""Snapshot tests of the audit log viewer at 80x24 and 120x40, on fixed data.

:class:`tui.fakes.StaticServices` serves fixed entries (fixed times, no live clock) and
a fixed, already checked proof; the live-follow timer polls the same data, so nothing
moves. Regenerate with ``--snapshot-update`` and review the SVGs.
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
from tui.services.home import AuditEntryRow, ProofView, Settings

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
SIZES = [(80, 24), (120, 40)]
SNAPDIR = Path(__file__).parent / "__snapshots__" / "test_tui_audit_snapshots"
LOG = "9c2f4e1a7b3d5f60a1b2c3d4e5f60718"

_SCRIPT: list[
    tuple[str, str, str, str, dict[str, object]]
] = [  # (op, target, actor, outcome, details)
    ("status", "custody", "dave", "intent", {}),
    ("status", "custody", "dave", "ok", {"exit": 0, "intent_seq": 0}),
    ("kek rotate", "data", "dave", "intent", {"branch": "data"}),
    ("kek rotate", "data", "dave", "ok", {"exit": 0, "intent_seq": 2}),
    ("dek generate", "data", "svc-batch", "intent", {"count": 1000}),
    ("dek generate", "data", "svc-batch", "ok", {"exit": 0, "intent_seq": 4}),
    ("rekey run", "data", "cron", "intent", {"batch": 10000, "due": True}),
    ("rotation.warning", "secrets", "cron", "ok", {"days_left": 9, "status": "upcoming"}),
    ("rekey run", "data", "cron", "ok", {"exit": 0, "intent_seq": 6}),
    ("audit checkpoint", "custody", "dave", "intent", {}),
    ("audit checkpoint", "custody", "dave", "ok", {"exit": 0, "intent_seq": 9}),
    ("hsm selftest", "custody", "mallory", "intent", {}),
    (
        "hsm selftest",
        "custody",
        "mallory",
        "failed",
        {"error": "PinIncorrect", "intent_seq": 11, "title": "The token refused the PIN"},
    ),
    ("backup create", "/srv/data", "dave", "intent", {"out": "/backups/d.cbk", "src": "/srv/data"}),
    ("backup create", "/srv/data", "dave", "ok", {"exit": 0, "intent_seq": 13}),
]


def sample_entries() -> tuple[AuditEntryRow, ...]:
    t0 = int(datetime(2027, 2, 27, 9, 0, tzinfo=UTC).timestamp())
    return tuple(
        AuditEntryRow(
            seq=i,
            time=t0 + i * 1801,
            actor=a,
            op=op,
            target=tg,
            outcome=o,
            details=tuple((k, str(v)) for k, v in sorted(d.items())),
            prev=f"{i:02x}" * 32,
            log=LOG,
        )
        for i, (op, tg, a, o, d) in enumerate(_SCRIPT)
    )


def sample_proof() -> ProofView:
    return ProofView(
        seq=3,
        tree_size=10,
        root="5be2170d66ae91c4d0e2f8193f9a1ca07b525d1e0c3a9b7f4e2c8a6d0b1c2d3e",
        doc={
            "type": "custody.audit.proof/v1",
            "leaf_index": 3,
            "entry": {"op": "kek rotate", "target": "data", "actor": "dave"},
            "inclusion": ["aa" * 32, "bb" * 32, "cc" * 32, "dd" * 32],
        },
        trust_keys=("keys/audit-trust.json",),
        ok=True,
        summary="entry 3 (kek rotate data by dave: ok) is in the log at tree size 10, "
        "signed by hsm-audit",
    )


def app_for():
    settings = Settings(home=Path("/srv/custody"), clock=lambda: NOW, deterministic=True)
    from tests.tui.test_tui_snapshots import sample_view

    return make_app(
        settings,
        StaticServices(
            settings=settings,
            view=sample_view(),
            log_entries=sample_entries(),
            log_covered=10,
            proof=sample_proof(),
        ),
    )


async def settled(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def open_log(pilot) -> None:
    await settled(pilot)
    await pilot.press("l")
    await settled(pilot)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_audit_log(snap_compare, size):
    assert snap_compare(app_for(), terminal_size=size, run_before=open_log)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_audit_log_filtered(snap_compare, size):
    async def before(pilot):
        await open_log(pilot)
        await pilot.press("slash", *"outcome=failed", "enter")
        await settled(pilot)

    assert snap_compare(app_for(), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_audit_log_proof(snap_compare, size):
    async def before(pilot):
        await open_log(pilot)
        scr = pilot.app.screen
        scr.pin_trust_key("keys/audit-trust.json")
        scr.query_one("#log-filter", Input).value = "op=kek outcome=ok"
        await pilot.pause()
        await pilot.press("p")
        await settled(pilot)

    assert snap_compare(app_for(), terminal_size=size, run_before=before)


def test_no_secret_in_the_audit_snapshots():
    svgs = sorted(SNAPDIR.glob("*.svg"))
    assert len(svgs) >= 6, "run with --snapshot-update first"
    for svg in svgs:
        text = svg.read_text(encoding="utf-8")
        assert TEST_PIN not in text and "so_pin" not in text, svg.name
