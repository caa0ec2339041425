"""Quorum release in process, on a real store and audit log: a secret marked for it is
never read directly (not by a super-admin, not with a grant); m signed approvals bound to
one request deliver it once, sealed to the requester's X25519 key; a replayed delivery, an
approval copied from another request, another principal, and another key are refused."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from custody.access import AccessControl, AccessDenied
from custody.access.flow import GrantFlow
from custody.access.release import deliver, open_release, set_rule
from custody.audit.log import AuditLog
from custody.audit.signers import Ed25519Signer
from custody.errors import IntegrityError, PolicyError
from custody.store.rows import ParticipantRow, SecretRow

T0 = 1_800_000_000
PATH = "payments/keys/root-cert"
CANARY = "Release-Canary-4h8!Qx2#Lp6@Zn"
NAMES = ("alice", "bob", "dave", "root")
KEYS = {n: Ed25519Signer.from_seed(n, n.encode().ljust(32, b"-")) for n in NAMES}
ENC = {n: X25519PrivateKey.from_private_bytes(n.encode().ljust(32, b"+")) for n in NAMES}


def _xpub(k: X25519PrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture
def world(tmp_path: Path, backend):
    store = backend.open(create=True)  # on each adapter (tests/pg_fixtures.py)
    log = AuditLog(tmp_path / "audit.db", durable=False)
    clock = datetime.fromtimestamp(T0, UTC)
    ac = AccessControl(store, log, clock=lambda: clock)
    t = "2026-01-01T00:00:00+00:00"
    with store.transaction():
        store.add_secret(SecretRow(env="prod", path=PATH, category="certificate-private-key",
                                   security_class="high", owner="payments", state="active",
                                   current_version=1, pending_version=None,
                                   previous_version=None, next_version=2,
                                   expires="2028-01-01T00:00:00+00:00", created=t,
                                   updated=t))  # fmt: skip
    for n in NAMES:
        store.add_participant(ParticipantRow(name=n, role="custodian", public=KEYS[n].public,
                              fingerprint=n * 4, valid_from=T0 - 10, valid_until=T0 + 10**8,
                              revoked_at=None, enrolled_by="root"))  # fmt: skip
        role = "super-admin" if n == "root" else "service-admin"
        ac.add_principal(n, kind="person", role=role, by="root",
                         services=() if n == "root" else ("payments",),
                         public=KEYS[n].public, x25519=_xpub(ENC[n]))  # fmt: skip
    flow = GrantFlow(ac, "dep-1")
    set_rule(flow, ac.principal("root"), "prod", PATH, needed=2)
    yield flow, ac, store, log
    log.close()
    store.close()


def reveal(env: str, path: str) -> tuple[int, str]:
    assert (env, path) == ("prod", PATH)
    return 1, CANARY


def test_a_quorum_secret_is_never_read_directly(world):
    flow, ac, _store, log = world
    for who in ("root", "dave"):
        with pytest.raises(AccessDenied, match="released only by quorum"):
            ac.authorize(ac.principal(who), "read", "prod", PATH)
    denied = [e for e in map(json.loads, log.lines()) if e["outcome"] == "denied"]
    assert {e["actor"] for e in denied} == {"root", "dave"}
    # a grant request does not open it either: grants give reads, and reads are refused
    r = flow.request(ac.principal("dave"), "prod", PATH, seconds=600, why="x")
    flow.approve(r.id, KEYS["alice"])
    flow.approve(r.id, KEYS["bob"])
    with pytest.raises(AccessDenied, match="released only by quorum"):
        ac.authorize(ac.principal("dave"), "read", "prod", PATH)


def test_m_approvals_deliver_once_sealed_to_the_requester(world):
    flow, ac, store, _log = world
    dave = ac.principal("dave")
    r = flow.request(dave, "prod", PATH, seconds=600, why="renew the cert", kind="release")
    assert (r.kind, r.needed) == ("release", 2)
    with pytest.raises(PolicyError, match="0 of 2"):
        deliver(flow, r.id, dave, reveal)
    flow.approve(r.id, KEYS["alice"])
    with pytest.raises(PolicyError, match="1 of 2"):
        deliver(flow, r.id, dave, reveal)
    flow.approve(r.id, KEYS["bob"])
    assert flow.get(r.id).state == "approved" and store.grants() == []  # no standing grant
    with pytest.raises(PolicyError, match="only the requester"):
        deliver(flow, r.id, ac.principal("alice"), reveal)
    sealed, info = deliver(flow, r.id, dave, reveal)
    assert CANARY.encode() not in sealed and info["approvers"] == ["alice", "bob"]
    header, value = open_release(sealed, ENC["dave"])
    assert value == CANARY and (header["request"], header["digest"]) == (r.id, r.digest)
    for other in ("alice", "root"):
        with pytest.raises(IntegrityError, match="another principal's key"):
            open_release(sealed, ENC[other])
    doc = json.loads(sealed)
    doc["header"]["path"] = "payments/other"
    with pytest.raises(IntegrityError, match="altered"):
        open_release(json.dumps(doc), ENC["dave"])
    # delivered once: a replay is refused and audited
    with pytest.raises(PolicyError, match="already delivered"):
        deliver(flow, r.id, dave, reveal)
    # an insider resets the state in the store: the delivery record still refuses it
    store.set_access_request_state(r.id, "approved", now=T0)
    with pytest.raises(PolicyError, match="already delivered"):
        deliver(flow, r.id, dave, reveal)


def test_approvals_of_one_request_do_not_release_another(world):
    flow, ac, store, _log = world
    dave = ac.principal("dave")
    a = flow.request(dave, "prod", PATH, seconds=600, why="a", kind="release")
    flow.approve(a.id, KEYS["alice"])
    flow.approve(a.id, KEYS["bob"])
    b = flow.request(dave, "prod", PATH, seconds=600, why="b", kind="release")
    for ap in store.access_approvals(a.id):  # copied straight into the store by an insider
        store.add_access_approval(replace(ap, request_id=b.id))
    store.set_access_request_state(b.id, "approved", now=T0)
    with pytest.raises(PolicyError, match="0 of 2 approvals bound to this request"):
        deliver(flow, b.id, dave, reveal)


def test_marking_is_a_super_admins(world):
    flow, ac, _store, _log = world
    with pytest.raises(AccessDenied):
        set_rule(flow, ac.principal("alice"), "prod", PATH, needed=0)
    set_rule(flow, ac.principal("root"), "prod", PATH, needed=0)
    d = ac.authorize(ac.principal("alice"), "read", "prod", PATH)  # a service-admin's own
    assert d.allow
