"""``custody mfa`` through the CLI as subprocesses, on a real SoftHSMv2 token and SQLite:
enrol (terminal QR, 0600 PNG), verify from stdin, a replay refused, list, and a reset that
only an enrolled super-admin's key can make. The TOTP secret shows in the enrolment output
and the PNG only: never in another command's output, the audit log or the store."""

from __future__ import annotations

import base64
import json
import stat
import time
from pathlib import Path

import psycopg
import pytest

from ceremonies.participants import create_participant
from custody.access.mfa import totp_code
from tests.conftest import passphrase_of, run_cli, write_secret
from tests.rekey_fixtures import cli, make_deployment, write_pins

pytestmark = pytest.mark.hsm


def mfa(home: Path, pins: Path | None, *args: str, input: str | None = None, cwd=None):
    extra = ("--pin-file", str(pins)) if pins is not None else ()
    return run_cli("mfa", *args, "--home", str(home), *extra, input=input, cwd=cwd)


def now_code(key: bytes) -> str:
    return totp_code(key, int(time.time()) // 30)


def test_enrol_verify_replay_list_and_reset(tmp_path: Path):
    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    r = mfa(home, pins, "enrol", "alice", "--png", str(tmp_path / "no.png"))
    assert r.returncode == 2 and "No principal alice" in r.stderr  # principals come first
    assert not (tmp_path / "no.png").exists()
    for n in ("alice", "bob"):
        cli(home, pins, "principal", "add", n, "--role", "service-user", "--service-account",
            "--service", "billing", "--token-out", str(tmp_path / f"{n}.token"))  # fmt: skip
    png = tmp_path / "alice.png"
    r = mfa(home, pins, "enrol", "alice", "--png", str(png), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    secret = doc["secret_b32"]
    key = base64.b32decode(secret)
    assert len(key) >= 20 and doc["uri"].startswith("otpauth://totp/custody:alice?")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert stat.S_IMODE(png.stat().st_mode) == 0o600
    # the human form: a terminal QR code, the grouped key, and the default PNG name
    r = mfa(home, pins, "enrol", "bob", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "\u2588" in r.stdout and "bob-totp.png" in r.stdout
    assert stat.S_IMODE((tmp_path / "bob-totp.png").stat().st_mode) == 0o600
    # a code never comes from argv
    assert mfa(home, pins, "verify", "alice", "123456").returncode == 2
    code = now_code(key)
    r = mfa(home, pins, "verify", "alice", "--stdin", "--json", input=code + "\n")
    if r.returncode == 7 and "already used" not in r.stderr:  # the step turned meanwhile
        code = now_code(key)
        r = mfa(home, pins, "verify", "alice", "--stdin", "--json", input=code + "\n")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": True, "principal": "alice"}
    # the replay of that code is refused (policy, exit 7)
    r = mfa(home, pins, "verify", "alice", "--stdin", input=code + "\n")
    assert r.returncode == 7 and ("already used" in r.stderr or "Wrong" in r.stderr)
    listed = mfa(home, None, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    by = {i["principal"]: i for i in json.loads(listed.stdout)}
    assert by["alice"]["confirmed"] and not by["bob"]["confirmed"]
    assert by["alice"]["failures"] == 1
    # re-enrolling a confirmed principal is refused
    r = mfa(home, pins, "enrol", "alice", "--png", str(tmp_path / "again.png"))
    assert r.returncode == 7 and "already has MFA" in r.stderr
    # reset: a key that is not an enrolled super-admin is refused (and audited); the
    # enrolled super-admin's works
    people = tmp_path / "people"
    people.mkdir()
    for who, role in (("admin", "super-admin"), ("mallory", "custodian")):
        write_secret(people / f"{who}.pass", passphrase_of(who) + "\n")
        create_participant(who, role, passphrase_of(who), people)
    r = run_cli("ceremony", "enrol", "--home", str(home), "--key", str(people / "admin.key.pem"),
                "--passphrase-file", str(people / "admin.pass"), "--add",
                str(people / "admin.pub.json"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr

    def reset(who: str):
        return mfa(home, pins, "reset", "alice", "--key", str(people / f"{who}.key.pem"),
                   "--passphrase-file", str(people / f"{who}.pass"), "--reason", "lost phone",
                   "--json")  # fmt: skip

    r = reset("mallory")
    assert r.returncode == 7 and "not enrolled" in r.stderr
    r = reset("admin")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["reset_by"] == "admin"
    assert "alice" not in {
        i["principal"] for i in json.loads(mfa(home, None, "list", "--json").stdout)
    }
    tail = run_cli("audit", "tail", "-n", "200", "--home", str(home), "--json")
    ents = json.loads(tail.stdout)
    ents = ents["entries"] if isinstance(ents, dict) else ents
    got = [(e["op"], e["actor"], e["outcome"]) for e in ents if e["op"] == "mfa reset"]
    assert got == [
        ("mfa reset", "mallory", "intent"),
        ("mfa reset", "mallory", "denied"),
        ("mfa reset", "admin", "intent"),
        ("mfa reset", "admin", "ok"),
    ]
    assert [
        e["details"]["reason"] for e in ents if e["op"] == "mfa verify" and e["outcome"] == "denied"
    ] == ["reused"]
    # re-keying the secrets branch moves bob's TOTP secret to the new KEK; it still works
    r = mfa(home, pins, "enrol", "bob", "--png", str(tmp_path / "bob2.png"), "--json")
    bob = base64.b32decode(json.loads(r.stdout)["secret_b32"])
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    moved = json.loads(
        cli(home, pins, "rekey", "run", "--branch", "secrets", "--verify", "all", "--json").stdout
    )
    assert moved["ok"] and moved["moved"] == 1 and moved["jobs"][0]["verified"] == 1, moved
    r = mfa(home, pins, "verify", "bob", "--stdin", input=now_code(bob) + "\n")
    assert r.returncode == 0, r.stderr
    # the secret is nowhere but in the enrolment's own output and PNG
    forms = [secret, secret.lower(), key.hex(), doc["uri"]]
    for text in (listed.stdout, tail.stdout, r.stdout, r.stderr):
        assert not any(f in text for f in forms)
    for f in home.iterdir():
        if f.is_file():
            raw = f.read_bytes()
            assert not any(x.encode() in raw for x in forms) and key not in raw, f.name


@pytest.mark.postgres
def test_mfa_and_the_compliance_report_on_a_postgresql_store(tmp_path: Path, pg_url: str):
    """The same commands on a home whose store is PostgreSQL: the enrolment row and the
    wrapped secret are on the server, the secret is not in any of its rows in the clear,
    a replay is refused, and the report reads the principals and enrolments there."""
    pins = write_pins(tmp_path / "pins")
    home = tmp_path / "home"
    r = run_cli(
        "init", "--home", str(home), "--pin-file", str(pins), "--dev-root", "--store", pg_url
    )
    assert r.returncode == 0, r.stderr
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    cli(home, pins, "principal", "add", "carol", "--role", "service-admin", "--service-account",
        "--service", "billing", "--token-out", str(tmp_path / "carol.token"))  # fmt: skip
    rep = json.loads(run_cli("report", "compliance", "--home", str(home), "--json").stdout)
    mfa_sec = {s["id"]: s for s in rep["sections"]}["mfa"]
    assert [i["name"] for i in mfa_sec["items"]] == ["carol"]
    r = mfa(home, pins, "enrol", "carol", "--png", str(tmp_path / "c.png"), "--json")
    assert r.returncode == 0, r.stderr
    secret = json.loads(r.stdout)["secret_b32"]
    key = base64.b32decode(secret)
    code = now_code(key)
    r = mfa(home, pins, "verify", "carol", "--stdin", input=code + "\n")
    assert r.returncode == 0, r.stderr
    r = mfa(home, pins, "verify", "carol", "--stdin", input=code + "\n")
    assert r.returncode == 7
    with psycopg.connect(pg_url) as c:
        row = c.execute("SELECT object_uid, confirmed_at, failures FROM mfa_enrolments").fetchone()
        assert row is not None and row[1] is not None and row[2] == 1
        obj = c.execute(
            "SELECT branch, kind, wrapped FROM objects WHERE uid=%s", (row[0],)
        ).fetchone()
        assert obj is not None and obj[:2] == ("secrets", "mfa-totp")
        assert key not in bytes(obj[2])
        dump = " ".join(
            str(r) for t in ("objects", "mfa_enrolments") for r in c.execute(f"SELECT * FROM {t}")
        )
        assert secret not in dump and key.hex() not in dump
    rep = json.loads(run_cli("report", "compliance", "--home", str(home), "--json").stdout)
    assert {s["id"]: s for s in rep["sections"]}["mfa"]["items"] == []
