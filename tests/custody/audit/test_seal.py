"""The chain sealed with an HMAC under a token-held key (real SoftHSMv2): someone who can
write audit.db but does not hold the token cannot recompute a seal that verifies."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import uuid
from pathlib import Path

import pytest

from custody.audit.log import AuditLog
from custody.audit.records import chain_hash, genesis, seal_input
from custody.audit.signers import HsmSealer
from custody.canonical import canonical_bytes
from custody.errors import KeyNotFound

pytestmark = pytest.mark.hsm


def _rechain(path: Path, seq: int, *, forge_seals_with: bytes | None = None) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    log_id = db.execute("SELECT v FROM meta WHERE k='log_id'").fetchone()[0]
    rows = db.execute("SELECT seq, line FROM entries ORDER BY seq").fetchall()
    prev = genesis(log_id)
    db.execute("BEGIN")
    for s, line in rows:
        e = json.loads(line)
        if s == seq:
            e["actor"] = "mallory"
        e["prev"] = prev.hex()
        new = canonical_bytes(e)
        prev = chain_hash(new)
        db.execute("UPDATE entries SET line = ?, chain = ? WHERE seq = ?", (new, prev, s))
        if forge_seals_with is not None:  # the best an attacker without the token can do
            mac = hmac.new(forge_seals_with, seal_input(log_id, s, prev), hashlib.sha256)
            db.execute("UPDATE seals SET mac = ? WHERE seq = ?", (mac.digest(), s))
    db.execute("COMMIT")
    db.close()


@pytest.fixture
def sealed(hsm, tmp_path: Path) -> tuple[AuditLog, HsmSealer]:
    sealer = HsmSealer(hsm, f"mac{uuid.uuid4().hex[:8]}", create=True)
    log = AuditLog(tmp_path / "audit.db", sealer=sealer)
    for i in range(12):
        log.append("secret.get", f"svc/{i}", "alice", details={"i": i})
    return log, sealer


def test_sealed_log_verifies_and_the_key_stays_on_the_token(sealed, hsm) -> None:
    log, sealer = sealed
    rep = log.verify(sealer=sealer)
    assert rep.ok and "sealed by the token's MAC key up to entry 11" in rep.notes, rep
    assert log.verify().ok  # a reader without the token still verifies the chain
    with pytest.raises(KeyNotFound):
        hsm.mac("no-such-mac-key", b"x")
    assert len(sealer.mac(b"x")) == 32 and sealer.mac(b"x") == sealer.mac(b"x")


def test_a_rechained_log_fails_the_seal(sealed, tmp_path: Path) -> None:
    log, sealer = sealed
    _rechain(tmp_path / "audit.db", 4)
    assert log.verify().ok  # the unkeyed chain was recomputed and verifies...
    rep = log.verify(sealer=sealer)
    assert not rep.ok and "rewritten by someone without the token" in rep.problems[0]


def test_seals_recomputed_without_the_token_fail(sealed, tmp_path: Path) -> None:
    log, sealer = sealed
    _rechain(tmp_path / "audit.db", 4, forge_seals_with=b"guessed key" * 3)
    rep = log.verify(sealer=sealer)
    assert not rep.ok and "rewritten by someone without the token" in rep.problems[0]


def test_deleted_or_truncated_seals_fail(sealed, tmp_path: Path) -> None:
    log, sealer = sealed
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    db.execute("DELETE FROM entries WHERE seq >= 8")  # the seal of entry 11 is now beyond
    db.close()
    rep = log.verify(sealer=sealer)
    assert not rep.ok and "beyond the log's 8 entries" in rep.problems[0]
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    db.execute("DELETE FROM seals")
    db.close()
    rep = log.verify(sealer=sealer)
    assert not rep.ok and "no seal" in rep.problems[0]


def test_seal_of_an_unsealed_log(hsm, tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db", durable=False)
    for i in range(3):
        log.append("secret.get", "svc", "bob", details={"i": i})
    sealer = HsmSealer(hsm, f"mac{uuid.uuid4().hex[:8]}", create=True)
    assert not log.verify(sealer=sealer).ok  # never sealed
    assert log.seal(sealer) == 2
    assert log.verify(sealer=sealer).ok
    log.append("secret.get", "svc", "bob")
    rep = log.verify(sealer=sealer)
    assert rep.ok and "1 entries after the newest seal" in rep.notes
