"""Approvals across a crash, and the runner's public queries for drivers (the TUI).

* rotate-root killed right after its approvals were recorded (``approve:done``): resuming
  with the SAME approval files, with nothing, or with another approval of a participant
  already counted completes; every approval appears once in the transcript and
  ``custody transcript verify`` passes.
* :meth:`CeremonyRunner.pending_request` states the request right after ``resume``.
* :meth:`CeremonyRunner.check_share` checks a share against the set the waiting step
  expects (the active set in a drill, the NEW set in a reshare's verification round), with
  the very verdict the step then records.

Against real SoftHSMv2, from templates shared per module (see test_ceremony_kills.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.ceremonies.runner.test_ceremony_kills import RESHARE, _copy, _killed, _kind_rows
from tests.ceremony_fixtures import (
    CUST,
    Dep,
    generated_copy,
    lose_token,
    sign_approvals,
    start_rotate_root,
)
from tests.conftest import TEST_PIN, cli_env, passphrase_of

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("ceremony-approvals")]


def _events(bundle: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (Path(bundle) / "events.jsonl").read_text().splitlines()]


def _approval_files(d: Dep, cid: str, names=("alice", "bob", "carol"), tag: str = "") -> list[str]:
    """Approval files for the rotate-root request in d.root/req.json (signed in process)."""
    return [f.name for f in sign_approvals(d, cid, names, tag)]


def _args(d: Dep, names: list[str]) -> list[str]:
    return [a for n in names for a in ("--approval", str(d.root / n))]


def _nonce(d: Dep, name: str) -> str:
    return str(json.loads((d.root / name).read_text())["nonce"])


def _open(d: Dep) -> Any:
    from custody.config import Home
    from custody.deployment import open_deployment

    return open_deployment(Home(d.root), TEST_PIN)


def _signer(d: Dep) -> Any:
    from ceremonies.participants import load_signer

    return load_signer(d.people / "admin.key.pem", passphrase_of("admin"))


def _share(d: Dep, name: str, sub: str = "shares", env_of: str | None = None) -> Any:
    from ceremonies.runner import ShareInput

    return ShareInput(
        source=name,
        text=(d.root / sub / f"{name}.share.txt").read_text().strip(),
        envelope=(d.root / sub / f"{env_of or name}.envelope.json").read_bytes(),
    )


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def template(generated_master: Dep, tmp_path_factory) -> Dep:
    return generated_copy(generated_master, tmp_path_factory.mktemp("tpl") / "home")


@pytest.fixture(scope="module")
def rotate_waiting(template: Dep, tmp_path_factory) -> Dep:
    """A rotate-root waiting for its custodian approvals (request in req.json)."""
    return start_rotate_root(_copy(template, tmp_path_factory.mktemp("rrw") / "home"))


@pytest.fixture(scope="module")
def approved_killed(rotate_waiting: Dep, tmp_path_factory) -> tuple[Dep, list[str]]:
    """The rotate-root killed right after recording its approvals (``approve:done``);
    the approval files it was given stay in the home."""
    d = _copy(rotate_waiting, tmp_path_factory.mktemp("rrk") / "home")
    [(cid, _st, _b)] = _kind_rows(d, "rotate-root")
    files = _approval_files(d, cid)
    _killed(
        d.ceremony(
            "resume",
            cid,
            *d.coord(),
            *_args(d, files),
            env=cli_env(CUSTODY_TEST_KILL_AT="approve:done"),
        )
    )
    return d, files


def _killed_copy(approved_killed: tuple[Dep, list[str]], tmp_path: Path):
    tpl, files = approved_killed
    d = _copy(tpl, tmp_path / "home")
    [(cid, st, bundle)] = _kind_rows(d, "rotate-root")
    assert st == "open"
    gated = [e for e in _events(bundle) if e["kind"] == "rotate-root"]
    assert len(gated) == 1 and len(gated[0]["body"]["approvals"]) == 3  # recorded, then killed
    return d, files, cid, bundle


def _closed_once(d: Dep, r: Any, bundle: str) -> list[dict[str, Any]]:
    """The resumed ceremony closed, verifies, and recorded its action and each approval
    exactly once; returns the approvals recorded."""
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    d.verify(bundle)
    evs = _events(bundle)
    gated = [e for e in evs if e["kind"] == "rotate-root"]
    assert len(gated) == 1
    apps = gated[0]["body"]["approvals"]
    nonces = [a["nonce"] for e in evs for a in e["body"].get("approvals", [])]
    assert len(nonces) == len(set(nonces)) == 3
    assert sorted(a["approver"] for a in apps) == ["alice", "bob", "carol"]
    done = [e for e in evs if e["kind"] == "step.done" and e["step"] == "approve"]
    assert len(done) == 1 and done[0]["body"]["facts"]["approved_by"] == ["alice", "bob", "carol"]
    assert d.roots() == [(1, "decrypt-only"), (2, "active")]
    return apps


# ------------------------------------------------------------ 1. approvals across a crash
def test_resume_with_the_same_approval_files_records_each_once(approved_killed, tmp_path):
    d, files, cid, bundle = _killed_copy(approved_killed, tmp_path)
    r = d.ceremony("resume", cid, *d.coord(), *_args(d, files))
    apps = _closed_once(d, r, bundle)
    assert {a["nonce"] for a in apps} == {_nonce(d, f) for f in files}
    assert (
        sum("already recorded" in m and "not recorded again" in m for m in r.out["messages"]) == 3
    ), r.out["messages"]
    d.deks_ok()


def test_resume_with_nothing_completes_when_the_quorum_was_recorded(approved_killed, tmp_path):
    d, files, cid, bundle = _killed_copy(approved_killed, tmp_path)
    r = d.ceremony("resume", cid, *d.coord())
    apps = _closed_once(d, r, bundle)
    assert {a["nonce"] for a in apps} == {_nonce(d, f) for f in files}


def test_another_approval_of_a_counted_participant_does_not_count_twice(approved_killed, tmp_path):
    d, files, cid, bundle = _killed_copy(approved_killed, tmp_path)
    again = _approval_files(d, cid, ("alice", "dave"), tag="-2")  # new nonces
    r = d.ceremony("resume", cid, *d.coord(), *_args(d, [*again, files[1]]))
    apps = _closed_once(d, r, bundle)
    assert _nonce(d, again[0]) not in {a["nonce"] for a in apps}  # alice's first one stays
    msgs = "\n".join(r.out["messages"])
    assert "alice already approved" in msgs and "not counted" in msgs
    assert "approval of dave not needed" in msgs and "approval of bob is already recorded" in msgs


def test_quorum_counts_distinct_participants_and_keeps_their_first_valid_approval(template):
    from ceremonies.engine.quorum import count_approvals
    from ceremonies.participants import load_signer
    from ceremonies.transcript.records import Approval

    now = 1_000_000
    signers = {
        n: load_signer(template.people / f"{n}.key.pem", passphrase_of(n)) for n in ("alice", "bob")
    }
    members = {n: ("custodian", s.alg, s.public, None) for n, s in signers.items()}

    def appr(n: str, at: int) -> Approval:
        return Approval.create(
            signers[n],
            ceremony_id="c" * 32,
            action="rotate-root",
            action_id="rotate-root/v2",
            digest="ab" * 32,
            now=at,
            window=600,
        )

    stale, good, second = appr("alice", now - 700), appr("alice", now), appr("alice", now - 1)
    kw: dict[str, Any] = dict(
        members=members,
        role="custodian",
        needed=2,
        ceremony_id="c" * 32,
        action="rotate-root",
        action_id="rotate-root/v2",
        digest="ab" * 32,
        now=now,
        window=600,
    )
    res = count_approvals([stale, good, second], **kw)
    assert res.counted == ("alice",) and not res.met  # one participant, never two
    assert res.accepted == (good,)  # the expired one is not the one recorded
    b = appr("bob", now)
    res = count_approvals([good, b], used_nonces={b.nonce}, **kw)
    assert res.counted == ("alice",) and ("bob", "was already used") in res.rejected


# ---------------------------------------------------------------- 2a. pending_request()
def test_pending_request_right_after_resume(rotate_waiting: Dep, tmp_path: Path):
    from ceremonies.runner import ApprovalRequest, CeremonyRunner

    d = _copy(rotate_waiting, tmp_path / "home")
    [(cid, _st, bundle)] = _kind_rows(d, "rotate-root")
    want = json.loads((d.root / "req.json").read_text())
    n = len(_events(bundle))
    with _open(d) as dp:
        runner = CeremonyRunner.resume(dp, cid, _signer(d))
        req = runner.pending_request()  # before the approve step runs again
        assert isinstance(req, ApprovalRequest)
        assert (req.ceremony_id, req.step, req.action) == (cid, "approve", "rotate-root")
        assert (req.action_id, req.action_digest) == (want["action_id"], want["action_digest"])
        assert (req.role, req.needed, req.window) == ("custodian", 3, want["window"])
        assert req.eligible == CUST and req.recorded == () and not req.met
        out = runner.run()
        assert out.status == "awaiting-input" and out.request == req.to_json()
    assert len(_events(bundle)) == n  # asking recorded nothing
    # the CLI writes the same request when resumed while waiting
    r = d.ceremony("resume", cid, *d.coord(), "--request-out", str(tmp_path / "rq.json"))
    assert r.returncode == 10 and r.out["request"]["action_digest"] == want["action_digest"]
    assert json.loads((tmp_path / "rq.json").read_text()) == req.to_json()


def test_pending_request_names_approvals_recorded_before_a_crash(approved_killed, tmp_path):
    from ceremonies.runner import CeremonyRunner

    d, _files, cid, _bundle = _killed_copy(approved_killed, tmp_path)
    with _open(d) as dp:
        req = CeremonyRunner.resume(dp, cid, _signer(d)).pending_request()
        assert req is not None and req.met and req.recorded == ("alice", "bob", "carol")


# -------------------------------------------------------------------- 2b. check_share()
@pytest.fixture(scope="module")
def recover_waiting(template: Dep, tmp_path_factory) -> tuple[Dep, str]:
    """A recover into an emptied token holding alice's share (sealed at rest), waiting."""
    d = _copy(template, tmp_path_factory.mktemp("rcw") / "home")
    lose_token(d)
    r = d.ceremony("recover", *d.coord(), *d.shares("alice"))
    assert r.returncode == 10 and r.out["step"] == "collect-shares", r.stderr
    return d, r.out["ceremony_id"]


