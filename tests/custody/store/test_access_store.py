"""The access-control tables behind the store port, on both adapters (SQLite, PostgreSQL):
principals and tokens, requests and approvals (one per approver), grants (lapse once,
revoke by id and by path, the emergency revoke_access), quorum release rules and the
once-only delivery record."""

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


def _req(rid: str, **kw: object) -> AccessRequestRow:
    base = dict(id=rid, kind="grant", requester="svc", env="prod", path="pay/db",
                actions=("metadata", "read"), not_before=T, not_after=T + 600, nonce=rid * 2,
                reason="why", security_class="high", needed=2, digest="d-" + rid,
                state="pending", created=T, updated=T)  # fmt: skip
    return AccessRequestRow(**{**base, **kw})  # type: ignore[arg-type]


def _grant(gid: str, path: str, not_after: int = T + 600) -> GrantRow:
    return GrantRow(id=gid, request_id="r-" + gid, principal="svc", env="prod", path=path,
                    actions=("read",), not_before=T, not_after=not_after, created=T,
                    record="{}")  # fmt: skip


def test_principals_and_tokens(store):
    p = PrincipalRow(name="svc", kind="service", role="service-user", services=("pay", "x/y"),
                     envs=("prod",), created=T, created_by="root", token_id="ab" * 8,
                     token_salt=b"s" * 16, token_hash=b"h" * 32, token_created=T)  # fmt: skip
    store.add_principal(p)
    with pytest.raises(StorageError):
        store.add_principal(p)
    assert store.principal("svc") == p and store.principals() == [p]
    assert store.principal_by_token_id("ab" * 8) == p
    store.set_principal_token("svc", token_id="cd" * 8, salt=b"t" * 16, digest=b"i" * 32, now=T)
    assert store.principal_by_token_id("ab" * 8) is None
    assert store.principal("svc").token_hash == b"i" * 32
    assert store.revoke_principal_token("svc", now=T + 1)
    assert not store.revoke_principal_token("svc", now=T + 2)
    assert store.revoke_principal("svc", now=T + 3) and not store.revoke_principal("svc", now=T)
    assert store.principal("svc").revoked_at == T + 3
    with pytest.raises(StorageError):
        store.set_principal_token("svc", token_id="ef" * 8, salt=b"", digest=b"", now=T)


def test_requests_approvals_and_releases(store):
    store.add_access_request(_req("r1"))
    store.add_access_request(_req("r2", created=T + 5, kind="release"))
    assert [r.id for r in store.access_requests()] == ["r2", "r1"]
    assert store.access_request("r1") == _req("r1")
    store.set_access_request_state("r1", "granted", now=T + 9)
    assert [r.id for r in store.access_requests(state="pending")] == ["r2"]
    a = AccessApprovalRow(request_id="r2", approver="alice", public=b"p" * 32, sig=b"s" * 64,
                          approved_at=T)  # fmt: skip
    assert store.add_access_approval(a) and not store.add_access_approval(a)
    assert store.access_approvals("r2") == [a]
    assert store.release_rule("prod", "pay/db") is None
    store.set_release_rule("prod", "pay/db", mode="quorum", needed=3, by="root", now=T)
    assert store.release_rule("prod", "pay/db") == ("quorum", 3)
    assert store.record_release("r2", version=1, sealed_sha256="00", now=T)
    assert not store.record_release("r2", version=1, sealed_sha256="00", now=T)
    store.set_release_rule("prod", "pay/db", mode="normal", needed=0, by="root", now=T)
    assert store.release_rule("prod", "pay/db") is None


def test_grants_lapse_once_and_revoke(store):
    store.add_grant(_grant("g1", "pay/db", not_after=T + 10))
    store.add_grant(_grant("g2", "pay/"))
    store.add_grant(_grant("g3", "other/x"))
    assert {g.id for g in store.grants(principal="svc", env="prod")} == {"g1", "g2", "g3"}
    assert [g.id for g in store.lapse_grants(now=T + 10)] == ["g1"]
    assert store.lapse_grants(now=T + 20) == []
    hit = store.revoke_grants_on("prod", "pay/db", now=T + 30, by="root", reason="leak")
    assert {g.id for g in hit} == {"g1", "g2"}
    assert store.grant("g2").revoked_by == "root" and store.grant("g3").revoked_at is None
    assert not store.revoke_grant("g2", now=T, by="x", reason="again")
    assert store.revoke_access(now=T + 40)["grants"] == 1  # the emergency root rotation
    assert store.grant("g3").revoked_at == T + 40


def test_mfa_enrolments_single_use_and_lockout(store):
    from custody.store.rows import MfaRow

    row = MfaRow(principal="svc", object_uid=b"u" * 16, digits=6, period=30, algorithm="SHA1",
                 enrolled_at="2026-01-01T00:00:00+00:00")  # fmt: skip
    with store.transaction():
        store.add_mfa_enrolment(row)
    assert store.mfa_enrolment("svc") == row and store.mfa_enrolments() == [row]
    assert store.use_mfa_step("svc", 10, now="t1")
    assert not store.use_mfa_step("svc", 10, now="t2")  # the same step again: refused
    assert store.mfa_enrolment("svc").confirmed_at == "t1"
    with store.transaction():
        assert store.fail_mfa("svc", limit=2, locked_until="later") == (1, False)
        assert store.fail_mfa("svc", limit=2, locked_until="later") == (2, True)
    assert store.mfa_enrolment("svc").locked_until == "later"
    with store.transaction():
        assert store.delete_mfa_enrolment("svc") is not None
    assert store.mfa_enrolment("svc") is None
