"""Attacks on quorum release by a single insider, on a real store and audit log: fewer
approvals than the quorum by editing the request, the requester approving themselves, and
the disk operator swapping the requester's encryption key or dropping the mark (refused by
the access seal when the token is open)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from custody.access.flow import GrantFlow
from custody.access.records import body_digest, request_body
from custody.access.release import deliver
from custody.errors import IntegrityError, PolicyError
from tests.custody.access.seal_fixtures import sealed_copy
from tests.custody.access.test_release import ENC, KEYS, PATH, _xpub, reveal, world

__all__ = ["world"]


def test_lowering_needed_in_the_store_does_not_shrink_the_quorum(world):
    flow, ac, store, _log = world
    dave = ac.principal("dave")
    r = flow.request(dave, "prod", PATH, seconds=600, why="renew", kind="release")
    one = replace(r, needed=1)
    one = replace(one, digest=body_digest(request_body(one, "dep-1")))
    with store.tx() as c:  # raw SQL, on either adapter
        c.execute("UPDATE access_requests SET needed=1, digest=? WHERE id=?", (one.digest, r.id))
    assert flow.approve(r.id, KEYS["alice"])["needed"] == 2
    store.set_access_request_state(r.id, "approved", now=r.created)  # and forces the state
    with pytest.raises(PolicyError, match="1 of 2"):
        deliver(flow, r.id, dave, reveal)


def test_the_requester_cannot_approve_their_own_release(world):
    flow, ac, store, _log = world
    dave = ac.principal("dave")
    r = flow.request(dave, "prod", PATH, seconds=600, why="renew", kind="release")
    with pytest.raises(PolicyError, match="own request"):
        flow.approve(r.id, KEYS["dave"])
    flow.approve(r.id, KEYS["alice"])
    with pytest.raises(PolicyError, match="1 of 2"):
        deliver(flow, r.id, dave, reveal)
    assert [a.approver for a in store.access_approvals(r.id)] == ["alice"]


@pytest.mark.hsm
def test_the_disk_operator_swapping_the_requesters_key_cannot_open_the_release(world, hsm):
    flow, ac, store, _log = world
    ac = sealed_copy(ac, hsm)  # the token is open (the server, a CLI command with the PIN)
    flow = GrantFlow(ac, "dep-1")
    dave = ac.principal("dave")
    r = flow.request(dave, "prod", PATH, seconds=600, why="renew", kind="release")
    flow.approve(r.id, KEYS["alice"])
    flow.approve(r.id, KEYS["bob"])
    with store.tx() as c:
        c.execute("UPDATE principals SET x25519=? WHERE name='dave'", (_xpub(ENC["root"]),))
    with pytest.raises(IntegrityError, match="fail their seal"):
        deliver(flow, r.id, dave, reveal)  # nothing is sealed to the swapped key


@pytest.mark.hsm
def test_the_disk_operator_dropping_the_mark_does_not_open_direct_reads(world, hsm):
    _flow, ac, store, _log = world
    root = ac.principal("root")
    ac = sealed_copy(ac, hsm)  # the token is open (the server, a CLI command with the PIN)
    with store.tx() as c:
        c.execute("DELETE FROM release_rules")
    with pytest.raises(IntegrityError, match="fail their seal"):
        ac.authorize(root, "read", "prod", PATH)
