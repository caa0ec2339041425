"""Issue 11, items 2 and 4: no single insider meets a quorum alone, and abort destroys what
it promises. Every attack runs through the CLI as a subprocess against a real SoftHSMv2
token, from a generated 3-of-5 template with ONE super-admin (admin), five custodians, an
auditor and a witness (wendy):

* "One super-admin meets the custodian quorum alone": sock-puppet enrolment by the admin
  alone is refused (also when the runner is driven directly with a weaker threshold); sock
  puppets enrolled with a custodian majority still never count toward a rotate-root, which
  counts only holders of the active share set, by key fingerprint;
* emergency-rotate needs a second person (a witness or a second super-admin) whose
  approval the transcript records and the verifier checks; a forged transcript that skips
  it does not verify;
* an approval of a participant revoked during the ceremony does not count;
* "An aborted ceremony keeps its secrets": aborting without the token is refused and
  nothing is recorded; after a real abort the held ciphertexts are gone from the store's
  bytes and the hold key from the token.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ceremony_fixtures import (
    CUST,
    Dep,
    approval_args,
    copy_dep,
    enrol_with_quorum,
    generated_copy,
    sign_approvals,
)
from tests.conftest import TEST_PIN, passphrase_of, run_cli, write_secret

pytestmark = pytest.mark.hsm

PUPPETS = ("sock1", "sock2", "sock3")


def _copy(src: Dep, dst: Path) -> Dep:
    return copy_dep(src, dst, in_flight=True)


def _db(d: Dep, sql: str, *args: Any) -> list[Any]:
    c = sqlite3.connect(d.root / "custody.db")
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def _events(bundle: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (Path(bundle) / "events.jsonl").read_text().splitlines()]


def _people(d: Dep, *names: tuple[str, str]) -> None:
    from ceremonies.participants import create_participant

    for n, role in names:
        write_secret(d.people / f"{n}.pass", passphrase_of(n) + "\n")
        create_participant(n, role, passphrase_of(n), d.people)


def _pubs(d: Dep, *names: str) -> list[str]:
    return [a for n in names for a in ("--add", str(d.people / f"{n}.pub.json"))]


def _endorse(d: Dep, bundle: str, who: str) -> None:
    """A second super-admin signs the bundle's policy (a roster with two super-admins needs
    two pinned policy signatures: issue 11 item 1)."""
    e = run_cli(
        "transcript",
        "endorse",
        bundle,
        "--key",
        str(d.people / f"{who}.key.pem"),
        "--passphrase-file",
        str(d.people / f"{who}.pass"),
    )
    assert e.returncode == 0, e.stdout + e.stderr


def _verify(d: Dep, bundle: str) -> Any:
    trust = [a for p in sorted(d.people.glob("*.pub.json")) for a in ("--trust", str(p))]
    return run_cli("transcript", "verify", bundle, *trust)


@pytest.fixture(scope="module")
def template(generated_master: Dep, tmp_path_factory) -> Dep:
    return generated_copy(generated_master, tmp_path_factory.mktemp("tq") / "home")


@pytest.fixture
def dep(template: Dep, tmp_path: Path) -> Dep:
    return _copy(template, tmp_path / "home")


# ----------------------------------------------- 1. one super-admin, sock-puppet enrolment
def test_one_admin_cannot_enrol_sock_puppets_alone(dep: Dep):
    _people(dep, *((p, "custodian") for p in PUPPETS))
    req = dep.root / "enrol-req.json"
    r = dep.ceremony(
        "enrol", *dep.coord(pin=False), *_pubs(dep, *PUPPETS), "--request-out", str(req)
    )
    # the coordinator's own approval is not a quorum: it waits for a custodian majority
    assert r.returncode == 10 and r.out["awaiting"] == "approvals", r.stdout + r.stderr
    rq = json.loads(req.read_text())
    assert (rq["role"], rq["needed"]) == ("custodian", 3) and rq["eligible"] == list(CUST)
    assert not _db(dep, "SELECT name FROM participants WHERE name LIKE 'sock%'")
    # the puppets cannot approve their own enrolment: they are not enrolled
    files = sign_approvals(dep, rq["ceremony_id"], PUPPETS, tag="-self", req=req)
    r = dep.ceremony("resume", rq["ceremony_id"], *dep.coord(pin=False), *approval_args(files))
    assert r.returncode == 7 and "0/3 custodians" in r.stderr, r.stdout + r.stderr
    assert "sock1: is not enrolled" in r.stderr
    assert not _db(dep, "SELECT name FROM participants WHERE name LIKE 'sock%'")


def test_the_runner_refuses_a_lowered_enrolment_quorum(dep: Dep):
    """Not only the CLI: a driver that asks the runner for an enrolment approved by one
    super-admin is refused before anything is recorded."""
    from ceremonies.participants import load_signer
    from ceremonies.runner import CeremonyRunner
    from ceremonies.transcript.model import Threshold
    from custody.config import Home
    from custody.deployment import open_deployment
    from custody.errors import PolicyError

    _people(dep, ("sock1", "custodian"))
    pub = json.loads((dep.people / "sock1.pub.json").read_text())
    signer = load_signer(dep.people / "admin.key.pem", passphrase_of("admin"))
    with open_deployment(Home(dep.root)) as dp:
        with pytest.raises(PolicyError) as ei:
            CeremonyRunner.start(
                dp,
                "enrol",
                signer,
                params={"add": [{k: pub[k] for k in ("name", "role", "public", "fingerprint")}]},
                thresholds={"enrol": Threshold(role="super-admin", count=1)},
            )
        assert "cannot be lowered" in ei.value.title and ei.value.hint
    assert _db(dep, "SELECT COUNT(*) FROM ceremonies WHERE kind='enrol'") == [(1,)]  # bootstrap


def test_two_super_admins_approve_a_roster_change(dep: Dep):
    """With two super-admins, adding or revoking anyone needs both; custodians do not count."""
    _people(dep, ("admin2", "super-admin"), ("sock1", "custodian"))
    enrol_with_quorum(dep, *_pubs(dep, "admin2"))  # one super-admin: a custodian majority
    req = dep.root / "r2.json"
    r = dep.ceremony("enrol", *dep.coord(pin=False), "--revoke", "erin", "--request-out", str(req))
    assert r.returncode == 10, r.stdout + r.stderr
    rq = json.loads(req.read_text())
    assert (rq["role"], rq["needed"]) == ("super-admin", 2)
    cust = sign_approvals(dep, rq["ceremony_id"], ("alice", "bob", "carol"), tag="-c", req=req)
    r = dep.ceremony("resume", rq["ceremony_id"], *dep.coord(pin=False), *approval_args(cust))
    assert r.returncode == 7 and "1/2 super-admins" in r.stderr, r.stdout + r.stderr
    assert _db(dep, "SELECT revoked_at FROM participants WHERE name='erin'") == [(None,)]
    a2 = sign_approvals(dep, rq["ceremony_id"], ("admin2",), tag="-a", req=req)
    r = dep.ceremony("resume", rq["ceremony_id"], *dep.coord(pin=False), *approval_args(a2))
    assert r.returncode == 0 and r.out["facts"]["approved_by"] == ["admin", "admin2"], r.stderr
    _endorse(dep, r.out["bundle"], "admin2")
    assert _verify(dep, r.out["bundle"]).returncode == 0


def _forger() -> Any:
    from ceremonies.transcript.recorder import Recorder

    class Forger(Recorder):  # the insider's own writer: no policy checks before writing
        def _precheck(self, ev: Any, what: str) -> None:
            return None

    return Forger


def test_a_forged_enrolment_approved_by_one_admin_does_not_verify(dep: Dep, tmp_path: Path):
    """The single super-admin writes an enrolment policy that names themselves as the
    quorum, signs it and every event, and enrols a sock puppet: the verifier holds the
    policy to the floor (a custodian majority) whatever the policy says."""
    from ceremonies.participants import load_signer
    from ceremonies.roster import Roster
    from ceremonies.runner import roster_entries
    from ceremonies.transcript.model import Policy, SignedPolicy, Threshold
    from ceremonies.transcript.records import Approval
    from custody.store import open_store

    admin = load_signer(dep.people / "admin.key.pem", passphrase_of("admin"))
    now = int(time.time())
    store = open_store(dep.root / "custody.db")
    try:
        roster = roster_entries(Roster(store), now)
    finally:
        store.close()
    base = Policy.new(
        purpose="enrol",
        kind="enrol",
        created_at=now,
        roster=roster,
        permissions={"super-admin": ("*",), "custodian": (), "auditor": (), "witness": ()},
        thresholds={"enrol": Threshold(role="super-admin", count=1)},
        script=("review", "enrol"),
        close_quorum={"super-admin": 1},
        prev_checkpoint={"ceremony": "00" * 16, "tree_size": 1, "root": "00" * 32},
    )
    signed = SignedPolicy(policy=base).signed_by(admin)
    out = tmp_path / base.ceremony_id
    rec = _forger().create(out, signed, signer=admin, now=now)
    params = {"add": [{"name": "sock1", "role": "custodian", "fingerprint": "ab" * 8}]}
    aid = f"enrol/{base.ceremony_id[:8]}"
    digest = rec.action_digest("enrol", aid, params)
    mine = Approval.create(
        admin,
        ceremony_id=base.ceremony_id,
        action="enrol",
        action_id=aid,
        digest=digest,
        now=now,
        window=600,
    )
    for step in ("review", "enrol"):
        rec.record(step, "step.begin", admin, {}, now=now)
        if step == "enrol":
            rec.record_action(
                "enrol", "enrol", admin, action_id=aid, params=params, approvals=[mine], now=now
            )
        rec.record(step, "step.done", admin, {"facts": {}}, now=now)
    rec.close(admin, [admin], outcome="completed", now=now)
    v = _verify(dep, str(out))
    assert v.returncode != 0 and "enrol needs 3 custodian(s)" in v.stdout, v.stdout


# ------------------------------------------------------- 2. sock puppets and rotate-root
def test_sock_puppets_never_count_toward_rotate_root(dep: Dep):
    _people(dep, *((p, "custodian") for p in PUPPETS))
    req = dep.root / "enrol-req.json"
    r = dep.ceremony(
        "enrol", *dep.coord(pin=False), *_pubs(dep, *PUPPETS), "--request-out", str(req)
    )
    if r.returncode == 10:  # enrolled for real, with a custodian majority
        files = sign_approvals(dep, r.out["ceremony_id"], ("alice", "bob", "carol"), req=req)
        r = dep.ceremony(
            "resume", r.out["ceremony_id"], *dep.coord(pin=False), *approval_args(files)
        )
    assert r.returncode == 0 and r.out["facts"]["enrolled"] == list(PUPPETS), r.stderr
    r = dep.ceremony("rotate-root", *dep.coord(), "--request-out", str(dep.root / "req.json"))
    assert r.returncode == 10 and r.out["awaiting"] == "approvals", r.stderr
    cid = r.out["ceremony_id"]
    rq = json.loads((dep.root / "req.json").read_text())
    assert rq["eligible"] == list(CUST) and rq["needed"] == 3  # holders of the share set only
    puppets = sign_approvals(dep, cid, PUPPETS, tag="-p")
    r = dep.ceremony("resume", cid, *dep.coord(), *approval_args(puppets))
    assert r.returncode == 7 and "0/3 custodians" in r.stderr, r.stdout + r.stderr
    assert dep.roots() == [(1, "active")]
    # two real holders and a puppet are still short of the quorum
    mixed = sign_approvals(dep, cid, ("alice", "bob"), tag="-h") + puppets[:1]
    r = dep.ceremony("resume", cid, *dep.coord(), *approval_args(mixed))
    assert r.returncode == 7 and "2/3 custodians" in r.stderr, r.stdout + r.stderr
    assert dep.roots() == [(1, "active")]
    ok = sign_approvals(dep, cid, ("alice", "bob", "dave"), tag="-ok")
    r = dep.ceremony("resume", cid, *dep.coord(), *approval_args(ok))
    assert r.returncode == 0 and r.out["facts"]["approved_by"] == ["alice", "bob", "dave"]
    assert _verify(dep, r.out["bundle"]).returncode == 0


# ------------------------------------------------------- 3. emergency-rotate, second person
def _emergency(d: Dep) -> tuple[str, str, Path]:
    req = d.root / "em-req.json"
    r = d.ceremony(
        "emergency-rotate", *d.coord(), "--reason", "laptop stolen", "--request-out", str(req)
    )
    assert r.returncode == 10 and r.out["step"] == "second-person", r.stdout + r.stderr
    return r.out["ceremony_id"], r.out["bundle"], req


def test_emergency_rotate_by_one_person_is_refused(dep: Dep):
    cid, bundle, req = _emergency(dep)
    assert dep.roots() == [(1, "active")]  # nothing rotated yet
    rq = json.loads(req.read_text())
    assert rq["role"] == "second-person" and rq["needed"] == 1 and rq["eligible"] == ["wendy"]
    for who, why in (("admin", "is the coordinator"), ("alice", "is a custodian")):
        files = sign_approvals(dep, cid, (who,), tag=f"-{who}", req=req)
        r = dep.ceremony("resume", cid, *dep.coord(), *approval_args(files))
        assert r.returncode == 7 and why in r.stderr, r.stdout + r.stderr
        assert "second person" in r.stderr and dep.roots() == [(1, "active")]
    kinds = [e["kind"] for e in _events(bundle)]
    assert "emergency-rotate" not in kinds and "hsm.generate" not in kinds


def test_emergency_rotate_with_a_witness_verifies(dep: Dep):
    cid, bundle, req = _emergency(dep)
    files = sign_approvals(dep, cid, ("wendy",), tag="-w", req=req)
    r = dep.ceremony("resume", cid, *dep.coord(), *approval_args(files))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    assert r.out["facts"]["second_person"] == ["wendy"]
    assert dep.roots() == [(1, "disabled"), (2, "active")]
    [ev] = [e for e in _events(bundle) if e["kind"] == "emergency-rotate"]
    assert ev["step"] == "second-person" and [a["approver"] for a in ev["body"]["approvals"]] == [
        "wendy"
    ]
    v = _verify(dep, bundle)
    assert v.returncode == 0 and "second person wendy (witness)" in v.stdout, v.stdout


def test_emergency_rotate_with_a_second_super_admin_verifies(dep: Dep):
    _people(dep, ("admin2", "super-admin"))
    enrol_with_quorum(dep, *_pubs(dep, "admin2"))
    cid, bundle, req = _emergency(dep)
    files = sign_approvals(dep, cid, ("admin2",), tag="-a2", req=req)
    r = dep.ceremony("resume", cid, *dep.coord(), *approval_args(files))
    assert r.returncode == 0 and r.out["facts"]["second_person"] == ["admin2"], r.stderr
    _endorse(dep, bundle, "admin2")
    v = _verify(dep, bundle)
    assert v.returncode == 0 and "second person admin2 (super-admin)" in v.stdout, v.stdout


def test_emergency_rotate_with_nobody_to_co_sign_is_refused_at_start(dep: Dep):
    enrol_with_quorum(dep, "--revoke", "wendy")  # the only witness; admin is alone
    n = len(_db(dep, "SELECT id FROM ceremonies"))
    r = dep.ceremony("emergency-rotate", *dep.coord(), "--reason", "laptop stolen")
    assert r.returncode == 7 and "needs a second person" in r.stderr, r.stdout + r.stderr
    assert len(_db(dep, "SELECT id FROM ceremonies")) == n and dep.roots() == [(1, "active")]


def test_a_forged_emergency_rotate_without_the_second_person_does_not_verify(dep, tmp_path):
    """The coordinator writes the bundle alone, every event signed by their own key, and
    leaves the second person out: the verifier refuses it (the recorder would have)."""
    from ceremonies.participants import load_signer
    from ceremonies.transcript.model import SignedPolicy

    Forger = _forger()
    cid, bundle, req = _emergency(dep)
    files = sign_approvals(dep, cid, ("wendy",), tag="-w", req=req)
    r = dep.ceremony("resume", cid, *dep.coord(), *approval_args(files))
    assert r.returncode == 0, r.stderr
    real = _events(bundle)
    signed = SignedPolicy.from_json(json.loads((Path(bundle) / "policy.json").read_bytes()))
    admin = load_signer(dep.people / "admin.key.pem", passphrase_of("admin"))
    forged = tmp_path / cid
    rec = Forger.create(forged, signed, signer=admin, now=real[0]["time"])
    for e in real[1:-1]:
        if e["step"] == "second-person":
            continue
        body = {k: v for k, v in e["body"].items() if k != "artifacts"}
        rec.record(e["step"], e["kind"], admin, body, now=e["time"])
    rec.close(admin, [admin], outcome="completed", now=real[-1]["time"])
    v = _verify(dep, str(forged))
    assert v.returncode != 0 and "before the emergency-rotate action" in v.stdout, v.stdout
    assert _verify(dep, bundle).returncode == 0  # the real one does


# ---------------------------------------------------- 4. revoked during the ceremony
def test_an_approver_revoked_during_the_ceremony_does_not_count(dep: Dep):
    r = dep.ceremony("rotate-root", *dep.coord(), "--request-out", str(dep.root / "req.json"))
    assert r.returncode == 10, r.stderr
    cid, bundle = r.out["ceremony_id"], r.out["bundle"]
    files = sign_approvals(dep, cid, ("alice", "bob", "carol"))
    # carol's key is revoked in the store's roster while the ceremony waits (the policy,
    # signed at the start, still lists her as valid)
    c = sqlite3.connect(dep.root / "custody.db")
    with c:
        c.execute(
            "UPDATE participants SET revoked_at=? WHERE name='carol'", (int(time.time()) - 1,)
        )
    c.close()
    r = dep.ceremony("resume", cid, *dep.coord(), *approval_args(files))
    assert r.returncode == 7 and "2/3 custodians" in r.stderr, r.stdout + r.stderr
    assert dep.roots() == [(1, "active")]
    [rev] = [e for e in _events(bundle) if e["kind"] == "roster.revoked"]
    assert rev["body"]["name"] == "carol"
    more = sign_approvals(dep, cid, ("dave",), tag="-d")
    r = dep.ceremony("resume", cid, *dep.coord(), *approval_args([*files, *more]))
    assert r.returncode == 0 and r.out["facts"]["approved_by"] == ["alice", "bob", "dave"]
    assert any("approval of carol not counted" in m for m in r.out["messages"])
    assert len([e for e in _events(bundle) if e["kind"] == "roster.revoked"]) == 1
    assert _verify(dep, bundle).returncode == 0


# ------------------------------------------------------------ 5. abort destroys its secrets
def _drill_holding(d: Dep) -> tuple[str, str, list[str]]:
    """A drill with the PIN, alice's share held (sealed under the hold key) between runs."""
    r = d.ceremony("drill", *d.coord(), *d.shares("alice"))
    assert r.returncode == 10 and r.out["awaiting"] == "shares", r.stderr
    cid = r.out["ceremony_id"]
    pend = json.loads(_db(d, "SELECT pending FROM ceremonies WHERE id=?", cid)[0][0])
    assert pend["hold_key"] and len(pend["held"]["collect-shares"]) == 1
    return cid, r.out["bundle"], [h["sealed"] for h in pend["held"]["collect-shares"]]


