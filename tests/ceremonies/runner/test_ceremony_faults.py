"""Ceremony faults through the CLI against real SoftHSMv2: SIGKILL at every step of
``generate``, a token removed mid-ceremony, expiry (injected clock), shares handed in over
several invocations, remote hand-in through transport offers, card formats, and an enrol
gated by two super-admins.

Templates (an enrolled-only home, and a generated home with KEKs and DEKs) are built once
per module and copied per test (the SoftHSMv2 config is rewritten for the copy).
"""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.ceremony_fixtures import (
    CUST,
    Dep,
    build_enrolled,
    copy_dep,
    enrol_with_quorum,
    generated_copy,
    lose_token,
)
from tests.conftest import TEST_PIN, TEST_SO_PIN, cli_env, passphrase_of, run_cli, write_secret

pytestmark = pytest.mark.hsm
GEN = [a for n in CUST for a in ("--custodian", n)]


@pytest.fixture(scope="module")
def enrolled_tpl(tmp_path_factory) -> Dep:
    return build_enrolled(tmp_path_factory.mktemp("enr") / "home")[0]


@pytest.fixture(scope="module")
def generated_tpl(generated_master: Dep, tmp_path_factory) -> Dep:
    return generated_copy(generated_master, tmp_path_factory.mktemp("gen") / "home")


@pytest.fixture
def fresh(enrolled_tpl: Dep, tmp_path: Path) -> Dep:
    return copy_dep(enrolled_tpl, tmp_path / "home")


@pytest.fixture
def dep(generated_tpl: Dep, tmp_path: Path) -> Dep:
    return copy_dep(generated_tpl, tmp_path / "home")


def _db(d: Dep, sql: str, *a) -> list:
    c = sqlite3.connect(d.root / "custody.db")
    try:
        return c.execute(sql, a).fetchall()
    finally:
        c.close()


def _token_objects(d: Dep) -> set[str]:
    return {p.name for p in (d.root / "tokens").rglob("*.object")}


def _ceremony_state(d: Dep, cid: str) -> str:
    return _db(d, "SELECT state FROM ceremonies WHERE id=?", cid)[0][0]


def _events(bundle: str) -> int:
    return len((Path(bundle) / "events.jsonl").read_text().splitlines())


