"""The grant flow end to end through the CLI (subprocesses): a service principal asks for a
high-class secret, two approvers sign with their participant keys, the service reads it
with its token, the signed record verifies offline with the approvers' identity files (and
not with one of them), the requester cannot approve, revocation ends the read, and every
denial exits 7 with its reason in the audit log. The token never reaches argv, the store or
the log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ceremonies.participants import create_participant
from custody.audit.log import AuditLog
from tests.conftest import cli_env, passphrase_of, run_cli, write_secret
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
CANARY = "Access-Canary-9q2!Lm7#Tz4@Rw"
PATH = "billing/db/password"


def _audit(home: Path) -> list[dict]:
    with AuditLog(home / "audit.db") as log:
        return [json.loads(x) for x in log.lines()]


def test_request_two_signed_approvals_read_verify_revoke(tmp_path: Path):
    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    people = tmp_path / "people"
    people.mkdir()
    for n, role in (("admin", "super-admin"), ("alice", "custodian"), ("bob", "custodian")):
        write_secret(people / f"{n}.pass", passphrase_of(n) + "\n")
        create_participant(n, role, passphrase_of(n), people)
    adds = [a for n in ("admin", "alice", "bob") for a in ("--add", str(people / f"{n}.pub.json"))]
    r = run_cli("ceremony", "enrol", "--home", str(home), "--key", str(people / "admin.key.pem"),
                "--passphrase-file", str(people / "admin.pass"), *adds, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "billing", "--home", str(home), "--pin-file",
                str(pins), input=CANARY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    for n in ("alice", "bob"):
        cli(home, pins, "principal", "add", n, "--role", "service-admin", "--key",
            str(people / f"{n}.pub.json"), "--service", "billing")  # fmt: skip
    tok = tmp_path / "svc.token"
    cli(home, pins, "principal", "add", "billing-svc", "--role", "service-user",
        "--service-account", "--service", "billing", "--env", "prod",
        "--token-out", str(tok))  # fmt: skip
    token = tok.read_text().strip()
    assert tok.stat().st_mode & 0o077 == 0 and len(token.split("_", 2)[2]) == 43
    as_svc = ["--home", str(home), "--token-file", str(tok)]

    # before any grant: the service is denied, exit 7, with the reason
    r = run_cli("secret", "get", PATH, "--env", "prod", *as_svc, "--pin-file", str(pins))
    assert r.returncode == 7 and "no live grant" in r.stderr and CANARY not in r.stdout

    r = run_cli("access", "request", PATH, "--env", "prod", "--for", "1h", "--why",
                "incident 7: check the replica credentials", *as_svc, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    req = json.loads(r.stdout)
    assert (req["requester"], req["needed"], req["class"]) == ("billing-svc", 2, "high")

    def approve(n: str):
        return run_cli("access", "approve", req["id"], "--key", str(people / f"{n}.key.pem"),
                       "--passphrase-file", str(people / f"{n}.pass"), "--home", str(home),
                       "--json")  # fmt: skip

    one = approve("alice")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["grant"] is None
    two = approve("bob")
    assert two.returncode == 0, two.stderr
    out = json.loads(two.stdout)
    assert out["approvals"] == 2 and out["grant"]
    record = out["record"]

    # the service reads with its token from the environment (never argv)
    env = cli_env(CUSTODY_TOKEN=token)
    r = run_cli("secret", "get", PATH, "--env", "prod", "--home", str(home), "--pin-file",
                str(pins), "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["value"] == CANARY
    # ... but not in another environment, and never a write
    r = run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--home", str(home),
                "--pin-file", str(pins), input="x" * 40, env=env)  # fmt: skip
    assert r.returncode == 7 and "may never write" in r.stderr

    # offline: the record verifies with both approvers pinned, not with one
    v = run_cli("access", "verify", record, "--trust", str(people / "alice.pub.json"),
                "--trust", str(people / "bob.pub.json"))  # fmt: skip
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr
    v = run_cli("access", "verify", record, "--trust", str(people / "alice.pub.json"))
    assert v.returncode == 6 and "1 of 2" in v.stderr

    # revoke early: reads stop
    r = run_cli("access", "revoke", out["grant"], "--reason", "incident closed", "--home",
                str(home))  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli("secret", "get", PATH, "--env", "prod", "--home", str(home), "--pin-file",
                str(pins), env=env)  # fmt: skip
    assert r.returncode == 7 and "revoked" in r.stderr

    entries = _audit(home)
    ops = {(e["op"], e["outcome"]) for e in entries}
    for op in ("access request", "access approve", "access grant", "access grant use",
               "access grant revoke"):  # fmt: skip
        assert (op, "ok") in ops, op
    denied = [e for e in entries if e["op"] == "access decide" and e["outcome"] == "denied"]
    assert len(denied) == 3 and all(e["details"]["reason"] for e in denied)
    for f in ("custody.db", "audit.db"):
        data = (home / f).read_bytes()
        assert token.encode() not in data and CANARY.encode() not in data
