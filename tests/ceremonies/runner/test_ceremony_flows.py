"""Ceremonies through the CLI against real SoftHSMv2: happy paths, negatives, SIGKILL faults.

A template deployment (enrolled roster, generated 3-of-5 root, KEKs and DEKs) is built once
per module and copied per test (the SoftHSMv2 config is rewritten for the copy).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.ceremony_fixtures import (
    Dep,
    build_generated,
    copy_dep,
    emergency_rotate,
    enrol_with_quorum,
    generated_copy,
    lose_token,
)
from tests.conftest import passphrase_of, run_cli, write_secret

pytestmark = pytest.mark.hsm


@pytest.fixture(scope="module")
def template(generated_master: Dep, tmp_path_factory) -> Dep:
    return generated_copy(generated_master, tmp_path_factory.mktemp("tpl") / "home")


@pytest.fixture
def dep(template: Dep, tmp_path: Path) -> Dep:
    return copy_dep(template, tmp_path / "home")


# ----------------------------------------------------------------------------- recover
def test_recover_rejects_tampered_share_by_name_and_restores(dep: Dep):
    lose_token(dep)
    bad = dep.root / "bad"
    bad.mkdir()
    # a valid share of dave presented with bob's envelope: substituted share
    (bad / "bob.share.txt").write_text((dep.root / "shares" / "dave.share.txt").read_text())
    envelope = (dep.root / "shares" / "bob.envelope.json").read_bytes()
    (bad / "bob.envelope.json").write_bytes(envelope)
    r = dep.ceremony(
        "recover",
        *dep.coord(),
        "--share",
        str(bad / "bob.share.txt"),
        *dep.shares("alice", "carol", "erin"),
    )
    assert r.returncode == 0, r.stderr
    assert any("bob" in m and "rejected" in m for m in r.out["messages"])
    assert r.out["facts"]["collect-shares.accepted"] == ["alice", "carol", "erin"]
    dep.deks_ok()
    dep.verify(r.out["bundle"])


def test_recover_too_few_and_duplicate_shares_leave_state_unchanged(dep: Dep):
    lose_token(dep)
    r = dep.ceremony("recover", *dep.coord(), *dep.shares("alice", "bob", "alice"))
    # too few: the ceremony waits for more (the accepted ones are sealed on the HSM)
    assert r.returncode == 10 and r.out["awaiting"] == "shares", r.stderr
    msgs = "\n".join(r.out["messages"])
    assert "alice already handed in a share" in msgs
    assert "2 share(s) accepted so far (alice, bob); at least 1 more needed" in msgs
    cid = r.out["ceremony_id"]
    a = dep.ceremony("abort", cid, *dep.coord())
    assert a.returncode == 0 and a.out["status"] == "aborted"
    dep.verify(a.out["bundle"])
    r = dep.ceremony("recover", *dep.coord(), *dep.shares("alice", "bob", "dave"))
    assert r.returncode == 0, r.stderr
    dep.deks_ok()


def test_share_from_another_deployment_is_rejected(dep: Dep, template: Dep, tmp_path: Path):
    other = build_generated(tmp_path / "other")
    lose_token(dep)
    r = dep.ceremony(
        "recover",
        *dep.coord(),
        *dep.shares("alice", "bob"),
        "--share",
        str(other.root / "shares" / "carol.share.txt"),
    )
    assert r.returncode == 10, r.stderr
    assert any(m.startswith("share of carol rejected") for m in r.out["messages"])
    assert r.out["facts"].get("collect-shares.accepted") is None


def test_wrong_pin_is_refused(dep: Dep):
    bad = dep.root / "badpin"
    write_secret(bad, "pin=wrong-pin-000\n")
    args = [a if a != str(dep.pin) else str(bad) for a in dep.coord()]
    r = dep.ceremony("rotate-root", *args)
    assert r.returncode == 5 and "PIN" in r.stderr
    listed = json.loads(run_cli("ceremony", "list", "--home", str(dep.root), "--json").stdout)
    assert listed[0]["kind"] == "generate"


# ------------------------------------------------------------------------- rotate-root
def _approve(dep: Dep, req: Path, *names: str) -> list[str]:
    out = []
    for n in names:
        f = dep.root / f"appr-{n}-{time.monotonic_ns()}.json"
        r = run_cli(
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
        assert r.returncode == 0, r.stderr
        out += ["--approval", str(f)]
    return out


def test_rotate_root_with_approvals_and_negative_approvals(dep: Dep):
    req = dep.root / "req.json"
    r = dep.ceremony("rotate-root", *dep.coord(), "--request-out", str(req))
    assert r.returncode == 10 and r.out["awaiting"] == "approvals"
    cid = r.out["ceremony_id"]
    # not enrolled (frank has a key but is not on the roster) + only 2 valid
    r2 = dep.ceremony("resume", cid, *dep.coord(), *_approve(dep, req, "alice", "bob", "frank"))
    assert r2.returncode == 7 and "frank: is not enrolled" in r2.stderr
    # a super-admin approval does not count as a custodian; duplicates count once
    a = _approve(dep, req, "alice")
    r3 = dep.ceremony("resume", cid, *dep.coord(), *a, *a, *_approve(dep, req, "admin"))
    assert r3.returncode == 7 and "1/3 custodians" in r3.stderr
    # expired approval (signed in-process with an old time)
    from ceremonies.participants import load_signer
    from ceremonies.transcript.records import Approval

    rq = json.loads(req.read_text())
    old = Approval.create(
        load_signer(dep.people / "carol.key.pem", passphrase_of("carol")),
        ceremony_id=cid,
        action=rq["action"],
        action_id=rq["action_id"],
        digest=rq["action_digest"],
        now=int(time.time()) - 1200,
        window=600,
    )
    f = dep.root / "old.json"
    f.write_text(json.dumps(old.to_json()))
    r4 = dep.ceremony(
        "resume", cid, *dep.coord(), *_approve(dep, req, "alice", "bob"), "--approval", str(f)
    )
    assert r4.returncode == 7 and "carol: expired" in r4.stderr
    assert [v for v, s in dep.roots() if s == "active"] == [1]  # unchanged
    ok = dep.ceremony("resume", cid, *dep.coord(), *_approve(dep, req, "alice", "bob", "carol"))
    assert ok.returncode == 0, ok.stderr
    assert ok.out["facts"]["approved_by"] == ["alice", "bob", "carol"]
    assert dep.roots() == [(1, "decrypt-only"), (2, "active")]
    dep.deks_ok()
    dep.verify(ok.out["bundle"])
    # an approval from that ceremony is not reusable in the next one
    r5 = dep.ceremony("rotate-root", *dep.coord(), "--request-out", str(dep.root / "req2.json"))
    r6 = dep.ceremony(
        "resume",
        r5.out["ceremony_id"],
        *dep.coord(),
        *a,
        *_approve(dep, dep.root / "req2.json", "bob", "carol"),
    )
    assert r6.returncode == 7 and "alice: was given for another ceremony" in r6.stderr


# ----------------------------------------------------------------- reshare, old epoch
def test_reshare_then_previous_epoch_share_is_rejected_and_drill(dep: Dep):
    enrol_with_quorum(dep, "--add", str(dep.people / "frank.pub.json"))
    cust = [a for n in ("alice", "bob", "frank") for a in ("--custodian", n)]
    r = dep.ceremony(
        "reshare",
        *dep.coord(),
        *cust,
        "--threshold",
        "2",
        "--out",
        str(dep.root / "new"),
        *dep.shares("carol", "dave", "erin"),
    )
    assert r.returncode == 10, r.stderr
    r = dep.ceremony(
        "resume", r.out["ceremony_id"], *dep.coord(), *dep.shares("alice", "frank", d="new")
    )
    assert r.returncode == 0, r.stderr
    dep.verify(r.out["bundle"])
    dep.deks_ok()
    # old-epoch shares no longer count
    r = dep.ceremony(
        "drill", *dep.coord(pin=False), *dep.shares("alice", "bob"), *dep.shares("alice", d="new")
    )
    assert r.returncode == 6 and "share of alice rejected" in r.stderr
    assert "belongs to ceremony" in r.stderr  # the retired epoch's generating ceremony
    # refused before it changed anything: already closed as aborted, nothing left open
    last = json.loads(run_cli("ceremony", "list", "--home", str(dep.root), "--json").stdout)[0]
    assert last["kind"] == "drill" and last["state"] == "aborted"
    assert "closed as aborted" in r.stderr
    r = dep.ceremony("drill", *dep.coord(pin=False), *dep.shares("alice", "bob", d="new"))
    assert r.returncode == 0, r.stderr
    assert r.out["facts"]["kcv_match"] is True and "warning" in r.out["facts"]
    dep.verify(r.out["bundle"])


def test_emergency_rotate_reports_impact(dep: Dep):
    r = emergency_rotate(dep, "laptop stolen")  # co-signed by the witness wendy
    rep = json.loads((dep.root / r.out["facts"]["report"]).read_text())  # relative to the home
    assert rep["compromised_roots"] == [1] and rep["wrapped_objects"] == 50
    assert {n["name"] for n in rep["notify"]} >= {"admin", "alice", "audrey"}
    assert dep.roots() == [(1, "disabled"), (2, "active")]
    dep.deks_ok()
    dep.verify(r.out["bundle"])


# SIGKILL at every step of recover, reshare and rotate-root: test_ceremony_kills.py


def test_drill_with_the_token_pin_holds_shares_and_builds_the_scratch_token(dep: Dep):
    """With the PIN, a drill holds shares on the deployment's token between invocations and
    still builds its scratch token (in a child process: SoftHSM only sees tokens that
    existed at C_Initialize)."""
    r = dep.ceremony("drill", *dep.coord(), *dep.shares("alice"))
    assert r.returncode == 10, r.stderr  # waiting for more custodians (3 of 5)
    r = dep.ceremony("resume", r.out["ceremony_id"], *dep.coord(), *dep.shares("carol", "dave"))
    assert r.returncode == 0, r.stderr
    assert r.out["facts"]["kcv_match"] is True
    assert r.out["facts"]["scratch_root_kcv"] == r.out["facts"]["root_kcv"]
    dep.verify(r.out["bundle"])
    tokens = run_cli(
        "hsm", "selftest", "--home", str(dep.root), "--pin-file", str(dep.pin), "--json"
    )
    assert tokens.returncode == 0, tokens.stderr
    listing = subprocess.run(
        ["softhsm2-util", "--show-slots"],
        capture_output=True,
        text=True,
        env={**os.environ, "SOFTHSM2_CONF": str(dep.root / "softhsm2.conf")},
        check=False,
    ).stdout
    assert "drill-" not in listing  # the scratch token was destroyed