def test_abort_without_the_token_is_refused_and_records_nothing(dep: Dep):
    cid, bundle, _ct = _drill_holding(dep)
    n = len(_events(bundle))
    a = dep.ceremony("abort", cid, *dep.coord(pin=False))
    assert a.returncode == 8 and "without the token" in a.stderr, a.stdout + a.stderr
    assert "hold key" in a.stderr and "--pin-file" in a.stderr
    assert _db(dep, "SELECT state FROM ceremonies WHERE id=?", cid) == [("open",)]
    assert len(_events(bundle)) == n  # no rollback, no close: nothing recorded as aborted
    pend = json.loads(_db(dep, "SELECT pending FROM ceremonies WHERE id=?", cid)[0][0])
    assert pend["hold_key"] and pend["held"]["collect-shares"]  # nothing dropped
    a = dep.ceremony("abort", cid, *dep.coord())
    assert a.returncode == 0 and a.out["status"] == "aborted", a.stderr
    done = [e for e in _events(bundle) if e["kind"] == "rollback.done"]
    assert any("hold key" in u for u in done[0]["body"]["undone"])
    assert done[0]["body"]["not_destroyed"] == []
    assert _verify(dep, bundle).returncode == 0


def _decrypt_held(d: Dep, cid: str, held: dict[str, str]) -> bytes:
    from custody.config import Home
    from custody.deployment import open_deployment

    aad = f"custody/held/v1\n{cid}\ncollect-shares/{held['custodian']}".encode()
    with open_deployment(Home(d.root), TEST_PIN) as dp:
        assert dp.hsm is not None
        return bytes(dp.hsm.unseal(_hold_label(cid), 1, bytes.fromhex(held["sealed"]), aad))


