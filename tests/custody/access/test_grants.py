"""Time-limited grants in process, on a real store and audit log: request, two approvers'
signatures, activation, use, expiry, early revocation, and the offline record. Then the
insider: the requester approving themselves, an approval replayed on another request, a
super-admin forging approvals by writing to the store, a request altered after signing."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from custody.access import AccessControl, AccessDenied
from custody.access.flow import GrantFlow
from custody.access.records import build_record, verify_record
from custody.audit.log import AuditLog
from custody.audit.signers import Ed25519Signer
from custody.errors import IntegrityError, PolicyError
from custody.store.rows import AccessApprovalRow, ParticipantRow, SecretRow

T0 = 1_800_000_000
HIGH, MEDIUM = "payments/db/password", "payments/stripe/api-key"
KEYS = {n: Ed25519Signer.from_seed(n, n.encode().ljust(32, b".")) for n in
        ("alice", "bob", "carol", "root")}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)


def _secret(path: str, cat: str, cls: str, env: str = "prod") -> SecretRow:
    t = "2026-01-01T00:00:00+00:00"
    return SecretRow(env=env, path=path, category=cat, security_class=cls, owner="payments",
                     state="active", current_version=1, pending_version=None,
                     previous_version=None, next_version=2, expires="2027-01-01T00:00:00+00:00",
                     created=t, updated=t)  # fmt: skip


@pytest.fixture
def world(tmp_path: Path, backend):
    store = backend.open(create=True)  # on each adapter (tests/pg_fixtures.py)
    log = AuditLog(tmp_path / "audit.db", durable=False)
    clock = Clock()
    ac = AccessControl(store, log, clock=clock)
    with store.transaction():
        for env in ("prod", "dev"):
            store.add_secret(_secret(HIGH, "database-credential", "high", env))
            store.add_secret(_secret(MEDIUM, "external-api-key", "medium", env))
    for n, k in KEYS.items():
        store.add_participant(ParticipantRow(name=n, role="custodian", public=k.public,
                              fingerprint=n * 4, valid_from=T0 - 10, valid_until=T0 + 10**8,
                              revoked_at=None, enrolled_by="root"))  # fmt: skip
        role = "super-admin" if n == "root" else "service-admin"
        ac.add_principal(n, kind="person", role=role, services=("payments",) if n != "root"
                         else (), public=k.public, by="root")  # fmt: skip
    ac.add_principal("svc", kind="service", role="service-user", services=("payments",), by="root")
    flow = GrantFlow(ac, "dep-1")
    yield flow, ac, store, log, clock
    log.close()
    store.close()


def _pins(*names: str) -> dict[bytes, str]:
    return {KEYS[n].public: n for n in names}


def _ops(log: AuditLog) -> list[tuple[str, str, str]]:
    return [(e["op"], e["outcome"], e["actor"]) for e in map(json.loads, log.lines())]


def test_two_approvers_activate_a_high_grant_that_lapses(world):
    flow, ac, _store, log, clock = world
    svc = ac.principal("svc")
    with pytest.raises(AccessDenied):
        ac.authorize(svc, "read", "prod", HIGH)
    r = flow.request(svc, "prod", HIGH, seconds=3600, why="incident 42: read the db password")
    assert (r.needed, r.security_class, r.state) == (2, "high", "pending")
    one = flow.approve(r.id, KEYS["alice"])
    assert (one["approvals"], one["grant"]) == (1, None)
    with pytest.raises(AccessDenied):  # one approval is not enough for a high-class secret
        ac.authorize(svc, "read", "prod", HIGH)
    with pytest.raises(PolicyError, match="already approved"):
        flow.approve(r.id, KEYS["alice"])
    two = flow.approve(r.id, KEYS["bob"])
    assert two["approvals"] == 2 and two["grant"]
    d = ac.authorize(svc, "read", "prod", HIGH)
    assert d.allow and d.grant == two["grant"]
    with pytest.raises(AccessDenied, match="the grant is for prod, not dev"):
        ac.authorize(svc, "read", "dev", HIGH)  # environments never leak
    # the record verifies offline with the two approvers pinned, and not with one
    doc = json.loads(two["record"])
    out = verify_record(doc, _pins("alice", "bob"))
    assert out["approvers"] == ["alice", "bob"] and out["requester"] == "svc"
    with pytest.raises(IntegrityError, match="1 of 2"):
        verify_record(doc, _pins("alice"))
    # expiry: the grant lapses, the lapse is audited once, reads are refused
    clock.t = r.not_after
    with pytest.raises(AccessDenied, match="expired"):
        ac.authorize(svc, "read", "prod", HIGH)
    ac.lapse()
    ops = _ops(log)
    assert ops.count(("access grant expire", "ok", "svc")) == 1
    assert ("access request", "ok", "svc") in ops
    assert ("access approve", "ok", "alice") in ops and ("access approve", "ok", "bob") in ops
    assert ("access grant", "ok", "svc") in ops and ("access grant use", "ok", "svc") in ops
    assert ("access decide", "denied", "svc") in ops


def test_a_medium_grant_needs_one_and_can_be_revoked_early(world):
    flow, ac, _store, log, _clock = world
    svc = ac.principal("svc")
    r = flow.request(svc, "prod", MEDIUM, seconds=600, why="deploy", actions=("read",))
    assert r.needed == 1
    gid = flow.approve(r.id, KEYS["carol"])["grant"]
    assert ac.authorize(svc, "read", "prod", MEDIUM).grant == gid
    flow.revoke(gid, ac.principal("alice"), reason="done early")
    with pytest.raises(AccessDenied, match="was revoked"):
        ac.authorize(svc, "read", "prod", MEDIUM)
    assert ("access grant revoke", "ok", "alice") in _ops(log)


def test_the_requester_never_approves_their_own_request(world):
    flow, ac, _store, log, _clock = world
    alice = ac.principal("alice")
    r = flow.request(alice, "prod", MEDIUM, seconds=600, why="check")
    with pytest.raises(PolicyError, match="cannot approve their own"):
        flow.approve(r.id, KEYS["alice"])
    assert ("access approve", "denied", "alice") in _ops(log)
    assert flow.get(r.id).state == "pending" and ac.store.access_approvals(r.id) == []


def test_an_approval_replayed_on_another_request_counts_for_nothing(world):
    flow, ac, store, _log, _clock = world
    svc = ac.principal("svc")
    a = flow.request(svc, "prod", HIGH, seconds=600, why="a")
    b = flow.request(svc, "prod", HIGH, seconds=600, why="b")
    flow.approve(a.id, KEYS["alice"])
    (ap,) = store.access_approvals(a.id)
    # an insider copies alice's approval of A onto B, straight into the store
    assert store.add_access_approval(replace(ap, request_id=b.id))
    assert flow.valid_approvals(b) == []
    flow.approve(b.id, KEYS["bob"])  # one real approval: still short of two
    assert store.grants(principal="svc") == [] and flow.get(b.id).state == "pending"
    doc = build_record(b, "dep-1", store.access_approvals(b.id), grant_id="grant-x")
    with pytest.raises(IntegrityError, match="alice's signature is bad"):
        verify_record(doc, _pins("alice", "bob"))


def test_a_super_admin_forging_approvals_in_the_store_fails_offline(world):
    flow, ac, store, _log, _clock = world
    svc = ac.principal("svc")
    r = flow.request(svc, "prod", HIGH, seconds=600, why="x")
    root = KEYS["root"]
    # 1) rows claiming alice and bob, signed by root's own key
    forged = [
        AccessApprovalRow(request_id=r.id, approver=n, public=KEYS[n].public,
                          sig=root.sign(b"anything"), approved_at=T0)
        for n in ("alice", "bob")
    ]  # fmt: skip
    doc = build_record(r, "dep-1", forged, grant_id="grant-f")
    with pytest.raises(IntegrityError, match="0 of 2"):
        verify_record(doc, _pins("alice", "bob"))
    # 2) root rebinds alice's and bob's principals to root's key in the store and signs "as
    #    alice" and "as bob": online the roster (participant keys) still refuses root's key,
    #    and offline the pinned keys are not fooled either
    with store.tx() as c:  # raw SQL, on either adapter
        c.execute("UPDATE principals SET public=? WHERE name IN ('alice','bob')", (root.public,))
    from custody.access.records import approval_input

    rows = [AccessApprovalRow(request_id=r.id, approver=n, public=root.public,
                              sig=root.sign(approval_input(r.digest, n, T0)), approved_at=T0)
            for n in ("alice", "bob")]  # fmt: skip
    from custody.access import AuthError

    with pytest.raises(AuthError, match="not enrolled"):
        flow.approve(r.id, root)
    doc = build_record(r, "dep-1", rows, grant_id="grant-f")
    with pytest.raises(IntegrityError, match=r"pinned as root|not pinned"):
        verify_record(doc, _pins("alice", "bob", "root"))
    # 3) and a record whose request was edited after signing (another path) is refused
    good = flow.request(svc, "prod", MEDIUM, seconds=600, why="y")
    rec = json.loads(flow.approve(good.id, KEYS["carol"])["record"])
    rec["request"]["path"] = HIGH
    with pytest.raises(IntegrityError, match="digest mismatch"):
        verify_record(rec, _pins("carol"))
    rec["digest"] = "00" * 32
    with pytest.raises(IntegrityError):
        verify_record(rec, _pins("carol"))


def test_a_request_altered_in_the_store_is_not_approved(world):
    flow, ac, store, _log, _clock = world
    r = flow.request(ac.principal("svc"), "prod", MEDIUM, seconds=600, why="z")
    with store.tx() as c:
        c.execute("UPDATE access_requests SET path=? WHERE id=?", ("payments/", r.id))
    with pytest.raises(PolicyError, match="altered"):
        flow.approve(r.id, KEYS["alice"])


def test_requests_are_checked(world):
    flow, ac, _store, _log, clock = world
    svc = ac.principal("svc")
    from custody.errors import UsageError

    with pytest.raises(UsageError):
        flow.request(svc, "prod", MEDIUM, seconds=600, why="x", actions=("write",))
    with pytest.raises(UsageError):
        flow.request(svc, "prod", MEDIUM, seconds=30 * 86400, why="x")
    with pytest.raises(UsageError):
        flow.request(svc, "prod", MEDIUM, seconds=600, why="  ")
    with pytest.raises(UsageError):
        flow.request(svc, "prod", "payments/none", seconds=600, why="x")
    with pytest.raises(AccessDenied):  # a super-admin needs no grant, an auditor gets none
        flow.request(ac.principal("root"), "prod", MEDIUM, seconds=600, why="x")
    r = flow.request(svc, "prod", MEDIUM, seconds=600, why="x")
    r2 = flow.request(svc, "prod", MEDIUM, seconds=900, why="y")
    clock.t += 600
    with pytest.raises(PolicyError, match="expired"):
        flow.approve(r.id, KEYS["alice"])
    assert flow.expire_requests() == []  # r was marked by the refused approval; r2 is live
    clock.t += 300
    assert [x.id for x in flow.expire_requests()] == [r2.id]
    assert flow.expire_requests() == [] and flow.get(r2.id).state == "expired"


def test_an_emergency_root_rotation_revokes_every_grant(world):
    flow, ac, store, _log, _clock = world
    svc = ac.principal("svc")
    r = flow.request(svc, "prod", MEDIUM, seconds=600, why="x")
    gid = flow.approve(r.id, KEYS["alice"])["grant"]
    assert store.revoke_access(now=T0 + 1)["grants"] == 1  # the emergency-rotate step
    assert store.grant(gid).revoked_at == T0 + 1
    with pytest.raises(AccessDenied, match="revoked"):
        ac.authorize(svc, "read", "prod", MEDIUM, now=T0 + 2)


def test_the_number_of_high_approvers_is_config(world, tmp_path: Path):
    from custody.access.settings import AccessSettings
    from custody.errors import ConfigError

    _flow, ac, _store, _log, _clock = world
    conf = tmp_path / "custody.toml"
    conf.write_text("[access]\nhigh_approvers = 3\nmax_grant_seconds = 3600\n")
    settings = AccessSettings.for_home(conf)
    three = GrantFlow(ac, "dep-1", settings)
    svc = ac.principal("svc")
    assert three.request(svc, "prod", HIGH, seconds=600, why="x").needed == 3
    assert three.request(svc, "prod", MEDIUM, seconds=600, why="x").needed == 1
    from custody.errors import UsageError

    with pytest.raises(UsageError):  # longer than max_grant_seconds
        three.request(svc, "prod", MEDIUM, seconds=7200, why="x")
    for bad in ({"high_approvers": 0}, {"high_approvers": "2"}, {"max_grant_seconds": 10},
                {"mfa_mode": "never"}):  # fmt: skip
        with pytest.raises(ConfigError):
            AccessSettings.from_mapping(bad)
    assert AccessSettings.for_home(tmp_path / "missing.toml") == AccessSettings()
