"""The audit log: chain, HMACs, fail-closed guard, checkpoints, proofs, tamper detection."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from custody.audit.log import AuditLog
from custody.audit.records import check_proof
from custody.audit.signers import Ed25519Signer, TrustKey
from custody.errors import AuditError, PolicyError

SIGNER = Ed25519Signer.from_seed("audit-key", b"\x07" * 32)
OTHER = Ed25519Signer.from_seed("other", b"\x08" * 32)
TRUST = [TrustKey.of(SIGNER)]
KEY = b"k" * 32


def filled(tmp_path: Path, n: int = 40) -> AuditLog:
    log = AuditLog(tmp_path / "audit.db", audit_key=KEY, durable=False, clock=lambda: 1_800_000_000)
    for i in range(n):
        log.append(
            "secret.get",
            f"svc{i % 3}/db",
            "alice",
            details={"i": i},
            sensitive={"secret_name": f"name-{i}"},
        )
        if i in (9, 29):
            log.checkpoint(SIGNER)
    return log


def test_append_verify_checkpoint_proof(tmp_path: Path) -> None:
    log = filled(tmp_path)
    log.checkpoint(SIGNER)
    rep = log.verify(TRUST)
    assert rep.ok and rep.entries == 40 and rep.checkpoints == 3, rep
    for i in (0, 9, 10, 39):
        assert "is in the log at tree size 40" in check_proof(log.proof(i), TRUST)
    assert not log.verify([TrustKey.of(OTHER)]).ok  # only pinned keys count
    assert log.verify(None).ok


def test_values_only_as_hmac(tmp_path: Path) -> None:
    log = filled(tmp_path, 3)
    log.close()
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("audit.db*"))
    assert b"name-1" not in raw
    log = AuditLog(tmp_path / "audit.db", audit_key=KEY)
    e = json.loads(log.lines(1, 2)[0])
    assert e["details"]["secret_name_hmac"] == log.hmac("secret_name", "name-1")
    with pytest.raises(ValueError):
        log.append("secret.put", "x", "bob", details={"value": "hunter2"})
    with pytest.raises(ValueError):
        AuditLog(tmp_path / "audit.db").append("x", "y", "z", sensitive={"a": "b"})


def test_guard_logs_outcomes(tmp_path: Path) -> None:
    log = filled(tmp_path, 0)
    with log.guard("key.rotate", "data/v2", "dave"):
        pass
    with pytest.raises(PolicyError), log.guard("key.rotate", "data/v3", "mallory"):
        raise PolicyError("quorum not met")
    with pytest.raises(RuntimeError), log.guard("key.rotate", "data/v3", "dave"):
        raise RuntimeError("hsm gone")
    outcomes = [json.loads(x)["outcome"] for x in log.lines()]
    assert outcomes == ["intent", "ok", "intent", "denied", "intent", "failed"]


def test_unwritable_log_refuses_operation(tmp_path: Path) -> None:
    log = filled(tmp_path, 2)
    blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock and never lets go
    slow = AuditLog(tmp_path / "audit.db", timeout=0.2, durable=False)
    ran = False
    with pytest.raises(AuditError) as ei, slow.guard("secret.get", "svc/db", "alice"):
        ran = True
    assert not ran and "refused" in ei.value.title
    blocker.execute("ROLLBACK")
    assert log.size() == 2


def test_corrupt_database_refuses(tmp_path: Path) -> None:
    (tmp_path / "audit.db").write_bytes(b"not a database" * 100)
    with pytest.raises(AuditError):
        AuditLog(tmp_path / "audit.db").append("a", "b", "c")


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE entries SET line = replace(line, 'svc1', 'svc9') WHERE seq = 4",
        "DELETE FROM entries WHERE seq = 12",
        "DELETE FROM entries WHERE seq = 39",
        "UPDATE checkpoints SET line = replace(line, '\"tree_size\":10', '\"tree_size\":11')",
    ],
)
def test_tampering_detected(tmp_path: Path, tamper: str) -> None:
    log = filled(tmp_path)
    log.checkpoint(SIGNER)
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    db.execute(tamper.replace("replace(line,", "replace(CAST(line AS TEXT),"))
    db.close()
    assert not log.verify(TRUST).ok


def test_tampered_proof_rejected(tmp_path: Path) -> None:
    log = filled(tmp_path)
    doc = log.proof(5)
    bad = json.loads(json.dumps(doc))
    bad["entry"]["outcome"] = "denied"
    with pytest.raises(AuditError):
        check_proof(bad, TRUST)
    with pytest.raises(AuditError):
        check_proof(doc, [TrustKey.of(OTHER)])
    bad = json.loads(json.dumps(doc))
    bad["leaf_index"] = 6
    with pytest.raises(AuditError):
        check_proof(bad, TRUST)
    with pytest.raises(AuditError):
        check_proof({"type": "nope"}, TRUST)
    (tmp_path / "x").mkdir()
    with pytest.raises(AuditError):
        filled(tmp_path / "x", 3).proof(1)


def test_hsm_audit_key_signs_checkpoints(softhsm_token, tmp_path: Path) -> None:
    adapter = pytest.importorskip("custody.hsm.pkcs11.adapter")
    from custody.audit.signers import HsmSigner
    from custody.config import HsmConfig

    conf, label, pin = softhsm_token
    hsm = adapter.open_hsm(HsmConfig(token_label=label), Path(conf).parent, pin)
    try:
        signer = HsmSigner("hsm-audit", hsm, "audit")
        log = filled(tmp_path, 5)
        log.checkpoint(signer)
        assert log.verify([TrustKey.of(signer)]).ok
        assert check_proof(log.proof(3), [TrustKey.of(signer)])
    finally:
        hsm.close()