def test_the_held_shares_cannot_be_decrypted_after_any_abort(dep: Dep):
    """The finding: an abort without the PIN recorded "aborted" and left the hold key, so a
    copy of the held ciphertext still decrypted with the PIN. Now that abort is refused,
    and after the real one the ciphertext no longer decrypts."""
    from custody.errors import HsmError

    cid, _bundle, _cts = _drill_holding(dep)
    pend = json.loads(_db(dep, "SELECT pending FROM ceremonies WHERE id=?", cid)[0][0])
    held = pend["held"]["collect-shares"][0]  # what the operator with the disk copied
    words = (dep.root / "shares" / "alice.share.txt").read_text().strip()
    assert _decrypt_held(dep, cid, held).decode() == words
    dep.ceremony("abort", cid, *dep.coord(pin=False))
    if _db(dep, "SELECT state FROM ceremonies WHERE id=?", cid) == [("open",)]:
        a = dep.ceremony("abort", cid, *dep.coord())  # refused above: abort with the token
        assert a.returncode == 0 and a.out["status"] == "aborted", a.stderr
    assert _db(dep, "SELECT state FROM ceremonies WHERE id=?", cid) == [("aborted",)]
    with pytest.raises(HsmError):  # the hold key is gone from the token
        _decrypt_held(dep, cid, held)


