"""Issue 11, the verifier's side: trust roles from the auditor's pins, safe rendering, and a
strict verifier. Each test runs ``custody transcript verify|show`` or ``custody audit tail``
as a real subprocess; the forged-policy test uses a real deployment on SoftHSMv2 and the
custodian's real key."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ceremonies.transcript import (
    Approval,
    Ed25519Signer,
    Policy,
    Recorder,
    RosterEntry,
    SignedPolicy,
    Threshold,
    verify_bundle,
)
from ceremonies.transcript.pins import load_pins
from custody.errors import PolicyError
from custody.signing import fingerprint, private_from_pem
from tests.ceremony_fixtures import build_enrolled
from tests.conftest import FIXTURES, passphrase_of, run_cli, write_secret
from tests.fixtures import make_transcripts as mt

FX = FIXTURES / "transcripts"

PINS = str(FX / "trust" / "pins.json")
UNSAFE = ("\x1b", "\r", "\x07", "\u202e", "\x9b")


def verify(bundle: Path | str, *args: str):
    return run_cli("transcript", "verify", str(bundle), *args)


def last_line(out: str) -> str:
    return out.rstrip("\n").splitlines()[-1]


# -- 1. trust roles ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A real deployment (SoftHSMv2 token, enrolled roster) and its enrol bundle."""
    d, r = build_enrolled(tmp_path_factory.mktemp("dep") / "home")
    return d, r.out["bundle"]


def _forge_as_alice(d, out: Path) -> tuple[Ed25519Signer, Ed25519Signer, Ed25519Signer]:
    """Alice, a custodian, writes and signs a rotate-root transcript on her own: a roster
    with her real key, fake bob and carol, and a fake super-admin 'ops' to run it."""
    pem = (d.people / "alice.key.pem").read_bytes()
    alice = Ed25519Signer("alice", private_from_pem(pem, passphrase_of("alice").encode()))
    bob, carol, ops = (
        Ed25519Signer.from_seed(n, bytes([i]) * 32)
        for i, n in enumerate(("bob", "carol", "ops"), 1)
    )
    now = 1_900_000_000
    roster = tuple(
        RosterEntry(
            name=s.name, role=r, public=s.public, valid_from=now - 60, valid_until=now + 900_000
        )
        for s, r in (
            (alice, "custodian"),
            (bob, "custodian"),
            (carol, "custodian"),
            (ops, "super-admin"),
        )
    )
    pol = Policy.new(
        rng=random.Random(5).randbytes,
        purpose="rotate the root",
        kind="rotate-root",
        created_at=now,
        roster=roster,
        permissions={"super-admin": ("*",), "custodian": ()},
        thresholds={"rotate-root": Threshold(role="custodian", count=3)},
        script=("hsm-check", "approve"),
        close_quorum={"super-admin": 1},
        exception_quorum=Threshold(role="super-admin", count=1),
    )
    signed = SignedPolicy(policy=pol).signed_by(alice, ops)
    rec = Recorder.create(out, signed, signer=ops, clock=lambda: now + 1)
    rec.record("hsm-check", "step.done", ops, {"ok": True}, now=now + 2)
    params = {"from_version": 1, "to_version": 2}
    apps = [
        Approval.create(
            s,
            ceremony_id=pol.ceremony_id,
            action="rotate-root",
            action_id="a17",
            digest=rec.action_digest("rotate-root", "a17", params),
            now=now + 3,
        )
        for s in (alice, bob, carol)
    ]
    rec.record_action(
        "approve", "rotate-root", ops, action_id="a17", params=params, approvals=apps, now=now + 4
    )
    rec.close(ops, [ops], now=now + 5)
    return alice, bob, carol


@pytest.mark.hsm
def test_real_enrol_bundle_verifies_against_role_pins(deployment) -> None:
    d, bundle = deployment
    r = verify(bundle, *d.trust())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "policy signed by pinned super-admins admin (1/1 needed" in r.stdout
    assert last_line(r.stdout) == "verdict: VALID"
    assert "proves: signed by pinned super-admins admin;" in r.stdout


