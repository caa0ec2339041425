"""`custody access seal` after tampering, by the operator with the disk and the token PIN but
not the bound super-admin's TOTP device. Once the local operator is bound (`custody access
local-mfa ops`), re-sealing rows that fail their seal must still need ops's current code,
whatever the disk operator did to the rows that say who is bound: the binding row deleted,
renamed to a principal whose code they know, ops's enrolment pointed back at an older
secret they kept, ops's enrolment deleted, or the audit log truncated before the binding.
Each attack is refused and nothing is sealed (the rows still fail their seal afterwards).
Real subprocesses on one SoftHSMv2 deployment; each attack succeeded before the token
anchored the binding (`custody/access/seal.py`, "Local-operator binding anchor")."""

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


class Totp:
    """An authenticator: a fresh code each time (codes are single-use per step)."""

    def __init__(self, key: bytes) -> None:
        self.key, self.last = key, -1

    def code(self) -> str:
        """The next unused code that custody will still accept (steps now-1 .. now+1) by the
        time the subprocess checks it: the previous step only early in a window, so a
        window that ends meanwhile cannot make it stale; none left: wait for the next."""
        while True:
            t = time.time()
            now = int(t) // 30
            step = max(now - 1 if t % 30 < 20 else now, self.last + 1)
            if step <= now + 1:
                self.last = step
                return totp_code(self.key, step)
            time.sleep(30.05 - t % 30)


def _enrol(h: tuple[str, ...], name: str, png: Path) -> bytes:
    r = run_cli("mfa", "enrol", name, "--png", str(png), "--json", *h)
    assert r.returncode == 0, r.stderr
    return base64.b32decode(json.loads(r.stdout)["secret_b32"])


def _verify(h: tuple[str, ...], name: str, t: Totp) -> None:
    r = run_cli("mfa", "verify", name, "--stdin", *h, input=t.code() + "\n")
    assert r.returncode == 0, r.stderr


def _sql(home: Path, *stmts: tuple[str, tuple]) -> None:
    db = sqlite3.connect(home / "custody.db")
    with db:
        for q, p in stmts:
            db.execute(q, p)
    db.close()


def _bound(tmp_path: Path) -> tuple[Path, tuple[str, ...], Totp, Totp]:
    """A home whose local operator is bound to ops's TOTP; mallory (a principal the disk
    operator enrolled before the binding) has a confirmed TOTP whose key they know."""
    home, pins = make_deployment(tmp_path / "d")
    h = ("--home", str(home), "--pin-file", str(pins))
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    for name in ("ops", "mallory"):
        cli(home, pins, "principal", "add", name, "--role", "service-user", "--service-account",
            "--service", "billing", "--token-out", str(tmp_path / f"{name}.token"))  # fmt: skip
    ops = Totp(_enrol(h, "ops", tmp_path / "ops.png"))
    mallory = Totp(_enrol(h, "mallory", tmp_path / "m.png"))
    _verify(h, "ops", ops)
    _verify(h, "mallory", mallory)
    r = run_cli("access", "local-mfa", "ops", *h, env=cli_env(CUSTODY_MFA_CODE=ops.code()))
    assert r.returncode == 0, r.stderr
    return home, h, ops, mallory


def _seal(h: tuple[str, ...], code: str | None = None):
    env = cli_env(CUSTODY_MFA_CODE=code) if code is not None else cli_env()
    return run_cli("access", "seal", "--json", *h, env=env)


def _still_refused(home: Path, h: tuple[str, ...], t: Totp) -> None:
    """Nothing was sealed: a decision with the token (and ops's code) still refuses."""
    r = run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "billing", *h, input="Reseal-Canary-1!aB",
                env=cli_env(CUSTODY_MFA_CODE=t.code()))  # fmt: skip
    assert r.returncode == 6 and "fail their seal" in r.stderr, (r.returncode, r.stderr)


def test_a_deleted_binding_does_not_let_the_pin_alone_reseal(tmp_path: Path):
    home, h, ops, _m = _bound(tmp_path)
    _sql(home, ("DELETE FROM meta WHERE key='access_local_operator'", ()))
    r = _seal(h)
    assert r.returncode == 7 and "ops's current TOTP code is needed" in r.stderr, r.stderr
    _still_refused(home, h, ops)
    # ops's enrolment deleted too: there is no code left to give, still refused
    _sql(home, ("DELETE FROM mfa_enrolments WHERE principal='ops'", ()))
    r = _seal(h)
    assert r.returncode in (6, 7) and '"sealed":' not in r.stdout, (r.returncode, r.stderr)
    out = run_cli("audit", "tail", "--home", str(home), "--json", "-n", "100").stdout
    assert any(
        e["op"] == "access decide" and e["outcome"] == "denied"
        and e["details"].get("action") == "access seal"
        for e in json.loads(out)["entries"]
    )  # fmt: skip


