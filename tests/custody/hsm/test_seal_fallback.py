"""KEK sealing on tokens without in-token AES-GCM: the AES-CBC-PAD + HMAC-SHA256 fallback
(custody/hsm/pkcs11/sealing.py), on opencryptoki's soft token (no GCM at all) and on NSS
softokn forced to it, and a home recorded as AES-GCM that the operator with the disk tries
to switch to the fallback (SoftHSMv2, the CLI as a subprocess)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_PIN, TEST_SO_PIN, run_cli, write_secret
from tests.token_fixtures import (
    OPENCRYPTOKI,
    P11KIT_PROXY,
    nss_token,
    opencryptoki_token,
    token_objects,
)

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("other-tokens")]

OCK_SO_PIN, OCK_PIN = "so-9130x", "us-4821x"  # opencryptoki: PINs of at most 8 characters
REPO = Path(__file__).resolve().parents[3]


def _child(module: str, label: str, work: Path, pin: str, *flags: str) -> dict:
    work.mkdir()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fixtures.seal_fallback_child",
            module,
            label,
            str(work),
            *flags,
        ],
        input=pin,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert pin not in r.stdout + r.stderr
    return json.loads(r.stdout)


def _assert_fallback_holds(out: dict) -> None:
    assert out["kek_seal"] == "aes-cbc-hmac" and out["results"]["cbc_hmac"] == "pass"
    # a dev root, two KEKs sealed the fallback way, five DEKs that all verify
    assert out["verify"] == {"ok": True, "checked": 5} and out["dek_len"] == 32
    assert out["format"] == "CKS1" and out["plain_ok"] and out["backup_ok"]
    assert out["blob_len"] == 4 + 64 + 16 + 48 + 32  # magic, r, iv, CBC-PAD of 32 bytes, tag
    # the operator with the disk changes a sealed KEK: every change is refused
    for attack in ("flipped_ct", "own_r", "spliced_r", "moved_branch", "gcm_shaped"):
        assert out[attack] == "IntegrityError", (attack, out)
    assert out["root_gcm_decrypt"] == "MechanismUnsupported"  # the root decrypts no data
    assert out["hold_format"] == "CKS1" and out["hold_ok"]  # a ceremony's hold key too
    assert out["hold_other_aad"] == "IntegrityError"
    # a home whose record says AES-GCM is refused on this token: no silent switch
    assert out["gcm_record"] == "KekSealMismatch"  # an IntegrityError (exit 6)
    assert "records KEK sealing 'aes-gcm'" in out["gcm_record_title"]


def test_opencryptoki_seals_keks_with_the_fallback_and_refuses_every_change(tmp_path):
    with opencryptoki_token(OCK_SO_PIN, OCK_PIN) as label:
        out = _child(OPENCRYPTOKI, label, tmp_path / "w", OCK_PIN)
        assert out["results"] == {"aes_gcm": "missing", "cbc_hmac": "pass", "kek_seal": "pass"}
        _assert_fallback_holds(out)
        # only the dev root stays on the token: the two session keys of each blob are gone
        assert token_objects(OPENCRYPTOKI, label, OCK_PIN) == ["root/v1"]


def test_nss_softokn_forced_to_the_fallback_seals_and_refuses_every_change(tmp_path):
    with nss_token(tmp_path / "nss", TEST_PIN) as label:
        out = _child(P11KIT_PROXY, label, tmp_path / "w", TEST_PIN, "--force")
        assert out["results"]["aes_gcm"] == "pass"  # GCM works; the fallback was asked for
        _assert_fallback_holds(out)
        assert token_objects(P11KIT_PROXY, label, TEST_PIN) == ["root/v1"]


def _kek_rows(home: Path) -> list[tuple]:
    con = sqlite3.connect(home / "custody.db")
    try:
        return con.execute("SELECT * FROM kek_versions ORDER BY branch, version").fetchall()
    finally:
        con.close()


def test_a_home_recorded_as_gcm_cannot_be_switched_to_the_fallback(tmp_path):
    """The operator with the disk edits custody.toml, then custody.db. Neither makes custody
    seal or open a KEK any other way than the home was made with; nothing is changed."""
    home, pins = tmp_path / "home", tmp_path / "pins"
    write_secret(pins, f"pin={TEST_PIN}\nso_pin={TEST_SO_PIN}\n")
    assert (
        run_cli("init", "--home", str(home), "--pin-file", str(pins), "--dev-root").returncode == 0
    )
    toml = home / "custody.toml"
    text = toml.read_text()
    assert re.search(r'^kek_seal = "aes-gcm"$', text, re.M), text  # recorded at init
    base = ["--home", str(home), "--pin-file", str(pins)]
    assert run_cli("kek", "rotate", "--branch", "data", *base).returncode == 0
    r = run_cli("dek", "generate", "--branch", "data", "--count", "5", *base, "--json")
    assert r.returncode == 0, r.stderr
    rows = _kek_rows(home)

    # 1. the record says the fallback: every command that seals or opens a KEK is refused
    toml.write_text(text.replace('kek_seal = "aes-gcm"', 'kek_seal = "aes-cbc-hmac"'))
    for args in (
        ("dek", "verify", "--all"),
        ("dek", "generate", "--branch", "data", "--count", "1"),
        ("kek", "rotate", "--branch", "data"),
    ):
        r = run_cli(*args, *base)
        assert r.returncode == 6, (args, r.stdout + r.stderr)
        assert (
            "records KEK sealing 'aes-cbc-hmac'" in r.stderr and "seals with 'aes-gcm'" in r.stderr
        )
        assert "Traceback" not in r.stderr and TEST_PIN not in r.stdout + r.stderr
    assert _kek_rows(home) == rows  # nothing sealed, nothing re-sealed

    # 2. the record removed: a home from before the record, which means AES-GCM
    toml.write_text(text.replace('kek_seal = "aes-gcm"\n', ""))
    r = run_cli("dek", "verify", "--all", *base, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True, r.stdout + r.stderr
    toml.write_text(text)

    # 3. custody.db: the data KEK's sealed blob replaced by a fallback-shaped one (magic,
    # r, iv, ciphertext, tag). The home seals with GCM, so only GCM is tried: refused.
    (branch, version, *_rest) = next(row for row in rows if row[0] == "data")
    wrapped = next(row for row in rows if row[0] == "data")[5]
    header = wrapped[: len(wrapped) - 12 - 48]  # GCM body: nonce (12) + 32-byte KEK + tag
    forged = header + b"CKS1" + bytes(64) + bytes(16) + bytes(48) + bytes(32)
    con = sqlite3.connect(home / "custody.db")
    with con:
        con.execute(
            "UPDATE kek_versions SET wrapped = ? WHERE branch = ? AND version = ?",
            (forged, branch, version),
        )
    con.close()
    r = run_cli("dek", "verify", "--all", *base, "--json")
    assert r.returncode == 6, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and len(doc["failed"]) == 5  # every DEK under it fails
    r = run_cli("dek", "generate", "--branch", "data", "--count", "1", *base)
    assert r.returncode == 6 and "Authentication failed" in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_a_record_that_differs_from_the_token_is_refused_at_preflight(softhsm_token, tmp_path):
    """Every ceremony runs preflight first: a home whose record names the fallback (or
    anything else) on a token whose GCM works is refused there, before anything exists."""
    from custody.config import HsmConfig
    from custody.hsm import KekSealMismatch
    from custody.hsm.pkcs11.adapter import open_hsm

    _conf, label, pin = softhsm_token
    for recorded in ("aes-cbc-hmac", "none", "AES-GCM"):
        with open_hsm(HsmConfig(token_label=label, kek_seal=recorded), tmp_path, pin) as h:
            before = h.list_keys()
            with pytest.raises(KekSealMismatch, match=f"records KEK sealing '{recorded}'"):
                h.preflight()
            with pytest.raises(KekSealMismatch):
                h.seal("root", 1, bytes(32), b"aad")
            assert h.list_keys() == before
    with open_hsm(HsmConfig(token_label=label, kek_seal="aes-gcm"), tmp_path, pin) as h:
        assert h.preflight()["kek_seal"] == "aes-gcm" and h.kek_seal() == "aes-gcm"
