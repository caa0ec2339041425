"""Attacks on time-limited grants by a single insider, on a real store and audit log.

The operator with the disk writes grant, request and approval rows directly; a service-admin
approves what they may not touch themselves; a requester shrinks the approvers needed; a
revoked principal keeps acting. Each test is the attack; it passes when the attack fails.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from custody.access import AccessDenied
from custody.access.control import to_grant
from custody.access.flow import GrantFlow
from custody.access.records import approval_input, body_digest, build_record, request_body
from custody.errors import IntegrityError, PolicyError, StorageError, UsageError
from custody.store.rows import AccessApprovalRow, GrantRow, ParticipantRow
from tests.custody.access.seal_fixtures import sealed_copy
from tests.custody.access.test_grants import HIGH, KEYS, MEDIUM, T0, _ops, _secret, world

__all__ = ["world"]  # the fixture, shared with test_grants


def _forged(r, gid: str, record: str = "") -> GrantRow:
    return GrantRow(id=gid, request_id=r.id, principal=r.requester, env=r.env, path=r.path,
                    actions=("metadata", "read"), not_before=T0, not_after=T0 + 3600,
                    created=T0, record=record)  # fmt: skip


def test_a_grant_row_written_into_the_store_is_not_honoured(world):
    flow, ac, store, log, _clock = world
    svc = ac.principal("svc")
    r = flow.request(svc, "prod", MEDIUM, seconds=600, why="x")
    # the disk operator writes a grant with no record, then one with a made-up record
    store.add_grant(_forged(r, "grant-forged-1"))
    with pytest.raises(AccessDenied):
        ac.authorize(svc, "read", "prod", MEDIUM)
    r2 = flow.request(svc, "prod", MEDIUM, seconds=600, why="y")
    fake = build_record(r2, "dep-1", [], grant_id="grant-forged-2")
    store.add_grant(_forged(r2, "grant-forged-2", json.dumps(fake)))
    with pytest.raises(AccessDenied):
        ac.authorize(svc, "read", "prod", MEDIUM)
    denied = [json.loads(x) for x in log.lines()]
    refused = [e for e in denied if e["op"] == "access grant use" and e["outcome"] == "denied"]
    assert {e["details"]["grant"] for e in refused} == {"grant-forged-1", "grant-forged-2"}
    # and listing does not honour them either
    assert ac.visible(svc, "metadata", store.secrets("prod", "payments/"), scope="prod:") == []


def test_approvals_forged_with_the_operators_own_key_do_not_make_a_grant(world):
    flow, ac, store, _log, _clock = world
    svc = ac.principal("svc")
    r = flow.request(svc, "prod", HIGH, seconds=600, why="x")
    root = KEYS["root"]  # signs "as" alice and bob: the keys on record are not theirs
    rows = [AccessApprovalRow(request_id=r.id, approver=n, public=KEYS[n].public,
                              sig=root.sign(approval_input(r.digest, n, T0)), approved_at=T0)
            for n in ("alice", "bob")]  # fmt: skip
    rec = json.dumps(build_record(r, "dep-1", rows, grant_id="grant-f"))
    store.add_grant(_forged(r, "grant-f", rec))
    with pytest.raises(AccessDenied):
        ac.authorize(svc, "read", "prod", HIGH)


def test_a_real_grant_edited_in_the_store_is_not_honoured(world):
    flow, ac, store, _log, _clock = world
    svc = ac.principal("svc")
    r = flow.request(svc, "prod", MEDIUM, seconds=600, why="deploy")
    gid = flow.approve(r.id, KEYS["carol"])["grant"]
    assert ac.authorize(svc, "read", "prod", MEDIUM).grant == gid
    # widen it to the whole service, move it to dev, or stretch its window: each is refused
    edits = (("path='payments/'", "path=?", MEDIUM), ("env='dev'", "env=?", "prod"),
             ("not_after=not_after+86400", "not_after=not_after-86400", None))  # fmt: skip
    for edit, undo, arg in edits:
        with store.tx() as c:  # raw SQL, on either adapter
            c.execute(f"UPDATE grants SET {edit} WHERE id=?", (gid,))
        for env, path in (("prod", HIGH), ("dev", MEDIUM), ("prod", MEDIUM)):
            g = to_grant(store.grant(gid))
            if g.env == env and g.covers(path):
                with pytest.raises(AccessDenied):
                    ac.authorize(svc, "read", env, path, now=g.not_before + 1)
        with store.tx() as c:
            c.execute(
                f"UPDATE grants SET {undo} WHERE id=?", (*(() if arg is None else (arg,)), gid)
            )
    assert ac.authorize(svc, "read", "prod", MEDIUM).grant == gid  # the real one still works


def test_the_grant_of_one_principal_copied_to_another_is_not_honoured(world):
    flow, ac, store, _log, _clock = world
    ac.add_principal("svc2", kind="service", role="service-user", services=("payments",),
                     by="root")  # fmt: skip
    r = flow.request(ac.principal("svc"), "prod", MEDIUM, seconds=600, why="deploy")
    g = store.grant(flow.approve(r.id, KEYS["carol"])["grant"])
    store.add_grant(replace(g, id="grant-copy", principal="svc2", request_id="req-copy"))
    with pytest.raises(AccessDenied):
        ac.authorize(ac.principal("svc2"), "read", "prod", MEDIUM)


def test_lowering_the_approvers_needed_in_the_store_does_not_make_a_one_approver_high_grant(
    world,
):
    flow, ac, store, _log, _clock = world
    svc = ac.principal("svc")
    r = flow.request(svc, "prod", HIGH, seconds=600, why="x")
    # the disk operator sets needed=1 and recomputes the (unsigned) digest before anyone signs
    low = replace(r, needed=1)
    low = replace(low, digest=body_digest(request_body(low, "dep-1")))
    with store.tx() as c:
        c.execute("UPDATE access_requests SET needed=1, digest=? WHERE id=?", (low.digest, r.id))
    out = flow.approve(r.id, KEYS["alice"])
    assert out["grant"] is None
    with pytest.raises(AccessDenied):
        ac.authorize(svc, "read", "prod", HIGH)
    # nor does a grant row built from that one real approval
    rec = build_record(low, "dep-1", store.access_approvals(r.id), grant_id="grant-one")
    store.add_grant(_forged(low, "grant-one", json.dumps(rec)))
    with pytest.raises(AccessDenied):
        ac.authorize(svc, "read", "prod", HIGH)


def test_an_approver_who_may_not_approve_there_does_not_count(world):
    flow, ac, store, _log, _clock = world
    # a service-admin of another service signs (with their real key) and the operator files it
    from custody.audit.signers import Ed25519Signer
    from custody.store.rows import ParticipantRow

    eve = Ed25519Signer.from_seed("eve", b"eve".ljust(32, b"."))
    store.add_participant(ParticipantRow(name="eve", role="custodian", public=eve.public,
                          fingerprint="eeee", valid_from=T0 - 10, valid_until=T0 + 10**8,
                          revoked_at=None, enrolled_by="root"))  # fmt: skip
    ac.add_principal("eve", kind="person", role="service-admin", services=("billing",),
                     public=eve.public, by="root")  # fmt: skip
    svc = ac.principal("svc")
    r = flow.request(svc, "prod", MEDIUM, seconds=600, why="x")
    with pytest.raises(AccessDenied):
        flow.approve(r.id, eve)
    a = AccessApprovalRow(
        request_id=r.id,
        approver="eve",
        public=eve.public,
        sig=eve.sign(approval_input(r.digest, "eve", T0)),
        approved_at=T0,
    )
    store.add_access_approval(a)
    rec = build_record(r, "dep-1", [a], grant_id="grant-eve")
    store.add_grant(replace(_forged(r, "grant-eve", json.dumps(rec)),
                            actions=r.actions, not_after=r.not_after))  # fmt: skip
    with pytest.raises(AccessDenied):
        ac.authorize(svc, "read", "prod", MEDIUM)


def test_a_revoked_principal_keeps_nothing(world):
    flow, ac, store, log, _clock = world
    svc = ac.principal("svc")
    alice = ac.principal("alice")
    r = flow.request(svc, "prod", MEDIUM, seconds=600, why="deploy")
    gid = flow.approve(r.id, KEYS["carol"])["grant"]
    ac.revoke("svc", by="root")
    with pytest.raises(PolicyError):
        ac.principal("svc")
    # the grant went with it, even for a caller still holding the old Principal object
    assert store.grant(gid).revoked_at is not None
    with pytest.raises(AccessDenied):
        ac.authorize(svc, "read", "prod", MEDIUM)
    # a revoked service-admin held in memory (a long-lived caller) is refused too
    ac.revoke("alice", by="root")
    with pytest.raises(PolicyError):
        ac.authorize(alice, "read", "prod", MEDIUM)
    assert ("access decide", "denied", "alice") in _ops(log)


def test_a_service_admin_cannot_open_an_encryption_key_to_a_user_by_a_prefix_grant(world):
    flow, ac, store, _log, _clock = world
    with store.transaction():
        store.add_secret(_secret("payments/keys/dek", "data-encryption-key", "medium"))
    alice = ac.principal("alice")
    with pytest.raises(AccessDenied):
        ac.authorize(alice, "read", "prod", "payments/keys/dek")
    svc = ac.principal("svc")
    r = flow.request(svc, "prod", "payments/keys/", seconds=600, why="x")
    assert r.needed == 1  # everything under the prefix is medium
    assert flow.approve(r.id, KEYS["alice"])["grant"]  # alice may approve the prefix...
    with pytest.raises(AccessDenied):  # ...but her signature never opens the key under it
        ac.authorize(svc, "read", "prod", "payments/keys/dek")
    # a super-admin's approval does (their role may approve encryption keys)
    r2 = flow.request(svc, "prod", "payments/keys/dek", seconds=600, why="y")
    gid = flow.approve(r2.id, KEYS["root"])["grant"]
    assert ac.authorize(svc, "read", "prod", "payments/keys/dek").grant == gid


def test_the_requester_cannot_get_a_second_name_with_the_same_key(world):
    """A twin principal would let a requester approve under another name: the roster holds
    one participant per key, and a person principal must be that participant."""
    _flow, ac, store, _log, _clock = world
    k = KEYS["carol"]
    with pytest.raises(StorageError):
        store.add_participant(ParticipantRow(name="carol2", role="custodian", public=k.public,
                              fingerprint="c2c2", valid_from=T0 - 10, valid_until=T0 + 10**8,
                              revoked_at=None, enrolled_by="root"))  # fmt: skip
    with pytest.raises(UsageError, match="not an enrolled participant"):
        ac.add_principal("carol2", kind="person", role="service-admin", services=("payments",),
                         public=k.public, by="root")  # fmt: skip


def test_a_prefix_approved_while_low_never_opens_a_high_secret_put_under_it(world):
    flow, ac, store, _log, _clock = world
    with store.transaction():
        store.add_secret(_secret("payments/config/flags", "configuration-secret", "low"))
    svc = ac.principal("svc")
    r = flow.request(svc, "prod", "payments/config/", seconds=600, why="read the flags")
    assert r.needed == 1
    gid = flow.approve(r.id, KEYS["alice"])["grant"]
    assert ac.authorize(svc, "read", "prod", "payments/config/flags").grant == gid
    # later a high-class secret lands under the prefix: one approval does not open it
    with store.transaction():
        store.add_secret(_secret("payments/config/db-root", "database-credential", "high"))
    with pytest.raises(AccessDenied):
        ac.authorize(svc, "read", "prod", "payments/config/db-root")
    assert ac.authorize(svc, "read", "prod", "payments/config/flags").grant == gid


@pytest.mark.hsm
def test_a_revocation_undone_in_the_store_does_not_revive_the_grant(world, hsm):
    flow, ac, store, _log, _clock = world
    ac = sealed_copy(ac, hsm)  # the token is open (the server, a CLI command with the PIN)
    flow = GrantFlow(ac, "dep-1")
    svc = ac.principal("svc")
    r = flow.request(svc, "prod", MEDIUM, seconds=600, why="deploy")
    gid = flow.approve(r.id, KEYS["carol"])["grant"]
    flow.revoke(gid, ac.principal("alice"), reason="incident")
    with store.tx() as c:  # the disk operator clears the revocation
        c.execute("UPDATE grants SET revoked_at=NULL, revoked_by=NULL WHERE id=?", (gid,))
    with pytest.raises(IntegrityError, match="fail their seal"):
        ac.authorize(svc, "read", "prod", MEDIUM)


JUNK = ["[]", '{"approvals": 5}', '{"approvals": [1, "x"]}', "nope",
        '{"type": "custody/grant-record/v1", "request": []}']  # fmt: skip


@pytest.mark.parametrize("record", JUNK)
def test_a_malformed_record_is_refused_not_a_crash(world, record):
    flow, ac, store, log, _clock = world
    svc = ac.principal("svc")
    r = flow.request(svc, "prod", MEDIUM, seconds=600, why="x")
    store.add_grant(_forged(r, "grant-junk", record))
    with pytest.raises(AccessDenied):
        ac.authorize(svc, "read", "prod", MEDIUM)
    assert ("access grant use", "denied", "svc") in _ops(log)
