"""The offer QR at 80x24 (issue 12): its compact form (decimal digits, a numeric-mode QR at
level L) is a version 6 QR, 45x23 in half blocks, where the text's was 85x43. It is drawn
black on white in the right polarity, decoded with zxing-cpp from an image of what the
terminal shows (on a dark and a light theme), and shown unclipped alone (z) at 80x24;
at 120x40 it fits under the offer text."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.conftest import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from textual.widgets import Static

from custody.shares import transport as t
from custody.signing import public_raw
from tests.tui.test_tui_ceremony_snapshots import (
    OFFER_SESSION,
    T,
    app_for,
    coordinator_key,
    remote_view,
    sample_offer,
    settled,
    to_ceremony,
)
from tests.tui_fixtures import decode_qr, half_block_image
from tui.screens.ceremony_offer import OfferScreen, QRScreen
from tui.services.ceremony_remote import qr_content, qr_matrix, screen_qr


def offer():
    return sample_offer()


def test_the_qr_is_version_6_level_l_and_fits_80x24_in_half_blocks():
    ok = offer()
    content = qr_content(ok.offer.to_text())
    assert content == ok.offer.to_compact()
    m = qr_matrix(content)
    assert len(m) == 41 + 4  # version 6 (41 modules) and a 2-module quiet zone
    lines = screen_qr(content).splitlines()
    assert max(len(ln) for ln in lines) == 45 and len(lines) == 23  # 80x24: 1 row to spare
    text_lines = screen_qr(ok.offer.to_text()).splitlines()
    assert len(text_lines) > 24 and max(len(ln) for ln in text_lines) > 80  # the text: no


@pytest.mark.parametrize("surround", [0, 255], ids=["dark-terminal", "light-terminal"])
def test_the_rendered_qr_decodes_to_an_offer_that_verifies(surround):
    ok = offer()
    lines = screen_qr(qr_content(ok.offer.to_text())).splitlines()
    texts = decode_qr(half_block_image(lines, surround=surround))  # not inverted
    assert texts == [ok.offer.to_compact()]
    v = t.verify_offer(
        t.parse_offer(texts[0]),
        public_raw(coordinator_key()),
        now=T,
        expected_session=OFFER_SESSION,
    )
    assert v.digest() == ok.offer.digest()


def qr_lines_on_screen(app, widget_id: str) -> list[str]:
    """The QR as the terminal shows it: the widget's region of the rendered screen."""
    r = app.screen.query_one(widget_id).region
    rows = [s.text for s in app.screen._compositor.render_strips()]
    return [row[r.x : r.x + r.width] for row in rows[r.y : r.y + r.height]]


def test_the_qr_alone_fits_80x24_unclipped_and_decodes_from_the_screen():
    want = offer().offer.to_compact()

    async def go():
        app = app_for(remote_view())
        async with app.run_test(size=(80, 24)) as pilot:
            await to_ceremony(pilot)
            await pilot.press("ctrl+r")
            await settled(pilot)
            assert isinstance(app.screen, OfferScreen)
            note = str(app.screen.query_one("#offer-qr-note", Static).render())
            assert "z shows the QR alone (45x23)" in note, note
            await pilot.press("z")
            await settled(pilot)
            assert isinstance(app.screen, QRScreen)
            note = str(app.screen.query_one("#qr-note", Static).render())
            assert "needs" not in note, note  # no "enlarge the terminal"
            r = app.screen.query_one("#qr-alone").region
            assert (r.width, r.height) == (45, 23) and r.right <= 80 and r.bottom <= 24, r
            lines = qr_lines_on_screen(app, "#qr-alone")
            assert lines == screen_qr(want).splitlines()  # every row and column drawn
            assert decode_qr(half_block_image(lines)) == [want]

    asyncio.run(go())


def test_at_120x40_the_qr_fits_under_the_offer_text():
    want = offer().offer.to_compact()

    async def go():
        app = app_for(remote_view())
        async with app.run_test(size=(120, 40)) as pilot:
            await to_ceremony(pilot)
            await pilot.press("ctrl+r")
            await settled(pilot)
            qr = app.screen.query_one("#offer-qr")
            assert qr.display and qr.region.bottom <= 39, qr.region  # above the footer
            lines = qr_lines_on_screen(app, "#offer-qr")
            assert decode_qr(half_block_image(lines, surround=255)) == [want]

    asyncio.run(go())
