"""Staged retirement rules, on a real SQLite store (no HSM needed: nothing is decrypted)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from custody.clock import iso
from custody.config import Config, HsmConfig
from custody.errors import PolicyError, UsageError
from custody.keys.hierarchy import KeyHierarchy
from custody.model import KeyState
from custody.rekey.retire import advance_retirement, cancel_destroy
from custody.rekey.status import status
from custody.store.sqlite import SqliteStore as Store

T0 = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def h(tmp_path: Path) -> KeyHierarchy:
    store = Store.open(tmp_path / "c.db", create=True)
    now = iso(T0)
    with store.tx() as c:
        c.execute(
            "INSERT INTO root_versions(version, state, kcv, epoch, blob, created, "
            "state_changed) VALUES(1,'active','abcdef',NULL,NULL,?,?)",
            (now, now),
        )
        for branch in ("data", "backup"):
            c.execute(
                "INSERT INTO kek_versions VALUES(?,1,'decrypt-only','aaaaaa',1,X'01',?,?,NULL)",
                (branch, now, now),
            )
            c.execute(
                "INSERT INTO kek_versions VALUES(?,2,'active','bbbbbb',1,X'02',?,?,NULL)",
                (branch, now, now),
            )
        c.execute(
            "INSERT INTO objects(uid, kind, branch, kek_version, wrapped, digest, created, "
            "updated) VALUES(X'00', 'dek', 'data', 1, X'00', X'00', ?, ?)",
            (now, now),
        )
    return KeyHierarchy(store, None, clock=lambda: T0)


def _raw(h: KeyHierarchy) -> Store:
    """The SQLite adapter under the port, for the test's own raw SQL."""
    assert isinstance(h.store, Store)
    return h.store


def cfg(delay: int = 7) -> Config:
    return Config(deployment_id="t", created=iso(T0), hsm=HsmConfig(), destroy_delay_days=delay)


def state(h: KeyHierarchy, branch: str, version: int) -> KeyState:
    return next(k.state for k in h.keks(branch) if k.version == version)


def test_disable_refused_while_version_wraps_an_object(h: KeyHierarchy) -> None:
    with pytest.raises(PolicyError, match="still wraps 1 object"):
        h.set_kek_state("data", 1, KeyState.DISABLED)
    assert state(h, "data", 1) is KeyState.DECRYPT_ONLY


def test_active_cannot_skip_to_disabled_or_be_doubled(h: KeyHierarchy) -> None:
    with pytest.raises(PolicyError):
        h.set_kek_state("data", 2, KeyState.DISABLED)
    with pytest.raises(PolicyError, match="already has an active"):
        h.set_kek_state("data", 1, KeyState.ACTIVE)
    with pytest.raises(UsageError):
        h.set_kek_state("data", 9, KeyState.DISABLED)


def test_advance_leaves_used_versions_and_retires_empty_ones(h: KeyHierarchy) -> None:
    steps = advance_retirement(h, cfg(), now=T0)
    assert steps == [
        "backup/v1: disabled",
        f"backup/v1: destroy scheduled after {iso(T0 + timedelta(days=7))}",
    ]
    assert state(h, "data", 1) is KeyState.DECRYPT_ONLY
    assert state(h, "data", 2) is KeyState.ACTIVE and state(h, "backup", 2) is KeyState.ACTIVE


def test_backup_catalog_blocks_retirement(h: KeyHierarchy) -> None:
    with _raw(h).tx() as c:
        c.execute("INSERT INTO backups VALUES(X'11', '/b', 1, 10, 'x', 'x')")
    assert advance_retirement(h, cfg(), now=T0) == []
    with pytest.raises(PolicyError, match="still wraps 1"):
        h.set_kek_state("backup", 1, KeyState.DISABLED)


def test_destroy_only_after_delay_and_erases_the_sealed_key(h: KeyHierarchy) -> None:
    advance_retirement(h, cfg(delay=7), now=T0)
    with pytest.raises(PolicyError, match="may not be destroyed"):
        h.set_kek_state("backup", 1, KeyState.DESTROYED, now=T0 + timedelta(days=6))
    assert advance_retirement(h, cfg(), now=T0 + timedelta(days=6, hours=23)) == []
    assert advance_retirement(h, cfg(), now=T0 + timedelta(days=7)) == ["backup/v1: destroyed"]
    assert state(h, "backup", 1) is KeyState.DESTROYED
    (wrapped,) = _raw(h).query(
        "SELECT wrapped FROM kek_versions WHERE branch='backup' AND version=1"
    )[0]
    assert bytes(wrapped) == b""
    with pytest.raises(PolicyError):
        h.set_kek_state("backup", 1, KeyState.DECRYPT_ONLY)


def test_cancel_destroy_holds_the_version(h: KeyHierarchy) -> None:
    advance_retirement(h, cfg(), now=T0)
    k = cancel_destroy(h, "backup", 1, now=T0)
    assert k.state is KeyState.DISABLED and k.destroy_after is None
    assert advance_retirement(h, cfg(), now=T0 + timedelta(days=30)) == []
    st = status(h, cfg(), now=T0)
    v = next(v for v in st["versions"] if (v["branch"], v["version"]) == ("backup", 1))
    assert v["hold"] is True and v["state"] == "disabled"
    with pytest.raises(PolicyError, match="not destroy-scheduled"):
        cancel_destroy(h, "backup", 1, now=T0)
    # disabled can go back to decrypt-only if the key is needed again
    assert h.set_kek_state("backup", 1, KeyState.DECRYPT_ONLY).state is KeyState.DECRYPT_ONLY


def test_status_reports_pending_policy_and_no_lease(h: KeyHierarchy) -> None:
    st = status(h, cfg(), now=T0 + timedelta(days=1))
    assert st["pending"] == [{"branch": "data", "version": 1, "objects": 1}]
    assert st["lease"] is None
    assert {p["key"] for p in st["policy"]} == {"data", "backup", "secrets", "root"}
