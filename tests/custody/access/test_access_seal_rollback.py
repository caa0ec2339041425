"""The access seal's newer coverage against the operator with the disk, acting alone (no
PIN): the participants roster and each secret's category and class, and a rollback of the
whole access state together with the seal it had then (a monotonic generation on the
token, :mod:`custody.hsm.pkcs11.counters`). Real store on each adapter, real SoftHSMv2
token, real audit log; every refusal is an audited IntegrityError."""

from __future__ import annotations

import json
from typing import Any

import pytest

from custody.access import AccessControl
from custody.access import tokens as tk
from custody.access.flow import GrantFlow
from custody.access.seal import (
    DOMAIN_V1,
    GEN_META,
    ROSTER_META,
    SEAL_META,
    SECRETS_META,
    counter_label,
    state_digest_v1,
)
from custody.errors import IntegrityError
from custody.store.rows import ParticipantRow, PrincipalRow
from tests.custody.access import test_access_seal as base
from tests.custody.access.grant_fixtures import APPROVERS
from tests.custody.access.test_access_seal import PATH, T0, _raw, _refused, _secret

world = base.world  # the same sealed world: principals, grants, rules, roster, secrets

pytestmark = pytest.mark.hsm


def _gen(store: Any) -> int:
    return int(store.get_meta(GEN_META))


# -- the participants roster --------------------------------------------------------------
ROSTER_ATTACKS = {
    "extend validity": ("UPDATE participants SET valid_until=? WHERE name='sa1'", (T0 + 10**9,)),
    "move validity back": ("UPDATE participants SET valid_from=0 WHERE name='sa1'", ()),
    "swap key": ("UPDATE participants SET public=? WHERE name='sa1'", (b"\x01" * 32,)),
    "change role": ("UPDATE participants SET role='coordinator' WHERE name='sa1'", ()),
    "delete": ("DELETE FROM participants WHERE name='sa2'", ()),
}


@pytest.mark.parametrize("attack", list(ROSTER_ATTACKS))
def test_a_sealed_participant_changed_without_the_token_is_refused(world, attack):
    ac, store, log, token = world
    assert {"sa1", "sa2", "alice", "root"} <= ac.seal.trusted_participants()
    _raw(store, *ROSTER_ATTACKS[attack])
    _refused(ac, log, token)


def test_a_participant_revoked_without_the_pin_is_absorbed_and_cannot_be_undone(world):
    """The enrol ceremony revokes a participant without the PIN: that only takes trust
    away, so the next check accepts and seals it; clearing it again is refused."""
    ac, store, log, token = world
    assert store.revoke_participant("sa2", now=T0)
    assert ac.authenticate_token(token).name == "svc"  # accepted, and absorbed
    sealed = {e[0]: e for e in json.loads(store.get_meta(ROSTER_META))}
    assert sealed["sa2"][-1] == T0
    _raw(store, "UPDATE participants SET revoked_at=NULL WHERE name='sa2'")
    _refused(ac, log, token)


def _mallory() -> Any:
    from custody.audit.signers import Ed25519Signer

    return Ed25519Signer.from_seed("mallory", b"mallory".ljust(32, b"#"))


def _add_mallory_participant(store: Any) -> Any:
    k = _mallory()
    store.add_participant(ParticipantRow(name="mallory", role="custodian", public=k.public,
                          fingerprint="m" * 16, valid_from=T0 - 10, valid_until=T0 + 10**8,
                          revoked_at=None, enrolled_by="root"))  # fmt: skip
    return k


def test_a_participant_inserted_without_the_token_approves_nothing(world):
    """The operator inserts a roster participant with their own key: the seal still
    checks (an enrolment made without the PIN is not a tamper), but the participant is
    not trusted, and their key is no approver's."""
    ac, store, _log, token = world
    k = _add_mallory_participant(store)
    assert ac.authenticate_token(token).name == "svc"
    assert "mallory" not in ac.seal.trusted_participants()
    assert "mallory" not in {m.name for m in ac.participants()}
    assert ac._approvers({"mallory", "sa1"}, "prod", PATH, None, T0) == {APPROVERS[0].public: "sa1"}
    with pytest.raises(Exception, match="not a live person principal"):
        GrantFlow(ac, "dep-1").approver_of(k)
    ac.check_rows()  # a re-seal (here: a later check) does not adopt it either
    GrantFlow(ac, "dep-1").revoke("g-live", ac.principal("root"), reason="re-seal")
    assert "mallory" not in ac.seal.trusted_participants()


