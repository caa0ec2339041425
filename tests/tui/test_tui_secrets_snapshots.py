"""Snapshot and Pilot tests of the secrets screen on fixed data (no disk, no token).

:class:`tui.fakes.secrets.StaticSecretServices` holds the secrets of
:func:`tui.fakes.secrets.sample_secrets` (due, overdue, rotating and deleted ones in three
environments) and a canary value that a reveal returns. The shots are at 80x24 and 120x40:
the list with a due secret's detail, the value revealed (masked), and the put form. No
snapshot may contain the canary; the footer shows every action key, ``q Quit`` and
``? Help`` at 80 columns. Regenerate with ``--snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST_PIN

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from textual.widgets import Input, Tree

from tui.app import make_app
from tui.fakes import StaticServices
from tui.fakes.secrets import StaticSecretServices, sample_secrets
from tui.screens.modals import ConfirmModal, HelpScreen, PinPrompt
from tui.screens.secrets import REVEAL_SECONDS, SecretForm, SecretsScreen
from tui.services.home import Settings
from tui.services.secrets import MASK, RevealedValue

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
SIZES = [(80, 24), (120, 40)]
SNAPDIR = Path(__file__).parent / "__snapshots__" / "test_tui_secrets_snapshots"
CANARY = "Snap-Canary-4b1d!Kx8#Ty3@"
DUE = "prod:payments/db/password"


def app_for():
    from tests.tui.test_tui_snapshots import sample_view

    settings = Settings(home=Path("/srv/custody"), clock=lambda: NOW, deterministic=True)
    app = make_app(settings, StaticServices(settings=settings, view=sample_view()))
    app.secret_services = StaticSecretServices(
        sample_secrets(), values={DUE: CANARY, "prod:payments/stripe/api-key": CANARY}
    )
    return app


def text_of(app) -> str:
    return "\n".join(s.text for s in app.screen._compositor.render_strips())


async def settled(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def open_due(pilot) -> None:
    await settled(pilot)
    await pilot.press("e")
    await settled(pilot)
    scr = pilot.app.screen
    assert scr.select_key(DUE)
    await settled(pilot)


async def revealed(pilot) -> None:
    await open_due(pilot)
    await pilot.press("v")
    await settled(pilot)
    await pilot.press("y")
    await settled(pilot)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_secrets(snap_compare, size):
    assert snap_compare(app_for(), terminal_size=size, run_before=open_due)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_secret_revealed_masked(snap_compare, size):
    assert snap_compare(app_for(), terminal_size=size, run_before=revealed)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_secret_put_form(snap_compare, size):
    async def before(pilot):
        await open_due(pilot)
        await pilot.press("p")
        await settled(pilot)
        for ch in "typed-but-hidden":  # typed into the value field: shown as dots only
            await pilot.press(ch)
        await settled(pilot)

    assert snap_compare(app_for(), terminal_size=size, run_before=before)


def test_no_secret_in_the_secrets_snapshots():
    svgs = sorted(SNAPDIR.glob("*.svg"))
    assert len(svgs) >= 6, "run with --snapshot-update first"
    for svg in svgs:
        text = svg.read_text(encoding="utf-8")
        for secret in (CANARY, TEST_PIN, "typed-but-hidden"):
            assert secret not in text, (svg.name, secret)


def run(coro) -> None:
    asyncio.run(coro)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_footer_fits_with_every_action_and_quit(size):
    async def go():
        app = app_for()
        async with app.run_test(size=size) as pilot:
            await open_due(pilot)
            footer = text_of(app).splitlines()[-1]
            for key in ("v Reveal", "p Put", "g Generate", "r Rotate", "x Delete", "u Restore",
                        "q Quit", "? Help"):  # fmt: skip
                assert key in footer, (key, footer)
            assert len(footer.rstrip()) <= size[0]
            # the leaves' facts fit: nothing cut at the right border
            rows = [r for r in text_of(app).splitlines() if "\u2514 password " in r]
            assert rows and all(len(r) <= size[0] and r.endswith("\u2502") for r in rows)
            assert any("due in 8 d" in r and "v7" in r for r in rows), rows
            if size == (120, 40):  # everything fits: the deleted staging copy too
                assert any("deleted   -" in r for r in rows), rows

    run(go())


def lines_of(app) -> list[str]:
    tree = app.screen.query_one("#sec-tree", Tree)
    return [
        str(tree.get_node_at_line(n).label).split()[0] + f"@{len(tree._tree_lines[n].path)}"
        for n in range(tree.last_line + 1)
    ]


def test_the_tree_nests_env_and_path_and_a_leaf_shows_its_detail_by_keyboard():
    """prod > payments > stripe > api-key: driven by the arrows, Enter and space only; a
    branch shows no secret and no value line, a leaf its detail with versions and labels,
    and the branch holding something due is marked."""

    async def go():
        app = app_for()
        async with app.run_test(size=(80, 24)) as pilot:
            await settled(pilot)
            await pilot.press("e")
            await settled(pilot)
            scr = app.screen
            assert isinstance(scr, SecretsScreen)
            tree = scr.query_one("#sec-tree", Tree)
            assert app.focused is tree
            shown = lines_of(app)
            # the nesting: each segment one level under its parent
            i = shown.index("prod@1")
            assert shown[i:].index("payments@2") < shown[i:].index("stripe@3")
            j = i + shown[i:].index("stripe@3")
            assert shown[j + 1] == "api-key@4"
            node = lambda key: scr._tree_nodes[key]  # noqa: E731
            assert node("@prod").data == "@prod" and node("@prod:payments").parent is node("@prod")
            assert node("prod:payments/stripe/api-key").parent is node("@prod:payments/stripe")
            assert not node("prod:payments/stripe/api-key").allow_expand
            assert "1 due" in str(node("@prod:payments").label)  # the due marker
            assert "due" not in str(node("@prod:payments/stripe").label)
            # walk down with the arrows to the leaf; the branches on the way select nothing
            await pilot.press("home")
            for _ in range(tree.last_line):
                if tree.cursor_node is node("prod:payments/stripe/api-key"):
                    break
                here = tree.cursor_node
                if here is not None and str(here.data).startswith("@"):
                    assert scr.selected() is None and "v reveals it" not in text_of(app)
                await pilot.press("down")
                await settled(pilot)
            sel = scr.selected()
            assert sel is not None and sel.key == "prod:payments/stripe/api-key"
            await settled(pilot)
            assert scr.detail is not None and scr.detail.item.key == sel.key
            text = text_of(app)
            assert "prod:payments/stripe/api-key" in text and "Versions" in text
            assert "current=v3" in text and "v reveals it" in text
            assert CANARY not in text
            await pilot.press("enter")  # Enter on a leaf keeps it selected
            await settled(pilot)
            assert scr.selected() is sel
            # up to the branch: no secret selected; space folds it, hiding the leaf
            await pilot.press("up")
            await settled(pilot)
            assert tree.cursor_node is node("@prod:payments/stripe") and scr.selected() is None
            assert "v reveals it" not in text_of(app) and "@prod:payments/stripe" not in text_of(
                app
            )
            await pilot.press("space")
            await settled(pilot)
            assert "api-key@4" not in lines_of(app)
            await pilot.press("v")  # nothing to reveal on a branch
            await settled(pilot)
            assert app.secret_services.calls == []
            await pilot.press("enter")  # Enter unfolds it again
            await settled(pilot)
            assert "api-key@4" in lines_of(app)
            await pilot.press("left")  # left folds, right unfolds
            await pilot.pause()
            assert "api-key@4" not in lines_of(app)
            await pilot.press("right")
            await pilot.pause()
            assert "api-key@4" in lines_of(app)
            # a fold survives a reload (after an action, say)
            await pilot.press("space")
            scr.action_refresh()
            await settled(pilot)
            assert "api-key@4" not in lines_of(app)
            assert tree.cursor_node is node("@prod:payments/stripe")
            await pilot.press("space", "down")
            await settled(pilot)
            assert scr.selected() is not None and scr.selected().key == sel.key
            await pilot.press("v", "y")  # the actions work on the selected leaf
            await settled(pilot)
            assert app.secret_services.calls == [f"reveal {sel.key}"]
            assert MASK in text_of(app) and CANARY not in text_of(app)

    run(go())


def test_help_names_the_secrets_screen_and_its_keys():
    async def go():
        app = app_for()
        async with app.run_test(size=(120, 40)) as pilot:
            await open_due(pilot)
            await pilot.press("question_mark")
            await settled(pilot)
            assert isinstance(app.screen, HelpScreen)
            assert "e  Secrets" in text_of(app)
            keys = dict(app.screen._rows)  # the screen's own keys, in the table below
            assert keys["m"] == "Show/mask value" and keys["v"] == "Reveal", keys

    run(go())


def test_reveal_is_asked_masked_then_cleared_by_timer_selection_and_escape():
    async def go():
        app = app_for()
        async with app.run_test(size=(80, 24)) as pilot:
            await open_due(pilot)
            scr = app.screen
            assert isinstance(scr, SecretsScreen)
            svc = app.secret_services
            await pilot.press("v")
            await settled(pilot)
            assert isinstance(app.screen, ConfirmModal) and svc.calls == []
            await pilot.press("y")
            await settled(pilot)
            assert svc.calls == [f"reveal {DUE}"]
            assert MASK in text_of(app) and CANARY not in text_of(app)
            await pilot.press("m")
            await pilot.pause()
            assert CANARY in text_of(app)
            # the timer clears it
            held = scr._revealed
            assert isinstance(held, RevealedValue) and CANARY not in repr(held)
            assert scr._timer is not None
            scr._timer.stop()
            scr.action_hide_value()  # what the timer calls after REVEAL_SECONDS
            await pilot.pause()
            assert CANARY not in text_of(app) and held.value == "" and scr._revealed is None
            # reveal again; moving the selection clears it
            await pilot.press("v", "y")
            await settled(pilot)
            await pilot.press("m")
            await pilot.pause()
            assert CANARY in text_of(app)
            await pilot.press("down")
            await settled(pilot)
            assert CANARY not in text_of(app) and scr._revealed is None
            # and Escape hides it
            await pilot.press("up")
            await settled(pilot)
            await pilot.press("v", "y")
            await settled(pilot)
            await pilot.press("m")
            await pilot.pause()
            await pilot.press("escape")
            await pilot.pause()
            assert CANARY not in text_of(app) and scr._revealed is None
            assert 0 < REVEAL_SECONDS <= 30

    run(go())


def test_delete_and_restore_ask_first_and_the_put_form_hides_the_value():
    async def go():
        app = app_for()
        async with app.run_test(size=(80, 24)) as pilot:
            await open_due(pilot)
            scr = app.screen
            svc = app.secret_services
            await pilot.press("x")
            await settled(pilot)
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("n")
            await settled(pilot)
            assert scr._items[DUE].state == "active"
            await pilot.press("x", "y")
            await settled(pilot)
            await settled(pilot)
            assert scr._items[DUE].state == "deprecated"
            await pilot.press("u", "y")
            await settled(pilot)
            await settled(pilot)
            assert scr._items[DUE].state == "active"
            assert svc.calls == [f"deleted {DUE}", f"restored {DUE}"]
            await pilot.press("p")
            await settled(pilot)
            form = app.screen
            assert isinstance(form, SecretForm) and "hidden" in repr(form)
            for ch in CANARY[:10]:
                await pilot.press(ch)
            assert CANARY[:10] not in text_of(app)
            await pilot.press("escape")
            await settled(pilot)
            assert not isinstance(app.screen, SecretForm)
            assert all(not i.value for i in form.query(Input) if i.password)

    run(go())


def test_a_reveal_that_needs_a_totp_code_asks_for_it_and_a_wrong_one_shows_nothing():
    async def go():
        app = app_for()
        app.secret_services.totp = "424242"
        async with app.run_test(size=(80, 24)) as pilot:
            await open_due(pilot)
            scr = app.screen
            await pilot.press("v", "y")
            await settled(pilot)
            assert isinstance(app.screen, PinPrompt) and app.errors_shown == []
            await pilot.press(*"111111", "enter")  # wrong: refused, named, nothing shown
            await settled(pilot)
            assert app.errors_shown and "wrong TOTP code" in app.errors_shown[-1][0]
            assert scr._revealed is None
            await pilot.press("escape")
            await settled(pilot)
            await pilot.press("v", "y")
            await settled(pilot)
            await pilot.press(*"424242", "enter")
            await settled(pilot)
            assert scr._revealed is not None and MASK in text_of(app)
            assert CANARY not in text_of(app) and "424242" not in text_of(app)
            assert app.secret_services.calls == [
                f"reveal {DUE}",
                f"reveal {DUE} with a code",
                f"reveal {DUE}",
                f"reveal {DUE} with a code",
            ]

    run(go())


def test_an_unmasked_value_with_control_characters_is_shown_escaped():
    """A value is data, never terminal control: an escape sequence in it is drawn escaped."""

    async def go():
        app = app_for()
        app.secret_services.values[DUE] = "Ab1!\x1b[2J\x1b]0;owned\x07zz"
        async with app.run_test(size=(80, 24)) as pilot:
            await open_due(pilot)
            await pilot.press("v", "y")
            await settled(pilot)
            await pilot.press("m")
            await pilot.pause()
            shown = text_of(app)
            assert "Ab1!\\x1b[2J\\x1b]0;owned\\x07zz" in shown
            assert "\x1b" not in shown and "\x07" not in shown

    run(go())


def test_a_secret_that_is_also_a_prefix_is_a_selectable_branch_and_names_are_escaped():
    """``prod:payments/stripe`` next to ``prod:payments/stripe/api-key``: one node, both a
    secret (selecting it shows its detail) and the branch of the other; a path segment with
    terminal control in it is drawn escaped."""
    from dataclasses import replace

    async def go():
        app = app_for()
        view = app.secret_services.view_
        extra = (
            replace(view.items[0], path="payments/stripe", version=1),
            replace(view.items[0], path="evil\x1b[2J/key", version=1),
        )
        app.secret_services.view_ = replace(view, items=view.items + extra)
        async with app.run_test(size=(80, 24)) as pilot:
            await settled(pilot)
            await pilot.press("e")
            await settled(pilot)
            scr = app.screen
            both = scr._tree_nodes["prod:payments/stripe"]
            assert both.allow_expand and "@prod:payments/stripe" not in scr._tree_nodes
            assert scr._tree_nodes["prod:payments/stripe/api-key"].parent is both
            assert scr.select_key("prod:payments/stripe")
            await settled(pilot)
            assert scr.selected() is not None and scr.selected().key == "prod:payments/stripe"
            assert scr.detail is not None and scr.detail.item.key == "prod:payments/stripe"
            assert "prod:payments/stripe" in [r.strip() for r in text_of(app).splitlines()]
            assert scr.select_key("prod:evil\x1b[2J/key")
            await settled(pilot)
            shown = text_of(app)
            assert "\x1b" not in shown and "evil\\x1b[2J" in shown

    run(go())