def test_check_share_against_the_active_set_is_the_steps_verdict(recover_waiting, tmp_path):
    from ceremonies.runner import CeremonyRunner, ShareCheck

    tpl, cid = recover_waiting
    d = _copy(tpl, tmp_path / "home")
    bundle = _kind_rows(d, "recover")[0][2]
    n = len(_events(bundle))
    swapped = _share(d, "bob", env_of="carol")  # bob's words in carol's envelope
    with _open(d) as dp:
        runner = CeremonyRunner.resume(dp, cid, _signer(d))
        epoch = runner.check_share(_share(d, "bob")).epoch
        assert runner.check_share(_share(d, "bob")) == ShareCheck(
            custodian="bob", ok=True, group=1, member=2, epoch=epoch
        )
        dup = runner.check_share(_share(d, "alice"))  # alice's share is already held
        assert (dup.custodian, dup.ok, dup.reason) == ("alice", False, "duplicate-custodian")
        bad = runner.check_share(swapped)
        assert bad.custodian == "carol" and not bad.ok and bad.reason and bad.detail
        assert "words" not in repr(bad) and _share(d, "bob").text not in repr(bad)
        assert len(_events(bundle)) == n  # checking records nothing
    # the step's verdict on the same shares
    x = d.root / "x"
    x.mkdir()
    (x / "bob.share.txt").write_text(swapped.text + "\n")
    (x / "bob.envelope.json").write_bytes(swapped.envelope)
    r = d.ceremony(
        "resume", cid, *d.coord(), "--share", str(x / "bob.share.txt"), *d.shares("bob", "carol")
    )
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    rej = [e["body"] for e in _events(bundle) if e["kind"] == "share.rejected"]
    assert [(x["custodian"], x["reason"]) for x in rej] == [("carol", bad.reason)]
    assert r.out["facts"]["collect-shares.accepted"] == ["alice", "bob", "carol"]
    d.verify(bundle)
    d.deks_ok()


