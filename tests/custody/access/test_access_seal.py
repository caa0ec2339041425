"""The access seal (custody/access/seal.py) against the operator with the disk: each row kind
(principal, MFA enrolment, release rule, grant revocation) inserted, edited or deleted by raw
SQL without the token is refused at decision time with an audited IntegrityError; writes made
through access control with the token keep the seal valid. Real store on each adapter, real
SoftHSMv2 token, real audit log."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from custody.access import AccessControl, AuthError
from custody.access import tokens as tk
from custody.access.flow import GrantFlow
from custody.access.release import set_rule
from custody.access.seal import GEN_META, REVOKED_META, ROSTER_META, SEAL_META, SECRETS_META
from custody.audit.log import AuditLog
from custody.errors import IntegrityError
from custody.store.rows import MfaRow, ParticipantRow, PrincipalRow, SecretRow
from tests.custody.access.grant_fixtures import add_approvers, add_signed_grant
from tests.custody.access.seal_fixtures import seal_on
from tests.custody.access.test_release import ENC, KEYS, _xpub

pytestmark = pytest.mark.hsm

T0 = 1_800_000_000
PATH, RULED = "payments/db/password", "payments/tls/key"


def _secret(path: str) -> SecretRow:
    t = "2026-01-01T00:00:00+00:00"
    return SecretRow(env="prod", path=path, category="database-credential",
                     security_class="medium", owner="payments", state="active",
                     current_version=1, pending_version=None, previous_version=None,
                     next_version=2, expires="2028-01-01T00:00:00+00:00", created=t,
                     updated=t)  # fmt: skip


@pytest.fixture
def world(tmp_path: Path, backend, hsm):
    store = backend.open(create=True)
    log = AuditLog(tmp_path / "audit.db", durable=False)
    clock = datetime.fromtimestamp(T0, UTC)
    ac = AccessControl(store, log, clock=lambda: clock, seal=seal_on(store, hsm, log))
    with store.transaction():
        store.add_secret(_secret(PATH))
        store.add_secret(_secret(RULED))
    add_approvers(store, T0)
    for n in ("alice", "root"):
        store.add_participant(ParticipantRow(name=n, role="custodian", public=KEYS[n].public,
                              fingerprint=n * 4, valid_from=T0 - 10, valid_until=T0 + 10**8,
                              revoked_at=None, enrolled_by="root"))  # fmt: skip
        ac.add_principal(n, kind="person", role="super-admin" if n == "root" else
                         "service-admin", services=() if n == "root" else ("payments",),
                         public=KEYS[n].public, x25519=_xpub(ENC[n]), by="root")  # fmt: skip
    _p, token = ac.add_principal("svc", kind="service", role="service-user",
                                 services=("payments",), by="root")  # fmt: skip
    ac.add_principal("gone", kind="service", role="service-user", services=("payments",),
                     by="root")  # fmt: skip
    ac.revoke("gone", by="root")
    flow = GrantFlow(ac, "dep-1")
    set_rule(flow, ac.principal("root"), "prod", RULED, needed=2)
    for gid in ("g-live", "g-revoked"):
        add_signed_grant(store, gid, "svc", "prod", PATH, actions=("read",),
                         not_before=T0 - 60, not_after=T0 + 3600)  # fmt: skip
    flow.revoke("g-revoked", ac.principal("root"), reason="incident")
    with ac.sealed():  # an enrolment row written with the token (Mfa.enrol does the same)
        store.add_mfa_enrolment(MfaRow(principal="alice", object_uid=b"u" * 16, digits=6,
                                       period=30, algorithm="SHA1",
                                       enrolled_at="2026-01-01T00:00:00+00:00"))  # fmt: skip
    ac.check_rows()
    yield ac, store, log, token
    log.close()
    store.close()


def _raw(store, sql: str, params: tuple = ()) -> None:
    with store.tx() as c:
        c.execute(sql, params)


def _refused(ac: AccessControl, log: AuditLog, token: str) -> None:
    """Every deciding read refuses, and the refusal is audited."""
    svc = ac.operator("root")
    with pytest.raises(IntegrityError, match="fail their seal"):
        ac.authorize(svc, "read", "prod", PATH)
    with pytest.raises(IntegrityError):
        ac.authenticate_token(token)
    with pytest.raises(IntegrityError):
        ac.principal("alice")
    entries = [e for e in map(json.loads, log.lines()) if e["op"] == "access seal"]
    assert entries and entries[-1]["outcome"] == "failed"


def test_writes_through_access_control_keep_the_seal(world):
    ac, _store, _log, token = world
    assert ac.authenticate_token(token).name == "svc"
    assert ac.authorize(ac.operator("root"), "read", "prod", PATH).allow
    new = ac.new_token("svc", by="root")
    assert ac.authenticate_token(new).name == "svc"
    ac.revoke("svc", by="root", token_only=True)
    with pytest.raises(AuthError):
        ac.authenticate_token(new)


def test_a_clean_check_is_remembered_until_another_connection_writes(world, hsm):
    """A long-lived caller (the server) skips the digest while the store's change counter
    stays the same; a row the disk operator writes from another connection moves it."""
    ac, store, log, token = world
    if store.change_counter() is None:
        pytest.skip("this engine gives no change counter: every check reads the rows")
    ac.check_rows()
    assert store.change_counter() == store.change_counter()  # reads do not move it
    ac.check_rows()  # remembered: passes without reading the rows again
    other = sqlite3.connect(store.path)  # another process with the file
    other.execute("UPDATE principals SET role='super-admin' WHERE name='svc'")
    other.commit()
    other.close()
    _refused(ac, log, token)


PRINCIPAL_ATTACKS = {
    "edit role": ("UPDATE principals SET role='super-admin' WHERE name='svc'", ()),
    "edit services": ("UPDATE principals SET services='payments,billing' WHERE name='svc'", ()),
    "edit envs": ("UPDATE principals SET envs='prod' WHERE name='svc'", ()),
    "edit kind": ("UPDATE principals SET kind='person' WHERE name='svc'", ()),
    "swap x25519": ("UPDATE principals SET x25519=? WHERE name='alice'", (_xpub(ENC["root"]),)),
    "swap public": ("UPDATE principals SET public=? WHERE name='alice'", (KEYS["root"].public,)),
    "swap token hash": ("UPDATE principals SET token_hash=? WHERE name='svc'", (b"h" * 32,)),
    "swap token salt": ("UPDATE principals SET token_salt=? WHERE name='svc'", (b"s" * 16,)),
    "swap token id": ("UPDATE principals SET token_id='0000000000000000' WHERE name='svc'", ()),
    "clear revocation": ("UPDATE principals SET revoked_at=NULL WHERE name='gone'", ()),
    "clear token revocation": (
        "UPDATE principals SET token_revoked_at=NULL, revoked_at=NULL WHERE name='gone'",
        (),
    ),
    "delete": ("DELETE FROM principals WHERE name='gone'", ()),
}


@pytest.mark.parametrize("attack", list(PRINCIPAL_ATTACKS))
def test_a_principal_row_edited_or_deleted_without_the_token_is_refused(world, attack):
    ac, store, log, token = world
    _raw(store, *PRINCIPAL_ATTACKS[attack])
    _refused(ac, log, token)


def test_a_principal_inserted_without_the_token_is_refused(world):
    ac, store, log, token = world
    m = tk.mint()  # the operator's own token, its hash written straight to the store
    store.add_principal(PrincipalRow(name="ghost", kind="service", role="service-admin",
                        services=("payments",), envs=(), created=T0, created_by="root",
                        token_id=m.token_id, token_salt=m.salt, token_hash=m.digest,
                        token_created=T0))  # fmt: skip
    with pytest.raises(IntegrityError):
        ac.authenticate_token(m.token)
    _refused(ac, log, token)


MFA_ATTACKS = {
    "delete": ("DELETE FROM mfa_enrolments WHERE principal='alice'", ()),
    "rebind": ("UPDATE mfa_enrolments SET principal='root' WHERE principal='alice'", ()),
    "swap object": ("UPDATE mfa_enrolments SET object_uid=? WHERE principal='alice'", (b"v" * 16,)),
    "insert": (
        "INSERT INTO mfa_enrolments(principal, object_uid, digits, period, algorithm, "
        "enrolled_at, failures) VALUES('svc', ?, 6, 30, 'SHA1', 'x', 0)",
        (b"w" * 16,),
    ),
}


@pytest.mark.parametrize("attack", list(MFA_ATTACKS))
def test_an_mfa_enrolment_changed_without_the_token_is_refused(world, attack):
    ac, store, log, token = world
    _raw(store, *MFA_ATTACKS[attack])
    _refused(ac, log, token)


def test_the_counters_a_code_check_moves_are_not_sealed(world):
    ac, store, _log, token = world
    store.use_mfa_step("alice", 5, now="2026-01-01T00:00:30+00:00")  # what Mfa.verify writes
    with store.transaction():
        store.fail_mfa("alice", limit=5, locked_until="2026-01-01T00:02:00+00:00")
    assert ac.authenticate_token(token).name == "svc"


RULE_ATTACKS = {
    "delete": ("DELETE FROM release_rules", ()),
    "lower quorum": ("UPDATE release_rules SET needed=1", ()),
    "insert": (
        "INSERT INTO release_rules(env, path, mode, needed, set_by, created) "
        "VALUES('prod', 'payments/db/password', 'quorum', 1, 'root', 0)",
        (),
    ),
}


@pytest.mark.parametrize("attack", list(RULE_ATTACKS))
def test_a_release_rule_changed_without_the_token_is_refused(world, attack):
    ac, store, log, token = world
    _raw(store, *RULE_ATTACKS[attack])
    _refused(ac, log, token)


GRANT_ATTACKS = {
    "clear": ("UPDATE grants SET revoked_at=NULL, revoked_by=NULL WHERE id='g-revoked'", ()),
    "postdate": ("UPDATE grants SET revoked_at=? WHERE id='g-revoked'", (T0 + 10**6,)),
    "delete the row": ("DELETE FROM grants WHERE id='g-revoked'", ()),
}


@pytest.mark.parametrize("attack", list(GRANT_ATTACKS))
def test_a_sealed_grant_revocation_undone_without_the_token_is_refused(world, attack):
    ac, store, log, token = world
    _raw(store, *GRANT_ATTACKS[attack])
    _refused(ac, log, token)


def test_a_revocation_made_without_the_token_is_kept_and_absorbed(world):
    """A grant revoked without the PIN (a service giving up its own) only takes access
    away: accepted, sealed by the next token-open check, and then it cannot be undone."""
    ac, store, log, token = world
    assert store.revoke_grant("g-live", now=T0, by="svc", reason="done")
    assert ac.authenticate_token(token).name == "svc"  # accepted, and absorbed
    assert "g-live" in store.get_meta(REVOKED_META)
    _raw(store, "UPDATE grants SET revoked_at=NULL WHERE id='g-live'")
    _refused(ac, log, token)


@pytest.mark.parametrize("meta", [SEAL_META, REVOKED_META, ROSTER_META, SECRETS_META, GEN_META])
def test_a_deleted_or_replayed_seal_is_refused(world, meta):
    ac, store, log, token = world
    old = store.get_meta(meta)
    GrantFlow(ac, "dep-1").revoke("g-live", ac.principal("root"), reason="sealed")
    renewed = meta in (SEAL_META, REVOKED_META, GEN_META)
    assert (store.get_meta(meta) != old) == renewed  # the revocation renewed these
    _raw(store, "DELETE FROM meta WHERE key=?", (meta,))
    _refused(ac, log, token)
    if renewed:
        store.set_meta(meta, old)  # the value from before the revocation: replayed
        with pytest.raises(IntegrityError):
            ac.authenticate_token(token)


def test_first_use_seals_an_unsealed_home_and_another_key_refuses(world, hsm):
    ac, store, log, token = world
    first = AccessControl(store, log, seal=seal_on(store, hsm, log))  # a key never used
    with pytest.raises(IntegrityError, match="no access-seal key"):
        first.authenticate_token(token)  # the store is sealed already: not re-sealed
    _raw(store, "DELETE FROM meta WHERE key=?", (SEAL_META,))
    assert first.authenticate_token(token).name == "svc"  # first use: sealed as it is
    entries = [e for e in map(json.loads, log.lines()) if e["op"] == "access seal"]
    assert entries[-1]["outcome"] == "ok" and entries[-1]["details"] == {"first_use": True}
    with pytest.raises(IntegrityError):
        ac.authenticate_token(token)  # the old key's seal is gone: refused, not re-made