def test_with_the_bound_code_the_reviewed_rows_are_resealed(tmp_path: Path):
    """The recovery path stays open: ops gives its code and the rows are sealed as they are."""
    home, h, ops, _m = _bound(tmp_path)
    _sql(home, ("DELETE FROM meta WHERE key='access_local_operator'", ()))
    r = _seal(h, ops.code())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["by"] == "ops"
    # ops reviewed and accepted the rows without the binding: they pass their seal now
    r = run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "billing", *h,
                input="Reseal-Canary-2!aB")  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_a_binding_renamed_to_a_known_factor_does_not_reseal(tmp_path: Path):
    home, h, ops, mallory = _bound(tmp_path)
    _sql(home, ("UPDATE meta SET value='mallory' WHERE key='access_local_operator'", ()))
    r = _seal(h, mallory.code())
    assert r.returncode != 0 and '"sealed":' not in r.stdout, (r.returncode, r.stdout, r.stderr)
    _still_refused(home, h, ops)


def test_an_older_secret_put_back_under_the_bound_enrolment_does_not_reseal(tmp_path: Path):
    """The disk operator enrolled ops themselves (unconfirmed) before the real enrolment and
    kept that secret's objects row; later they put it back and point ops's enrolment at it,
    so that a code they can compute would verify as ops's."""
    home, pins = make_deployment(tmp_path / "d")
    h = ("--home", str(home), "--pin-file", str(pins))
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    cli(home, pins, "principal", "add", "ops", "--role", "service-user", "--service-account",
        "--service", "billing", "--token-out", str(tmp_path / "ops.token"))  # fmt: skip
    old = Totp(_enrol(h, "ops", tmp_path / "old.png"))
    db = sqlite3.connect(home / "custody.db")
    (old_uid,) = db.execute(
        "SELECT object_uid FROM mfa_enrolments WHERE principal='ops'"
    ).fetchone()
    kept = db.execute("SELECT * FROM objects WHERE uid=?", (old_uid,)).fetchone()
    db.close()
    ops = Totp(_enrol(h, "ops", tmp_path / "ops.png"))  # replaces the unconfirmed one
    _verify(h, "ops", ops)
    r = run_cli("access", "local-mfa", "ops", *h, env=cli_env(CUSTODY_MFA_CODE=ops.code()))
    assert r.returncode == 0, r.stderr
    marks = ",".join("?" * (len(kept) - 1))  # a new row id, the kept uid and ciphertext
    _sql(
        home,
        (f"INSERT INTO objects VALUES (NULL,{marks})", tuple(kept[1:])),
        ("UPDATE mfa_enrolments SET object_uid=? WHERE principal='ops'", (old_uid,)),
    )
    r = _seal(h, old.code())
    assert r.returncode == 6 and "not the one sealed" in r.stderr, (r.returncode, r.stderr)
    assert '"sealed":' not in r.stdout


def test_a_truncated_audit_log_does_not_unbind(tmp_path: Path):
    """The audit log is on the same disk: cut back to before the binding, and the binding
    row deleted, it would say nobody is bound."""
    home, h, ops, _m = _bound(tmp_path)
    log = sqlite3.connect(home / "audit.db")
    with log:
        seqs = [
            s
            for s, line in log.execute("SELECT seq, line FROM entries")
            if b"access local-mfa" in bytes(line)
        ]
        cut = min(seqs)
        log.execute("DELETE FROM entries WHERE seq>=?", (cut,))
        log.execute("DELETE FROM checkpoints WHERE tree_size>?", (cut,))
        if log.execute("SELECT 1 FROM sqlite_master WHERE name='seals'").fetchone():
            log.execute("DELETE FROM seals WHERE seq>=?", (cut,))
    log.close()
    _sql(home, ("DELETE FROM meta WHERE key='access_local_operator'", ()))
    r = _seal(h)
    assert r.returncode == 7 and "ops's current TOTP code is needed" in r.stderr, r.stderr
    _still_refused(home, h, ops)


def test_a_lifted_binding_lets_the_pin_reseal_again(tmp_path: Path):
    """The anchor follows the binding: lifted with ops's code, the PIN alone re-seals."""
    home, h, ops, _m = _bound(tmp_path)
    r = run_cli("access", "local-mfa", "--off", *h, env=cli_env(CUSTODY_MFA_CODE=ops.code()))
    assert r.returncode == 0, r.stderr
    _sql(home, ("DELETE FROM principals WHERE name='mallory'", ()))
    r = _seal(h)
    assert r.returncode == 0, r.stderr