def test_after_abort_the_held_ciphertexts_are_gone_from_the_store_file(dep: Dep):
    """Read the bytes of custody.db and its write-ahead log after a real abort, while
    another process (a TUI, a reader) keeps the store open, so the log is not removed at
    exit: the ciphertexts of the held shares are nowhere in them."""
    cid, _bundle, cts = _drill_holding(dep)
    reader = sqlite3.connect(dep.root / "custody.db")  # idle: no open read transaction
    try:
        assert reader.execute("SELECT COUNT(*) FROM ceremonies").fetchone()[0] >= 1
        a = dep.ceremony("abort", cid, *dep.coord())
        assert a.returncode == 0 and a.out["status"] == "aborted", a.stderr
        raw = b"".join(p.read_bytes() for p in sorted(dep.root.glob("custody.db*")))
        for ct in cts:
            # the blob's tail (ciphertext and tag; its head is a fixed header)
            assert ct[-64:].encode() not in raw and bytes.fromhex(ct)[-32:] not in raw
        pend = json.loads(
            reader.execute("SELECT pending FROM ceremonies WHERE id=?", (cid,)).fetchone()[0]
        )
        assert "held" not in pend and "hold_key" not in pend and "offers" not in pend
    finally:
        reader.close()


def _hold_label(cid: str) -> str:
    import hashlib

    return "hold-" + hashlib.sha256(cid.encode()).hexdigest()[:16]
