"""Issue 2 end to end: init, status, kek, dek through the CLI as a subprocess, on a real
SoftHSMv2 token provisioned under each test home."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.hsm

CANARY_PIN = "CANARY-pin-7f3a9c21"
CANARY_SO = "CANARY-so-5e8d0b44"


def _pins(tmp: Path, pin: str = CANARY_PIN, so: str = CANARY_SO) -> Path:
    p = tmp / f"pins-{hashlib.sha256(pin.encode()).hexdigest()[:6]}"
    p.write_text(f"pin={pin}\nso_pin={so}\n")
    p.chmod(0o600)
    return p


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _no_canary(*outputs: str) -> None:
    for out in outputs:
        assert CANARY_PIN not in out and CANARY_SO not in out


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("foundation")
    h = tmp / "home"
    pins = _pins(tmp)
    r = run_cli("init", "--home", str(h), "--pin-file", str(pins), "--dev-root", "--json")
    assert r.returncode == 0, r.stderr
    _no_canary(r.stdout, r.stderr)
    assert json.loads(r.stdout)["ok"] is True
    return h, pins


def test_init_creates_wal_store_config_and_token(home):
    h, pins = home
    assert (h / "custody.toml").exists() and (h / "softhsm2.conf").exists()
    con = sqlite3.connect(h / "custody.db")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()
    r = run_cli("status", "--home", str(h), "--pin-file", str(pins), "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["hsm"]["reachable"] is True and st["hsm"]["embedded"] is True
    assert [x["state"] for x in st["roots"]] == ["active"]
    assert st["hsm"]["root_keys_on_token"] == ["root/v1"]
    _no_canary(r.stdout, r.stderr)


def test_init_again_refuses_and_changes_nothing(home):
    h, pins = home
    before = _snapshot(h)
    r = run_cli("init", "--home", str(h), "--pin-file", str(pins))
    assert r.returncode == 3
    assert "already holds a custody deployment" in r.stderr and "hint:" in r.stderr
    assert _snapshot(h) == before


def test_kek_rotate_dek_generate_and_verify(home):
    h, pins = home
    base = ["--home", str(h), "--pin-file", str(pins)]
    r = run_cli("kek", "rotate", "--branch", "data", *base, "--json")
    assert r.returncode == 0, r.stderr
    v1 = json.loads(r.stdout)["version"]
    r = run_cli("dek", "generate", "--branch", "data", "--count", "40", *base, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["count"] == 40 and out["kek_version"] == v1
    r = run_cli("kek", "rotate", "--branch", "data", *base, "--json")
    assert json.loads(r.stdout)["version"] == v1 + 1
    r = run_cli("dek", "generate", "--branch", "data", "--count", "10", *base, "--json")
    assert json.loads(r.stdout)["kek_version"] == v1 + 1
    r = run_cli("kek", "list", "--home", str(h), "--json")
    states = {(k["branch"], k["version"]): (k["state"], k["objects"]) for k in json.loads(r.stdout)}
    assert states[("data", v1)] == ("decrypt-only", 40)
    assert states[("data", v1 + 1)] == ("active", 10)
    r = run_cli("dek", "verify", "--all", *base, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": True, "checked": 50, "failed": []}
    _no_canary(r.stdout, r.stderr)


def test_dek_verify_detects_tampered_row(tmp_path, home):
    h, pins = home
    base = ["--home", str(h), "--pin-file", str(pins)]
    run_cli("kek", "rotate", "--branch", "secrets", *base)
    r = run_cli("dek", "generate", "--branch", "secrets", "--count", "3", *base, "--json")
    uid = json.loads(r.stdout)["ids"][1]
    con = sqlite3.connect(h / "custody.db")
    (wrapped,) = con.execute(
        "SELECT wrapped FROM objects WHERE uid=?", (bytes.fromhex(uid),)
    ).fetchone()
    bad = wrapped[:-1] + bytes([wrapped[-1] ^ 0x40])
    con.execute("UPDATE objects SET wrapped=? WHERE uid=?", (bad, bytes.fromhex(uid)))
    con.commit()
    try:
        r = run_cli("dek", "verify", "--all", *base, "--json")
        assert r.returncode == 6
        assert uid in json.loads(r.stdout)["failed"]
    finally:
        con.execute("UPDATE objects SET wrapped=? WHERE uid=?", (wrapped, bytes.fromhex(uid)))
        con.commit()
        con.close()


def test_wrong_pin_is_typed_and_changes_nothing(tmp_path, home):
    h, _ = home
    before = _snapshot(h)
    wrong = _pins(tmp_path, pin="CANARY-pin-7f3a9c21-wrong")
    r = run_cli("kek", "rotate", "--branch", "data", "--home", str(h), "--pin-file", str(wrong))
    assert r.returncode == 5
    assert "PIN" in r.stderr and "hint:" in r.stderr
    assert "CANARY" not in r.stderr + r.stdout
    assert _state(h) == _state_of(before)


def _state_of(snap: dict[str, str]) -> dict[str, str]:
    """Files that hold deployment state (the audit log is meant to grow on every attempt)."""
    skip = ("tokens", "-wal", "-shm", "audit.db")
    return {k: v for k, v in snap.items() if not any(s in k for s in skip)}


def _state(root: Path) -> dict[str, str]:
    return _state_of(_snapshot(root))


def test_missing_token_is_typed(tmp_path, home):
    h, pins = home
    other = tmp_path / "copy"
    other.mkdir()
    text = (
        (h / "custody.toml").read_text().replace('token_label = "custody"', 'token_label = "nope"')
    )
    (other / "custody.toml").write_text(text.replace("softhsm2.conf", str(h / "softhsm2.conf")))
    (other / "custody.db").write_bytes((h / "custody.db").read_bytes())
    r = run_cli("kek", "rotate", "--branch", "data", "--home", str(other), "--pin-file", str(pins))
    assert r.returncode == 5, r.stderr
    assert "nope" in r.stderr and "hint:" in r.stderr


def test_corrupted_store_is_typed(tmp_path, home):
    h, pins = home
    other = tmp_path / "corrupt"
    other.mkdir()
    (other / "custody.toml").write_text(
        (h / "custody.toml").read_text().replace("softhsm2.conf", str(h / "softhsm2.conf"))
    )
    (other / "custody.db").write_bytes(b"garbage" * 1000)
    before = _snapshot(other)
    r = run_cli("status", "--home", str(other), "--pin-file", str(pins))
    assert r.returncode == 4
    assert "corrupted" in r.stderr and "hint:" in r.stderr
    assert _state(other) == _state_of(before)
    tail = run_cli("audit", "tail", "--home", str(other), "--json")
    doc = json.loads(tail.stdout)
    entries = doc["entries"] if isinstance(doc, dict) else doc
    assert [(e["op"], e["outcome"]) for e in entries] == [
        ("status", "intent"),
        ("status", "failed"),
    ]
    assert entries[-1]["details"]["error"] == "StorageError"


def test_no_deployment_is_config_error(tmp_path):
    r = run_cli("status", "--home", str(tmp_path / "none"))
    assert r.returncode == 3 and "custody init" in r.stderr


def test_init_failure_leaves_nothing(tmp_path):
    """A PIN SoftHSM refuses (too short) fails init and leaves no half-made home."""
    h = tmp_path / "h"
    pins = _pins(tmp_path, pin="abc")
    r = run_cli("init", "--home", str(h), "--pin-file", str(pins))
    assert r.returncode == 3, r.stderr
    assert not h.exists()


def test_pin_never_from_argv():
    r = run_cli("init", "--help")
    assert "--pin-file" in r.stdout and "--pin " not in r.stdout
    r = run_cli("init", "--pin", "x")
    assert r.returncode == 2


def test_init_with_an_external_pkcs11_token(tmp_path):
    """A deployment that names a module, slot and token label (how a real HSM is used):
    custody provisions nothing and only logs in to the token it is given."""
    from custody.hsm import softhsm

    conf = softhsm.write_conf(tmp_path / "hsm")
    softhsm.init_token(conf, "bank-hsm", "so-pin-ext-1", CANARY_PIN)
    env = __import__("tests.conftest", fromlist=["cli_env"]).cli_env(SOFTHSM2_CONF=str(conf))
    h = tmp_path / "home"
    pins = _pins(tmp_path)
    r = run_cli(
        "init",
        "--home",
        str(h),
        "--module",
        "/usr/lib/softhsm/libsofthsm2.so",
        "--token-label",
        "bank-hsm",
        "--pin-file",
        str(pins),
        "--dev-root",
        "--json",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert not (h / "tokens").exists() and not (h / "softhsm2.conf").exists()
    cfg = (h / "custody.toml").read_text()
    assert 'token_label = "bank-hsm"' in cfg and "softhsm_conf" not in cfg
    r = run_cli("status", "--home", str(h), "--pin-file", str(pins), "--json", env=env)
    st = json.loads(r.stdout)
    assert st["hsm"]["reachable"] is True and st["hsm"]["embedded"] is False
    assert st["hsm"]["root_keys_on_token"] == ["root/v1"]
    r = run_cli(
        "init",
        "--home",
        str(tmp_path / "h2"),
        "--module",
        "/nonexistent/libpkcs11.so",
        "--token-label",
        "x",
        "--pin-file",
        str(pins),
        env=env,
    )
    assert r.returncode == 5 and "hint:" in r.stderr
    assert not (tmp_path / "h2").exists()
    _no_canary(r.stdout, r.stderr)