@pytest.mark.hsm
@pytest.mark.parametrize("pins", ["all", "alice"])
def test_custodian_cannot_forge_a_policy(deployment, tmp_path: Path, pins: str) -> None:
    """Before the fix this printed 'rotate-root a17: 3/3 custodians' and VALID."""
    d, _ = deployment
    _alice, bob, _carol = _forge_as_alice(d, tmp_path / "forged")
    trust = d.trust() if pins == "all" else ["--trust", str(d.people / "alice.pub.json")]
    r = verify(tmp_path / "forged", *trust)
    assert r.returncode == 6, r.stdout
    assert last_line(r.stdout).startswith("verdict: INVALID (")
    assert "policy-signatures" in last_line(r.stdout)
    assert "ignored alice: pinned as custodian, not super-admin" in r.stdout
    assert "ops (" in r.stdout and "key not pinned" in r.stdout
    assert "proves: nothing" in r.stdout
    if pins == "all":
        real_bob = json.loads((d.people / "bob.pub.json").read_text())["fingerprint"]
        assert f"roster entry bob has key {fingerprint(bob.public)}" in r.stdout
        assert f"bob is pinned with key {real_bob}" in r.stdout
        assert "FAIL  identities" in r.stdout
        doc = json.loads(verify(tmp_path / "forged", *trust, "--json").stdout)
        quorum = next(c for c in doc["checks"] if c["id"] == "quorum")
        assert any(
            "1/3 custodians (alice); ignored: bob (not pinned), carol (not pinned)" in x
            for x in quorum["problems"]
        )


def test_one_admin_cannot_sign_for_two() -> None:
    """A roster with two super-admins needs both; dropping the second from the roster does
    not help when the auditor pinned two."""
    r = verify(FX / "tampered" / "one-admin-of-two", "--trust", PINS)
    assert r.returncode == 6 and "(1/2 needed: the roster has 2 super-admins" in r.stdout
    two = str(FX / "trust" / "pins-two-admins.json")
    r = verify(FX / "golden" / "rotate-root", "--trust", two)
    assert r.returncode == 6 and "(1/2 needed: the roster has 1 super-admin, 2 pinned)" in r.stdout
    r = verify(FX / "golden" / "two-admins", "--trust", two)
    assert r.returncode == 0, r.stdout
    assert "proves: signed by pinned super-admins dave and frank;" in r.stdout


def test_unroled_pin_counts_toward_nothing(tmp_path: Path) -> None:
    others = tmp_path / "others.json"
    doc = json.loads(Path(PINS).read_text())
    doc["pins"] = [p for p in doc["pins"] if p["name"] != "dave"]
    others.write_text(json.dumps(doc))
    r = verify(
        FX / "golden" / "rotate-root",
        "--trust",
        str(FX / "trust" / "dave.hex"),
        "--trust",
        str(others),
    )
    assert r.returncode == 6
    assert "ignored dave: pinned without a role" in r.stdout
    r = verify(
        FX / "golden" / "rotate-root",
        "--trust",
        str(FX / "trust" / "dave.json"),
        "--trust",
        str(others),
    )
    assert r.returncode == 0, r.stdout


def test_conflicting_or_altered_pins_are_usage_errors(tmp_path: Path) -> None:
    doc = json.loads(Path(PINS).read_text())
    bad = dict(doc["pins"][0], public="00" * 32)
    f = tmp_path / "clash.json"
    f.write_text(json.dumps({"type": doc["type"], "pins": [doc["pins"][0], bad]}))
    r = verify(FX / "golden" / "rotate-root", "--trust", str(f))
    assert r.returncode == 2 and "Conflicting pins" in r.stderr
    f.write_text(json.dumps(dict(doc["pins"][0], fingerprint="00" * 16)))
    r = verify(FX / "golden" / "rotate-root", "--trust", str(f))
    assert r.returncode == 2 and "fingerprint does not match" in r.stderr
    f.write_text(json.dumps(dict(doc["pins"][0], role="god")))
    r = verify(FX / "golden" / "rotate-root", "--trust", str(f))
    assert r.returncode == 2 and "unknown role" in r.stderr
    # a P-256 key pinned under the name of an Ed25519 roster entry (a participant on a token
    # without EdDSA has one; so has an HSM audit key): accepted as a pin, but it names
    # another key than the roster's, so the transcript is INVALID (exit 6), never matched
    # against the roster under another algorithm
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    )
    f.write_text(json.dumps({**doc["pins"][0], "alg": "ecdsa-p256", "public": point.hex()}))
    r = verify(FX / "golden" / "rotate-root", "--trust", str(f))
    assert r.returncode == 6 and "INVALID" in r.stdout, r.stdout + r.stderr
    assert "is pinned with key" in r.stdout, r.stdout


# -- 2. safe rendering ---------------------------------------------------------------------