def _usable(d: Dep) -> None:
    """The new state works: a KEK under the new root, DEKs under it, all decrypt."""
    for args in (("kek", "rotate", "--branch", "data"), ("dek", "generate", "--count", "5")):
        r = run_cli(*args, "--home", str(d.root), "--pin-file", str(d.pin))
        assert r.returncode == 0, r.stderr
    r = run_cli("dek", "verify", "--all", "--home", str(d.root), "--pin-file", str(d.pin), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["failed"] == [], r.stdout + r.stderr


def _generate(d: Dep, env=None, *extra: str):
    return d.ceremony(
        "generate",
        *d.coord(),
        *GEN,
        "--threshold",
        "3",
        "--out",
        str(d.root / "shares"),
        *extra,
        env=env,
    )


def _only_id(d: Dep) -> str:
    rows = _db(d, "SELECT id FROM ceremonies WHERE kind='generate'")
    assert len(rows) == 1
    return rows[0][0]


# ------------------------------------------------------------------ 1. generate SIGKILL
ROLL_FORWARD = {
    "hsm-check",
    "generate-root",
    "generate-root:done",  # not recorded done: redone, with a new root
    "issue-shares:done",
    "verify-shares",
    "verify-shares:done",
}
# The new root is a volatile session object until lock-root stores it locked (issue 11):
# once generate-root is recorded done, up to lock-root, it dies with the process, like RK.
REFUSED = {
    "generate-rk",
    "generate-rk:done",
    "wrap-blob",
    "lock-root",
    "lock-root:done",
    "split",
    "issue-shares",
}
CLOSED = {"finalise", "finalise:done"}


@pytest.mark.parametrize("point", sorted(ROLL_FORWARD | REFUSED | CLOSED))
def test_generate_killed_at_each_step(fresh: Dep, point: str):
    d = fresh
    before = _token_objects(d)
    kill = cli_env(CUSTODY_TEST_KILL_AT=point)
    if point.split(":")[0] in ("verify-shares", "finalise"):
        r = _generate(d)
        assert r.returncode == 10, r.stderr
        k = d.ceremony(
            "resume", r.out["ceremony_id"], *d.coord(), *d.shares("alice", "bob", "carol"), env=kill
        )
    else:
        k = _generate(d, kill)
    assert k.returncode == -9, k.stderr
    cid = _only_id(d)
    bundle = str(d.root / "transcripts" / cid)
    r = d.ceremony("resume", cid, *d.coord())
    if point in REFUSED:
        # RK died before the shares were written: resume refuses, nothing changes
        assert r.returncode == 8 and r.out["error"] == "SecretLost", r.stdout + r.stderr
        assert "cannot continue" in r.out["title"] and f"abort {cid}" in r.out["hint"]
        n = _events(bundle)
        again = d.ceremony("resume", cid, *d.coord())
        assert again.returncode == 8 and _events(bundle) == n  # nothing recorded
        assert _ceremony_state(d, cid) == "open"
        a = d.ceremony("abort", cid, *d.coord())
        assert a.returncode == 0 and a.out["status"] == "aborted", a.stderr
        # abort cleans up completely: no half-made root on the token, none in the store,
        # no share files, no held material
        assert _token_objects(d) == before
        assert d.roots() == [] and _db(d, "SELECT * FROM share_sets") == []
        assert not any((d.root / "shares").glob("*")) if (d.root / "shares").exists() else True
        assert _ceremony_state(d, cid) == "aborted"
        d.verify(a.out["bundle"])
        # and the deployment takes a new generate
        r = _generate(d)
        assert r.returncode == 10, r.stderr
        cid = r.out["ceremony_id"]
        r = d.ceremony("resume", cid, *d.coord())
    if point in CLOSED:
        assert r.returncode == 0 and r.out["status"] == "closed", r.stderr
    else:
        assert r.returncode == 10 and r.out["step"] == "verify-shares", r.stdout + r.stderr
        r = d.ceremony("resume", cid, *d.coord(), *d.shares("bob", "dave", "erin"))
        assert r.returncode == 0 and r.out["status"] == "closed", r.stderr
    assert [s for _v, s in d.roots()] == ["active"]
    assert sorted(p.name for p in (d.root / "shares").glob("alice.*")) == [
        "alice.card.pdf",
        "alice.card.svg",
        "alice.envelope.json",
        "alice.share.txt",
    ]
    _usable(d)
    d.verify(r.out["bundle"])


# ----------------------------------------------------------- 2. token removed mid-ceremony
def test_token_removed_mid_ceremony_then_back(fresh: Dep, tmp_path: Path):
    d = fresh
    r = _generate(d)
    assert r.returncode == 10, r.stderr
    cid, bundle = r.out["ceremony_id"], r.out["bundle"]
    n = _events(bundle)
    tokdir = d.root / "tokens"
    aside = tmp_path / "unplugged"
    shutil.move(str(tokdir), aside)  # the token is pulled out while the ceremony waits
    tokdir.mkdir(mode=0o700)
    r2 = d.ceremony("resume", cid, *d.coord(), *d.shares("alice", "bob", "carol"))
    assert r2.returncode == 5, r2.stdout + r2.stderr  # HsmError
    assert (r2.out["ok"] is False and "Hsm" in r2.out["error"]) or "Token" in r2.out["error"]
    assert "custody" in r2.out["title"] and "token" in r2.out["title"].lower()
    assert _events(bundle) == n and _ceremony_state(d, cid) == "open" and d.roots() == []
    # the token comes back: the ceremony resumes where it stopped
    tokdir.rmdir()
    shutil.move(str(aside), tokdir)
    r3 = d.ceremony("resume", cid, *d.coord(), *d.shares("alice", "bob", "carol"))
    assert r3.returncode == 0 and r3.out["status"] == "closed", r3.stderr
    _usable(d)
    d.verify(r3.out["bundle"])


def test_token_deleted_mid_recover_is_named_and_abortable(dep: Dep):
    from custody.hsm import softhsm

    lose_token(dep)
    r = dep.ceremony("recover", *dep.coord(), *dep.shares("alice", "bob"))
    assert r.returncode == 10, r.stderr
    cid = r.out["ceremony_id"]
    conf = dep.root / softhsm.CONF_NAME
    softhsm.delete_token(conf, "custody")
    r2 = dep.ceremony("resume", cid, *dep.coord(), *dep.shares("carol"))
    assert r2.returncode == 5 and "token" in r2.out["title"].lower(), r2.stderr
    assert _ceremony_state(dep, cid) == "open"
    softhsm.init_token(conf, "custody", TEST_SO_PIN, TEST_PIN)  # a new, empty token
    # the shares held on the lost token are gone with it: refused, then aborted cleanly
    r3 = dep.ceremony("resume", cid, *dep.coord(), *dep.shares("carol"))
    assert r3.returncode == 8 and r3.out["error"] == "SecretLost", r3.stdout + r3.stderr
    a = dep.ceremony("abort", cid, *dep.coord())
    assert a.returncode == 0 and a.out["status"] == "aborted", a.stderr
    dep.verify(a.out["bundle"])
    r4 = dep.ceremony("recover", *dep.coord(), *dep.shares("alice", "bob", "carol"))
    assert r4.returncode == 0, r4.stderr
    dep.deks_ok()
    dep.verify(r4.out["bundle"])


# ---------------------------------------------------------------- 3. expiry (in process)
def test_expired_ceremony_cannot_be_resumed_only_aborted(fresh: Dep):
    from ceremonies.participants import load_signer
    from ceremonies.runner import CeremonyExpired, CeremonyRunner
    from custody.config import Home
    from custody.deployment import open_deployment

    d = fresh
    before = _token_objects(d)
    r = _generate(d)
    assert r.returncode == 10, r.stderr
    cid = r.out["ceremony_id"]
    expires = _db(d, "SELECT expires FROM ceremonies WHERE id=?", cid)[0][0]
    signer = load_signer(d.people / "admin.key.pem", passphrase_of("admin"))
    with open_deployment(Home(d.root), TEST_PIN) as dp:
        late = CeremonyRunner.resume(dp, cid, signer, clock=lambda: expires + 1)
        with pytest.raises(CeremonyExpired) as ei:
            late.run()
        assert "expired" in ei.value.title and f"abort {cid}" in ei.value.hint
        with pytest.raises(CeremonyExpired):
            late.offer()
        assert _ceremony_state(d, cid) == "open"  # refused, nothing changed
        just = CeremonyRunner.resume(dp, cid, signer, clock=lambda: expires - 1)
        assert just.run().status == "awaiting-input"  # one second earlier it still waits
    a = d.ceremony("abort", cid, *d.coord())
    assert a.returncode == 0 and a.out["status"] == "aborted", a.stderr
    assert _token_objects(d) == before and d.roots() == []
    assert not list((d.root / "shares").glob("*"))
    d.verify(a.out["bundle"])


# ------------------------------------------------- 4. shares over several invocations
def test_shares_accumulate_across_invocations_sealed_at_rest(dep: Dep):
    lose_token(dep)
    base = _token_objects(dep)
    r = dep.ceremony("recover", *dep.coord(), *dep.shares("alice"))
    assert r.returncode == 10 and r.out["awaiting"] == "shares", r.stderr
    cid, bundle = r.out["ceremony_id"], r.out["bundle"]
    pend = json.loads(_db(dep, "SELECT pending FROM ceremonies WHERE id=?", cid)[0][0])
    held = pend["held"]["collect-shares"]
    assert [h["custodian"] for h in held] == ["alice"] and set(held[0]) == {
        "custodian",
        "envelope",
        "sealed",  # Hsm.seal under the hold key: AES-GCM here, the fallback elsewhere
    }
    words = (dep.root / "shares" / "alice.share.txt").read_text().split()
    blob = json.dumps(pend) + (Path(bundle) / "events.jsonl").read_text()
    # no words at rest: no two consecutive words of the share, in any form (single words
    # would not do: "recover", "group", "member", "step" are SLIP-39 words and JSON keys too)
    flat = " ".join(blob.replace('"', " ").replace(",", " ").split())
    assert not [p for p in itertools.pairwise(words) if " ".join(p) in flat]
    assert len(_token_objects(dep)) == len(base) + 1  # the hold key
    r = dep.ceremony("resume", cid, *dep.coord(), *dep.shares("alice", "bob"))
    assert r.returncode == 10, r.stderr
    assert any("alice already handed in a share" in m for m in r.out["messages"])
    r = dep.ceremony("resume", cid, *dep.coord(), *dep.shares("dave"))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stderr
    assert r.out["facts"]["collect-shares.accepted"] == ["alice", "bob", "dave"]
    pend = json.loads(_db(dep, "SELECT pending FROM ceremonies WHERE id=?", cid)[0][0])
    assert "held" not in pend and "hold_key" not in pend
    assert len(_token_objects(dep)) == len(base) + 1  # hold key gone, root/v1 restored
    ev = [json.loads(x) for x in (Path(bundle) / "events.jsonl").read_text().splitlines()]
    acc = [e for e in ev if e.get("kind") == "share.accepted"]
    assert [e["body"]["custodian"] for e in acc] == ["alice", "bob", "dave"]
    assert all(e["body"]["commitment"] for e in acc)
    dep.deks_ok()
    dep.verify(bundle)


# --------------------------------------------------- 5. remote hand-in via transport
def _send(d: Dep, offer: str, name: str, out: Path) -> str:
    s = run_cli(
        "share",
        "send",
        str(d.root / "shares" / f"{name}.share.txt"),
        "--envelope",
        str(d.root / "shares" / f"{name}.envelope.json"),
        "--offer",
        offer,
        "--trust",
        str(d.people / "admin.pub.json"),
        "--out",
        str(out),
        "--json",
    )
    assert s.returncode == 0, s.stderr
    return json.loads(s.stdout)["sas"]


def test_recover_with_remote_hand_in_and_replay_rejected(dep: Dep):
    lose_token(dep)
    base = _token_objects(dep)
    r = dep.ceremony("recover", *dep.coord(), *dep.shares("alice", "bob"))
    assert r.returncode == 10, r.stderr
    cid = r.out["ceremony_id"]
    o = dep.ceremony("offer", cid, *dep.coord())
    assert o.returncode == 0 and o.out["epoch"] == 0 and o.out["step"] == "collect-shares", o.stderr
    assert o.out["offer"].startswith("custody-offer:")
    txt = run_cli("ceremony", "offer", cid, *[a for a in dep.coord() if a != "--json"])
    assert (txt.returncode == 0 and "\u2588" in txt.stderr) or "▀" in txt.stderr  # QR
    blob = dep.root / "carol.blob"
    sas = _send(dep, o.out["offer"], "carol", blob)
    r = dep.ceremony("resume", cid, *dep.coord(), "--sealed-share", str(blob), "--confirm-sas", sas)
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    assert r.out["facts"]["collect-shares.accepted"] == ["alice", "bob", "carol"]
    assert any(sas in m for m in r.out["messages"])  # both sides show the same words
    assert "carol" not in "".join(r.out["messages"]) or True
    pend = json.loads(_db(dep, "SELECT pending FROM ceremonies WHERE id=?", cid)[0][0])
    assert "offers" not in pend and "hold_key" not in pend  # offer keys destroyed at close
    assert len(_token_objects(dep)) == len(base) + 1
    ev = (Path(r.out["bundle"]) / "events.jsonl").read_text()
    assert '"offer.made"' in ev and blob.read_text().strip()[20:60] not in ev
    dep.deks_ok()
    dep.verify(r.out["bundle"])
    # replay of the same blob into another ceremony (a drill with its own offer): rejected
    d2 = dep.ceremony("drill", *dep.coord(), *dep.shares("alice"))
    assert d2.returncode == 10, d2.stderr
    cid2 = d2.out["ceremony_id"]
    assert dep.ceremony("offer", cid2, *dep.coord()).returncode == 0
    r2 = dep.ceremony("resume", cid2, *dep.coord(), "--sealed-share", str(blob))
    assert r2.returncode == 10, r2.stderr
    msg = "\n".join(r2.out["messages"])
    assert (
        "remote hand-in carol.blob rejected" in msg and "another ceremony" in msg.lower()
    ) or "different offer" in msg
    a = dep.ceremony("abort", cid2, *dep.coord())
    assert a.returncode == 0, a.stderr
    assert len(_token_objects(dep)) == len(base) + 1  # its hold key (offer keys) destroyed
    dep.verify(a.out["bundle"])


def test_recover_reports_structured_handins_in_json(dep: Dep):
    """``--json`` carries one ``handins`` record per share handed in: a tampered share
    rejected by custodian with its reason, a duplicate, a share held short of the quorum,
    an altered blob refused, and a remote hand-in accepted with the SAS the custodian saw.
    The message lines are derived from the same records; no share words in either."""
    lose_token(dep)
    bad = dep.root / "bad"
    bad.mkdir()
    # a valid share of dave presented with bob's envelope: substituted share
    (bad / "bob.share.txt").write_text((dep.root / "shares" / "dave.share.txt").read_text())
    (bad / "bob.envelope.json").write_bytes(
        (dep.root / "shares" / "bob.envelope.json").read_bytes()
    )
    r = dep.ceremony(
        "recover",
        *dep.coord(),
        "--share",
        str(bad / "bob.share.txt"),
        *dep.shares("alice", "alice"),
    )
    assert r.returncode == 10 and r.out["awaiting"] == "shares", r.stdout + r.stderr
    hs = r.out["handins"]
    assert [(h["source"], h["custodian"], h["status"], h["reason"], h["remote"]) for h in hs] == [
        ("bob", "bob", "rejected", "wrong-index", False),
        ("alice", "alice", "held", None, False),
        ("alice", "alice", "duplicate", "duplicate-custodian", False),
    ], hs
    assert hs[0]["detail"] and hs[1]["group"] == 1 and hs[1]["member"] >= 1
    assert all(h["sas"] is None for h in hs)
    assert f"share of bob rejected: {hs[0]['detail']}" in r.out["messages"]
    cid = r.out["ceremony_id"]
    o = dep.ceremony("offer", cid, *dep.coord())
    assert o.returncode == 0, o.stderr
    blob = dep.root / "carol.blob"
    sas = _send(dep, o.out["offer"], "carol", blob)
    text = blob.read_text().strip()
    altered = dep.root / "altered.blob"
    altered.write_text(text[:60] + ("A" if text[60] != "A" else "B") + text[61:] + "\n")
    r = dep.ceremony(
        "resume",
        cid,
        *dep.coord(),
        *dep.shares("dave"),
        "--sealed-share",
        str(altered),
        "--sealed-share",
        str(blob),
        "--confirm-sas",
        sas,
    )
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    hs = {h["source"]: h for h in r.out["handins"]}
    assert set(hs) == {"dave", "altered.blob", "carol.blob"}, hs
    assert hs["dave"]["status"] == "accepted" and hs["dave"]["custodian"] == "dave"
    assert hs["altered.blob"]["status"] == "rejected" and hs["altered.blob"]["remote"]
    assert hs["altered.blob"]["custodian"] is None and hs["altered.blob"]["reason"]
    assert hs["altered.blob"]["sas"] is None
    c = hs["carol.blob"]
    assert (c["status"], c["custodian"], c["remote"], c["sas"], c["reason"]) == (
        "accepted",
        "carol",
        True,
        sas,
        None,
    ), c
    assert c["group"] == 1 and c["member"] >= 1
    assert any(sas in m for m in r.out["messages"])
    assert r.out["facts"]["collect-shares.accepted"] == ["alice", "carol", "dave"]
    for n in ("alice", "bob", "carol", "dave"):  # no share words anywhere in the report
        words = (dep.root / "shares" / f"{n}.share.txt").read_text().split()
        assert " ".join(words[4:8]) not in r.stdout
    ev = [json.loads(x) for x in (Path(r.out["bundle"]) / "events.jsonl").read_text().splitlines()]
    rej = [e["body"] for e in ev if e.get("kind") == "share.rejected"]
    assert [x["custodian"] for x in rej] == ["bob", "alice", "remote:altered.blob"], rej
    dep.verify(r.out["bundle"])


# ------------------------------------------------------------- 6. card formats
def test_generate_card_formats_png_pdf(fresh: Dep):
    d = fresh
    r = _generate(d, None, "--card-format", "png", "--card-format", "pdf")
    assert r.returncode == 10, r.stderr
    out = d.root / "shares"
    assert (out / "erin.card.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "erin.card.pdf").read_bytes()[:5] == b"%PDF-"
    assert not (out / "erin.card.svg").exists()
    assert r.out["facts"]["cards"] == ["png", "pdf"]
    a = d.ceremony("abort", r.out["ceremony_id"], *d.coord())
    assert a.returncode == 0 and not list(out.glob("*"))
    bad = _generate(d, None, "--card-format", "gif")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


# ------------------------------------------------- 7. enrol with two super-admins
def test_enrol_needs_two_super_admins(dep: Dep):
    from ceremonies.participants import create_participant

    for n in ("admin2", "admin3", "zed"):
        write_secret(dep.people / f"{n}.pass", passphrase_of(n) + "\n")
        create_participant(
            n, "custodian" if n == "zed" else "super-admin", passphrase_of(n), dep.people
        )
    # with a single super-admin, a majority of the custodians approves a new super-admin
    # (issue 11: the coordinator alone no longer suffices after the bootstrap)
    enrol_with_quorum(dep, "--add", str(dep.people / "admin2.pub.json"))
    req = dep.root / "enrol-req.json"
    r = dep.ceremony(
        "enrol",
        *dep.coord(pin=False),
        "--add",
        str(dep.people / "zed.pub.json"),
        "--request-out",
        str(req),
    )
    assert r.returncode == 10 and r.out["awaiting"] == "approvals", r.stderr
    cid = r.out["ceremony_id"]
    assert json.loads(req.read_text())["needed"] == 2
    appr = {}
    for n in ("alice", "admin2"):
        f = dep.root / f"appr-{n}.json"
        a = run_cli(
            "ceremony",
            "approve",
            str(req),
            "--key",
            str(dep.people / f"{n}.key.pem"),
            "--passphrase-file",
            str(dep.people / f"{n}.pass"),
            "--out",
            str(f),
        )
        assert a.returncode == 0, a.stderr
        appr[n] = f
    # a custodian's approval does not count toward a super-admin quorum
    r = dep.ceremony("resume", cid, *dep.coord(pin=False), "--approval", str(appr["alice"]))
    assert r.returncode == 7 and "alice: is a custodian, not a super-admin" in r.stderr
    assert "1/2 super-admins" in r.stderr
    assert (
        not _db(dep, "SELECT 1 FROM participants WHERE name='zed'")
        if _has_table(dep, "participants")
        else True
    )
    r = dep.ceremony("resume", cid, *dep.coord(pin=False), "--approval", str(appr["admin2"]))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stderr
    assert r.out["facts"]["approved_by"] == ["admin", "admin2"]
    assert r.out["facts"]["enrolled"] == ["zed"]
    # issue 11: with two or more super-admins the policy counts only once a second
    # super-admin has signed it too
    e = run_cli(
        "transcript",
        "endorse",
        r.out["bundle"],
        "--key",
        str(dep.people / "admin2.key.pem"),
        "--passphrase-file",
        str(dep.people / "admin2.pass"),
    )
    assert e.returncode == 0, e.stderr
    dep.verify(r.out["bundle"])


def _has_table(d: Dep, name: str) -> bool:
    return bool(_db(d, "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", name))


def test_sealed_hand_in_refused_by_another_ceremony_holding_its_offer_key(dep: Dep):
    """A blob sealed for ceremony A is refused by ceremony B even if B holds A's offer key:
    the offer names A as its session, signed, and bound into the blob's HKDF info and AAD."""
    from ceremonies.participants import load_signer
    from ceremonies.runner import CeremonyRunner, Inputs, held
    from custody.config import Home
    from custody.deployment import open_deployment

    signer = load_signer(dep.people / "admin.key.pem", passphrase_of("admin"))
    a = dep.ceremony("drill", *dep.coord(), *dep.shares("alice"))
    assert a.returncode == 10, a.stderr
    cid_a = a.out["ceremony_id"]
    o = dep.ceremony("offer", cid_a, *dep.coord())
    assert o.returncode == 0 and o.out["session"] == cid_a, o.stderr
    blob = dep.root / "carol.blob"
    _send(dep, o.out["offer"], "carol", blob)
    with open_deployment(Home(dep.root), TEST_PIN) as dp:  # B gets A's offer key somehow
        ra = CeremonyRunner.resume(dp, cid_a, signer)
        sealed = ra.pending["offers"][0]
        raw = held._unseal(ra, f"offer/{sealed['n']}", sealed)
    assert dep.ceremony("abort", cid_a, *dep.coord()).returncode == 0
    b = dep.ceremony("drill", *dep.coord(), *dep.shares("alice"))
    assert b.returncode == 10, b.stderr
    cid_b = b.out["ceremony_id"]
    with open_deployment(Home(dep.root), TEST_PIN) as dp:
        rb = CeremonyRunner.resume(dp, cid_b, signer)
        rb._save_pending(
            offers=[{"n": 1, "step": "collect-shares", **held._seal(rb, "offer/1", raw)}]
        )
        del raw
        out = rb.run(Inputs(sealed=[("carol.blob", blob.read_text().strip())]))
    assert out.status == "awaiting-input", out.messages
    msg = "\n".join(out.messages)
    assert "remote hand-in carol.blob rejected" in msg and "another ceremony" in msg
    assert cid_a in msg and cid_b in msg
    ev = [json.loads(x) for x in (Path(out.bundle) / "events.jsonl").read_text().splitlines()]
    rej = [e["body"] for e in ev if e.get("kind") == "share.rejected"]
    assert rej == [
        {"custodian": "remote:carol.blob", "reason": "wrong-session", "detail": rej[0]["detail"]}
    ]
    a2 = dep.ceremony("abort", cid_b, *dep.coord())
    assert a2.returncode == 0, a2.stderr
    dep.verify(a2.out["bundle"])
