"""``custody schedule run|status`` end to end on SQLite: ``--once`` runs each due job
(key rotation, secret rotation, checkpoint export, expiry warnings) exactly once, audits
and records it; a second ``--once`` in the same period runs nothing; a failing job does
not stop the others; and bad options are refused before anything runs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ceremonies.participants import create_participant
from tests.conftest import TEST_PIN, cli_env, passphrase_of, run_cli, write_secret
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
CANARY = "Schedule-Canary-9d1e!Wq4#Lp7@Zx"
JOBS = ["key-rotation", "secret-rotation", "checkpoint", "expiry-warnings"]


@pytest.fixture
def dep(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    home, pins = make_deployment(tmp_path / "d", data_objects=3)
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    people = tmp_path / "people"
    people.mkdir()
    write_secret(people / "admin.pass", passphrase_of("admin") + "\n")
    create_participant("admin", "super-admin", passphrase_of("admin"), people)
    key = ["--key", str(people / "admin.key.pem"), "--passphrase-file", str(people / "admin.pass")]
    r = run_cli("ceremony", "enrol", "--home", str(home), *key, "--add",
                str(people / "admin.pub.json"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli("secret", "put", "billing/db", "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "billing", "--home", str(home),
                "--pin-file", str(pins), input=CANARY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(home / "custody.db") as c:  # the secret is due for rotation
        c.execute("UPDATE secrets SET expires='2000-01-01T00:00:00Z'")
    return home, pins, key


def schedule(home: Path, pins: Path | None, *extra: str):
    pin = ("--pin-file", str(pins)) if pins is not None else ()
    return run_cli("schedule", *extra, "--home", str(home), *pin)


def audit_ops(home: Path) -> list[tuple[str, str, str]]:
    r = run_cli("audit", "tail", "-n", "200", "--home", str(home), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    rows = doc["entries"] if isinstance(doc, dict) else doc
    return [(e["op"], e["target"], e["outcome"]) for e in rows if e["op"] == "schedule.run"]


def test_once_runs_each_due_job_once_and_records_it(dep, tmp_path: Path) -> None:
    home, pins, key = dep
    wit = tmp_path / "witness"
    wit.mkdir()
    r = schedule(home, pins, "run", "--once", "--json", "--export", str(wit), *key)
    assert r.returncode == 0, r.stderr
    tick = json.loads(r.stdout)
    assert tick["leader"] is True
    assert [(x["job"], x["outcome"]) for x in tick["ran"]] == [(j, "ok") for j in JOBS]
    secret = next(x for x in tick["ran"] if x["job"] == "secret-rotation")
    assert secret["detail"].startswith("rotated 1 of 1 due")
    assert CANARY not in r.stdout + r.stderr
    got = run_cli("secret", "get", "billing/db", "--env", "prod", "--home", str(home),
                  "--pin-file", str(pins), "--json")  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["version"] == 2  # rotated by the scheduler
    assert len(list(wit.glob("*.json"))) == 1  # the checkpoint was exported
    ops = audit_ops(home)
    assert ops == [("schedule.run", j, o) for j in JOBS for o in ("intent", "ok")]
    # the same period: a second replica (or cron) runs nothing again
    again = schedule(home, pins, "run", "--once", "--json", *key)
    assert again.returncode == 0 and json.loads(again.stdout)["ran"] == []
    assert audit_ops(home) == ops
    st = schedule(home, None, "status", "--json")
    doc = json.loads(st.stdout)
    assert doc["leader"] is None  # --once gives the lease back
    assert {j: doc["jobs"][j]["outcome"] for j in JOBS} == dict.fromkeys(JOBS, "ok")
    text = schedule(home, None, "status").stdout
    assert "leader: none" in text and "checkpoint" in text and "ok" in text


def test_a_failing_job_does_not_stop_the_others(dep) -> None:
    home, _pins, _key = dep  # no --key: secret rotation cannot sign its record
    r = run_cli("schedule", "run", "--once", "--interval", "0.5", "--home", str(home),
                env=cli_env(CUSTODY_PIN=TEST_PIN))  # fmt: skip
    assert r.returncode == 1, r.stderr  # a job failed (cron sees it); the PIN from $CUSTODY_PIN
    assert "ran secret-rotation: failed (Secret rotation needs a signing key)" in r.stdout
    assert "ran expiry-warnings: ok" in r.stdout and "ran checkpoint: ok" in r.stdout
    ops = audit_ops(home)
    assert ("schedule.run", "secret-rotation", "failed") in ops
    assert ("schedule.run", "expiry-warnings", "ok") in ops
    assert ("schedule.run", "checkpoint", "ok") in ops
    log = run_cli("audit", "tail", "-n", "200", "--home", str(home), "--json").stdout
    assert TEST_PIN not in log and TEST_PIN not in r.stdout + r.stderr


def test_bad_options_are_refused_before_anything_runs(dep) -> None:
    home, pins, _key = dep
    for args in (("--interval", "0"), ("--lease-seconds", "0"), ("--job", "rm-rf"),
                 ("--overlap", "x")):  # fmt: skip
        r = schedule(home, pins, "run", "--once", *args)
        assert r.returncode != 0 and "Traceback" not in r.stderr, args
    assert audit_ops(home) == []
    assert "never run" in schedule(home, None, "status").stdout