@pytest.mark.parametrize("cmd", ["verify", "show"])
def test_escape_sequences_never_reach_the_terminal(cmd: str, tmp_path: Path) -> None:
    """Before the fix the bundle's escapes reached stdout raw and could redraw the screen."""
    bundle = FX / "tampered" / "escape-sequences"
    assert b"\\u001b" in (bundle / "events.jsonl").read_bytes()
    html = tmp_path / "t.html"
    extra = ["--html", str(html)] if cmd == "show" else []
    r = run_cli("transcript", cmd, str(bundle), "--trust", PINS, *extra, input=b"")
    out = r.stdout.decode("utf-8")
    for ch in UNSAFE:
        assert ch not in out, repr(ch)
    lines = out.rstrip("\n").splitlines()
    assert lines[-1].startswith("verdict: INVALID (canonical")
    assert [ln for ln in lines if ln.startswith(("verdict", "proves"))] == lines[-2:]
    assert "\\x1b[2J" in out  # shown, not obeyed
    if cmd == "show":
        page = html.read_text()
        assert "\x1b" not in page and "\u202e" not in page
        assert page.rstrip().endswith("</body></html>") and "verdict: INVALID" in page


def test_audit_tail_escapes_log_strings(tmp_path: Path) -> None:
    from custody.audit.log import AuditLog

    home = tmp_path / "home"
    home.mkdir()
    evil = "alice\x1b[2J\x1b[H\rINVALID\u202e"
    with AuditLog(home / "audit.db") as log:
        log.append("kek.rotate", "data\x1b]0;x\x07", evil, details={"note": "\x1b[8mhidden"})
    r = run_cli("audit", "tail", "--home", str(home), input=b"")
    out = r.stdout.decode("utf-8")
    assert r.returncode == 0, r.stderr
    for ch in UNSAFE:
        assert ch not in out, repr(ch)
    assert "alice\\x1b[2J" in out and "note=\\x1b[8mhidden" in out


def test_tui_services_escape_bundle_and_log_strings() -> None:
    from tui.services.audit import AuditEntryRow
    from tui.services.auditor import verify_bundle_view

    v = verify_bundle_view(str(FX / "tampered" / "escape-sequences"), [PINS])
    strings = [v.proves, *v.quorums, *(c.detail for c in v.checks)]
    strings += [x for e in v.events for x in (e.step, e.kind, e.actor, e.body)]
    assert any("\\x1b" in s for s in strings)
    assert not any(ch in s for s in strings for ch in UNSAFE)
    row = AuditEntryRow.of(
        json.dumps(
            {
                "seq": 0,
                "time": 0,
                "actor": "a\x1b[2J",
                "op": "o",
                "target": "[red]t",
                "outcome": "ok",
                "details": {"k": "\x07"},
            }
        )
    )
    assert row.actor == "a\\x1b[2J" and row.details == (("k", "\\x07"),)


def test_names_steps_kinds_ids_are_restricted_at_parse_time() -> None:
    from ceremonies.transcript.bundle import load_bundle
    from ceremonies.transcript.checks import parse

    p = parse(load_bundle(FX / "tampered" / "escape-sequences"))
    assert any("bad step" in x for x in p.problems)
    assert p.events[8] is None  # refused, never a crash
    from ceremonies.transcript.records import Event  # what the recorder builds, too

    for bad in ({"actor": "a\nb"}, {"step": "x\x1b[2J"}, {"kind": "k\u202e"}):
        with pytest.raises(ValueError, match="bad"):
            kw = {"step": "s", "kind": "k", "actor": "a"} | bad
            Event(
                seq=0,
                prev=b"\0" * 32,
                ceremony="00" * 16,
                time=0,
                body={},
                step=kw["step"],
                kind=kw["kind"],
                actor=kw["actor"],
            )
    with pytest.raises(ValueError, match="bad participant name"):
        RosterEntry(
            name="bob\x1b", role="custodian", public=b"\0" * 32, valid_from=0, valid_until=1
        )


# -- 3. strict verifier --------------------------------------------------------------------