def test_a_participant_and_its_super_admin_principal_forged_together_are_refused(world):
    ac, store, log, token = world
    k = _add_mallory_participant(store)
    store.add_principal(PrincipalRow(name="mallory", kind="person", role="super-admin",
                        services=(), envs=(), created=T0, created_by="root",
                        public=k.public))  # fmt: skip
    _refused(ac, log, token)


def test_a_super_admin_adding_the_principal_vouches_for_its_participant(world):
    ac, store, _log, _token = world
    k = _add_mallory_participant(store)  # enrolled (the ceremony runs without the PIN)
    ac.add_principal("mallory", kind="person", role="super-admin", public=k.public, by="root")
    assert "mallory" in ac.seal.trusted_participants()
    assert GrantFlow(ac, "dep-1").approver_of(k).name == "mallory"


# -- each secret's category and class ------------------------------------------------------
SECRET_ATTACKS = {
    "downgrade class": ("UPDATE secrets SET class='low' WHERE path=?", (PATH,)),
    "upgrade class": ("UPDATE secrets SET class='high' WHERE path=?", (PATH,)),
    "change category": ("UPDATE secrets SET category='generic' WHERE path=?", (PATH,)),
    "delete": ("DELETE FROM secrets WHERE path=?", (PATH,)),
}


@pytest.mark.parametrize("attack", list(SECRET_ATTACKS))
def test_a_sealed_secret_class_or_category_changed_is_refused(world, attack):
    ac, store, log, token = world
    _raw(store, *SECRET_ATTACKS[attack])
    _refused(ac, log, token)


def test_a_secret_row_inserted_without_the_token_counts_as_high(world):
    """A secret row that was never sealed (not made through the vault with the token):
    its class is not believed, whatever it says, so a grant on it needs the high-class
    quorum."""
    ac, store, _log, token = world
    from dataclasses import replace

    with store.transaction():
        store.add_secret(replace(_secret("payments/new/key"), security_class="low"))
    assert ac.authenticate_token(token).name == "svc"
    row = store.secret("prod", "payments/new/key")
    assert row.security_class == "low" and ac.class_of(row) == "high"
    assert ac.class_of(store.secret("prod", PATH)) == "medium"  # sealed: believed
    flow = GrantFlow(ac, "dep-1")
    assert flow._class_of("prod", "payments/new/key") == "high"
    assert flow._class_of("prod", "payments/") == "high"


def test_a_secret_created_through_a_sealed_write_keeps_its_class(world):
    ac, store, _log, _token = world
    with ac.seal.write(secrets=[("prod", "payments/new/key")]):
        store.add_secret(_secret("payments/new/key"))
    assert ac.class_of(store.secret("prod", "payments/new/key")) == "medium"
    assert ["prod", "payments/new/key", "database-credential", "medium"] in json.loads(
        store.get_meta(SECRETS_META)
    )


# -- rollback -------------------------------------------------------------------------------
TABLES = ("meta", "principals", "participants", "secrets", "grants", "mfa_enrolments",
          "release_rules")  # fmt: skip


def _columns(store: Any, table: str) -> list[str]:
    if type(store).__name__ == "SqliteStore":
        return [r[1] for r in store.query(f"PRAGMA table_info({table})")]
    return [r[0] for r in store.query("SELECT column_name FROM information_schema.columns "
            "WHERE table_name=? ORDER BY ordinal_position", (table,))]  # fmt: skip


def _snapshot(store: Any) -> dict[str, list[dict[str, Any]]]:
    """Every row of the access tables and the meta table (seal included): what a copy of
    the database keeps of them."""
    out = {}
    for t in TABLES:
        cols = _columns(store, t)
        rows = store.query(f"SELECT {', '.join(cols)} FROM {t}")
        out[t] = [dict(zip(cols, r, strict=True)) for r in rows]
    return out


