"""The recorder: fail-closed writes, mirror, resume after a crash, refusal of secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ceremonies.transcript import (
    Approval,
    Recorder,
    TrustKey,
    load_bundle,
    verify_bundle,
)
from custody.errors import PolicyError, TranscriptError
from tests.fixtures import make_transcripts as mt

DAVE, ERIN = mt.key("dave"), mt.key("erin")
# the auditor's pins: every participant of the fixture roster, in their role
TRUST = [
    TrustKey(name=n, alg="ed25519", public=mt.key(n).public, role=r) for n, r in mt.NAMES.items()
]


def new_recorder(path: Path, **kw) -> Recorder:
    import random

    sp = mt.policy("rotate-root", mt.ROTATE_SCRIPT, random.Random(7))
    return Recorder.create(path, sp, signer=DAVE, clock=mt.FakeClock(), **kw)


def finish(rec: Recorder) -> None:
    import random

    rng = random.Random(1)
    if rec.rules.state.cursor < 0:
        rec.record("hsm-selftest", "hsm.selftest", DAVE, {"ok": True})
    p = {"v": 2}
    t = rec.events[-1].time + 10
    apps = [
        Approval.create(
            mt.key(n),
            ceremony_id=rec.policy.ceremony_id,
            action="rotate-root",
            action_id="a1",
            digest=rec.action_digest("rotate-root", "a1", p),
            now=t - 5,
            rng=rng.randbytes,
        )
        for n in ("alice", "bob", "carol")
    ]
    rec.record_action("rotate-root", "rotate-root", DAVE, action_id="a1", params=p, approvals=apps)
    rec.exception("verify", "no KEK rotation in this run", DAVE, cosigners=[ERIN])
    rec.record("verify", "note", ERIN, {"text": "ok"})
    rec.close(DAVE, [DAVE, ERIN])


def test_record_then_act_and_verify(tmp_path: Path) -> None:
    rec = new_recorder(tmp_path / "b", mirror=tmp_path / "m")
    acted = []
    ev = rec.record(
        "hsm-selftest",
        "hsm.selftest",
        DAVE,
        {"ok": True},
        artifacts={"selftest.txt": b"all good\n"},
    )
    acted.append(ev.seq)  # the action runs only after record() returned
    assert (tmp_path / "b" / "events.jsonl").read_bytes().count(b"\n") == 2
    finish(rec)
    assert verify_bundle(tmp_path / "b", TRUST).ok
    a, b = load_bundle(tmp_path / "b"), load_bundle(tmp_path / "m")
    assert a == b  # the mirror holds the same bytes


def test_write_failure_refuses_action(tmp_path: Path) -> None:
    rec = new_recorder(tmp_path / "b", mirror=tmp_path / "m")
    (tmp_path / "m" / "events.jsonl").unlink()
    (tmp_path / "m" / "events.jsonl").symlink_to("/dev/full")  # every write: ENOSPC
    acted = False
    with pytest.raises(TranscriptError) as ei:
        rec.record("hsm-selftest", "hsm.selftest", DAVE, {"ok": True})
        acted = True
    assert not acted
    assert "NOT performed" in ei.value.title
    with pytest.raises(TranscriptError):  # and it stays refused until resumed
        rec.record("hsm-selftest", "hsm.selftest", DAVE, {"ok": True})


def test_unwritable_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    import random

    sp = mt.policy("rotate-root", mt.ROTATE_SCRIPT, random.Random(7))
    with pytest.raises(TranscriptError):
        Recorder.create(tmp_path / "file" / "b", sp, signer=DAVE)


def test_resume_after_crash_with_torn_tail(tmp_path: Path) -> None:
    rec = new_recorder(tmp_path / "b", mirror=tmp_path / "m")
    for _ in range(5):
        rec.record("hsm-selftest", "hsm.selftest", DAVE, {"ok": True})
    size = rec.size
    del rec  # crash: no close
    with open(tmp_path / "b" / "events.jsonl", "ab") as fh:
        fh.write(b'{"actor":"dave","body":{"ok":tr')  # a write torn by the crash
    rec2 = Recorder.resume(tmp_path / "b", signer=DAVE, mirror=tmp_path / "m", clock=mt.FakeClock())
    assert rec2.dropped_torn_tail and rec2.size == size
    rec2._clock = lambda: rec2.events[-1].time + 10
    finish(rec2)
    assert verify_bundle(tmp_path / "b", TRUST).ok
    assert load_bundle(tmp_path / "b") == load_bundle(tmp_path / "m")
    with pytest.raises(TranscriptError):
        Recorder.resume(tmp_path / "b", signer=DAVE)


def test_resume_refuses_a_tampered_bundle(tmp_path: Path) -> None:
    rec = new_recorder(tmp_path / "b")
    rec.record("hsm-selftest", "hsm.selftest", DAVE, {"ok": True})
    p = tmp_path / "b" / "events.jsonl"
    p.write_bytes(p.read_bytes().replace(b'"ok":true', b'"ok":fals', 1).replace(b"fals", b"false"))
    with pytest.raises(TranscriptError):
        Recorder.resume(tmp_path / "b", signer=DAVE)


@pytest.mark.parametrize(
    "body",
    [
        {"words": "x"},
        {"note": " ".join(["academic"] * 20)},
        {"commitment": "ab" * 32, "blob": "cd" * 32},
    ],
)
def test_secret_shaped_values_are_refused(tmp_path: Path, body: dict) -> None:
    rec = new_recorder(tmp_path / "b")
    rec.record("hsm-selftest", "hsm.selftest", DAVE, {"ok": True})
    before = (tmp_path / "b" / "events.jsonl").read_bytes()
    with pytest.raises(PolicyError) as ei:
        rec.record("hsm-selftest", "share.commitment", mt.key("alice"), body)
    assert "body." in ei.value.title
    assert (tmp_path / "b" / "events.jsonl").read_bytes() == before
    assert "cd" * 32 not in ei.value.title and "academic academic" not in ei.value.title
    rec.record("hsm-selftest", "share.commitment", mt.key("alice"), {"commitment": "ab" * 32})


def test_close_needs_named_roles(tmp_path: Path) -> None:
    rec = new_recorder(tmp_path / "b")
    with pytest.raises(PolicyError):
        rec.close(DAVE, [DAVE])
    assert not rec.closed


def test_checkpoint_every_k_events(tmp_path: Path) -> None:
    rec = new_recorder(tmp_path / "b")
    for _ in range(8):
        rec.record("hsm-selftest", "hsm.selftest", DAVE, {"ok": True})
    assert [c.tree_size for c in rec.checkpoints] == [4, 8]
    rec.checkpoint()
    assert rec.checkpoints[-1].tree_size == 9


def test_hsm_signer_on_softhsm(softhsm_token, tmp_path: Path) -> None:
    pytest.importorskip("pkcs11")
    from custody.audit.signers import HsmSigner

    adapter = pytest.importorskip("custody.hsm.pkcs11.adapter")
    if not hasattr(adapter, "open_hsm"):
        pytest.skip("adapter without open_hsm")
    hsm = _open_test_hsm(adapter, softhsm_token)
    try:
        s = HsmSigner("hsm", hsm, "transcript-test")
        from custody.audit.signers import verify_signature

        assert s.alg == "ed25519"
        assert verify_signature(s.alg, s.public, s.sign(b"data"), b"data")
    finally:
        hsm.close()


def _open_test_hsm(adapter, softhsm_token):
    import inspect

    from custody.config import Home, HsmConfig

    conf, label, pin = softhsm_token
    cfg = HsmConfig(token_label=label)
    params = inspect.signature(adapter.open_hsm).parameters
    os.environ["SOFTHSM2_CONF"] = str(conf)
    if "home" in params:
        return adapter.open_hsm(cfg, Home(Path(conf).parent), pin)
    return adapter.open_hsm(cfg, pin)


def test_resume_between_close_and_final_checkpoint(tmp_path: Path) -> None:
    rec = new_recorder(tmp_path / "b")
    finish(rec)
    cps = tmp_path / "b" / "checkpoints.jsonl"
    lines = cps.read_bytes().splitlines(keepends=True)
    cps.write_bytes(b"".join(lines[:-1]))  # crash after the close event, before its checkpoint
    assert not verify_bundle(tmp_path / "b", TRUST).ok
    rec2 = Recorder.resume(tmp_path / "b", signer=DAVE)
    assert rec2.needs_final_checkpoint
    with pytest.raises(TranscriptError):
        rec2.record("verify", "note", ERIN, {"text": "late"})
    rec2.finish_close([DAVE, ERIN])
    assert verify_bundle(tmp_path / "b", TRUST).ok


def test_policy_rejects_caller_bugs() -> None:
    from ceremonies.transcript import Policy, RosterEntry, Threshold

    e = RosterEntry(
        name="alice", role="custodian", public=mt.key("alice").public, valid_from=0, valid_until=10
    )
    base: dict = {"purpose": "p", "kind": "k", "created_at": 0, "permissions": {}}
    with pytest.raises(ValueError):  # threshold > enrolled custodians
        Policy.new(roster=(e,), thresholds={"x": Threshold(role="custodian", count=2)}, **base)
    with pytest.raises(ValueError):
        Policy.new(roster=(e, e), **base)
    with pytest.raises(ValueError):
        Policy(ceremony_id="abcd", roster=(e,), **base)  # < 128 bits
    with pytest.raises(ValueError):
        Threshold(role="custodian", count=0)
    with pytest.raises(ValueError):
        RosterEntry(name="bad name", role="x", public=b"\0" * 32, valid_from=0, valid_until=1)
    assert len(Policy.new(roster=(e,), **base).ceremony_id) == 32
