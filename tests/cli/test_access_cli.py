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

    # principals: listed without any token; a new token retires the old; revoking ends it
    r = run_cli("principal", "list", "--home", str(home), "--json")
    listed = {p["name"]: p for p in json.loads(r.stdout)}
    assert listed["billing-svc"]["token"]["id"] == token.split("_")[1] and token not in r.stdout
    assert listed["alice"]["fingerprint"] and listed["alice"]["kind"] == "person"
    new = tmp_path / "svc2.token"
    cli(home, pins, "principal", "token", "billing-svc", "--token-out", str(new))
    r = run_cli("access", "revoke", out["grant"], *as_svc)  # the old token: refused
    assert r.returncode == 7 and "token was refused" in r.stderr
    cli(home, pins, "principal", "revoke", "billing-svc", "--token-only")
    r = run_cli("access", "revoke", out["grant"], "--home", str(home), "--token-file", str(new))
    assert r.returncode == 7 and "token was refused" in r.stderr

    # the service reads only its own audit entries (its token was revoked: use --as)
    r = run_cli("audit", "tail", "-n", "50", "--home", str(home), "--as", "billing-svc", "--json")
    assert r.returncode == 0, r.stderr
    own = json.loads(r.stdout)["entries"]
    assert own and {e["actor"] for e in own} == {"billing-svc"}

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


def _setup(tmp_path: Path, *names: str) -> tuple[Path, Path, Path]:
    """A home with a secrets KEK, the enrolled people (admin, *names*) and their keys."""
    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    people = tmp_path / "people"
    people.mkdir()
    roster = (("admin", "super-admin"), *((n, "custodian") for n in names))
    for n, role in roster:
        write_secret(people / f"{n}.pass", passphrase_of(n) + "\n")
        create_participant(n, role, passphrase_of(n), people)
    adds = [a for n, _r in roster for a in ("--add", str(people / f"{n}.pub.json"))]
    r = run_cli("ceremony", "enrol", "--home", str(home), "--key", str(people / "admin.key.pem"),
                "--passphrase-file", str(people / "admin.pass"), *adds, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    for n in names:
        cli(home, pins, "principal", "add", n, "--role", "service-admin", "--key",
            str(people / f"{n}.pub.json"), "--service", "billing")  # fmt: skip
    return home, pins, people


def _key(people: Path, n: str) -> list[str]:
    return ["--key", str(people / f"{n}.key.pem"), "--passphrase-file", str(people / f"{n}.pass")]


def test_quorum_release_once_sealed_to_the_requester(tmp_path: Path):
    home, pins, people = _setup(tmp_path, "alice", "bob", "dave")
    h = ["--home", str(home)]
    r = run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "billing", *h, "--pin-file", str(pins),
                input=CANARY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert run_cli("access", "release-rule", PATH, "--env", "prod", "--quorum", "2",
                   *h, "--pin-file", str(pins)).returncode == 0  # fmt: skip
    r = run_cli("secret", "get", PATH, "--env", "prod", *h, "--pin-file", str(pins))
    assert r.returncode == 7 and "released only by quorum" in r.stderr and CANARY not in r.stdout
    r = run_cli("access", "request", PATH, "--env", "prod", "--for", "30m", "--why", "rotate "
                "the replica by hand", "--release", "--as", "dave", *h, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rid = json.loads(r.stdout)["id"]
    for n in ("alice", "bob"):
        a = run_cli("access", "approve", rid, *_key(people, n), *h, "--json")
        assert a.returncode == 0, a.stderr
    out = tmp_path / "sealed.json"
    rel = ["access", "release", rid, "--as", "dave", *h, "--pin-file", str(pins), "--out"]
    r = run_cli(*rel, str(out))
    assert r.returncode == 0, r.stderr
    assert CANARY.encode() not in out.read_bytes() and out.stat().st_mode & 0o077 == 0
    again = run_cli(*rel, str(tmp_path / "again.json"))  # replayed: refused
    assert again.returncode == 7 and "already delivered" in again.stderr
    assert not (tmp_path / "again.json").exists()

    def open_with(n: str):
        return run_cli("access", "open", str(out), "--key", str(people / f"{n}.enc.pem"),
                       "--passphrase-file", str(people / f"{n}.pass"))  # fmt: skip

    mine = open_with("dave")
    assert mine.returncode == 0 and mine.stdout == CANARY, mine.stderr
    theirs = open_with("alice")
    assert theirs.returncode == 6 and "another principal's key" in theirs.stderr


def test_an_emergency_rotation_revokes_grants_and_records_who_read(tmp_path: Path):
    home, pins, people = _setup(tmp_path, "alice")
    hook_out = tmp_path / "hook.jsonl"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ncat >> {hook_out}\necho >> {hook_out}\n")
    hook.chmod(0o700)
    conf = home / "custody.toml"
    text = conf.read_text()
    assert "[policy]" in text
    conf.write_text(text.replace("[policy]\n", f'[policy]\nalert_hook = "{hook}"\n', 1))
    h = ["--home", str(home)]
    api = "billing/stripe/api-key"
    r = run_cli("secret", "generate", api, "--env", "prod", "--category", "external-api-key",
                "--owner", "billing", "--prefix", "bill_live", *h, "--pin-file",
                str(pins))  # fmt: skip
    assert r.returncode == 0, r.stderr
    tok = tmp_path / "svc.token"
    cli(home, pins, "principal", "add", "billing-svc", "--role", "service-user",
        "--service-account", "--service", "billing", "--token-out", str(tok))  # fmt: skip
    svc = [*h, "--token-file", str(tok)]
    r = run_cli("access", "request", api, "--env", "prod", "--for", "2h", "--why", "deploy",
                *svc, "--json")  # fmt: skip
    rid = json.loads(r.stdout)["id"]
    g = run_cli("access", "approve", rid, *_key(people, "alice"), *h, "--json")
    assert g.returncode == 0 and json.loads(g.stdout)["grant"], g.stderr
    assert run_cli("secret", "get", api, "--env", "prod", *svc, "--pin-file",
                   str(pins)).returncode == 0  # fmt: skip
    r = run_cli("secret", "rotate", api, "--env", "prod", "--emergency", "--reason",
                "key found in a public repo", *_key(people, "admin"), *h, "--pin-file",
                str(pins), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    inc = json.loads(r.stdout)["incident"]
    assert [x["principal"] for x in inc["revoked_grants"]] == ["billing-svc"]
    assert "billing-svc" in inc["readers"] and "billing-svc" in inc["held_access"]["by_grant"]
    assert "alice" in inc["held_access"]["by_role"]  # the service's admin could read it
    assert json.loads(Path(inc["file"]).read_text())["readers"] == inc["readers"]
    r = run_cli("secret", "get", api, "--env", "prod", *svc, "--pin-file", str(pins))
    assert r.returncode == 7 and "revoked" in r.stderr
    alerts = [json.loads(x) for x in hook_out.read_text().split("\n") if x.strip()]
    kinds = {a["kind"] for a in alerts}
    assert "access-incident" in kinds, kinds
    sent = next(a for a in alerts if a["kind"] == "access-incident")
    assert sent["owner"] == "billing" and "billing-svc" in sent["consumers"]
