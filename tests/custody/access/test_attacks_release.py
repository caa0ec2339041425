"""Attacks on quorum release by a single insider, on a real store and audit log: fewer
approvals than the quorum by editing the request, the requester approving themselves, and
(open) the disk operator swapping the requester's encryption key or dropping the mark."""

from __future__ import annotations

from dataclasses import replace

import pytest

from custody.access import AccessDenied
from custody.access.records import body_digest, request_body
from custody.access.release import deliver, open_release
from custody.errors import IntegrityError, PolicyError
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


@pytest.mark.xfail(strict=True, reason="open: principal rows (the X25519 key) are not "
                   "authenticated; the endorsement is not kept with the principal")  # fmt: skip
def test_the_disk_operator_swapping_the_requesters_key_cannot_open_the_release(world):
    flow, ac, store, _log = world
    dave = ac.principal("dave")
    r = flow.request(dave, "prod", PATH, seconds=600, why="renew", kind="release")
    flow.approve(r.id, KEYS["alice"])
    flow.approve(r.id, KEYS["bob"])
    with store.tx() as c:
        c.execute("UPDATE principals SET x25519=? WHERE name='dave'", (_xpub(ENC["root"]),))
    try:
        sealed, _info = deliver(flow, r.id, dave, reveal)
    except PolicyError:
        return  # refused: the attack failed
    with pytest.raises(IntegrityError):
        open_release(sealed, ENC["root"])


@pytest.mark.xfail(strict=True, reason="open: release rules are store rows, not authenticated")
def test_the_disk_operator_dropping_the_mark_does_not_open_direct_reads(world):
    _flow, ac, store, _log = world
    with store.tx() as c:
        c.execute("DELETE FROM release_rules")
    with pytest.raises(AccessDenied):
        ac.authorize(ac.principal("root"), "read", "prod", PATH)
