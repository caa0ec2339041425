"""Every key operation through the CLI lands in the audit log first, failures included,
and an unwritable audit log refuses the operation."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_cli, write_secret

pytestmark = pytest.mark.hsm

CANARY = "CANARY-audit-pin-61d2"


@pytest.fixture
def home(tmp_path):
    pins = tmp_path / "pins"
    write_secret(pins, f"pin={CANARY}\nso_pin=so-pin-for-audit\n")
    h = tmp_path / "home"
    r = run_cli("init", "--home", str(h), "--pin-file", str(pins), "--dev-root")
    assert r.returncode == 0, r.stderr
    return h, pins


def _entries(h):
    r = run_cli("audit", "tail", "-n", "100", "--home", str(h), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    return doc["entries"] if isinstance(doc, dict) else doc


def test_operations_and_failures_are_logged_before_they_act(home, tmp_path):
    h, pins = home
    base = ["--home", str(h), "--pin-file", str(pins)]
    assert run_cli("kek", "rotate", "--branch", "data", *base).returncode == 0
    wrong = tmp_path / "wrong"
    write_secret(wrong, "pin=not-the-pin-9\n")
    r = run_cli("dek", "generate", "--count", "3", "--home", str(h), "--pin-file", str(wrong))
    assert r.returncode == 5
    got = [(e["op"], e["outcome"]) for e in _entries(h)]
    assert got[:4] == [
        ("kek rotate", "intent"),
        ("kek rotate", "ok"),
        ("dek generate", "intent"),
        ("dek generate", "failed"),
    ]
    failed = _entries(h)[3]
    assert failed["details"]["error"] == "PinIncorrect"
    assert failed["details"]["intent_seq"] == 2
    v = run_cli("audit", "verify", "--home", str(h))
    assert v.returncode == 0, v.stdout + v.stderr
    raw = (h / "audit.db").read_bytes()
    assert CANARY.encode() not in raw and b"not-the-pin-9" not in raw


def test_unwritable_audit_log_refuses_the_operation(home):
    h, pins = home
    (h / "audit.db").unlink(missing_ok=True)
    shutil.rmtree(h / "audit.db", ignore_errors=True)
    (h / "audit.db").mkdir()  # cannot be opened as a database
    r = run_cli("kek", "rotate", "--branch", "data", "--home", str(h), "--pin-file", str(pins))
    assert r.returncode == 6
    assert "was refused" in r.stderr and "hint:" in r.stderr
    k = run_cli("kek", "list", "--home", str(h), "--json")
    assert json.loads(k.stdout) == []  # nothing happened


def test_rotation_warnings_reach_the_audit_log(home):
    import sqlite3

    h, pins = home
    assert (
        run_cli(
            "kek", "rotate", "--branch", "secrets", "--home", str(h), "--pin-file", str(pins)
        ).returncode
        == 0
    )
    con = sqlite3.connect(h / "custody.db")
    try:
        con.execute(
            "UPDATE kek_versions SET created='2026-01-01T00:00:00+00:00' WHERE branch='secrets'"
        )
        con.commit()
    finally:
        con.close()
    r = run_cli("rotate", "due", "--home", str(h), "--no-alert")
    assert r.returncode == 0, r.stderr
    warns = [e for e in _entries(h) if e["op"] == "rotation.warning"]
    overdue = [w for w in warns if w["target"] == "secrets"]
    assert overdue and overdue[0]["details"]["status"] == "overdue"
