"""Snapshot tests of the ceremony screens at 80x24 and 120x40, with fixed data.

Views come from :class:`tui.fakes.StaticCeremonyServices` and a fixed clock,
so the countdowns are fixed too. The only share words in any SVG are the public SLIP-0039
test vector's, typed into the entry field or shown on the card screen (which shows words to
its custodian on purpose); the ceremony screen's own panels never show words, and no PIN
or passphrase appears anywhere. Regenerate with ``--snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from textual.widgets import Input

from tests.conftest import ROOT, VECTORS

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tui.app import make_app
from tui.fakes import StaticCeremonyServices
from tui.services.ceremony import (
    ApprovalRow,
    CeremonyView,
    GroupProgress,
    QuorumView,
    ShareCheck,
    step_rows,
)
from tui.services.home import Settings

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
SIZES = [(80, 24), (120, 40)]
SNAPDIR = Path(__file__).parent / "__snapshots__" / "test_tui_ceremony_snapshots"
CID = "c3a1f09e5b7d4e21"
PASSPHRASE = "pass-admin-7734"
VECTOR = json.loads((VECTORS / "slip39-vectors.json").read_text())[0][1][0]  # public vector


def recover_view() -> CeremonyView:
    return CeremonyView(
        ceremony_id=CID,
        kind="recover",
        status="awaiting-input",
        awaiting="shares",
        step="collect-shares",
        steps=step_rows("recover", ("hsm-check",), "collect-shares", "awaiting-input", "shares"),
        quorum=QuorumView(
            groups=(GroupProgress(label="Custodians", have=2, need=3),), group_threshold=1
        ),
        shares=(
            ShareCheck(source="share", status="ok", custodian="alice", group=1, member=1),
            ShareCheck(
                source="share",
                status="rejected",
                custodian="bob",
                reason="checksum fails (word 6 is wrong)",
                word_errors=((6, "checksum fails here"),),
            ),
            ShareCheck(source="share", status="ok", custodian="carol", group=1, member=3),
        ),
        facts=(("hsm-check.token", "custody"),),
        bundle=f"/srv/custody/transcripts/{CID}",
        expires_at=T + 3600,
    )


def reshare_view() -> CeremonyView:
    done = ("hsm-check",)
    return CeremonyView(
        ceremony_id=CID,
        kind="reshare",
        status="awaiting-input",
        awaiting="shares",
        step="collect-shares",
        steps=step_rows("reshare", done, "collect-shares", "awaiting-input", "shares"),
        quorum=QuorumView(
            groups=(
                GroupProgress(label="Security", have=1, need=2),
                GroupProgress(label="Execs", have=2, need=2),
            ),
            group_threshold=2,
        ),
        shares=(
            ShareCheck(source="share", status="ok", custodian="alice", group=1, member=1),
            ShareCheck(source="share", status="ok", custodian="dave", group=2, member=1),
            ShareCheck(source="share", status="ok", custodian="erin", group=2, member=2),
            ShareCheck(
                source="share",
                status="rejected",
                custodian="bob",
                group=1,
                member=2,
                reason="wrong epoch: from retired epoch 0, the current one is 1",
            ),
        ),
        bundle=f"/srv/custody/transcripts/{CID}",
        expires_at=T + 3600,
    )


def rotate_view() -> CeremonyView:
    req = {
        "type": "custody-approval-request",
        "ceremony_id": CID,
        "action": "rotate-root",
        "action_id": "rotate-root/v3",
        "action_digest": "9f2c4be1" * 8,
        "role": "custodian",
        "needed": 3,
        "window": 600,
    }
    return CeremonyView(
        ceremony_id=CID,
        kind="rotate-root",
        status="awaiting-input",
        awaiting="approvals",
        step="approve",
        steps=step_rows("rotate-root", ("hsm-check",), "approve", "awaiting-input", "approvals"),
        approvals=(
            ApprovalRow(approver="alice", issued_at=T - 60, expires_at=T + 540, status="valid"),
            ApprovalRow(approver="bob", issued_at=T - 525, expires_at=T + 75, status="valid"),
            ApprovalRow(approver="erin", issued_at=T - 700, expires_at=T - 100, status="expired"),
        ),
        request=req,
        approvals_needed=3,
        bundle=f"/srv/custody/transcripts/{CID}",
        expires_at=T + 3600,
    )


def card():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from custody.shares.card import Card
    from custody.shares.envelope import make_envelope
    from custody.shares.slip39 import parse_share

    parsed = parse_share(VECTOR, label="vector")
    env = make_envelope(
        parsed,
        ceremony_id=CID,
        policy_digest="ab" * 32,
        epoch=0,
        custodian="cd" * 32,
        kcv="0a1b2c",
        dealer=Ed25519PrivateKey.from_private_bytes(bytes(range(32))),
    )
    return Card(
        name="alice", label=f"custody generate {CID[:8]}", words=tuple(VECTOR.split()), envelope=env
    )


def app_for(view: CeremonyView | None):
    settings = Settings(home=Path("/srv/custody"), clock=lambda: NOW, deterministic=True)
    app = make_app(settings, None)
    svc = StaticCeremonyServices(current=view, cards={"alice": card()})
    app.ceremony_services = svc  # type: ignore[attr-defined]  # read by ceremony_services(app)
    return app


async def settled(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def to_ceremony(pilot) -> None:
    await settled(pilot)
    while pilot.app.screen.id != "_default" and pilot.app.screen.is_modal:
        await pilot.press("escape")  # the dashboard's error (no real home) is not ours
        await pilot.pause()
    await pilot.press("c")
    await settled(pilot)


def _svg_has_no_secrets(name: str, *, words_allowed: bool = False) -> None:
    for svg in SNAPDIR.glob(f"{name}*.svg"):
        text = svg.read_text().replace("&#160;", " ")
        assert PASSPHRASE not in text
        if not words_allowed:
            assert not any(
                f">{w}<" in text or f" {w} " in text for w in VECTOR.split() if len(w) > 5
            ), svg.name


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_recover_waiting_for_shares(snap_compare, size):
    assert snap_compare(app_for(recover_view()), terminal_size=size, run_before=to_ceremony)
    _svg_has_no_secrets("test_recover_waiting_for_shares")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_reshare_group_quorum(snap_compare, size):
    assert snap_compare(app_for(reshare_view()), terminal_size=size, run_before=to_ceremony)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_rotate_root_approvals(snap_compare, size):
    assert snap_compare(app_for(rotate_view()), terminal_size=size, run_before=to_ceremony)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_share_entry_word_error(snap_compare, size):
    """The public vector typed with 4-letter prefixes and word 3 misspelt."""
    from textual import events
    from textual.widgets import Input

    words = [w[:4] for w in VECTOR.split()]
    words[2] = "xqzv"

    async def before(pilot):
        await to_ceremony(pilot)
        inp = pilot.app.screen.query_one("#share-words", Input)
        inp.focus()
        inp.post_message(events.Paste(" ".join(words[:8]) + " "))
        await settled(pilot)

    assert snap_compare(app_for(recover_view()), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_passphrase_prompt(snap_compare, size):
    async def before(pilot):
        await to_ceremony(pilot)
        await pilot.press("n")
        await pilot.pause()
        pilot.app.screen.query_one("#start-key", Input).value = "/srv/people/admin.key.pem"
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press(*PASSPHRASE)
        await pilot.pause()

    assert snap_compare(app_for(None), terminal_size=size, run_before=before)
    _svg_has_no_secrets("test_passphrase_prompt")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_share_card_public_vector(snap_compare, size):
    from tui.screens.ceremony_card import CardScreen

    async def before(pilot):
        await to_ceremony(pilot)
        await pilot.app.push_screen(CardScreen("alice"))
        await settled(pilot)

    view = CeremonyView(
        **{**recover_view().__dict__}
        if hasattr(recover_view(), "__dict__")
        else {f: getattr(recover_view(), f) for f in recover_view().__slots__}
    )
    assert snap_compare(app_for(view), terminal_size=size, run_before=before)
    _svg_has_no_secrets("test_share_card_public_vector", words_allowed=True)


OFFER_SESSION = "5e551017c3a1f09e5b7d4e21a0b1c2d3"  # the running recover's full id
GENERATED_BY = "9e0d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"  # the share set's generate ceremony


def coordinator_key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def sample_offer():
    """A real hand-in offer (a recover collecting the shares of another ceremony's set)."""
    from custody.shares.transport import make_offer

    return make_offer(
        ceremony_id=GENERATED_BY,
        epoch=1,
        session=OFFER_SESSION,
        coordinator=coordinator_key(),
        now=T - 60,
        ttl=900,
        rng=lambda n: bytes((7 * i + 3) % 256 for i in range(n)),
    )


def remote_view() -> CeremonyView:
    """recover waiting for shares, with an open transport offer and a remote hand-in
    opened (dave; its SAS shown for voice comparison). The offer is a real one, signed by
    a fixed coordinator key with fixed randomness (public data, deterministic)."""
    from dataclasses import replace

    from tui.services.ceremony_remote import offer_view

    offer = offer_view(
        {
            "offer": sample_offer().offer.to_text(),
            "expires": T + 840,
            "epoch": 1,
            "step": "collect-shares",
            "session": CID,
        }
    )
    v = recover_view()
    shares = (
        *v.shares,
        ShareCheck(source="remote:sealed-1", status="ok", custodian="dave", group=1, member=3),
    )
    return replace(v, offer=offer, sas=(("dave", "amber orbit tundra velvet"),), shares=shares)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_remote_hand_in_sas(snap_compare, size):
    assert snap_compare(app_for(remote_view()), terminal_size=size, run_before=to_ceremony)
    _svg_has_no_secrets("test_remote_hand_in_sas")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_remote_offer_qr(snap_compare, size):
    async def before(pilot):
        await to_ceremony(pilot)
        await pilot.press("ctrl+r")
        await settled(pilot)

    assert snap_compare(app_for(remote_view()), terminal_size=size, run_before=before)
    _svg_has_no_secrets("test_remote_offer_qr")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_resume_picker(snap_compare, size):
    """o lists the open ceremonies (closed ones are left out)."""
    rows = [
        {
            "id": CID,
            "kind": "recover",
            "state": "open",
            "coordinator": "admin",
            "bundle": "",
            "created": T - 600,
            "expires": T + 3000,
        },
        {
            "id": "77e0a2c4d9b81f35",
            "kind": "drill",
            "state": "open",
            "coordinator": "admin",
            "bundle": "",
            "created": T - 7200,
            "expires": T - 3600,
        },
        {
            "id": "0b9d33e1c2a4f607",
            "kind": "generate",
            "state": "closed",
            "coordinator": "admin",
            "bundle": "",
            "created": T - 86400,
            "expires": T - 82800,
        },
    ]

    async def before(pilot):
        await to_ceremony(pilot)
        await pilot.press("o")
        await settled(pilot)

    app = app_for(None)
    app.ceremony_services.ceremonies = rows
    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_remote_offer_qr_alone(snap_compare, size):
    """z: the offer's QR alone on the whole terminal (with a note when it does not fit)."""

    async def before(pilot):
        await to_ceremony(pilot)
        await pilot.press("ctrl+r")
        await settled(pilot)
        await pilot.press("z")
        await settled(pilot)

    assert snap_compare(app_for(remote_view()), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_generate_form(snap_compare, size):
    """The start form for generate: every field and the Start button on screen."""
    from textual.widgets import Select

    async def before(pilot):
        await to_ceremony(pilot)
        await pilot.press("n")
        await settled(pilot)
        pilot.app.screen.query_one("#start-kind", Select).value = "generate"
        await settled(pilot)

    assert snap_compare(app_for(None), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_quit_confirmation(snap_compare, size):
    """q with a ceremony open asks first, naming the shares it would drop."""

    async def before(pilot):
        await to_ceremony(pilot)
        await pilot.press("ctrl+q")
        await settled(pilot)

    assert snap_compare(app_for(recover_view()), terminal_size=size, run_before=before)
    _svg_has_no_secrets("test_quit_confirmation")
