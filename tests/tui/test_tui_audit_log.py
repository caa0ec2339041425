"""Pilot tests of the audit log viewer against a real home (SoftHSMv2 via ``custody init``).

The entries come from real CLI commands (each writes intent + outcome to HOME/audit.db);
the checkpoint is signed by ``custody audit checkpoint`` with the token's audit key, and
the proof the viewer produces is checked against the key written by ``--trust-out``, and
again by the CLI's own ``audit check-proof``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from tests.conftest import ROOT, TEST_PIN, run_cli

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.tui_fixtures import dev_home, settle
from tui.app import make_app
from tui.screens.audit_log import AuditLogScreen
from tui.screens.modals import DetailScreen, ErrorModal, TextPrompt
from tui.services.home import Settings

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("tui-audit-log")]
SIZE = (100, 32)
FIX = ROOT / "tests" / "fixtures" / "transcripts"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return dev_home(tmp_path_factory.mktemp("tuilog"), 5)


def rows(scr: AuditLogScreen) -> list[tuple[str, ...]]:
    t = scr.query_one("#log-entries", DataTable)
    return [tuple(str(c) for c in t.get_row_at(i)) for i in range(t.row_count)]


async def open_log(pilot) -> AuditLogScreen:
    await settle(pilot)
    await pilot.press("l")
    await settle(pilot)
    assert isinstance(pilot.app.screen, AuditLogScreen)
    return pilot.app.screen


def test_lists_cli_entries_filters_and_shows_detail(home):
    h, pins = home

    async def go():
        app = make_app(Settings(home=h, pin_file=pins, deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            scr = await open_log(pilot)
            assert app.errors_shown == []
            ops = {(r[4], r[2]) for r in rows(scr)}
            for op in ("kek rotate", "dek generate"):
                assert (op, "intent") in ops and (op, "ok") in ops
            # Filter: op and outcome terms, typed into the field ("/" focuses it).
            await pilot.press("slash", *"op=kek outcome=ok", "enter")
            await pilot.pause()
            shown = rows(scr)
            assert [(r[4], r[2], r[5]) for r in shown] == [("kek rotate", "ok", "data")]
            # Enter on the row: the entry's detail, with its details (intent_seq) and chain.
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, DetailScreen)
            t = app.screen.query_one("#detail-table", DataTable)
            fields = {str(t.get_row_at(i)[0]): str(t.get_row_at(i)[1]) for i in range(t.row_count)}
            assert fields["op"] == "kek rotate" and fields["outcome"] == "ok"
            assert "intent_seq" in fields and len(fields["prev (chain)"]) == 64
            await pilot.press("escape")
            await pilot.pause()
            # Free text matches details too; a filter with no match shows nothing.
            scr.query_one("#log-filter", Input).value = "nothing-like-this"
            await pilot.pause()
            assert rows(scr) == []
            scr.query_one("#log-filter", Input).value = ""
            await pilot.pause()
            assert len(rows(scr)) == scr.log_size

    asyncio.run(go())


def test_follows_live_then_proves_an_entry_and_exports_it(home, tmp_path):
    h, pins = home
    trust = tmp_path / "audit-trust.json"

    async def go():
        app = make_app(Settings(home=h, pin_file=pins, deterministic=True))
        async with app.run_test(size=SIZE) as pilot:
            scr = await open_log(pilot)
            before = scr.log_size
            # No checkpoint yet: p gives a clear message naming the command to run.
            scr.query_one("#log-filter", Input).value = "op=kek outcome=ok"
            await pilot.pause()
            scr.pin_trust_key(str(FIX / "trust" / "dave.json"))  # any key; not reached
            await pilot.press("p")
            await settle(pilot)
            assert isinstance(app.screen, ErrorModal)
            title, hint = app.errors_shown[-1]
            assert (
                title.startswith("No checkpoint covers entry")
                and "custody audit checkpoint" in hint
            )
            await pilot.press("escape")
            await pilot.pause()
            # Another process signs a checkpoint (HSM audit key); the viewer follows live.
            r = run_cli(
                "audit",
                "checkpoint",
                "--home",
                str(h),
                "--pin-file",
                str(pins),
                "--trust-out",
                str(trust),
            )
            assert r.returncode == 0, r.stderr
            scr.query_one("#log-filter", Input).value = ""
            for _ in range(30):
                await pilot.pause(0.2)
                if scr.log_size >= before + 2:
                    break
            await settle(pilot)
            assert scr.log_size == before + 2 and scr.covered == before + 1
            assert [(r[4], r[2]) for r in rows(scr)[-2:]] == [
                ("audit checkpoint", "intent"),
                ("audit checkpoint", "ok"),
            ]
            # A key that did not sign the checkpoint: the check fails, by name.
            scr.query_one("#log-filter", Input).value = "op=kek outcome=ok"
            await pilot.pause()
            await pilot.press("p")
            await settle(pilot)
            assert isinstance(app.screen, ErrorModal)
            assert app.errors_shown[-1][0] == "The proof's checkpoint is not signed by a pinned key"
            await pilot.press("escape")
            await pilot.pause()
            assert scr.proof is None
            # Pin the real audit key (Ctrl+T prompt) instead, and prove the entry.
            scr.trust_keys.clear()
            await pilot.press("ctrl+t")
            await pilot.pause()
            assert isinstance(app.screen, TextPrompt)
            app.screen.query_one("#text-input", Input).value = str(trust)
            await pilot.press("enter")
            await pilot.pause()
            await pilot.press("p")
            await settle(pilot)
            assert isinstance(app.screen, DetailScreen), app.errors_shown
            p = scr.proof
            seq = scr.selected().seq
            assert p is not None and p.ok and p.seq == seq and p.tree_size == before + 1
            assert f"entry {seq} (kek rotate data by" in p.summary and "hsm-audit" in p.summary
            await pilot.press("escape")
            await pilot.pause()
            # Export (Ctrl+S) and check the file with the CLI, offline.
            out = tmp_path / "proof.json"
            await pilot.press("ctrl+s")
            await pilot.pause()
            app.screen.query_one("#text-input", Input).value = str(out)
            await pilot.press("enter")
            await settle(pilot)
            doc = json.loads(out.read_text())
            assert doc["type"] == "custody.audit.proof/v1" and doc["leaf_index"] == seq
            c = run_cli("audit", "check-proof", str(out), "--trust", str(trust))
            assert c.returncode == 0 and c.stdout.startswith("VALID"), c.stdout + c.stderr
            assert TEST_PIN not in app.export_screenshot()

    asyncio.run(go())


def test_help_lists_the_log_and_rekey_bindings_at_80x24():
    """Keyboard-only at 80x24: l and j reach the screens; ? lists their keys."""
    from tests.tui.test_tui_audit_snapshots import app_for
    from tests.tui.test_tui_rekey_snapshots import sample_plan, sample_rekey
    from tui.screens.modals import HelpScreen
    from tui.screens.rekey import RekeyScreen

    async def go():
        app = app_for()
        app.services.rekey, app.services.plan = sample_rekey(), sample_plan()
        async with app.run_test(size=(80, 24)) as pilot:
            for key, screen, wanted in (
                (
                    "l",
                    AuditLogScreen,
                    {"Follow", "Filter", "Proof", "Pin key", "Export", "Audit log"},
                ),
                ("j", RekeyScreen, {"Start job", "Run due", "Cancel destroy", "Re-key"}),
            ):
                await pilot.press(key)
                await settle(pilot)
                assert isinstance(app.screen, screen)
                await pilot.press("question_mark")
                await pilot.pause()
                assert isinstance(app.screen, HelpScreen)
                t = app.screen.query_one("#help-keys", DataTable)
                assert wanted <= {str(t.get_row_at(i)[1]) for i in range(t.row_count)}
                await pilot.press("escape")
                await pilot.pause()

    asyncio.run(go())
