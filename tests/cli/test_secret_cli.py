"""``custody secret`` through the CLI as subprocesses, on a real SoftHSMv2 token and SQLite.

Versions and labels, check-and-set, environments that never cross, soft delete with an
alert on every read, restore, crypto-shredding after the window, re-keying the ``secrets``
branch, expiry warnings. A canary value is planted and must never show in argv, stderr,
the audit log or the store's plaintext."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
CANARY = "Canary-Value-7f3a!Qx9#Lm2@Zr8$Wt"  # a strong password: passes the rule


@pytest.fixture
def dep(tmp_path: Path):
    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    hook = tmp_path / "alerts.jsonl"
    conf = home / "custody.toml"
    conf.write_text(
        conf.read_text().replace("[policy]", f'[policy]\nalert_hook = "tee -a {hook}"', 1)
    )
    return home, pins, hook


def sec(home: Path, pins: Path | None, *args: str, input: str | None = None):
    extra = ("--pin-file", str(pins)) if pins is not None else ()
    return run_cli("secret", *args, "--home", str(home), *extra, "--json", input=input)


def ok(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _put(home, pins, path, value, *extra, env="prod"):
    return sec(home, pins, "put", path, "--env", env, "--stdin", *extra, input=value)


def test_versions_labels_cas_and_environments(dep):
    home, pins, _ = dep
    p = "payments/db/password"
    w = ok(_put(home, pins, p, CANARY, "--category", "database-credential", "--owner", "pay"))
    assert (w["version"], w["created"]) == (1, True)
    assert ok(sec(home, pins, "get", p, "--env", "prod"))["value"] == CANARY
    # a stale writer (it saw no secret) is refused, the current one accepted
    r = _put(home, pins, p, CANARY + "2", "--cas", "0")
    assert r.returncode == 2 and "Check-and-set" in r.stderr
    assert ok(_put(home, pins, p, CANARY + "2", "--cas", "1"))["version"] == 2
    got = ok(sec(home, pins, "get", p, "--env", "prod", "--label", "previous"))
    assert (got["version"], got["value"]) == (1, CANARY)
    # staged as pending: current unchanged
    ok(_put(home, pins, p, CANARY + "3", "--label", "pending"))
    assert ok(sec(home, pins, "get", p, "--env", "prod"))["value"] == CANARY + "2"
    assert ok(sec(home, pins, "get", p, "--env", "prod", "--label", "pending"))["version"] == 3
    meta = ok(sec(home, None, "show", p, "--env", "prod"))
    assert meta["labels"] == {"current": 2, "pending": 3, "previous": 1}
    assert meta["class"] == "high" and meta["state"] == "rotating" and 88 <= meta["days_left"] <= 90
    assert [
        v["version"] for v in ok(sec(home, None, "versions", p, "--env", "prod"))["versions"]
    ] == [1, 2, 3]
    # environments are separate namespaces
    r = sec(home, pins, "get", p, "--env", "dev")
    assert r.returncode == 2 and "No secret" in r.stderr
    assert ok(sec(home, None, "list", "--env", "dev")) == []
    # a category is fixed; a weak value is refused with its rule, and nothing is stored
    r = _put(home, pins, p, "short", "--category", "jwt-secret")
    assert r.returncode == 2
    r = _put(home, pins, p, "password123")
    assert r.returncode == 2 and "16 characters" in r.stderr and "password123" not in r.stderr
    assert ok(sec(home, None, "show", p, "--env", "prod"))["labels"]["current"] == 2


def test_generated_api_keys_are_unique_and_recognisable(dep):
    home, pins, _ = dep
    a = ok(sec(home, pins, "generate", "pay/stripe/api-key", "--env", "prod", "--prefix",
               "pay_live", "--category", "external-api-key", "--owner", "pay"))  # fmt: skip
    assert a["source"] == "hsm-rng"
    key = ok(sec(home, pins, "get", "pay/stripe/api-key", "--env", "prod"))["value"]
    assert key.startswith("pay_live_") and len(key) == len("pay_live_") + 49
    # the same key under another path is refused: API keys are globally unique
    r = _put(home, pins, "other/api-key", key, "--category", "internal-api-key", "--owner", "x")
    assert r.returncode == 2 and "already holds" in r.stderr
    ok(sec(home, pins, "generate", "pay/stripe/api-key", "--env", "prod"))
    key2 = ok(sec(home, pins, "get", "pay/stripe/api-key", "--env", "prod"))["value"]
    assert key2 != key and key2.startswith("pay_live_")


def test_soft_delete_alerts_restore_and_crypto_shred(dep, tmp_path):
    home, pins, hook = dep
    p = "ops/vpn/psk"
    ok(_put(home, pins, p, CANARY, "--category", "vpn-credential", "--owner", "ops"))
    d = ok(sec(home, None, "delete", p, "--env", "prod"))
    assert d["state"] == "deprecated"
    r = sec(home, pins, "get", p, "--env", "prod")
    assert r.returncode != 0 and "deleted" in r.stderr and CANARY not in r.stdout + r.stderr
    alerts = [json.loads(x) for x in hook.read_text().splitlines()]
    assert alerts and alerts[-1]["kind"] == "read-during-recovery-window"
    assert alerts[-1]["path"] == p and CANARY not in hook.read_text()
    # destroy is refused while restore still works
    r = sec(home, None, "destroy", p, "--env", "prod")
    assert r.returncode != 0 and "restored until" in r.stderr
    ok(sec(home, None, "restore", p, "--env", "prod"))
    assert ok(sec(home, pins, "get", p, "--env", "prod"))["value"] == CANARY
    # delete again, let the window pass (the operator's clock: the store's own field)
    ok(sec(home, None, "delete", p, "--env", "prod"))
    c = sqlite3.connect(home / "custody.db")
    uid = c.execute("SELECT dek_uid FROM secret_versions WHERE path=?", (p,)).fetchone()[0]
    c.execute("UPDATE secrets SET destroy_after='2000-01-01T00:00:00Z' WHERE path=?", (p,))
    c.commit()
    out = ok(sec(home, None, "destroy", "--due"))
    assert out["destroyed"][0]["destroyed"] == [1]
    row = c.execute(
        "SELECT state, dek_uid, ciphertext, value_mac FROM secret_versions WHERE path=?", (p,)
    ).fetchone()
    assert row == ("destroyed", None, None, None)
    assert c.execute("SELECT COUNT(*) FROM objects WHERE uid=?", (uid,)).fetchone()[0] == 0
    c.close()
    r = sec(home, pins, "get", p, "--env", "prod")
    assert r.returncode != 0 and "destroyed" in r.stderr
    assert CANARY.encode() not in (home / "custody.db").read_bytes()


def test_rekey_of_the_secrets_branch_moves_every_version(dep):
    home, pins, _ = dep
    for i in range(5):
        ok(_put(home, pins, f"svc/s{i}", f"{CANARY}-{i}", "--category", "database-credential",
                "--owner", "svc"))  # fmt: skip
        ok(_put(home, pins, f"svc/s{i}", f"{CANARY}+{i}"))
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    cli(home, pins, "rekey", "run", "--branch", "secrets")
    c = sqlite3.connect(home / "custody.db")
    versions = c.execute(
        "SELECT DISTINCT kek_version FROM objects WHERE kind='secret-dek'"
    ).fetchall()
    c.close()
    assert versions == [(2,)]
    for i in range(5):
        assert ok(sec(home, pins, "get", f"svc/s{i}", "--env", "prod"))["value"] == f"{CANARY}+{i}"
        got = ok(sec(home, pins, "get", f"svc/s{i}", "--env", "prod", "--version", "1"))
        assert got["value"] == f"{CANARY}-{i}"


def test_a_moved_ciphertext_does_not_open(dep):
    """The operator with the disk copies prod's ciphertext row over dev's: the AAD binds
    environment, path and version, so it is refused as altered, never served."""
    home, pins, _ = dep
    ok(_put(home, pins, "app/token", CANARY, "--category", "configuration-secret", "--owner", "a"))
    ok(_put(home, pins, "app/token", "dev value", "--category", "configuration-secret",
            "--owner", "a", env="dev"))  # fmt: skip
    c = sqlite3.connect(home / "custody.db")
    c.execute(
        "UPDATE secret_versions SET ciphertext=(SELECT ciphertext FROM secret_versions "
        "WHERE env='prod'), dek_uid=(SELECT dek_uid FROM secret_versions WHERE env='prod'), "
        "value_mac=(SELECT value_mac FROM secret_versions WHERE env='prod') WHERE env='dev'"
    )
    c.commit()
    c.close()
    r = sec(home, pins, "get", "app/token", "--env", "dev")
    assert r.returncode == 6 and CANARY not in r.stdout + r.stderr, r.stderr


def test_expiry_due_and_warnings_once_per_point(dep):
    home, pins, hook = dep
    ok(_put(home, pins, "a/b", CANARY, "--category", "service-credential", "--owner", "me"))
    assert ok(sec(home, None, "due")) == []
    c = sqlite3.connect(home / "custody.db")
    from datetime import UTC, datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(days=6, hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    c.execute("UPDATE secrets SET expires=?", (soon,))
    c.commit()
    c.close()
    items = ok(sec(home, None, "due", "--notify"))
    assert [i["path"] for i in items] == ["a/b"] and items[0]["days_left"] == 6
    ok(sec(home, None, "due", "--notify"))  # again: the 7-day warning is not repeated
    kinds = [json.loads(x)["kind"] for x in hook.read_text().splitlines()]
    assert kinds == ["expiry-near"]


def test_the_canary_never_leaks(dep):
    home, pins, _ = dep
    r = _put(home, pins, "c/d", CANARY, "--category", "service-credential", "--owner", "x")
    assert CANARY not in " ".join(r.args) and CANARY not in r.stderr + r.stdout
    g = sec(home, pins, "get", "c/d", "--env", "prod")
    assert CANARY not in " ".join(g.args) and CANARY not in g.stderr
    for args in (("list",), ("show", "c/d", "--env", "prod"), ("versions", "c/d", "--env", "prod")):
        o = sec(home, None, *args)
        assert o.returncode == 0 and CANARY not in o.stdout + o.stderr
    audit = (home / "audit.db").read_bytes()
    assert b"secret get" in audit and b"c/d" in audit and CANARY.encode() not in audit
    assert CANARY.encode() not in (home / "custody.db").read_bytes()
    # the plain output goes to stdout only
    raw = run_cli(
        "secret", "get", "c/d", "--env", "prod", "--home", str(home), "--pin-file", str(pins)
    )
    assert raw.stdout == CANARY and CANARY not in raw.stderr
