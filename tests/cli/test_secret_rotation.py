"""``custody secret rotate`` through the CLI: the seven steps with a real --verify-cmd (a
small script that checks the value it is given), the labels and overlap window, revocation
at the window's end, the pause after repeated failures, the signed record verified offline
(and a tampered one refused), and an emergency rotation with its impact list."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from ceremonies.participants import create_participant
from tests.conftest import passphrase_of, run_cli, write_secret
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
CANARY = "Rotation-Canary-5b7e!Kp3#Vz9@Qm"
PATH = "billing/db/password"


@pytest.fixture
def dep(tmp_path: Path):
    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    people = tmp_path / "people"
    people.mkdir()
    write_secret(people / "admin.pass", passphrase_of("admin") + "\n")
    create_participant("admin", "super-admin", passphrase_of("admin"), people)
    r = run_cli("ceremony", "enrol", "--home", str(home), "--key", str(people / "admin.key.pem"),
                "--passphrase-file", str(people / "admin.pass"), "--add",
                str(people / "admin.pub.json"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    key = ["--key", str(people / "admin.key.pem"), "--passphrase-file", str(people / "admin.pass")]
    r = run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "billing", "--home", str(home), "--pin-file",
                str(pins), input=CANARY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return home, pins, key, people, tmp_path


def script(tmp: Path, name: str, body: str) -> str:
    p = tmp / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def rotate(home, pins, key, *extra, input=None):
    return run_cli("secret", "rotate", *extra, *key, "--home", str(home), "--pin-file",
                   str(pins), "--json", input=input)  # fmt: skip


def get(home, pins, *extra):
    r = run_cli("secret", "get", PATH, "--env", "prod", *extra, "--home", str(home),
                "--pin-file", str(pins), "--json")  # fmt: skip
    return r


def verify_record(bundle: str, people: Path):
    return run_cli("transcript", "verify", bundle, "--trust", str(people / "admin.pub.json"))


def test_a_verified_rotation_promotes_keeps_previous_and_records(dep):
    home, pins, key, people, tmp = dep
    seen = tmp / "seen"
    # the verify command gets the value in its environment and in a 0600 file, never argv
    ok_cmd = script(
        tmp,
        "verify.sh",
        'test -n "$CUSTODY_SECRET_VALUE" && '
        'test "$(cat "$CUSTODY_SECRET_FILE")" = "$CUSTODY_SECRET_VALUE" && '
        f'stat -c %a "$CUSTODY_SECRET_FILE" > {seen} && echo "args: $*" >> {seen}\n',
    )
    r = rotate(home, pins, key, PATH, "--env", "prod", "--verify-cmd", ok_cmd, "--overlap", "1h")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and (out["old_version"], out["new_version"]) == (1, 2)
    assert seen.read_text() == "600\nargs: \n"
    new = json.loads(get(home, pins).stdout)
    assert new["version"] == 2 and new["value"] != CANARY
    old = json.loads(get(home, pins, "--label", "previous").stdout)
    assert (old["version"], old["value"]) == (1, CANARY)  # no downtime: both work
    v = verify_record(out["bundle"], people)
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout
    events = (Path(out["bundle"]) / "events.jsonl").read_text()
    assert CANARY not in events and new["value"] not in events
    assert '"secret.verify"' in events and '"old_value_digest"' in events
    # a tampered record is refused
    (Path(out["bundle"]) / "events.jsonl").write_text(
        events.replace('"exit_status":0', '"exit_status":1', 1)
    )
    assert verify_record(out["bundle"], people).returncode != 0
    # the window ends: rotate --due revokes previous, in a record of its own
    c = sqlite3.connect(home / "custody.db")
    c.execute("UPDATE secrets SET previous_until='2000-01-01T00:00:00Z'")
    c.commit()
    c.close()
    d = rotate(home, pins, key, "--due")
    assert d.returncode == 0, d.stderr
    due = json.loads(d.stdout)
    assert due["rotated"] == [] and [x["revoked"] for x in due["revoked"]] == [1]
    assert verify_record(due["revoked"][0]["bundle"], people).returncode == 0
    assert get(home, pins, "--label", "previous").returncode != 0
    assert get(home, pins, "--version", "1").returncode != 0
    assert CANARY.encode() not in (home / "custody.db").read_bytes()


def test_a_failed_verify_changes_nothing_and_three_pause_rotation(dep):
    home, pins, key, people, tmp = dep
    bad = script(tmp, "bad.sh", 'echo "$CUSTODY_SECRET_VALUE" ; exit 3\n')
    for n in (1, 2, 3):
        r = rotate(home, pins, key, PATH, "--env", "prod", "--verify-cmd", bad)
        assert r.returncode == 1, r.stderr
        out = json.loads(r.stdout)
        assert not out["ok"] and out["failures"] == n and out["paused"] == (n == 3)
        assert "exit status 3" in out["detail"]
        cur = json.loads(get(home, pins).stdout)
        assert (cur["version"], cur["value"]) == (1, CANARY)  # current unchanged
        assert get(home, pins, "--label", "pending").returncode != 0  # pending discarded
        v = verify_record(out["bundle"], people)
        assert v.returncode == 0, v.stdout  # an aborted rotation is a valid record too
        assert CANARY not in (Path(out["bundle"]) / "events.jsonl").read_text()
    # paused: a due run skips it (and the secret is due)
    c = sqlite3.connect(home / "custody.db")
    c.execute("UPDATE secrets SET expires='2000-01-01T00:00:00Z'")
    c.commit()
    c.close()
    due = json.loads(rotate(home, pins, key, "--due").stdout)
    assert due["rotated"] == []
    # an explicit, successful rotation resumes it
    r = rotate(home, pins, key, PATH, "--env", "prod", "--verify-cmd", "true")
    assert r.returncode == 0 and json.loads(r.stdout)["failures"] == 0


def test_emergency_rotation_revokes_at_once_and_lists_readers(dep):
    home, pins, key, people, _tmp = dep
    for who in ("svc-a", "svc-b"):
        r = run_cli("secret", "get", PATH, "--env", "prod", "--home", str(home), "--pin-file",
                    str(pins), env={"CUSTODY_ACTOR": who})  # fmt: skip
        assert r.returncode == 0
    r = rotate(home, pins, key, PATH, "--env", "prod", "--emergency")
    assert r.returncode == 2 and "--reason" in r.stderr
    r = rotate(home, pins, key, PATH, "--env", "prod", "--emergency", "--reason", "leaked in CI")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert get(home, pins, "--label", "previous").returncode != 0  # revoked at once
    impact = [
        json.loads(x) for x in (Path(out["bundle"]) / "events.jsonl").read_text().splitlines()
    ]
    body = next(e["body"] for e in impact if e["kind"] == "secret.impact")
    assert {"svc-a", "svc-b"} <= set(body["readers"])
    assert verify_record(out["bundle"], people).returncode == 0


def test_a_supplied_value_is_checked_and_recorded_as_the_operators(dep):
    home, pins, key, _people, _tmp = dep
    before = sorted((home / "transcripts").iterdir()) if (home / "transcripts").exists() else []
    r = rotate(home, pins, key, PATH, "--env", "prod", "--stdin", input="weak")
    assert r.returncode == 2 and "16 characters" in r.stderr
    after = sorted((home / "transcripts").iterdir()) if (home / "transcripts").exists() else []
    assert after == before  # refused before anything was recorded
    r = rotate(home, pins, key, PATH, "--env", "prod", "--stdin", input=CANARY + "-new")
    assert r.returncode == 0, r.stderr
    ev = (Path(json.loads(r.stdout)["bundle"]) / "events.jsonl").read_text()
    assert '"source":"operator:admin"' in ev and CANARY not in ev
