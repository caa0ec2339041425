"""Pilot tests of the secrets screen against a real home (SoftHSMv2, SQLite, audit log).

A canary value is planted in several secrets. Every screen of the app is rendered at 80x24
and 120x40 and the canary never shows, except on the secrets screen after an explicit,
confirmed and audited reveal *and* the unmask key; it is gone again after leaving the
screen. Put (a typed value, a weak one refused), generate, delete and restore run through
their forms and confirmations and are audited as ``custody secret`` audits them; an
unwritable audit log refuses a reveal (an insider cannot read without a trace).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

import pytest

from ceremonies.participants import create_participant
from tests.conftest import ROOT, TEST_PIN, passphrase_of, run_cli, write_secret

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from textual.widgets import Input

from custody.config import Home
from custody.deployment import open_deployment
from custody.secrets import Category
from custody.secrets.operator import operator_vault
from tests.rekey_fixtures import cli, make_deployment
from tests.tui_fixtures import settle
from tui.app import make_app
from tui.screens.modals import ConfirmModal, ErrorModal
from tui.screens.secrets import RotateForm, SecretForm, SecretsScreen
from tui.services.home import Settings

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("tui-secrets")]
CANARY = "Tui-Canary-9c4e!Hs2#Pq7@Wm5$"  # a strong password: passes the rule
PLANTED = [("prod", f"svc{n}/db/password") for n in range(6)] + [("dev", "svc0/db/password")]
SCREENS = ("d", "k", "a", "c", "l", "j", "e")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    h, pins = make_deployment(tmp_path_factory.mktemp("tuisecrets") / "d")
    cli(h, pins, "kek", "rotate", "--branch", "secrets")
    with open_deployment(Home(h), TEST_PIN) as dep:
        v = operator_vault(dep, Home(h))
        for env, path in PLANTED:
            v.put(env, path, CANARY, category=Category.DATABASE_CREDENTIAL, owner="team")
        v.generate("prod", "pay/api-key", category=Category.EXTERNAL_API_KEY, owner="pay",
                   prefix="pay_live")  # fmt: skip
    return h, pins


def audit(h: Path) -> list[dict]:
    db = sqlite3.connect(h / "audit.db")
    try:
        return [json.loads(line) for (line,) in db.execute("SELECT line FROM entries ORDER BY seq")]
    finally:
        db.close()


def text_of(app) -> str:
    return "\n".join(s.text for s in app.screen._compositor.render_strips())


def app_for(h: Path, pins: Path):
    return make_app(Settings(home=h, pin_file=pins, deterministic=True))


async def switch(pilot, key: str) -> None:
    """Go to a screen by its key (out of a text field first, which would take the key)."""
    await settle(pilot)
    if isinstance(pilot.app.focused, Input):
        pilot.app.set_focus(None)
        await pilot.pause()
    await pilot.press(key)
    await settle(pilot)


async def to_secrets(pilot) -> SecretsScreen:
    await switch(pilot, "e")
    scr = pilot.app.screen
    assert isinstance(scr, SecretsScreen)
    return scr


async def select(pilot, scr: SecretsScreen, key: str) -> None:
    scr.query_one("#sec-tree").focus()
    assert scr.select_key(key), key
    await settle(pilot)
    assert scr.selected() is not None and scr.selected().key == key


def value_of(h: Path, env: str, path: str) -> str:
    with open_deployment(Home(h), TEST_PIN) as dep:
        return operator_vault(dep, Home(h)).get(env, path).value


def state_of(h: Path, env: str, path: str) -> str:
    with open_deployment(Home(h)) as dep:
        return operator_vault(dep, Home(h)).show(env, path)["state"]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_canary_shows_only_when_revealed_and_never_after_leaving(home, size):
    h, pins = home
    before = len(audit(h))

    async def go():
        app = app_for(h, pins)
        async with app.run_test(size=size) as pilot:
            for key in SCREENS:  # every screen, as it first renders
                await switch(pilot, key)
                assert CANARY not in text_of(app), key
            scr = await to_secrets(pilot)
            assert app.errors_shown == []
            shown = text_of(app)
            assert "prod" in shown and "dev" in shown and "db-cred" in shown
            for env, path in PLANTED:  # every planted secret's detail pane
                await select(pilot, scr, f"{env}:{path}")
                assert CANARY not in text_of(app)
                assert "v reveals it" in text_of(app)
            # reveal: asked first; declining reads nothing
            await pilot.press("v")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("n")
            await settle(pilot)
            assert scr._revealed is None
            await pilot.press("v")
            await settle(pilot)
            await pilot.press("y")
            await settle(pilot)
            assert app.errors_shown == []
            assert scr._revealed is not None and CANARY not in repr(scr._revealed)
            assert CANARY not in text_of(app)  # masked by default
            assert "\u2022" * 12 in text_of(app)
            await pilot.press("m")
            await pilot.pause()
            assert CANARY in text_of(app)  # shown only now, on request
            await pilot.press("m")
            await pilot.pause()
            assert CANARY not in text_of(app)
            await pilot.press("m")
            await pilot.pause()
            assert CANARY in text_of(app)
            # leaving the screen clears it; coming back shows nothing
            held = scr._revealed
            await switch(pilot, "d")
            assert CANARY not in text_of(app)
            assert scr._revealed is None and held is not None and held.value == ""
            await switch(pilot, "e")
            assert app.screen is scr and CANARY not in text_of(app)
            await pilot.press("m")  # nothing left to unmask
            await pilot.pause()
            assert CANARY not in text_of(app)
            for key in SCREENS:
                await switch(pilot, key)
                assert CANARY not in text_of(app), key

    asyncio.run(go())
    new = audit(h)[before:]
    gets = [(e["outcome"], e["target"], e["details"]) for e in new if e["op"] == "secret get"]
    assert [g[0] for g in gets] == ["intent", "ok"], gets  # one read, audited like the CLI's
    assert gets[0][1] == f"{PLANTED[-1][0]}:{PLANTED[-1][1]}"
    assert gets[0][2]["via"] == "tui" and gets[0][2]["env"] == PLANTED[-1][0]
    assert {e["op"] for e in new} >= {"secret list", "secret show", "secret get"}
    raw = (h / "audit.db").read_bytes() + (h / "custody.db").read_bytes()
    assert CANARY.encode() not in raw


def test_a_reveal_is_refused_when_the_audit_log_cannot_be_written(home, tmp_path):
    """The insider who breaks the audit log to read a value without a trace gets nothing."""
    h, pins = home

    async def go():
        app = app_for(h, pins)
        async with app.run_test(size=(80, 24)) as pilot:
            scr = await to_secrets(pilot)
            await select(pilot, scr, "prod:svc1/db/password")
            log = h / "audit.db"
            saved = tmp_path / "audit.db"
            log.rename(saved)
            log.mkdir()  # cannot be opened as a database
            try:
                await pilot.press("v")
                await settle(pilot)
                await pilot.press("y")
                await settle(pilot)
            finally:
                log.rmdir()
                saved.rename(log)
            assert isinstance(app.screen, ErrorModal)
            assert app.errors_shown and "audit log cannot be written" in app.errors_shown[-1][0]
            assert scr._revealed is None
            await pilot.press("escape")
            await pilot.press("m")
            await pilot.pause()
            assert CANARY not in text_of(app)

    asyncio.run(go())


async def fill(pilot, values: dict[str, str]) -> None:
    form = pilot.app.screen
    assert isinstance(form, SecretForm)
    for wid, val in values.items():
        form.query_one(f"#{wid}", Input).value = val
    await pilot.pause()


def test_put_generate_delete_restore_through_forms_and_confirmations(home):
    h, pins = home
    before = len(audit(h))
    target = "prod:svc2/db/password"
    weak = "qwzx-weak-1"
    new_value = "Tui-New-Value-3d8f!Ab4#Cd6@"

    async def go():
        app = app_for(h, pins)
        async with app.run_test(size=(80, 24)) as pilot:
            scr = await to_secrets(pilot)
            await select(pilot, scr, target)
            # put a weak value: refused with its rule, nothing stored
            await pilot.press("p")
            await settle(pilot)
            await fill(pilot, {"sf-value": weak, "sf-again": weak})
            await pilot.press("ctrl+s")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("y")
            await settle(pilot)
            assert isinstance(app.screen, ErrorModal), app.screen
            assert weak not in text_of(app)
            await pilot.press("escape")
            await settle(pilot)
            # two values that differ are caught in the form, and both fields cleared
            await pilot.press("p")
            await settle(pilot)
            await fill(pilot, {"sf-value": new_value, "sf-again": new_value + "x"})
            await pilot.press("ctrl+s")
            await pilot.pause()
            form = app.screen
            assert isinstance(form, SecretForm)
            assert form.query_one("#sf-value", Input).value == ""
            # the right value, typed twice: a new current version after confirmation
            await fill(pilot, {"sf-value": new_value, "sf-again": new_value})
            await pilot.press("ctrl+s")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("y")
            await settle(pilot)
            await settle(pilot)
            assert not isinstance(app.screen, ErrorModal), app.errors_shown
            assert new_value not in text_of(app)
            # generate a new secret
            errors = len(app.errors_shown)
            await pilot.press("g")
            await settle(pilot)
            await fill(pilot, {"sf-path": "tui/session-secret", "sf-owner": "web"})
            app.screen.query_one("#sf-category").value = "session-secret"
            await pilot.press("ctrl+s")
            await settle(pilot)
            await pilot.press("y")
            await settle(pilot)
            await settle(pilot)
            assert len(app.errors_shown) == errors, app.errors_shown
            assert "prod:tui/session-secret" in scr._items
            # delete (declined, then confirmed), then restore
            await select(pilot, scr, target)
            await pilot.press("x")
            await settle(pilot)
            await pilot.press("n")
            await settle(pilot)
            assert state_of(h, "prod", "svc2/db/password") == "active"
            await pilot.press("x")
            await settle(pilot)
            await pilot.press("y")
            await settle(pilot)
            await settle(pilot)
            assert scr._items[target].state == "deprecated"
            assert "deleted" in text_of(app)
            await select(pilot, scr, target)
            await pilot.press("u")
            await settle(pilot)
            await pilot.press("y")
            await settle(pilot)
            await settle(pilot)
            assert scr._items[target].state == "active"

    asyncio.run(go())
    assert value_of(h, "prod", "svc2/db/password") == new_value
    assert state_of(h, "prod", "tui/session-secret") == "active"
    new = audit(h)[before:]
    ops = [(e["op"], e["outcome"]) for e in new if e["op"] != "secret show"]
    for op in ("secret put", "secret generate", "secret delete", "secret restore"):
        assert (op, "intent") in ops and (op, "ok") in ops, op
    assert ("secret put", "failed") in ops  # the weak value, refused after its intent
    puts = [e for e in new if e["op"] == "secret put" and e["outcome"] == "intent"]
    assert all(e["target"] == target and e["details"]["via"] == "tui" for e in puts)
    raw = json.dumps(new)
    assert new_value not in raw and weak not in raw and CANARY not in raw


def test_rotate_through_the_form_with_a_verify_command(home, tmp_path):
    """The verified rotation of ``custody secret rotate``, signed by an enrolled
    super-admin; a key that is not enrolled is refused and nothing changes."""
    h, pins = home
    people = tmp_path / "people"
    people.mkdir()
    create_participant("admin", "super-admin", passphrase_of("admin"), people)
    create_participant("mallory", "super-admin", passphrase_of("mallory"), people)
    write_secret(people / "admin.pass", passphrase_of("admin") + "\n")
    r = run_cli("ceremony", "enrol", "--home", str(h), "--key", str(people / "admin.key.pem"),
                "--passphrase-file", str(people / "admin.pass"), "--add",
                str(people / "admin.pub.json"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    ok = tmp_path / "verify.sh"
    ok.write_text('#!/bin/sh\ntest -n "$CUSTODY_SECRET_VALUE"\n')
    ok.chmod(0o700)
    target = "prod:svc3/db/password"

    async def rotate(pilot, scr, who: str) -> None:
        await select(pilot, scr, target)
        await pilot.press("r")
        await settle(pilot)
        form = pilot.app.screen
        assert isinstance(form, RotateForm)
        form.query_one("#rf-key", Input).value = str(people / f"{who}.key.pem")
        form.query_one("#rf-pass", Input).value = passphrase_of(who)
        form.query_one("#rf-verify", Input).value = str(ok)
        form.query_one("#rf-overlap", Input).value = "1h"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmModal)
        await pilot.press("y")
        await settle(pilot)
        await settle(pilot)

    async def go():
        app = app_for(h, pins)
        async with app.run_test(size=(80, 24)) as pilot:
            scr = await to_secrets(pilot)
            await rotate(pilot, scr, "mallory")  # not enrolled: refused
            assert isinstance(app.screen, ErrorModal), app.screen
            await pilot.press("escape")
            await settle(pilot)
            assert scr._items[target].version == 1
            await rotate(pilot, scr, "admin")
            assert not isinstance(app.screen, ErrorModal), app.errors_shown
            await select(pilot, scr, target)
            assert scr._items[target].version == 2
            assert scr.detail is not None and dict(scr.detail.labels)["previous"] == 1
            assert passphrase_of("admin") not in text_of(app)

    asyncio.run(go())
    assert value_of(h, "prod", "svc3/db/password") != CANARY
    rot = [(e["outcome"], e["target"]) for e in audit(h) if e["op"] == "secret rotate"]
    assert ("denied", target) in rot and ("ok", target) in rot, rot
    bundles = list((h / "transcripts").glob("*"))
    assert bundles  # the signed record
    raw = json.dumps(audit(h))
    assert passphrase_of("admin") not in raw and passphrase_of("mallory") not in raw


def test_access_control_in_mfa_always_mode_hides_the_list_from_a_codeless_operator(home):
    """With ``[access] mfa_mode = "always"`` a super-admin acts only with a TOTP code, as
    in the CLI: without one, the list access control returns is empty, and the screen says
    how many secrets it holds back (the TOTP prompt for reveals: the fixed-data tests)."""
    h, pins = home
    conf = h / "custody.toml"
    saved = conf.read_text()
    conf.write_text(saved + '\n[access]\nmfa_mode = "always"\n')
    before = len(audit(h))
    try:

        async def go():
            app = app_for(h, pins)
            async with app.run_test(size=(80, 24)) as pilot:
                scr = await to_secrets(pilot)
                assert scr.view is not None and scr.view.items == ()
                assert scr.view.hidden >= len(PLANTED)
                assert f"{scr.view.hidden} hidden by access control" in text_of(app)
                assert CANARY not in text_of(app)

        asyncio.run(go())
    finally:
        conf.write_text(saved)
    new = audit(h)[before:]
    lists = [e for e in new if e["op"] == "access decide" and e["details"].get("filtered")]
    assert lists and lists[0]["details"]["reason"].startswith("0 of ")
