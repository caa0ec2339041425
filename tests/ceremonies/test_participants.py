"""`custody participant new` and enrolment through the CLI (real subprocesses)."""

from __future__ import annotations

import json
import stat

from tests.conftest import run_cli, write_secret


def test_participant_new_writes_encrypted_key_and_identity(tmp_path):
    pw = tmp_path / "pw"
    write_secret(pw, "correct horse battery ochre pylon\n")
    r = run_cli(
        "participant",
        "new",
        "alice",
        "--role",
        "custodian",
        "--out",
        str(tmp_path / "p"),
        "--passphrase-file",
        str(pw),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    key = tmp_path / "p" / "alice.key.pem"
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ident = json.loads((tmp_path / "p" / "alice.pub.json").read_text())
    assert ident["alg"] == "ed25519" and ident["role"] == "custodian"
    assert ident["fingerprint"] == out["fingerprint"] and len(ident["public"]) == 64
    assert "correct horse" not in r.stdout + r.stderr
    # never overwritten
    r2 = run_cli(
        "participant",
        "new",
        "alice",
        "--role",
        "custodian",
        "--out",
        str(tmp_path / "p"),
        "--passphrase-file",
        str(pw),
    )
    assert r2.returncode == 2 and "already exists" in r2.stderr


def test_participant_bad_role_and_no_passphrase(tmp_path):
    r = run_cli("participant", "new", "x", "--role", "king", "--out", str(tmp_path))
    assert r.returncode == 2
    r = run_cli("participant", "new", "x", "--role", "witness", "--out", str(tmp_path))
    assert r.returncode == 3 and "passphrase" in r.stderr
