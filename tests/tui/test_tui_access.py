"""Pilot tests of the access, alerts and compliance screens against a real home (SoftHSMv2
via ``custody init``, participants enrolled through ``custody ceremony enrol``, principals
through ``custody principal add``, a canary secret through ``custody secret put``).

In file order, on one module-scoped home: a service's request typed into the form, two
approvers signing it with their participant keys (passphrases in the hidden prompt), the
grant live (and usable: the CLI reads the secret as the service), revoked after a
confirmation (the CLI read is then refused); the monitor's alerts about that, each with the
audit entries behind it, acknowledged; the compliance report's sections. The insiders: the
requester signing their own request, a wrong passphrase, the principal an alert is about
acknowledging it. The canary value is never on any screen.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from tests.conftest import ROOT, passphrase_of, run_cli, write_secret

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ceremonies.participants import create_participant
from custody.access import AccessDenied
from custody.access.local import local_access
from custody.access.mfa import totp_code
from custody.config import Home
from custody.deployment import open_deployment
from tests.rekey_fixtures import cli, make_deployment
from tests.tui_fixtures import settle
from tui.app import make_app
from tui.screens.access import AccessScreen, RequestModal
from tui.screens.alerts import AlertsScreen
from tui.screens.compliance import ComplianceScreen
from tui.screens.modals import ConfirmModal, DetailScreen, ErrorModal, PinPrompt, TextPrompt
from tui.screens.service_accounts import ServiceAccountsScreen
from tui.services.home import Settings
from tui.services.service_accounts import ACK_NOTE

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("tui-access")]
CANARY = "Canary-Value-7f3a!Qx9#Lm2@Zr8$Wt"
HIGH = "payments/db/password"
SIZE = (120, 40)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tuiaccess")
    home, pins = make_deployment(root)
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    r = run_cli("secret", "put", HIGH, "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "payments", "--home", str(home),
                "--pin-file", str(pins), input=CANARY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    people = root / "people"
    people.mkdir()
    for who, role in (("admin", "super-admin"), ("alice", "custodian"), ("bob", "custodian")):
        write_secret(people / f"{who}.pass", passphrase_of(who) + "\n")
        create_participant(who, role, passphrase_of(who), people)
    adds = [
        a for who in ("admin", "alice", "bob") for a in ("--add", str(people / f"{who}.pub.json"))
    ]
    r = run_cli("ceremony", "enrol", "--home", str(home), "--key", str(people / "admin.key.pem"),
                "--passphrase-file", str(people / "admin.pass"), *adds)  # fmt: skip
    assert r.returncode == 0, r.stderr
    for who in ("alice", "bob"):
        cli(home, pins, "principal", "add", who, "--role", "service-admin", "--key",
            str(people / f"{who}.pub.json"), "--service", "payments")  # fmt: skip
    cli(home, pins, "principal", "add", "svc", "--role", "service-user", "--service-account",
        "--service", "payments", "--token-out", str(root / "svc.token"))  # fmt: skip
    return {"home": home, "pins": pins, "people": people}


def app_for(world: dict[str, Path]):
    return make_app(Settings(home=world["home"], pin_file=world["pins"], deterministic=True))


def audit(home: Path) -> list[dict]:
    db = sqlite3.connect(home / "audit.db")
    try:
        return [json.loads(line) for (line,) in db.execute("SELECT line FROM entries ORDER BY seq")]
    finally:
        db.close()


def svc_reads(home: Path):
    """Ask access control whether the service may read the secret (audited, as every
    front end asks it before a read)."""
    h = Home(home)
    with open_deployment(h, None) as dep, local_access(dep, h) as ac:
        return ac.authorize(ac.principal("svc"), "read", "prod", HIGH)


def screen_text(app) -> str:
    """Everything on the screen now (the SVG export holds each cell's text)."""
    return app.export_screenshot()


def canary_free(app) -> None:
    text = screen_text(app)
    assert CANARY not in text and CANARY[:12] not in text


async def open_access(pilot) -> AccessScreen:
    await settle(pilot)
    await pilot.press("G")
    await settle(pilot)
    assert isinstance(pilot.app.screen, AccessScreen)
    return pilot.app.screen


async def type_into(pilot, text: str) -> None:
    await pilot.press(*text)
    await pilot.pause()


async def request_via_form(pilot, who: str, why: str) -> None:
    await pilot.press("n")
    await pilot.pause()
    modal = pilot.app.screen
    assert isinstance(modal, RequestModal)
    for field, value in (("principal", who), ("env", "prod"), ("path", HIGH),
                         ("duration", "1h"), ("why", why)):  # fmt: skip
        modal.query_one(f"#req-{field}", Input).value = value
    await pilot.press("ctrl+s")
    await settle(pilot)


async def sign(pilot, scr: AccessScreen, request_id: str, key: Path, passphrase: str) -> None:
    table = scr.query_one("#acc-requests", DataTable)
    table.focus()
    table.move_cursor(row=table.get_row_index(request_id))
    await pilot.press("s")
    await pilot.pause()
    prompt = pilot.app.screen
    assert isinstance(prompt, TextPrompt)
    prompt.query_one(Input).value = str(key)  # a path, not a secret: no need to type it
    await pilot.press("enter")
    await settle(pilot)  # a worker asks whether this approver must give a TOTP code
    assert isinstance(pilot.app.screen, PinPrompt)
    await type_into(pilot, passphrase)
    canary_free(pilot.app)
    assert passphrase not in screen_text(pilot.app)  # the prompt never echoes
    await pilot.press("enter")
    await settle(pilot)


def test_request_two_approvals_grant_live_then_revoked(world):
    home = world["home"]

    async def go():
        app = app_for(world)
        async with app.run_test(size=SIZE) as pilot:
            scr = await open_access(pilot)
            await request_via_form(pilot, "svc", "incident 7: check the db password")
            await settle(pilot)
            pend = [r for r in scr.view.requests if r.state == "pending"]
            assert len(pend) == 1 and pend[0].needed == 2 and pend[0].requester == "svc"
            rid = pend[0].id
            left = scr.query_one("#acc-requests", DataTable).get_cell(rid, "left")
            assert left.startswith(("59m", "1h 00m")), left  # the countdown
            # the first approver: 1 of 2, no grant yet
            await sign(pilot, scr, rid, world["people"] / "alice.key.pem", passphrase_of("alice"))
            r = next(r for r in scr.view.requests if r.id == rid)
            assert (r.state, r.approvers) == ("pending", ("alice",))
            assert not [g for g in scr.view.grants if g.state == "live"]
            # the second: the grant is live, its record written for offline verification
            await sign(pilot, scr, rid, world["people"] / "bob.key.pem", passphrase_of("bob"))
            live = [g for g in scr.view.grants if g.state == "live"]
            assert len(live) == 1 and live[0].principal == "svc"
            assert set(live[0].approvers) == {"alice", "bob"}
            gid = live[0].id
            record = home / "grants" / f"{gid}.json"
            people = world["people"]
            v = run_cli("access", "verify", str(record), "--trust", str(people / "alice.pub.json"),
                        "--trust", str(people / "bob.pub.json"), "--json")  # fmt: skip
            assert v.returncode == 0, v.stderr
            assert json.loads(v.stdout)["approvers"] == ["alice", "bob"]
            # the grant works: the policy lets the service read the secret now
            assert svc_reads(home).grant == gid
            # the detail of the grant: who approved it, no value
            gt = scr.query_one("#acc-grants", DataTable)
            gt.focus()
            gt.move_cursor(row=gt.get_row_index(gid))
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(pilot.app.screen, DetailScreen)
            canary_free(pilot.app)
            await pilot.press("escape")
            await pilot.pause()
            # revoke: a reason, then a confirmation; n declines and nothing changes
            await pilot.press("x")
            await pilot.pause()
            assert isinstance(pilot.app.screen, TextPrompt)
            await pilot.press("enter")  # the prefilled reason
            await pilot.pause()
            assert isinstance(pilot.app.screen, ConfirmModal)
            await pilot.press("n")
            await settle(pilot)
            assert [g.state for g in scr.view.grants if g.id == gid] == ["live"]
            await pilot.press("x")
            await pilot.pause()
            await pilot.press("enter")
            await pilot.pause()
            await pilot.press("y")
            await settle(pilot)
            assert [g.state for g in scr.view.grants if g.id == gid] == ["revoked"]
            assert scr.query_one("#acc-grants", DataTable).get_cell(gid, "state").plain == (
                "revoked"
            )
            canary_free(app)
            assert app.errors_shown == []

    asyncio.run(go())
    ents = audit(home)
    ops = [(e["op"], e["outcome"], e["actor"]) for e in ents]
    assert ("access request", "ok", "svc") in ops
    assert ("access approve", "ok", "alice") in ops and ("access approve", "ok", "bob") in ops
    assert ("access grant", "ok", "svc") in ops
    assert [o for o in ops if o[0] == "access grant revoke"][-1][1] == "ok"
    assert all(CANARY not in json.dumps(e) for e in ents)
    # the service's read is now refused (and that refusal is what the monitor flags)
    with pytest.raises(AccessDenied, match="revoked"):
        svc_reads(home)
    assert ("access grant use", "ok", "svc") in ops


def test_insiders_self_approval_and_a_wrong_passphrase_change_nothing(world):
    home, people = world["home"], world["people"]

    async def go():
        app = app_for(world)
        async with app.run_test(size=SIZE) as pilot:
            scr = await open_access(pilot)
            # alice (a service-admin) asks for access herself, then tries to sign it
            await request_via_form(pilot, "alice", "self-service, please")
            rid = next(r.id for r in scr.view.requests if r.requester == "alice")
            await sign(pilot, scr, rid, people / "alice.key.pem", passphrase_of("alice"))
            assert isinstance(pilot.app.screen, ErrorModal)
            assert app.errors_shown[-1][0] == "The requester cannot approve their own request"
            await pilot.press("escape")
            await settle(pilot)
            # bob with a wrong passphrase: refused before anything is signed
            await sign(pilot, scr, rid, people / "bob.key.pem", "not-bobs-passphrase")
            assert isinstance(pilot.app.screen, ErrorModal)
            assert "not-bobs-passphrase" not in screen_text(app)
            await pilot.press("escape")
            await settle(pilot)
            r = next(r for r in scr.view.requests if r.id == rid)
            assert (r.state, r.approvers) == ("pending", ())

    asyncio.run(go())
    ents = audit(home)
    denied = [e for e in ents if e["op"] == "access approve" and e["outcome"] == "denied"]
    assert denied and denied[-1]["actor"] == "alice"
    assert "cannot approve their own" in denied[-1]["details"]["reason"]
    assert all("not-bobs-passphrase" not in json.dumps(e) for e in ents)


def test_alerts_list_their_entries_and_are_acknowledged(world, monkeypatch):
    home = world["home"]
    r = run_cli("alerts", "scan", "--home", str(home), "--json")
    assert r.returncode == 0, r.stderr
    raised = json.loads(r.stdout)["alerts"]
    assert raised, "the read refused after the revocation raises an alert"

    async def go():
        app = app_for(world)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("exclamation_mark")
            await settle(pilot)
            scr = pilot.app.screen
            assert isinstance(scr, AlertsScreen)
            assert len(scr.alerts) == len(raised)
            assert "svc" in {a.principal for a in scr.alerts}
            first = scr.alerts[0]
            # the entries behind the highlighted alert, by seq, from the log
            assert first.seqs and [e.seq for e in scr.entries] == list(first.seqs)
            assert {e.actor for e in scr.entries} == {first.principal}
            assert scr.query_one("#al-entries", DataTable).row_count == len(first.seqs)
            scr.query_one("#al-entries", DataTable).focus()
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(pilot.app.screen, DetailScreen)
            await pilot.press("escape")
            await pilot.pause()
            scr.query_one("#al-alerts", DataTable).focus()
            # the insider: the principal an alert is about cannot close it
            monkeypatch.setenv("CUSTODY_ACTOR", first.principal)
            await pilot.press("x")
            await pilot.pause()
            assert isinstance(pilot.app.screen, TextPrompt)
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(pilot.app.screen, ErrorModal)
            assert "cannot acknowledge an alert about themselves" in app.errors_shown[-1][0]
            await pilot.press("escape")
            await settle(pilot)
            monkeypatch.setenv("CUSTODY_ACTOR", "reviewer")
            await pilot.press("x")
            await pilot.pause()
            await pilot.press("enter")
            await settle(pilot)
            acked = next(a for a in scr.alerts if a.id == first.id)
            assert (acked.acked_by, acked.ack_note) == ("reviewer", "reviewed")
            await pilot.press("o")  # the open ones only
            await pilot.pause()
            assert scr.query_one("#al-alerts", DataTable).row_count == len(raised) - 1
            canary_free(app)

    asyncio.run(go())
    acks = [e for e in audit(home) if e["op"] == "alert.ack"]
    assert [a["actor"] for a in acks] == ["reviewer"]


def test_compliance_screen_shows_every_section(world):
    async def go():
        app = app_for(world)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("C")
            await settle(pilot)
            scr = pilot.app.screen
            assert isinstance(scr, ComplianceScreen)
            ids = [s.id for s in scr.report.sections]
            assert ids == ["rotations", "ownership", "grants", "mfa", "drills", "alerts",
                           "checkpoint"]  # fmt: skip
            assert scr.query_one("#co-sections", DataTable).row_count == len(ids)
            mfa = next(s for s in scr.report.sections if s.id == "mfa")
            assert mfa.status == "findings"  # nobody has enrolled in TOTP
            names = {v for item in mfa.items for k, v in item if k == "name"}
            assert {"alice", "bob"} <= names
            # the same findings as the CLI's, and each section's text is the CLI's text of it
            h = str(world["home"])
            rep = json.loads(run_cli("report", "compliance", "--home", h, "--json").stdout)
            cli_mfa = next(s for s in rep["sections"] if s["id"] == "mfa")
            assert names == {i["name"] for i in cli_mfa["items"]}
            cli_text = run_cli("report", "compliance", "--home", h).stdout
            assert mfa.text and mfa.text in cli_text
            await pilot.press("down", "down", "down")
            await pilot.pause()
            assert "Principals without MFA" in str(scr.query_one("#co-text").render())
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(pilot.app.screen, DetailScreen)
            canary_free(app)

    asyncio.run(go())


def test_no_screen_shows_the_canary(world):
    """Every screen, on the home that holds the canary (and an audit log of its writes,
    the grant's use and the alerts): the value is never rendered."""

    async def go():
        app = app_for(world)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            for key in ("d", "k", "l", "j", "G", "exclamation_mark", "C", "S"):
                await pilot.press(key)
                await settle(pilot)
                canary_free(app)
                if key == "G":  # the check can see text: the secret's path is on screen
                    assert HIGH in screen_text(app)
                await pilot.press("enter")  # the first row's detail, where there is one
                await settle(pilot)
                canary_free(app)
                if isinstance(app.screen, DetailScreen):
                    await pilot.press("escape")
                    await settle(pilot)
            assert app.errors_shown == []

    asyncio.run(go())


def test_services_screen_shows_each_service_its_use_and_versions(world):
    """A new grant through the CLI, one read by the service under it: the services screen
    shows the service, its credential, the read and the refusals the log holds, and the
    secret under its prefix with the version it read and its rotation status."""
    home, pins, people = world["home"], world["pins"], world["people"]

    def run(*args: str) -> dict:
        r = run_cli(*args, "--home", str(home), "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    rid = run("access", "request", HIGH, "--env", "prod", "--for", "30m", "--why", "deploy 9",
              "--as", "svc")["id"]  # fmt: skip
    for who in ("alice", "bob"):
        run("access", "approve", rid, "--key", str(people / f"{who}.key.pem"),
            "--passphrase-file", str(people / f"{who}.pass"))  # fmt: skip
    got = run("secret", "get", HIGH, "--env", "prod", "--as", "svc", "--pin-file", str(pins))
    assert got["value"] == CANARY

    async def go():
        app = app_for(world)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("S")
            await settle(pilot)
            scr = pilot.app.screen
            assert isinstance(scr, ServiceAccountsScreen)
            assert [s.name for s in scr.items] == ["svc"]  # people are not services
            svc = scr.items[0]
            assert svc.prefixes == ("payments",) and svc.credential.startswith("token ")
            assert svc.reads >= 1 and svc.refused >= 1  # the read now, the refusals before
            assert svc.last_op in ("access decide", "access grant use")
            assert svc.last_outcome == "ok"
            (sec,) = svc.secrets
            assert sec.target == f"prod:{HIGH}" and sec.current == 1
            assert sec.last_read == svc.last_time and sec.rotation == "ok"
            # the note says what custody.secrets.consumers does, not the stale "not recorded"
            summary = str(scr.query_one("#svc-summary", Static).render())
            assert summary == f"1 service(s); {ACK_NOTE}"
            assert "not recorded" not in ACK_NOTE
            for fact in (
                "per version",
                "signed consumers' state",
                "token counter",
                "every registered consumer acked current",
                "stragglers named",
            ):
                assert fact in ACK_NOTE, fact
            assert ("acknowledgements", ACK_NOTE) in [(f.label, f.value) for f in svc.fields()]
            table = scr.query_one("#svc-secrets", DataTable)
            assert table.row_count == 1
            assert table.get_cell(sec.target, table.ordered_columns[5].key).plain == "ok"
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(pilot.app.screen, DetailScreen)
            canary_free(app)

    asyncio.run(go())


def test_an_approver_enrolled_in_mfa_gives_a_totp_code_in_a_hidden_prompt(world):
    """A super-admin approver enrolled in TOTP: the screen asks for the code after the
    passphrase (both hidden). A wrong code is refused and audited, nothing is signed; the
    right one signs."""
    home, pins, people = world["home"], world["pins"], world["people"]
    cli(home, pins, "principal", "add", "admin", "--role", "super-admin", "--key",
        str(people / "admin.pub.json"))  # fmt: skip
    r = run_cli("mfa", "enrol", "admin", "--png", str(people / "admin.png"), "--home",
                str(home), "--pin-file", str(pins), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    key = base64.b32decode(json.loads(r.stdout)["secret_b32"])
    step = int(time.time()) // 30
    r = run_cli("mfa", "verify", "admin", "--stdin", "--home", str(home), "--pin-file",
                str(pins), input=totp_code(key, step) + "\n")  # fmt: skip
    assert r.returncode == 0, r.stderr  # confirmed: admin's approvals now need a code
    wrong = f"{(int(totp_code(key, step + 1)) + 1) % 1_000_000:06d}"

    async def go():
        app = app_for(world)
        async with app.run_test(size=SIZE) as pilot:
            scr = await open_access(pilot)
            await request_via_form(pilot, "svc", "incident 8: rotate the consumer")
            rid = next(
                r.id for r in scr.view.requests if r.state == "pending" and r.requester == "svc"
            )
            for code in (wrong, totp_code(key, step + 1)):
                await sign(pilot, scr, rid, people / "admin.key.pem", passphrase_of("admin"))
                assert isinstance(pilot.app.screen, PinPrompt)  # the code, not echoed
                await type_into(pilot, code)
                assert code not in screen_text(app).replace(rid, "")
                await pilot.press("enter")
                await settle(pilot)
                if code == wrong:
                    assert isinstance(pilot.app.screen, ErrorModal)
                    await pilot.press("escape")
                    await settle(pilot)
                    assert next(r for r in scr.view.requests if r.id == rid).approvers == ()
            assert next(r for r in scr.view.requests if r.id == rid).approvers == ("admin",), (
                app.errors_shown
            )
            assert len(app.errors_shown) == 1

    asyncio.run(go())
    ents = [e for e in audit(home) if e["actor"] == "admin"]
    assert ("mfa verify", "denied") in [(e["op"], e["outcome"]) for e in ents] or any(
        e["op"] == "access decide" and e["outcome"] == "denied" for e in ents
    )
    assert ("access approve", "ok") in [(e["op"], e["outcome"]) for e in ents]
    # the CLI checks an approver's code against the token too: a wrong code is a refusal
    # (exit 7), never "the store was altered"
    r = run_cli("access", "request", HIGH, "--env", "prod", "--for", "10m", "--why", "cli",
                "--as", "svc", "--home", str(home), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    code_file = write_secret(people / "admin.code", wrong + "\n")
    r = run_cli("access", "approve", json.loads(r.stdout)["id"], "--key",
                str(people / "admin.key.pem"), "--passphrase-file", str(people / "admin.pass"),
                "--mfa-code-file", str(code_file), "--home", str(home),
                "--pin-file", str(pins))  # fmt: skip
    assert r.returncode == 7, r.stderr
    assert "does not check" not in r.stderr and wrong not in r.stdout + r.stderr