def _restore(store: Any, snap: dict[str, list[dict[str, Any]]]) -> None:
    """Put the snapshot back, as restoring the old copy of the database would."""
    with store.tx() as c:
        for t, rows in snap.items():
            c.execute(f"DELETE FROM {t}")
            for r in rows:
                cols = ", ".join(r)
                marks = ", ".join("?" for _ in r)
                c.execute(f"INSERT INTO {t}({cols}) VALUES({marks})", tuple(r.values()))


def test_a_rolled_back_store_with_its_old_seal_is_refused(world):
    """Copy the access state with its then-valid seal, revoke a principal and a grant with
    the token, put the copy back: the revoked token and grant must not come back."""
    ac, store, log, token = world
    old = _snapshot(store)
    g0 = _gen(store)
    GrantFlow(ac, "dep-1").revoke("g-live", ac.principal("root"), reason="incident")
    ac.revoke("svc", by="root")
    assert _gen(store) > g0
    _restore(store, old)
    assert _gen(store) == g0 and store.grant("g-live").revoked_at is None
    with pytest.raises(IntegrityError, match="rolled back"):
        ac.authenticate_token(token)
    fresh = AccessControl(store, log, seal=type(ac.seal)(store, ac.seal._token, ac.seal.label,
                                                         log))  # fmt: skip
    with pytest.raises(IntegrityError, match="rolled back"):
        fresh.authenticate_token(token)  # not a cache: another opening refuses too
    _refused(ac, log, token)


def test_a_rollback_to_the_very_pair_a_long_lived_caller_checked_is_refused(world):
    """A server checked (rows, seal) at generation g and keeps it cached; another process
    seals g+1; the operator restores the state of g: the cache must not accept it."""
    ac, store, log, token = world
    assert ac.authenticate_token(token).name == "svc"  # cached here
    old = _snapshot(store)
    other = AccessControl(store, log, seal=type(ac.seal)(store, ac.seal._token, ac.seal.label,
                                                         log))  # fmt: skip
    GrantFlow(other, "dep-1").revoke("g-live", other.principal("root"), reason="elsewhere")
    _restore(store, old)
    with pytest.raises(IntegrityError, match="rolled back"):
        ac.authenticate_token(token)


def test_a_seal_committed_before_its_token_update_is_accepted_and_carried_forward(world):
    """A process that stopped between the store commit and the token update leaves the
    seal one generation ahead: accepted, and the token brought forward, so the state before
    it can no longer be put back."""
    ac, store, _log, token = world
    seal = ac.seal
    before = _snapshot(store)
    on_token = seal._token.counter(seal.counter)
    with store.transaction():
        store.revoke_grant("g-live", now=T0, by="root", reason="crash")
        seal.reseal()
    seal._pending = None  # the process stopped here: the token was not advanced
    assert seal._token.counter(seal.counter) == on_token and _gen(store) == on_token + 1
    assert ac.authenticate_token(token).name == "svc"
    assert seal._token.counter(seal.counter) == on_token + 1
    _restore(store, before)
    with pytest.raises(IntegrityError, match="rolled back"):
        ac.authenticate_token(token)


def test_the_token_counter_never_goes_back(hsm):
    import uuid

    label = counter_label(f"access-seal-{uuid.uuid4().hex}")
    assert hsm.counter(label) is None
    assert hsm.advance_counter(label, 3) == 3
    assert hsm.advance_counter(label, 2) == 3  # a slower process advancing less: kept
    assert hsm.counter(label) == 3
    assert hsm.advance_counter(label, 7) == 7 and hsm.counter(label) == 7


def test_a_refused_rollback_is_recovered_only_by_a_deliberate_reseal(world):
    ac, store, _log, token = world
    old = _snapshot(store)
    GrantFlow(ac, "dep-1").revoke("g-live", ac.principal("root"), reason="incident")
    _restore(store, old)
    with pytest.raises(IntegrityError):
        ac.authenticate_token(token)
    with store.transaction():  # what 'custody access seal' does, after review
        ac.seal.reseal(everything=True, by="root")
    ac.seal.advance()
    assert ac.authenticate_token(token).name == "svc"


