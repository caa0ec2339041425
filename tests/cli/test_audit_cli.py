"""``custody audit ...`` as a real subprocess (HSM-signed checkpoints on a real SoftHSMv2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from custody.audit.log import AuditLog
from custody.audit.signers import Ed25519Signer
from custody.signing import private_to_pem
from tests.conftest import cli_env, passphrase_of, run_cli, write_secret


def _home(tmp_path: Path, n: int = 12) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    log = AuditLog(home / "audit.db", audit_key=b"k" * 32)
    for i in range(n):
        log.append(
            "secret.get",
            f"svc{i}",
            "alice",
            outcome="ok" if i % 4 else "denied",
            sensitive={"name": f"n{i}"},
        )
    log.close()
    return home


def _key(tmp_path: Path) -> tuple[Path, Path]:
    s = Ed25519Signer.from_seed("auditkey", b"\x05" * 32)
    pem = tmp_path / "auditkey.pem"
    pem.write_bytes(private_to_pem(s.key, passphrase_of("auditkey").encode()))
    pw = tmp_path / "pw"
    write_secret(pw, passphrase_of("auditkey") + "\n")
    return pem, pw


def test_checkpoint_proof_check_verify_tail(tmp_path: Path) -> None:
    home = _home(tmp_path)
    pem, pw = _key(tmp_path)
    trust = tmp_path / "trust.json"
    r = run_cli("audit", "proof", "--home", str(home), "--entry", "3")
    assert r.returncode == 6 and "audit checkpoint" in r.stderr
    r = run_cli(
        "audit",
        "checkpoint",
        "--home",
        str(home),
        "--key-file",
        str(pem),
        "--passphrase-file",
        str(pw),
        "--trust-out",
        str(trust),
    )
    assert r.returncode == 0, r.stderr
    assert "tree size 12" in r.stdout
    proof = tmp_path / "p.json"
    r = run_cli("audit", "proof", "--home", str(home), "--entry", "3", "--out", str(proof))
    assert r.returncode == 0, r.stderr
    r = run_cli("audit", "check-proof", str(proof), "--trust", str(trust))
    assert r.returncode == 0 and "entry 3" in r.stdout, r.stderr
    doc = json.loads(proof.read_text())
    doc["entry"]["actor"] = "mallory"
    proof.write_text(json.dumps(doc))
    r = run_cli("audit", "check-proof", str(proof), "--trust", str(trust))
    assert r.returncode == 6 and "not included" in r.stderr
    r = run_cli("audit", "verify", "--home", str(home), "--trust", str(trust), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["entries"] == 12
    r = run_cli("audit", "tail", "--home", str(home), "-n", "3")
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 3
    assert "n11" not in r.stdout and "name_hmac=" in r.stdout


def test_verify_detects_tampering(tmp_path: Path) -> None:
    import sqlite3

    home = _home(tmp_path)
    db = sqlite3.connect(home / "audit.db", isolation_level=None)
    db.execute("DELETE FROM entries WHERE seq = 5")
    db.close()
    r = run_cli("audit", "verify", "--home", str(home))
    assert r.returncode == 6 and "FAIL" in r.stdout


def test_no_log(tmp_path: Path) -> None:
    r = run_cli("audit", "tail", "--home", str(tmp_path))
    assert r.returncode == 6 and "hint:" in r.stderr


@pytest.mark.hsm
def test_checkpoint_with_hsm_audit_key(softhsm_token, tmp_path: Path, pin_file: Path) -> None:
    from custody.config import Config, Home, HsmConfig

    conf, label, _pin = softhsm_token
    home = _home(tmp_path)
    Home(home).write_config(
        Config(
            deployment_id="t",
            created="2026-01-01",
            hsm=HsmConfig(token_label=label, softhsm_conf=str(conf)),
        )
    )
    trust = tmp_path / "hsm.json"
    r = run_cli(
        "audit",
        "checkpoint",
        "--home",
        str(home),
        "--pin-file",
        str(pin_file),
        "--trust-out",
        str(trust),
        env=cli_env(SOFTHSM2_CONF=str(conf)),
    )
    assert r.returncode == 0, r.stderr
    proof = tmp_path / "p.json"
    r = run_cli("audit", "proof", "--home", str(home), "--entry", "11", "--out", str(proof))
    assert r.returncode == 0
    r = run_cli("audit", "check-proof", str(proof), "--trust", str(trust))
    assert r.returncode == 0, r.stderr
