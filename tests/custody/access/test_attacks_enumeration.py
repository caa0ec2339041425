"""Enumeration: does a denial, a listing or an error tell a principal what exists out of its
reach (another service's path, another environment, an encryption key, a quorum-release
mark)? Real store and audit log; each test is the probe, passing when it learns nothing."""

from __future__ import annotations

import pytest

from custody.access import AccessDenied
from custody.audit.signers import Ed25519Signer
from custody.store.rows import ParticipantRow
from tests.custody.access.test_grants import HIGH, KEYS, MEDIUM, T0, _secret, world

__all__ = ["world"]

DEK = "payments/keys/dek"
MARKED = "payments/keys/root-cert"


@pytest.fixture
def probe(world):
    flow, ac, store, log, clock = world
    with store.transaction():
        store.add_secret(_secret(DEK, "data-encryption-key", "high"))
        store.add_secret(_secret(MARKED, "tls-private-key", "high"))
        store.add_secret(_secret("billing/db/password", "database-credential", "medium"))
    store.set_release_rule("prod", MARKED, mode="quorum", needed=2, by="root", now=T0)
    eve = Ed25519Signer.from_seed("eve", b"eve".ljust(32, b"."))
    store.add_participant(ParticipantRow(name="eve", role="custodian", public=eve.public,
                          fingerprint="eeee", valid_from=T0 - 10, valid_until=T0 + 10**8,
                          revoked_at=None, enrolled_by="root"))  # fmt: skip
    ac.add_principal("eve", kind="person", role="service-admin", services=("billing",),
                     public=eve.public, by="root")  # fmt: skip
    return flow, ac, store, log, clock


def _title(ac, who, action: str, env: str, path: str) -> str:
    with pytest.raises(AccessDenied) as exc:
        ac.authorize(who, action, env, path)
    return exc.value.title.replace(path, "PATH")


@pytest.mark.parametrize("action", ["read", "metadata", "list", "rotate", "write"])
def test_another_services_admin_cannot_tell_an_encryption_key_from_nothing(probe, action):
    _flow, ac, _store, _log, _clock = probe
    eve = ac.principal("eve")
    there = _title(ac, eve, action, "prod", DEK)
    nothing = _title(ac, eve, action, "prod", "payments/keys/nothing")
    assert there == nothing
    assert "encryption" not in there


def test_a_quorum_mark_is_invisible_to_whoever_may_not_read_anyway(probe):
    _flow, ac, _store, _log, _clock = probe
    for who in (ac.principal("svc"), ac.principal("eve")):
        assert _title(ac, who, "read", "prod", MARKED) == _title(
            ac, who, "read", "prod", "payments/keys/other"
        )
    # the owner's service-admin may read the service, so to alice the mark is the reason
    with pytest.raises(AccessDenied, match="quorum"):
        ac.authorize(ac.principal("alice"), "read", "prod", MARKED)


def test_a_service_user_cannot_tell_which_environment_holds_a_path(probe):
    _flow, ac, store, _log, _clock = probe
    svc = ac.principal("svc")
    with store.tx() as c:  # raw SQL, on either adapter
        c.execute("DELETE FROM secrets WHERE env='dev' AND path=?", (MEDIUM,))
    # prod holds both, dev only HIGH: with no grant the answers are the same everywhere
    titles = {_title(ac, svc, "read", env, p) for env in ("prod", "dev", "qa")
              for p in (HIGH, MEDIUM)}  # fmt: skip
    assert len({t.replace("prod", "ENV").replace("dev", "ENV").replace("qa", "ENV")
                for t in titles}) == 1  # fmt: skip


def test_listing_shows_only_what_the_principal_may_list(probe):
    flow, ac, store, _log, _clock = probe
    rows = store.secrets("prod", "")
    assert {r.path for r in ac.visible(ac.principal("eve"), "list", rows, scope="prod:")} == {
        "billing/db/password"
    }
    svc = ac.principal("svc")
    assert ac.visible(svc, "list", rows, scope="prod:") == []
    r = flow.request(svc, "prod", MEDIUM, seconds=600, why="x", actions=("list", "read"))
    flow.approve(r.id, KEYS["carol"])
    assert [x.path for x in ac.visible(svc, "list", rows, scope="prod:")] == [MEDIUM]
    assert ac.visible(svc, "list", store.secrets("dev", ""), scope="dev:") == []
    # alice (payments' admin) sees her service, but never its encryption key
    seen = {r.path for r in ac.visible(ac.principal("alice"), "list", rows, scope="prod:")}
    assert DEK not in seen and MEDIUM in seen and "billing/db/password" not in seen