# -- a seal made before this coverage -------------------------------------------------------
def _v1_seal(store: Any, seal: Any) -> None:
    """Write the seal as custody wrote it before the roster, secrets and generation."""
    revoked = store.get_meta("access_seal_revoked") or "[]"
    mac = seal._token.mac(seal.label, DOMAIN_V1 + state_digest_v1(store, revoked))
    with store.tx() as c:
        c.execute("DELETE FROM meta WHERE key IN (?, ?, ?)", (GEN_META, ROSTER_META,
                                                              SECRETS_META))  # fmt: skip
    store.set_meta(SEAL_META, bytes(mac).hex())


def test_an_older_seal_is_upgraded_once_and_refused_after(world, hsm):
    """A home sealed by the older custody (no counter on the token yet) is checked as it
    was sealed, then re-sealed with the roster, the secrets and a generation. Putting such
    an older seal back afterwards (to shed the counter) is refused."""
    from tests.custody.access.seal_fixtures import seal_on

    _ac, store, log, token = world
    seal = seal_on(store, hsm, log)  # a key of its own and no counter, as an old home has
    hsm.ensure_mac_key(seal.label)
    _v1_seal(store, seal)
    assert seal._token.counter(seal.counter) is None
    old = AccessControl(store, log, seal=seal)
    assert old.authenticate_token(token).name == "svc"
    entries = [e for e in map(json.loads, log.lines()) if e["op"] == "access seal"]
    assert entries[-1]["outcome"] == "ok" and entries[-1]["details"] == {"upgraded": True}
    assert store.get_meta(GEN_META) is not None
    assert (seal._token.counter(seal.counter) or 0) >= 1
    _v1_seal(store, seal)  # the old form again, MAC and all: a downgrade
    with pytest.raises(IntegrityError, match="no generation"):
        old.authenticate_token(token)


def test_an_inserted_principal_is_refused_even_with_the_generation_raised(world):
    """Raising the stored generation (to look newer than the token) does not help: the
    generation is under the HMAC."""
    ac, store, log, token = world
    m = tk.mint()
    store.add_principal(PrincipalRow(name="ghost", kind="service", role="service-admin",
                        services=("payments",), envs=(), created=T0, created_by="root",
                        token_id=m.token_id, token_salt=m.salt, token_hash=m.digest,
                        token_created=T0))  # fmt: skip
    store.set_meta(GEN_META, str(_gen(store) + 1))
    _refused(ac, log, token)


class _CountingToken:
    """The real token, counting the counter reads (each a search of the token's objects)."""

    def __init__(self, token: Any) -> None:
        self._t = token
        self.reads = 0

    def counter(self, label: str) -> int | None:
        self.reads += 1
        return self._t.counter(label)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


def test_a_clean_check_reads_the_token_counter_once_a_second_and_a_rollback_at_once(world):
    """A long-lived caller (the server, twice per read) relies on the counter it read while
    the store is unchanged, for at most TOKEN_RECHECK; a store put back changes the store
    and is refused at the very next check, with the counter read afresh."""
    from custody.access import seal as seal_mod

    ac, store, log, token = world
    if store.change_counter() is None:
        pytest.skip("this engine gives no change counter: every check reads the token")
    counting = _CountingToken(ac.seal._token)
    seal = type(ac.seal)(store, counting, ac.seal.label, log)
    lived = AccessControl(store, log, clock=ac._clock, seal=seal)
    assert lived.authenticate_token(token).name == "svc"
    first = counting.reads
    assert first >= 1
    for _ in range(50):
        lived.authorize(lived.operator("root"), "read", "prod", PATH)
    assert counting.reads == first  # clean and recent: no token search
    seal._token_read_at -= seal_mod.TOKEN_RECHECK  # a second later
    lived.authorize(lived.operator("root"), "read", "prod", PATH)
    assert counting.reads == first + 1
    old = _snapshot(store)
    GrantFlow(ac, "dep-1").revoke("g-live", ac.principal("root"), reason="incident")
    assert lived.authenticate_token(token).name == "svc"  # the new state: checked
    reads = counting.reads
    _restore(store, old)  # the operator puts the old state back, within the second
    with pytest.raises(IntegrityError, match="rolled back"):
        lived.authenticate_token(token)
    assert counting.reads > reads  # refused on a fresh read of the token
