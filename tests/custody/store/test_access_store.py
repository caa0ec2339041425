"""The access-control part of the store port on both adapters (SQLite, and PostgreSQL on
the test server): principals and their tokens, requests and one approval per approver,
grants that are revoked or lapse once, release rules and a release delivered once. The
access flows themselves are tested in tests/custody/access/ (on SQLite)."""

from __future__ import annotations

import pytest

from custody.errors import StorageError
from custody.store.rows import AccessApprovalRow, AccessRequestRow, GrantRow, PrincipalRow
from tests.custody.store.conftest import Backend

T = 1_800_000_000


@pytest.fixture
def store(backend: Backend):
    s = backend.open(create=True)
    yield s
    s.close()


def _principal(name: str, **kw) -> PrincipalRow:
    base = {"name": name, "kind": "service", "role": "service-user", "services": ("pay", "ops"),
            "envs": ("prod",), "created": T, "created_by": "root"}  # fmt: skip
    return PrincipalRow(**{**base, **kw})


def _grant(gid: str, path: str, not_after: int) -> GrantRow:
    return GrantRow(id=gid, request_id=f"req-{gid}", principal="svc", env="prod", path=path,
                    actions=("read", "metadata"), not_before=T, not_after=not_after,
                    created=T, record="{}")  # fmt: skip


def test_principals_and_their_tokens(store) -> None:
    store.add_principal(_principal("svc"))
    with pytest.raises(StorageError):
        store.add_principal(_principal("svc"))
    store.add_principal(_principal("ann", kind="person", public=b"p" * 32, services=()))
    assert [p.name for p in store.principals()] == ["ann", "svc"]
    store.set_principal_token("svc", token_id="tid", salt=b"s" * 16, digest=b"h" * 32, now=T)
    got = store.principal_by_token_id("tid")
    assert got is not None and got.name == "svc" and got.services == ("pay", "ops")
    assert got.token_hash == b"h" * 32 and got.envs == ("prod",)
    assert store.revoke_principal_token("svc", now=T + 1)
    assert not store.revoke_principal_token("svc", now=T + 2)
    assert store.revoke_principal("svc", now=T + 3) and not store.revoke_principal("svc", now=T)
    row = store.principal("svc")
    assert row is not None and (row.revoked_at, row.token_revoked_at) == (T + 3, T + 1)
    with pytest.raises(StorageError):  # a revoked principal gets no new token
        store.set_principal_token("svc", token_id="t2", salt=b"s", digest=b"h", now=T)


def test_requests_approvals_grants_and_releases(store) -> None:
    store.add_principal(_principal("svc"))
    store.add_principal(_principal("ann", kind="person", public=b"p" * 32, services=()))
    req = AccessRequestRow(id="r1", kind="grant", requester="svc", env="prod",
                           path="pay/db", actions=("read",), not_before=T, not_after=T + 60,
                           nonce="n", reason="why", security_class="high", needed=2,
                           digest="d" * 64, state="pending", created=T, updated=T)  # fmt: skip
    store.add_access_request(req)
    assert store.access_request("r1") == req
    assert [r.id for r in store.access_requests(state="pending")] == ["r1"]
    ap = AccessApprovalRow(request_id="r1", approver="ann", public=b"p" * 32, sig=b"s" * 64,
                           approved_at=T)  # fmt: skip
    assert store.add_access_approval(ap) and not store.add_access_approval(ap)
    assert store.access_approvals("r1") == [ap]
    store.set_access_request_state("r1", "granted", now=T + 1)
    assert store.access_requests(state="pending") == []
    store.add_grant(_grant("g1", "pay/db", T + 60))
    store.add_grant(_grant("g2", "pay/", T + 3600))
    assert {g.id for g in store.grants(principal="svc", env="prod")} == {"g1", "g2"}
    lapsed = store.lapse_grants(now=T + 60)
    assert [g.id for g in lapsed] == ["g1"] and store.lapse_grants(now=T + 60) == []
    hit = store.revoke_grants_on("prod", "pay/api", now=T + 61, by="root", reason="emergency")
    assert [g.id for g in hit] == ["g2"]
    g2 = store.grant("g2")
    assert g2 is not None and (g2.revoked_by, g2.revoke_reason) == ("root", "emergency")
    assert not store.revoke_grant("g2", now=T + 62, by="root", reason="again")
    assert store.release_rule("prod", "pay/db") is None
    store.set_release_rule("prod", "pay/db", mode="quorum", needed=2, by="root", now=T)
    assert store.release_rule("prod", "pay/db") == ("quorum", 2)
    assert store.record_release("r1", version=3, sealed_sha256="e" * 64, now=T)
    assert not store.record_release("r1", version=3, sealed_sha256="e" * 64, now=T)
    store.set_release_rule("prod", "pay/db", mode="normal", needed=0, by="root", now=T)
    assert store.release_rule("prod", "pay/db") is None
