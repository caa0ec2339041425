"""Pilot tests of the TUI traps a new user hit (issue 12, "The TUI has traps").

The screens run on fixed views (:class:`tui.fakes.StaticCeremonyServices`), so each test
drives exactly one trap; the stuck-ceremony abort runs against a real SoftHSMv2 token in
``test_tui_ceremony_pilot.py``. Each test fails on the code before the fix.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace

from tests.conftest import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from textual.widgets import Button, Input, Static

from tests.tui.test_tui_ceremony_snapshots import (
    CID,
    app_for,
    recover_view,
    remote_view,
    settled,
    to_ceremony,
)
from tui.screens.ceremony import CeremonyScreen
from tui.screens.ceremony_offer import OfferScreen, QRScreen
from tui.screens.ceremony_start import StartModal
from tui.screens.modals import ConfirmModal, HelpScreen, PinPrompt
from tui.services.ceremony_views import public_facts

FULL_CID = "c3a1f09e5b7d4e21a0b1c2d3e4f50617"  # 32 hex, what --session takes


def screen_text(app) -> list[str]:
    return [s.text for s in app.screen._compositor.render_strips()]


def closed_view():
    return replace(recover_view(), status="closed", awaiting=None, step=None)


def run(coro) -> None:
    asyncio.run(coro)


def test_closed_ceremony_gives_focus_back_so_keys_work():
    async def go():
        app = app_for(recover_view())
        async with app.run_test(size=(80, 24)) as pilot:
            await to_ceremony(pilot)
            scr = app.screen
            assert isinstance(scr, CeremonyScreen)
            assert isinstance(app.focused, Input)  # typing shares
            await pilot.press("a", "b")  # typed into the words field...
            app.ceremony_services.current = closed_view()
            scr.load_current()
            await settled(pilot)
            assert not isinstance(app.focused, Input), app.focused
            assert scr.query_one("#share-envelope", Input).value == ""
            await pilot.press("n")  # ...and n now starts a ceremony
            await settled(pilot)
            assert isinstance(app.screen, StartModal)
            await pilot.press("escape")
            await settled(pilot)
            await pilot.press("question_mark")
            await settled(pilot)
            assert isinstance(app.screen, HelpScreen)

    run(go())


def test_quit_with_a_ceremony_open_asks_and_names_the_dropped_shares():
    async def go():
        app = app_for(recover_view())
        async with app.run_test(size=(80, 24)) as pilot:
            await to_ceremony(pilot)
            app.screen.query_one("#share-words", Input).focus()
            await pilot.press("a", "c", "a", "d")  # words typed, not handed in
            await pilot.press("ctrl+q")
            await settled(pilot)
            modal = app.screen
            assert isinstance(modal, ConfirmModal), modal
            detail = " ".join(str(s.render()) for s in modal.query(Static))
            assert "2 share(s) handed in this session (alice, carol)" in detail
            assert "dropped" in detail and "words typed" in detail
            await pilot.press("n")  # stay
            await settled(pilot)
            assert isinstance(app.screen, CeremonyScreen)
            assert app.return_code is None
            await pilot.press("ctrl+q")
            await settled(pilot)
            await pilot.press("y")
            await settled(pilot)
        assert app.return_code == 0

    run(go())


def test_quit_without_an_open_ceremony_does_not_ask():
    async def go():
        app = app_for(closed_view())
        async with app.run_test(size=(80, 24)) as pilot:
            await to_ceremony(pilot)
            await pilot.press("q")
            await settled(pilot)
        assert app.return_code == 0  # a confirmation would have kept it running

    run(go())


def _footer(app) -> str:
    return screen_text(app)[-1]


def test_footers_fit_80_columns_with_quit_and_help():
    async def go():
        app = app_for(recover_view())
        async with app.run_test(size=(80, 24)) as pilot:
            await to_ceremony(pilot)
            seen = {"ceremony (typing)": _footer(app)}
            app.screen.query_one("#cer-steps").focus()
            await settled(pilot)
            seen["ceremony"] = _footer(app)
            await pilot.press("ctrl+r")
            await settled(pilot)
            seen["offer"] = _footer(app)
            await pilot.press("escape")
            for key in ("d", "k", "a", "l", "j"):
                app.screen.set_focus(None)
                await pilot.press(key)
                await settled(pilot)
                while app.screen.is_modal:  # the fake home's error modal
                    await pilot.press("escape")
                    await settled(pilot)
                app.screen.set_focus(None)
                await settled(pilot)
                seen[key] = _footer(app)
        for where, line in seen.items():
            assert "Quit" in line and "Help" in line, (where, line)
            assert line.rstrip()[-1] != "▶" and len(line.rstrip()) <= 80, (where, line)
        assert "q Quit" in seen["ceremony"] and "? Help" in seen["ceremony"]

    run(go())


def test_generate_form_start_button_visible_at_80x24():
    async def go():
        app = app_for(None)
        async with app.run_test(size=(80, 24)) as pilot:
            await to_ceremony(pilot)
            await pilot.press("n")
            await settled(pilot)
            from textual.widgets import Select

            app.screen.query_one("#start-kind", Select).value = "generate"
            await settled(pilot)
            button = app.screen.query_one("#start-go", Button)
            r = button.region
            assert r.height >= 1 and r.y + r.height <= 23, r  # above the footer
            assert "Start" in screen_text(app)[r.y]
            for f in ("key", "custodians", "scheme", "out", "seal_to", "plain"):
                w = app.screen.query_one(f"#start-{f}")
                assert w.region.height >= 1 and w.region.y + w.region.height <= 23, f
            # issue 12: sealed issue is the default; plain shares only when ticked
            from textual.widgets import Checkbox

            assert app.screen.query_one("#start-plain", Checkbox).value is False
            assert "seal to" in screen_text(app)[app.screen.query_one("#start-seal_to").region.y]

    run(go())


def test_generate_form_seals_unless_plain_is_ticked():
    from textual.widgets import Checkbox, Select

    async def go():
        app = app_for(None)
        async with app.run_test(size=(80, 24)) as pilot:
            await to_ceremony(pilot)
            got: list = []
            for plain in (False, True):
                modal = StartModal("generate")
                app.push_screen(modal, got.append)
                await settled(pilot)
                modal.query_one("#start-kind", Select).value = "generate"
                for f, v in (("key", "admin.key.pem"), ("custodians", "a b c"), ("scheme", "2"),
                             ("out", "shares"), ("seal_to", "people")):  # fmt: skip
                    modal.query_one(f"#start-{f}", Input).value = v
                modal.query_one("#start-plain", Checkbox).value = plain
                await settled(pilot)
                assert modal.query_one("#start-seal_to", Input).disabled is plain
                await pilot.press("ctrl+s")
                await settled(pilot)
            sealed, plain_ = got[0]["params"], got[1]["params"]
            assert sealed["seal_to"] == "people" and sealed["plain_shares"] is False
            assert plain_["seal_to"] == "" and plain_["plain_shares"] is True

    run(go())


def test_full_session_id_shown_on_ceremony_and_offer_screens():
    async def go():
        v = remote_view()
        assert v.offer is not None
        v = replace(v, ceremony_id=FULL_CID, offer=replace(v.offer, session=FULL_CID))
        app = app_for(v)
        async with app.run_test(size=(80, 24)) as pilot:
            await to_ceremony(pilot)
            assert any(FULL_CID in line for line in screen_text(app))
            await pilot.press("ctrl+r")
            await settled(pilot)
            assert any(FULL_CID in line for line in screen_text(app))

    run(go())


def test_offer_text_copies_undamaged_and_writes_to_a_file(tmp_path):
    async def go():
        app = app_for(remote_view())
        offer = remote_view().offer
        async with app.run_test(size=(80, 24)) as pilot:
            await to_ceremony(pilot)
            await pilot.press("ctrl+r")
            await settled(pilot)
            scr = app.screen
            assert isinstance(scr, OfferScreen)
            text = screen_text(app)
            rows = [line for line in text if "custody-offer:" in line]
            start = text.index(rows[0])
            block = []
            for line in text[start:]:
                if not line.strip():
                    break
                block.append(line)
            copied = "".join("".join(block).split())  # what a terminal copy gives
            assert copied == offer.text  # no wrapping or scrollbar glyph picked up
            # at 80x24 the QR does not fit under the text: it is offered alone (z)
            assert not scr.query_one("#offer-qr").display
            await pilot.press("w")
            await settled(pilot)
            app.screen.query_one(Input).value = str(tmp_path / "offer.txt")
            await pilot.press("enter")
            await settled(pilot)
            assert app.screen is scr
            assert (tmp_path / "offer.txt").read_text().strip() == offer.text
            await pilot.press("z")
            await settled(pilot)
            assert isinstance(app.screen, QRScreen)

    run(go())


def test_offer_qr_alone_fits_at_120x40_and_decodes():
    """The terminal QR is level L with a small quiet zone, of the offer's compact form;
    alone on the screen (z) it fits 120x40 (and 80x24: tests/tui/test_tui_offer_qr.py)."""
    from tui.services.ceremony_remote import screen_qr

    offer = remote_view().offer
    assert offer is not None and offer.qr_text.isdigit()
    qr = offer.qr
    assert len(qr.splitlines()) < len(screen_qr(offer.text).splitlines())  # the text's is larger

    async def go():
        app = app_for(replace(remote_view(), offer=replace(offer, qr=qr)))
        async with app.run_test(size=(120, 40)) as pilot:
            await to_ceremony(pilot)
            await pilot.press("ctrl+r")
            await settled(pilot)
            await pilot.press("z")
            await settled(pilot)
            assert isinstance(app.screen, QRScreen)
            note = str(app.screen.query_one("#qr-note", Static).render())
            assert "needs" not in note, note
            r = app.screen.query_one("#qr-alone").region
            assert r.y + r.height <= 40 and r.x + r.width <= 120

    run(go())


def test_help_lists_ceremonies_and_passphrase_prompt_says_passphrase():
    async def go():
        app = app_for(None)
        async with app.run_test(size=(80, 24)) as pilot:
            await to_ceremony(pilot)
            await pilot.press("question_mark")
            await settled(pilot)
            help_text = str(app.screen.query_one("#help-text", Static).render())
            assert "c  Ceremonies" in help_text
            await pilot.press("escape")
            await settled(pilot)
            await pilot.press("n")
            await settled(pilot)
            app.screen.query_one("#start-key", Input).value = "/srv/people/admin.key.pem"
            await pilot.press("ctrl+s")
            await settled(pilot)
            assert isinstance(app.screen, PinPrompt)
            assert app.screen.query_one(Input).placeholder == "passphrase"

    run(go())


def test_facts_are_readable_not_raw_json():
    facts = dict(
        public_facts(
            {
                "finalise.root": {"version": 2, "kcv": "0a1b2c"},
                "collect-shares.accepted": ["alice", "carol"],
                "collect-shares.rejected": [{"custodian": "bob", "reason": "checksum"}],
                "verified": True,
            }
        )
    )
    assert facts["finalise.root.version"] == "2" and facts["finalise.root.kcv"] == "0a1b2c"
    assert facts["collect-shares.accepted"] == "alice, carol"
    assert facts["collect-shares.rejected"] == "custodian=bob, reason=checksum"
    assert facts["verified"] == "yes"
    assert not any(c in v for v in facts.values() for c in '{}[]"')


def test_ceremony_whose_resume_fails_is_shown_and_aborted():
    """The session keeps a ceremony open when its run fails after the resume
    (:meth:`ceremonies.session.CeremonySession.resume` sets the runner first): the screen
    shows it after the error, and Ctrl+X aborts it. Before, it stayed empty and Ctrl+X did
    nothing. (Fixed services: a resume that fails on the real token was not reproduced.)"""
    from custody.errors import CeremonyError
    from tui.screens.modals import ErrorModal

    class Stuck:
        def __init__(self, base):
            self.base = base
            self.aborted = False

        def __getattr__(self, name):
            return getattr(self.base, name)

        def resume(self, cid, key, pw):
            self.base.current = recover_view()  # the session holds it open
            raise CeremonyError("Step rebuild-rk failed", "Abort the ceremony.")

        def view(self):
            return self.base.current

        def abort(self, reason):
            self.aborted = True
            self.base.current = replace(recover_view(), status="aborted", awaiting=None)
            return self.base.current

    async def go():
        app = app_for(None)
        svc = Stuck(app.ceremony_services)
        svc.base.ceremonies = [{"id": CID, "kind": "recover", "state": "open", "expires": 0}]
        app.ceremony_services = svc
        async with app.run_test(size=(80, 24)) as pilot:
            await to_ceremony(pilot)
            scr = app.screen
            await pilot.press("o")
            await settled(pilot)
            await pilot.press("enter")
            await settled(pilot)
            app.screen.query_one(Input).value = "/srv/people/admin.key.pem"
            await pilot.press("enter")
            await settled(pilot)
            await pilot.press("x", "enter")
            await settled(pilot)
            assert isinstance(app.screen, ErrorModal)
            assert ("Step rebuild-rk failed", "Abort the ceremony.") in app.errors_shown
            while isinstance(app.screen, ErrorModal):
                await pilot.press("escape")
                await settled(pilot)
            assert app.screen is scr and scr.view is not None, app.errors_shown
            await pilot.press("ctrl+x")
            await settled(pilot)
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("y")
            await settled(pilot)
            assert svc.aborted and scr.view.status == "aborted"

    run(go())