def test_reencoded_policy_fails_its_signature_check() -> None:
    """Before the fix only 'canonical' failed: the signatures verified over the coerced
    payload."""
    r = verify(FX / "tampered" / "reencoded-policy", "--trust", PINS, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 6 and "policy-signatures" in doc["failed"]


@pytest.mark.parametrize(
    ("case", "check", "text"),
    [
        ("wrong-outcome", "completeness", "outcome 'complete' is neither completed nor aborted"),
        ("completed-early", "script-order", "closed as completed at step hsm-selftest"),
    ],
)
def test_outcome_must_be_exact(case: str, check: str, text: str) -> None:
    r = verify(FX / "tampered" / case, "--trust", PINS)
    assert r.returncode == 6 and check in last_line(r.stdout), r.stdout
    assert text in r.stdout


def test_backdated_events_fail() -> None:
    """hank's key is revoked (T0+150) before the policy is created (T0+200); events dated
    before the policy let him sign. Before the fix this bundle verified VALID."""
    r = verify(FX / "tampered" / "backdated", "--trust", PINS, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 6 and "times" in doc["failed"]
    times = next(c for c in doc["checks"] if c["id"] == "times")
    assert any("before the policy" in x for x in times["problems"])


def test_recorder_refuses_what_the_strict_checks_reject(tmp_path: Path) -> None:
    sp = mt.policy("rotate-root", mt.ROTATE_SCRIPT, random.Random(3))
    with pytest.raises(PolicyError, match="before the policy"):
        Recorder.create(tmp_path / "a", sp, signer=mt.key("dave"), now=mt.T0 - 5)
    rec = Recorder.create(tmp_path / "b", sp, signer=mt.key("dave"), clock=mt.FakeClock())
    with pytest.raises(PolicyError, match="neither completed nor aborted"):
        rec.record("close", "ceremony.close", mt.key("dave"), {"outcome": "complete", "events": 2})


def test_prev_link_detects_a_fork() -> None:
    good = verify(
        FX / "golden" / "drill-exception",
        "--trust",
        PINS,
        "--prev",
        str(FX / "golden" / "rotate-root"),
    )
    assert good.returncode == 0, good.stdout
    assert "follows ceremony" in good.stdout
    fork = verify(
        FX / "tampered" / "forked-prev",
        "--trust",
        PINS,
        "--prev",
        str(FX / "golden" / "rotate-root"),
    )
    assert fork.returncode == 6 and "prev-link" in last_line(fork.stdout)
    assert "a fork or another history" in fork.stdout
    other = verify(
        FX / "golden" / "drill-exception",
        "--trust",
        PINS,
        "--prev",
        str(FX / "golden" / "two-admins"),
    )
    assert other.returncode == 6 and "prev-link" in last_line(other.stdout)
    alone = verify(FX / "tampered" / "forked-prev", "--trust", PINS)
    assert alone.returncode == 0 and "not checked (give the previous bundle" in alone.stdout


def test_prev_must_itself_verify() -> None:
    pins = load_pins(Path(PINS).read_bytes())
    rep = verify_bundle(
        FX / "golden" / "drill-exception", pins, prev=FX / "tampered" / "flip-checkpoint"
    )
    assert "prev-link" in rep.failed


def test_second_super_admin_endorses_the_policy(tmp_path: Path) -> None:
    """`transcript endorse` adds a super-admin's policy signature; only the policy.json
    signatures change, and only a super-admin of the roster may add one."""
    from custody.signing import private_to_pem

    b = tmp_path / "b"
    import shutil

    shutil.copytree(FX / "tampered" / "one-admin-of-two", b)
    events = (b / "events.jsonl").read_bytes()
    assert verify(b, "--trust", PINS).returncode == 6
    for n in ("frank", "alice"):
        pw = passphrase_of(n)
        (tmp_path / f"{n}.key.pem").write_bytes(private_to_pem(mt.key(n).key, pw.encode()))
        write_secret(tmp_path / f"{n}.pass", pw + "\n")

    def endorse(n: str):
        return run_cli(
            "transcript",
            "endorse",
            str(b),
            "--key",
            str(tmp_path / f"{n}.key.pem"),
            "--passphrase-file",
            str(tmp_path / f"{n}.pass"),
        )

    r = endorse("alice")
    assert r.returncode == 7 and "Only a super-admin" in r.stderr
    r = endorse("frank")
    assert r.returncode == 0 and "signed by dave, frank" in r.stdout, r.stderr
    assert (b / "events.jsonl").read_bytes() == events
    two = str(FX / "trust" / "pins-two-admins.json")
    ok = verify(b, "--trust", two)
    assert ok.returncode == 0, ok.stdout
    assert "proves: signed by pinned super-admins dave and frank;" in ok.stdout
    assert "already endorsed" in endorse("frank").stdout
