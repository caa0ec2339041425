"""The pure ceremony engine, tested directly (no token, no store, no subprocess).

Table-driven: quorum counting (:mod:`ceremonies.engine.quorum`), the state machine's
transitions and plans (:mod:`ceremonies.engine.machine`), and the step scripts
(:mod:`ceremonies.engine.scripts`). These pin today's behaviour; a rule change shows up here
as a changed row.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Any

import pytest

from ceremonies.engine import (
    COMMIT_STEP,
    INPUT_STEPS,
    KINDS,
    SCRIPTS,
    SECRET_STEPS,
    Abort,
    AwaitInput,
    Begin,
    CeremonyState,
    Close,
    CloseTranscript,
    Done,
    Event,
    Rollback,
    RunStep,
    Waiting,
    count_approvals,
    fold,
    open_state,
    plan,
    require_quorum,
    transition,
)
from ceremonies.engine.machine import ABORTED, AWAITING, CLOSED, COMMITTED, RUNNING
from ceremonies.transcript.records import Approval
from custody.audit.signers import Ed25519Signer
from custody.errors import CeremonyError, PolicyError

# --------------------------------------------------------------------------- quorum
NOW = 1_000_000
CID = "c" * 32
ACTION, ACTION_ID, DIGEST = "rotate-root", "rotate-root/v2", "ab" * 32
WINDOW = 600

SIGNERS = {
    n: Ed25519Signer.from_seed(n, hashlib.sha256(n.encode()).digest())
    for n in ("alice", "bob", "carol", "dave", "erin", "mallory")
}
MEMBERS: dict[str, tuple[str, str, bytes, str | None]] = {
    "alice": ("custodian", "ed25519", SIGNERS["alice"].public, None),
    "bob": ("custodian", "ed25519", SIGNERS["bob"].public, None),
    "carol": ("custodian", "ed25519", SIGNERS["carol"].public, None),
    "dave": ("admin", "ed25519", SIGNERS["dave"].public, None),
    "erin": ("custodian", "ed25519", SIGNERS["erin"].public, "its key was revoked"),
    # mallory is not enrolled
}


def appr(name: str, *, seq: int = 0, signer: str | None = None, **over: Any) -> Approval:
    """An approval by *name* (signed by *signer*'s key, default *name*'s), with *over*
    replacing fields before signing; ``seq`` varies the nonce deterministically."""
    fields: dict[str, Any] = {
        "ceremony": CID,
        "action": ACTION,
        "action_id": ACTION_ID,
        "action_digest": DIGEST,
        "approver": name,
        "issued_at": NOW,
        "expires_at": NOW + WINDOW,
        "nonce": hashlib.sha256(f"{name}/{seq}".encode()).hexdigest()[:32],
    }
    fields.update(over)
    a = Approval(**fields)
    return dataclasses.replace(a, sig=SIGNERS[signer or name].sign(a.signing_input()))


def tampered(a: Approval, **over: Any) -> Approval:
    """*a* with fields changed after it was signed."""
    return dataclasses.replace(a, **over)


def count(approvals: Iterable[Approval], **over: Any):
    kw: dict[str, Any] = {
        "members": MEMBERS,
        "role": "custodian",
        "needed": 2,
        "ceremony_id": CID,
        "action": ACTION,
        "action_id": ACTION_ID,
        "digest": DIGEST,
        "now": NOW,
        "window": WINDOW,
    }
    kw.update(over)
    return count_approvals(approvals, **kw)


A, B, C = appr("alice"), appr("bob"), appr("carol")

# (id, approvals, count_approvals overrides, counted, rejected, met)
QUORUM_TABLE: list[tuple[str, list[Approval], dict[str, Any], tuple, tuple, bool]] = [
    ("two distinct custodians", [A, B], {}, ("alice", "bob"), (), True),
    ("three of a two-quorum", [A, B, C], {}, ("alice", "bob", "carol"), (), True),
    ("one is not enough", [A], {}, ("alice",), (), False),
    ("none", [], {}, (), (), False),
    (
        "a participant counts once, whatever they sign",
        [A, appr("alice", seq=1), appr("alice", seq=2)],
        {},
        ("alice",),
        (),
        False,
    ),
    (
        "the same approval twice: the second is a replay",
        [A, A],
        {},
        ("alice",),
        (("alice", "was already used"),),
        False,
    ),
    (
        "a nonce used before (by an earlier action)",
        [A, B],
        {"used_nonces": {B.nonce}},
        ("alice",),
        (("bob", "was already used"),),
        False,
    ),
    (
        "not enrolled",
        [A, appr("mallory")],
        {},
        ("alice",),
        (("mallory", "is not enrolled"),),
        False,
    ),
    (
        "signed with another participant's key",
        [A, appr("bob", signer="carol")],
        {},
        ("alice",),
        (("bob", "has a bad signature"),),
        False,
    ),
    (
        "changed after signing",
        [A, tampered(B, action_digest="cd" * 32)],
        {},
        ("alice",),
        (("bob", "has a bad signature"),),
        False,
    ),
    (
        "an unsigned approval",
        [A, tampered(B, sig=b"")],
        {},
        ("alice",),
        (("bob", "has a bad signature"),),
        False,
    ),
    (
        "a key that is not usable now",
        [A, appr("erin")],
        {},
        ("alice",),
        (("erin", "its key was revoked"),),
        False,
    ),
    (
        "the wrong role",
        [A, appr("dave")],
        {},
        ("alice",),
        (("dave", "is a admin, not a custodian"),),
        False,
    ),
    (
        "the right role when admins are asked",
        [appr("dave")],
        {"role": "admin", "needed": 1},
        ("dave",),
        (),
        True,
    ),
    (
        "given for another ceremony",
        [A, appr("bob", ceremony="d" * 32)],
        {},
        ("alice",),
        (("bob", "was given for another ceremony"),),
        False,
    ),
    (
        "bound to another action",
        [A, appr("bob", action="emergency-rotate")],
        {},
        ("alice",),
        (("bob", "is bound to a different action"),),
        False,
    ),
    (
        "bound to another action id",
        [A, appr("bob", action_id="rotate-root/v3")],
        {},
        ("alice",),
        (("bob", "is bound to a different action"),),
        False,
    ),
    (
        "bound to another digest",
        [A, appr("bob", action_digest="cd" * 32)],
        {},
        ("alice",),
        (("bob", "is bound to a different action"),),
        False,
    ),
    (
        "expired",
        [A, appr("bob", issued_at=NOW - 700, expires_at=NOW - 100)],
        {},
        ("alice",),
        (("bob", f"expired at {NOW - 100} (now {NOW})"),),
        False,
    ),
    (
        "valid up to and including its expiry second",
        [A, appr("bob", issued_at=NOW - WINDOW, expires_at=NOW)],
        {},
        ("alice", "bob"),
        (),
        True,
    ),
    (
        "dated in the future",
        [A, appr("bob", issued_at=NOW + 1, expires_at=NOW + 1 + WINDOW)],
        {},
        ("alice",),
        (("bob", "is dated in the future"),),
        False,
    ),
    (
        "outlives the approval window",
        [A, appr("bob", expires_at=NOW + WINDOW + 1)],
        {},
        ("alice",),
        (("bob", f"outlives the {WINDOW}s approval window"),),
        False,
    ),
    (
        "a rejected approval does not use up its participant",
        [tampered(appr("bob", seq=1), sig=b""), A, B],
        {},
        ("alice", "bob"),
        (("bob", "has a bad signature"),),
        True,
    ),
    (
        # the checks run in a fixed order: the first failing one names the cause
        "not enrolled is named before a bad signature",
        [appr("mallory", signer="alice")],
        {"needed": 1},
        (),
        (("mallory", "is not enrolled"),),
        False,
    ),
    (
        "a bad signature is named before the wrong role",
        [appr("dave", signer="alice")],
        {"needed": 1},
        (),
        (("dave", "has a bad signature"),),
        False,
    ),
]


@pytest.mark.parametrize(
    ("approvals", "over", "counted", "rejected", "met"),
    [row[1:] for row in QUORUM_TABLE],
    ids=[row[0] for row in QUORUM_TABLE],
)
def test_count_approvals(approvals, over, counted, rejected, met):
    res = count(approvals, **over)
    assert res.counted == counted
    assert res.rejected == rejected
    assert res.met is met
    # accepted: the first valid approval of each counted participant, in counted order
    assert tuple(a.approver for a in res.accepted) == counted
    for a in res.accepted:
        assert a == next(x for x in approvals if x.approver == a.approver and x.sig == a.sig)


def test_accepted_keeps_the_first_valid_approval_of_a_participant():
    first, later = appr("alice", seq=1), appr("alice", seq=2)
    res = count([tampered(appr("alice", seq=0), sig=b""), first, later, B])
    assert res.accepted == (first, B)


def test_describe_names_who_counted_and_why_others_did_not():
    res = count([A, appr("mallory"), appr("dave")])
    assert res.describe() == (
        "1/2 custodians (alice); not counted: mallory: is not enrolled; "
        "dave: is a admin, not a custodian"
    )
    assert count([]).describe() == "0/2 custodians (none)"


def test_require_quorum():
    require_quorum(count([A, B]), action="rotate-root")  # met: no error
    with pytest.raises(PolicyError) as ei:
        require_quorum(count([A, appr("mallory")]), action="rotate-root")
    assert ei.value.title == (
        "Quorum not met for rotate-root: 1/2 custodians (alice); "
        "not counted: mallory: is not enrolled"
    )
    assert "2 distinct enrolled custodians" in ei.value.hint


def test_count_approvals_takes_any_iterable_once():
    res = count(iter([A, B]), used_nonces=iter(()))
    assert res.counted == ("alice", "bob") and res.met


# ---------------------------------------------------------------------- state machine
T0 = 5_000
EXPIRY = 3_600


def fresh(kind: str = "recover") -> CeremonyState:
    return open_state(kind, "e" * 32, now=T0, expiry_seconds=EXPIRY)


def after(kind: str, events: list[Event]) -> CeremonyState:
    return fold(fresh(kind), events, T0)


def walk(kind: str, upto: str | None = None) -> list[Event]:
    """The events of a clean run of *kind* through *upto* (Done), inputs waited for once."""
    evs: list[Event] = []
    for step in SCRIPTS[kind]:
        if step in INPUT_STEPS:
            evs.append(Waiting(step))
        evs += [Begin(step), Done(step)]
        if step == upto:
            break
    return evs


def test_open_state():
    s = fresh()
    assert (s.kind, s.opened_at, s.expires_at) == ("recover", T0, T0 + EXPIRY)
    assert (s.done, s.in_flight, s.status, dict(s.facts), s.outcome) == (
        (),
        None,
        RUNNING,
        {},
        None,
    )
    assert s.next_step == "hsm-check" and not s.committed and not s.finished
    assert plan(s, T0) == (RunStep("hsm-check"),)


@pytest.mark.parametrize(
    ("kind", "expiry"), [("no-such-kind", 60), ("recover", 0), ("recover", -1)]
)
def test_open_state_refuses_a_callers_bug(kind, expiry):
    with pytest.raises(ValueError):
        open_state(kind, "e" * 32, now=T0, expiry_seconds=expiry)


RECOVER_SO_FAR: list[Event] = [Begin("hsm-check"), Done("hsm-check", {"token": "ok"})]

# (id, kind, events so far, event, expected (status, done, in_flight) , expected effects)
TRANSITIONS: list[tuple[str, str, list[Event], Event, tuple, tuple]] = [
    (
        "begin the next step",
        "recover",
        [],
        Begin("hsm-check"),
        (RUNNING, (), "hsm-check"),
        (RunStep("hsm-check"),),
    ),
    (
        "a step done moves on",
        "recover",
        [Begin("hsm-check")],
        Done("hsm-check"),
        (RUNNING, ("hsm-check",), None),
        (RunStep("collect-shares"),),
    ),
    (
        "an input step waits for people",
        "recover",
        RECOVER_SO_FAR,
        Waiting("collect-shares"),
        (AWAITING, ("hsm-check",), None),
        (AwaitInput("collect-shares", "shares"),),
    ),
    (
        "approvals are asked for as approvals",
        "rotate-root",
        [Begin("hsm-check"), Done("hsm-check")],
        Waiting("approve"),
        (AWAITING, ("hsm-check",), None),
        (AwaitInput("approve", "approvals"),),
    ),
    (
        "the input arrives: the step begins",
        "recover",
        [*RECOVER_SO_FAR, Waiting("collect-shares")],
        Begin("collect-shares"),
        (RUNNING, ("hsm-check",), "collect-shares"),
        (RunStep("collect-shares"),),
    ),
    (
        "waiting again while awaiting",
        "recover",
        [*RECOVER_SO_FAR, Waiting("collect-shares")],
        Waiting("collect-shares"),
        (AWAITING, ("hsm-check",), None),
        (AwaitInput("collect-shares", "shares"),),
    ),
    (
        "a step begun but interrupted is begun again",
        "recover",
        [Begin("hsm-check")],
        Begin("hsm-check"),
        (RUNNING, (), "hsm-check"),
        (RunStep("hsm-check"),),
    ),
    (
        "the commit step done: committed",
        "recover",
        [*walk("recover", "verify-keks"), Begin("finalise")],
        Done("finalise"),
        (COMMITTED, SCRIPTS["recover"], None),
        (CloseTranscript(),),
    ),
    (
        "after the commit point the rest rolls forward",
        "rotate-root",
        [*walk("rotate-root", "lock-root"), Begin("finalise")],
        Done("finalise"),
        (COMMITTED, SCRIPTS["rotate-root"][:-1], None),
        (RunStep("rewrap"),),
    ),
    (
        "an abort before the commit point rolls back",
        "recover",
        RECOVER_SO_FAR,
        Abort("the coordinator aborted"),
        (RUNNING, ("hsm-check",), None),
        (Rollback("the coordinator aborted"),),
    ),
    (
        "a close as completed",
        "recover",
        walk("recover"),
        Close("completed"),
        (CLOSED, SCRIPTS["recover"], None),
        (),
    ),
    (
        "a close as aborted (after a rollback)",
        "recover",
        RECOVER_SO_FAR,
        Close("aborted"),
        (ABORTED, ("hsm-check",), None),
        (),
    ),
]


@pytest.mark.parametrize(
    ("kind", "so_far", "event", "want", "effects"),
    [row[1:] for row in TRANSITIONS],
    ids=[row[0] for row in TRANSITIONS],
)
def test_transition(kind, so_far, event, want, effects):
    state, got = transition(after(kind, so_far), event, T0)
    assert (state.status, state.done, state.in_flight) == want
    assert got == effects


# (id, kind, events so far, event, words in the error title)
REFUSED: list[tuple[str, str, list[Event], Event, str]] = [
    ("a step begun out of order", "recover", [], Begin("rebuild-rk"), "out of order"),
    ("a step not in the script", "recover", [], Begin("approve"), "out of order"),
    ("a step done that was not next", "recover", [], Done("collect-shares"), "out of order"),
    ("a step done twice", "recover", RECOVER_SO_FAR, Done("hsm-check"), "out of order"),
    ("waiting on a step that takes no input", "recover", [], Waiting("hsm-check"), "cannot wait"),
    ("waiting on a later input step", "recover", [], Waiting("collect-shares"), "cannot wait"),
    (
        "an abort after the commit point",
        "rotate-root",
        walk("rotate-root", "finalise"),
        Abort("too late"),
        "cannot be aborted",
    ),
    (
        "anything after a close",
        "recover",
        [*walk("recover"), Close("completed")],
        Begin("x"),
        "closed",
    ),
    ("a second close", "recover", [Close("aborted")], Close("aborted"), "already aborted"),
]


@pytest.mark.parametrize(
    ("kind", "so_far", "event", "words"),
    [row[1:] for row in REFUSED],
    ids=[row[0] for row in REFUSED],
)
def test_transition_refuses(kind, so_far, event, words):
    state = after(kind, so_far)
    with pytest.raises(CeremonyError) as ei:
        transition(state, event, T0)
    assert words in ei.value.title


def test_facts_accumulate_and_a_later_step_overrides():
    s = after("recover", [Begin("hsm-check"), Done("hsm-check", {"a": 1, "b": 2})])
    s, _ = transition(s, Waiting("collect-shares"), T0)
    s, _ = transition(s, Begin("collect-shares"), T0)
    s, _ = transition(s, Done("collect-shares", {"b": 3, "c": 4}), T0)
    assert dict(s.facts) == {"a": 1, "b": 3, "c": 4}


def test_transition_does_not_change_the_state_it_was_given():
    s = after("recover", RECOVER_SO_FAR)
    transition(s, Waiting("collect-shares"), T0)
    assert s == after("recover", RECOVER_SO_FAR) and s.status == RUNNING


# (id, events so far, when, expected plan)
PLANS: list[tuple[str, str, list[Event], int, tuple]] = [
    ("a fresh ceremony runs its first step", "recover", [], T0, (RunStep("hsm-check"),)),
    (
        "expired before the commit point: rollback, marked expired",
        "recover",
        RECOVER_SO_FAR,
        T0 + EXPIRY,
        (Rollback("the ceremony expired before it was finalised", expired=True),),
    ),
    (
        "one second before expiry it goes on",
        "recover",
        [],
        T0 + EXPIRY - 1,
        (RunStep("hsm-check"),),
    ),
    (
        "expired while awaiting input: rollback too",
        "recover",
        [*RECOVER_SO_FAR, Waiting("collect-shares")],
        T0 + EXPIRY + 10,
        (Rollback("the ceremony expired before it was finalised", expired=True),),
    ),
    (
        "past the commit point expiry no longer matters",
        "rotate-root",
        walk("rotate-root", "finalise"),
        T0 + 10 * EXPIRY,
        (RunStep("rewrap"),),
    ),
    ("every step done: close the transcript", "drill", walk("drill"), T0, (CloseTranscript(),)),
    ("closed: nothing to do", "drill", [*walk("drill"), Close("completed")], T0, ()),
    ("aborted: nothing to do", "drill", [Close("aborted")], T0 + 10 * EXPIRY, ()),
    (
        "an interrupted step is redone first",
        "generate",
        [Begin("hsm-check"), Done("hsm-check"), Begin("generate-root")],
        T0,
        (RunStep("generate-root"),),
    ),
]


@pytest.mark.parametrize(
    ("kind", "so_far", "when", "effects"),
    [row[1:] for row in PLANS],
    ids=[row[0] for row in PLANS],
)
def test_plan(kind, so_far, when, effects):
    assert plan(after(kind, so_far), when) == effects


@pytest.mark.parametrize("kind", KINDS)
def test_every_script_runs_through_to_the_close(kind):
    state = fresh(kind)
    effects = plan(state, T0)
    seen: list[str] = []
    while effects != (CloseTranscript(),):
        [eff] = effects
        if isinstance(eff, RunStep):
            if eff.step in INPUT_STEPS and state.status != AWAITING:
                state, effects = transition(state, Waiting(eff.step), T0)
                assert effects == (AwaitInput(eff.step, INPUT_STEPS[eff.step]),)
                continue
            state, _ = transition(state, Begin(eff.step), T0)
            state, effects = transition(state, Done(eff.step, {eff.step: True}), T0)
            seen.append(eff.step)
            assert state.committed == (COMMIT_STEP[kind] in seen)
            assert state.status == (COMMITTED if state.committed else RUNNING)
        else:
            assert isinstance(eff, AwaitInput)
            state, _ = transition(state, Begin(eff.step), T0)
            state, effects = transition(state, Done(eff.step), T0)
            seen.append(eff.step)
    assert tuple(seen) == SCRIPTS[kind] == state.done
    state, effects = transition(state, Close("completed"), T0)
    assert state.finished and state.outcome == "completed" and effects == ()


def test_fold_replays_what_transition_does_and_skips_recorded_aborts():
    evs = walk("recover", "rebuild-rk")
    step_by_step = fresh()
    for e in evs:
        step_by_step, _ = transition(step_by_step, e, T0)
    assert fold(fresh(), evs, T0) == step_by_step
    # a recorded abort is followed by the rollback's events and a close: fold skips it
    folded = fold(fresh(), [*evs, Abort("lost secret"), Close("aborted")], T0)
    assert folded.status == ABORTED and folded.outcome == "aborted"


def test_fold_refuses_events_that_do_not_fit_the_script():
    with pytest.raises(CeremonyError):
        fold(fresh(), [Begin("hsm-check"), Done("rebuild-rk")], T0)


# ---------------------------------------------------------------------------- scripts
PINNED_SCRIPTS = {
    "enrol": ("review", "enrol"),
    "generate": (
        "hsm-check",
        "generate-root",
        "generate-rk",
        "wrap-blob",
        "lock-root",
        "split",
        "issue-shares",
        "verify-shares",
        "finalise",
    ),
    "recover": (
        "hsm-check",
        "collect-shares",
        "rebuild-rk",
        "import-root",
        "verify-keks",
        "finalise",
    ),
    "reshare": (
        "hsm-check",
        "collect-shares",
        "rebuild-rk",
        "generate-root",
        "generate-rk",
        "wrap-blob",
        "lock-root",
        "split",
        "issue-shares",
        "verify-shares",
        "finalise",
        "rewrap",
        "retire-epoch",
    ),
    "rotate-root": (
        "hsm-check",
        "approve",
        "generate-root",
        "seal-blob",
        "lock-root",
        "finalise",
        "rewrap",
    ),
    "emergency-rotate": (
        "hsm-check",
        "incident",
        "second-person",  # issue 11: a witness or a second super-admin approves
        "generate-root",
        "seal-blob",
        "lock-root",
        "finalise",
        "rewrap",
        "disable-old",
        "revoke",
        "report",
    ),
    "drill": (
        "collect-shares",
        "rebuild-rk",
        "scratch-token",
        "compare-kcv",
        "destroy-scratch",
        "record",
    ),
}


def test_the_scripts_are_what_transcripts_record():
    """A script is part of the transcript format (the policy's ``script``): changing one is
    a format change, made on purpose."""
    assert SCRIPTS == PINNED_SCRIPTS
    assert tuple(PINNED_SCRIPTS) == KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_script_invariants(kind):
    script = SCRIPTS[kind]
    assert len(set(script)) == len(script), "a step appears once"
    assert "open" not in script and "close" not in script, "the transcript's own events"
    assert script.count(COMMIT_STEP[kind]) == 1
    commit_at = script.index(COMMIT_STEP[kind])
    # RK lives only in the runner's memory: a step that needs it cannot come after the
    # commit point, from which an interrupted ceremony may only roll forward
    assert all(script.index(s) < commit_at for s in script if s in SECRET_STEPS)


def test_input_commit_and_secret_steps_name_real_steps():
    every = {s for script in SCRIPTS.values() for s in script}
    assert set(COMMIT_STEP) == set(SCRIPTS)
    assert set(INPUT_STEPS) <= every and set(SECRET_STEPS) <= every
    assert set(INPUT_STEPS.values()) == {"shares", "approvals"}
    assert INPUT_STEPS == {
        "collect-shares": "shares",
        "verify-shares": "shares",
        "approve": "approvals",
        "enrol": "approvals",
        "second-person": "approvals",
    }
