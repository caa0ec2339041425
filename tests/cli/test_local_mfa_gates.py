"""Once the local PIN holder is bound to a TOTP enrolment (`custody access local-mfa`), the
super-admin actions outside the policy table need that enrolment's current code too:
enrolling or confirming a second factor, adding, re-issuing or revoking a principal,
re-sealing the rows, lifting the binding. The PIN holder acting alone tries each one with
the PIN only (and under another name): each is refused (exit 7), audited as denied, and
changes nothing. Real subprocesses on one SoftHSMv2 deployment."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from ceremonies.participants import create_participant
from custody.access.mfa import totp_code
from tests.conftest import cli_env, passphrase_of, run_cli, write_secret
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm


def _enrol(h: tuple[str, ...], name: str, png: Path, **env: str):
    return run_cli("mfa", "enrol", name, "--png", str(png), "--json", *h, env=cli_env(**env))


def _state(home: Path) -> tuple[list, list]:
    mfa = json.loads(run_cli("mfa", "list", "--json", "--home", str(home)).stdout)
    who = json.loads(run_cli("principal", "list", "--json", "--home", str(home)).stdout)
    return sorted((m["principal"], m["confirmed"]) for m in mfa), sorted(
        (p["name"], p["role"], p["revoked_at"], (p["token"] or {}).get("id")) for p in who
    )


def test_the_pin_alone_cannot_enrol_add_revoke_or_reseal_once_bound(tmp_path: Path):
    home, pins = make_deployment(tmp_path / "d")
    h = ("--home", str(home), "--pin-file", str(pins))
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    for name in ("ops", "newbie", "late"):
        cli(home, pins, "principal", "add", name, "--role", "service-user", "--service-account",
            "--service", "billing", "--token-out", str(tmp_path / f"{name}.token"))  # fmt: skip
    r = _enrol(h, "ops", tmp_path / "ops.png")
    assert r.returncode == 0, r.stderr
    key = base64.b32decode(json.loads(r.stdout)["secret_b32"])
    r = _enrol(h, "late", tmp_path / "late.png")  # enrolled before the binding, unconfirmed
    assert r.returncode == 0, r.stderr
    late_key = base64.b32decode(json.loads(r.stdout)["secret_b32"])
    if time.time() % 30 > 20:  # step - 1 must still be valid when the subprocess checks it
        time.sleep(30.05 - time.time() % 30)
    step = int(time.time()) // 30
    r = run_cli("mfa", "verify", "ops", "--stdin", *h, input=totp_code(key, step - 1) + "\n")
    assert r.returncode == 0, r.stderr
    r = run_cli("access", "local-mfa", "ops", *h,
                env=cli_env(CUSTODY_MFA_CODE=totp_code(key, step)))  # fmt: skip
    assert r.returncode == 0, r.stderr
    before = _state(home)

    def refused(*args: str, **env: str) -> str:
        r = run_cli(*args, *h, env=cli_env(**env))
        assert r.returncode == 7, (args, r.returncode, r.stderr)
        assert "ops's current TOTP code is needed" in r.stderr or "MFA code" in r.stderr
        assert _state(home) == before, args
        return r.stderr

    # a new second factor for anyone, or confirming one enrolled earlier
    refused("mfa", "enrol", "newbie", "--png", str(tmp_path / "n.png"))
    assert not (tmp_path / "n.png").exists()
    refused("mfa", "enrol", "newbie", "--png", str(tmp_path / "n.png"), CUSTODY_ACTOR="ops")
    r = run_cli("mfa", "verify", "late", "--stdin", *h, input=totp_code(late_key, step) + "\n")
    assert r.returncode == 7 and "TOTP code is needed" in r.stderr, r.stderr
    assert _state(home) == before
    # a principal that gets a token (here a service-admin of billing: it would read billing's
    # secrets with no second factor), a new token, a revocation (it would drop ops's factor)
    refused("principal", "add", "evil", "--role", "service-admin", "--service-account",
            "--service", "billing", "--token-out", str(tmp_path / "evil.token"))  # fmt: skip
    assert not (tmp_path / "evil.token").exists()
    refused("principal", "token", "newbie", "--token-out", str(tmp_path / "n2.token"))
    refused("principal", "revoke", "ops")
    refused("principal", "revoke", "newbie", "--token-only")
    # re-sealing (it would bless rows altered on disk) and lifting the binding
    refused("access", "seal")
    refused("access", "local-mfa", "--off")
    # a wrong code is no better (and counts towards ops's lockout)
    bad = f"{(int(totp_code(key, step + 1)) + 1) % 1_000_000:06d}"
    refused("access", "seal", CUSTODY_MFA_CODE=bad)
    out = run_cli("audit", "tail", "--home", str(home), "--json", "-n", "400").stdout
    log = json.loads(out)["entries"]
    denied = {
        e["details"].get("action")
        for e in log
        if e["op"] == "access decide" and e["outcome"] == "denied"
    }
    assert {"mfa enrol", "mfa confirm", "principal add", "principal token", "principal revoke",
            "principal revoke-token", "access seal"} <= denied  # fmt: skip
    # with ops's current code the same action goes through
    r = run_cli("principal", "add", "ok-svc", "--role", "service-user", "--service-account",
                "--service", "billing", "--token-out", str(tmp_path / "ok.token"), *h,
                env=cli_env(CUSTODY_MFA_CODE=totp_code(key, step + 1)))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert any(p[0] == "ok-svc" for p in _state(home)[1])


def test_unbound_operator_still_enrols_without_a_code(tmp_path: Path):
    """Nothing changes before a binding: the first super-admin bootstraps with the PIN."""
    home, pins = make_deployment(tmp_path / "d")
    h = ("--home", str(home), "--pin-file", str(pins))
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    cli(home, pins, "principal", "add", "ops", "--role", "service-user", "--service-account",
        "--service", "billing", "--token-out", str(tmp_path / "ops.token"))  # fmt: skip
    r = _enrol(h, "ops", tmp_path / "ops.png")
    assert r.returncode == 0, r.stderr
    r = run_cli("access", "seal", "--json", *h)
    assert r.returncode == 0, r.stderr


def test_naming_an_unenrolled_super_admin_does_not_escape_the_binding(tmp_path: Path):
    """--as NAME of a super-admin with no TOTP enrolment: once the local operator is bound,
    that super-admin needs a code of its own, which it does not have (refused, exit 7)."""
    home, pins = make_deployment(tmp_path / "d")
    h = ("--home", str(home), "--pin-file", str(pins))
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    people = tmp_path / "people"
    people.mkdir()
    write_secret(people / "admin.pass", passphrase_of("admin") + "\n")
    create_participant("admin", "super-admin", passphrase_of("admin"), people)
    r = run_cli("ceremony", "enrol", "--home", str(home), "--key", str(people / "admin.key.pem"),
                "--passphrase-file", str(people / "admin.pass"), "--add",
                str(people / "admin.pub.json"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli(home, pins, "principal", "add", "admin", "--role", "super-admin", "--key",
        str(people / "admin.pub.json"))  # fmt: skip
    cli(home, pins, "principal", "add", "ops", "--role", "service-user", "--service-account",
        "--service", "billing", "--token-out", str(tmp_path / "ops.token"))  # fmt: skip
    r = _enrol(h, "ops", tmp_path / "ops.png")
    assert r.returncode == 0, r.stderr
    key = base64.b32decode(json.loads(r.stdout)["secret_b32"])
    if time.time() % 30 > 20:  # step - 1 must still be valid when the subprocess checks it
        time.sleep(30.05 - time.time() % 30)
    step = int(time.time()) // 30
    r = run_cli("mfa", "verify", "ops", "--stdin", *h, input=totp_code(key, step - 1) + "\n")
    assert r.returncode == 0, r.stderr
    put = ("secret", "put", "billing/db/password", "--env", "prod", "--stdin", "--category",
           "database-credential", "--owner", "billing", "--as", "admin", *h)  # fmt: skip
    r = run_cli(*put, input="Gate-As-Canary-0!aB")  # before the binding: the PIN suffices
    assert r.returncode == 0, r.stderr
    r = run_cli("access", "local-mfa", "ops", *h,
                env=cli_env(CUSTODY_MFA_CODE=totp_code(key, step)))  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli(*put, input="Gate-As-Canary-1!aB")
    assert r.returncode == 7, r.stderr
    r = run_cli("access", "seal", "--as", "admin", *h)
    assert r.returncode == 7 and "TOTP code is needed" in r.stderr, r.stderr
    r = run_cli("secret", "versions", "billing/db/password", "--env", "prod", "--json",
                "--home", str(home))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Gate-As-Canary" not in r.stdout and len(json.loads(r.stdout)["versions"]) == 1
