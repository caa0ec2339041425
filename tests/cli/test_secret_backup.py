"""``custody backup create --secrets`` and ``backup test-restore``: the secret store, ciphertext
only, encrypted again under the backup branch; a restore test opens every version in memory,
records its result, and fails on a damaged backup."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import run_cli
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
VALUE = "Backup-" + "Canary-4e1a!Rt6#Nb2@Kc"


def test_secret_backup_and_restore_test(tmp_path):
    home, pins = make_deployment(tmp_path / "d", backup_kek=True)
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    for i in range(3):
        r = run_cli("secret", "put", f"app/s{i}", "--env", "prod", "--stdin", "--category",
                    "service-credential", "--owner", "app", "--home", str(home), "--pin-file",
                    str(pins), input=f"{VALUE}-{i}")  # fmt: skip
        assert r.returncode == 0, r.stderr
    out = tmp_path / "secrets.backup"
    r = run_cli("backup", "create", "--secrets", "--out", str(out), "--home", str(home),
                "--pin-file", str(pins), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["secrets"] == 3
    assert VALUE.encode() not in out.read_bytes()
    t = run_cli("backup", "test-restore", str(out), "--home", str(home), "--pin-file", str(pins),
                "--json")  # fmt: skip
    assert t.returncode == 0, t.stderr
    res = json.loads(t.stdout)
    assert (res["secrets"], res["versions"], res["failed"]) == (3, 3, [])
    c = sqlite3.connect(home / "custody.db")
    meta = c.execute("SELECT value FROM meta WHERE key='backup-restore-test'").fetchone()[0]
    assert json.loads(meta)["ok"] is True
    c.close()
    # a flipped byte in the container is refused by the container itself
    raw = bytearray(out.read_bytes())
    raw[-40] ^= 1
    bad = tmp_path / "bad.backup"
    bad.write_bytes(bytes(raw))
    t = run_cli("backup", "test-restore", str(bad), "--home", str(home), "--pin-file", str(pins))
    assert t.returncode == 6, t.stderr
    r = run_cli("backup", "create", "--out", str(tmp_path / "x"), "--home", str(home),
                "--pin-file", str(pins))  # fmt: skip
    assert r.returncode == 2 and "--secrets" in r.stderr
