"""The local PIN holder is super-admin; once bound to a TOTP enrolment (`custody access
local-mfa`), every super-admin action needs that enrolment's current code as well as the
PIN. The PIN holder acting alone cannot get around it: not by omitting the code, not by
naming themselves otherwise ($CUSTODY_ACTOR), and not by deleting the binding in
custody.db (it is under the access seal). Real subprocesses on one SoftHSMv2 deployment."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from pathlib import Path

import pytest

from custody.access.mfa import totp_code
from tests.conftest import cli_env, run_cli
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
PATH = "billing/db/password"


def _put(home: Path, pins: Path, value: str, **env: str):
    return run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--category",
                   "database-credential", "--owner", "billing", "--home", str(home),
                   "--pin-file", str(pins), input=value, env=cli_env(**env))  # fmt: skip


def test_a_bound_local_operator_needs_the_totp_code_for_super_admin_actions(tmp_path: Path):
    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    cli(home, pins, "principal", "add", "ops", "--role", "service-user", "--service-account",
        "--service", "billing", "--token-out", str(tmp_path / "ops.token"))  # fmt: skip
    r = run_cli("mfa", "enrol", "ops", "--png", str(tmp_path / "ops.png"), "--json",
                "--home", str(home), "--pin-file", str(pins))  # fmt: skip
    assert r.returncode == 0, r.stderr
    key = base64.b32decode(json.loads(r.stdout)["secret_b32"])
    step = int(time.time()) // 30
    r = run_cli("mfa", "verify", "ops", "--stdin", "--home", str(home), "--pin-file",
                str(pins), input=totp_code(key, step - 1) + "\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    h = ("--home", str(home), "--pin-file", str(pins))
    # binding needs the code (proof that the binder holds the factor)
    r = run_cli("access", "local-mfa", "ops", *h)
    assert r.returncode == 7 and "TOTP code is needed" in r.stderr
    r = run_cli("access", "local-mfa", "ops", "--json", *h,
                env=cli_env(CUSTODY_MFA_CODE=totp_code(key, step)))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": True, "local_operator_mfa": "ops"}
    # now the PIN alone is refused, under any name it gives itself
    r = _put(home, pins, "Local-Mfa-Canary-1!aB")
    assert r.returncode == 7, r.stderr
    r = _put(home, pins, "Local-Mfa-Canary-1!aB", CUSTODY_ACTOR="someone-else")
    assert r.returncode == 7, r.stderr
    # with the code it works
    r = _put(home, pins, "Local-Mfa-Canary-1!aB", CUSTODY_MFA_CODE=totp_code(key, step + 1))
    assert r.returncode == 0, r.stderr
    log = run_cli("audit", "tail", "--home", str(home), "--json", "-n", "200")
    assert '"access local-mfa"' in log.stdout and "Local-Mfa-Canary" not in log.stdout
    # the disk operator deletes the binding: every decision with the token refuses
    db = sqlite3.connect(home / "custody.db")
    with db:
        db.execute("DELETE FROM meta WHERE key='access_local_operator'")
    db.close()
    r = _put(home, pins, "Local-Mfa-Canary-2!aB")
    assert r.returncode == 6 and "fail their seal" in r.stderr