def test_check_share_in_a_verification_round_uses_the_new_set(template, tmp_path_factory):
    from ceremonies.runner import CeremonyRunner
    from custody.errors import CeremonyError

    d = _copy(template, tmp_path_factory.mktemp("rsv") / "home")
    r = d.ceremony(
        "reshare",
        *d.coord(),
        *RESHARE,
        "--out",
        str(d.root / "new"),
        *d.shares("carol", "dave", "erin"),
    )
    assert r.returncode == 10 and r.out["step"] == "verify-shares", r.stderr
    cid = r.out["ceremony_id"]
    with _open(d) as dp:
        runner = CeremonyRunner.resume(dp, cid, _signer(d))
        assert runner.pending_request() is None  # not a gated step
        new = runner.check_share(_share(d, "alice", "new"))
        assert new.ok and new.custodian == "alice" and new.epoch == runner.state.facts["epoch"]
        old = runner.check_share(_share(d, "alice"))  # a share of the active (old) set
        assert (
            not old.ok
            and old.custodian == "alice"
            and old.reason in ("wrong-ceremony", "wrong-epoch")
        ), old
    # not at a share step: nothing to check against
    w = d.ceremony("abort", cid, *d.coord())
    assert w.returncode == 0, w.stderr
    r = d.ceremony("rotate-root", *d.coord())
    assert r.returncode == 10
    with _open(d) as dp:
        runner = CeremonyRunner.resume(dp, r.out["ceremony_id"], _signer(d))
        with pytest.raises(CeremonyError) as ei:
            runner.check_share(_share(d, "alice"))
        assert "not collecting shares" in ei.value.title and ei.value.hint
