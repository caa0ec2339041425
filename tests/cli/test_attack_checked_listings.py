"""Read-only commands given --pin-file (custody_cli/access_session.py seal_note) against
the operator with the disk: the rows must be checked BEFORE anything is looked up, shown
or written. A deleted principal row must not turn `principal show --pin-file` into "no
such principal" (exit 2, unaudited) instead of the seal's refusal (exit 6); `access show`
given --pin-file must refuse an edited store whatever the id, print nothing and write no
--record-out file; without the PIN the warning is still there. Real subprocesses on one
SoftHSMv2 deployment."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import cli_env, run_cli
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
PATH = "billing/db/password"


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("checked")
    home, pins = make_deployment(root / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    r = run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "billing", "--home", str(home),
                "--pin-file", str(pins), input="Checked-Canary-7q!Lw2#")  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli(home, pins, "principal", "add", "billing-svc", "--role", "service-user",
        "--service-account", "--service", "billing", "--env", "prod", "--token-out",
        str(root / "t"))  # fmt: skip
    r = run_cli("access", "request", PATH, "--env", "prod", "--for", "1h", "--why", "debug",
                "--json", "--home", str(home),
                env=cli_env(CUSTODY_TOKEN=(root / "t").read_text().strip()))  # fmt: skip
    assert r.returncode == 0, r.stderr
    req = json.loads(r.stdout)["id"]
    return home, pins, req, root


def _sql(home: Path, q: str) -> None:
    db = sqlite3.connect(home / "custody.db")
    with db:
        db.execute(q)
    db.close()


def test_a_deleted_principal_is_refused_by_the_seal_not_reported_missing(dep):
    home, pins, _req, root = dep
    saved = root / "saved.db"
    with sqlite3.connect(home / "custody.db") as a, sqlite3.connect(saved) as b:
        a.backup(b)
    try:
        _sql(home, "DELETE FROM principals WHERE name='billing-svc'")
        r = run_cli("principal", "show", "billing-svc", "--json", "--home", str(home),
                    "--pin-file", str(pins))  # fmt: skip
        assert r.returncode == 6 and "fail their seal" in r.stderr, (r.returncode, r.stderr)
        assert "billing-svc" not in r.stdout, r.stdout  # --json: only the error document
    finally:
        with sqlite3.connect(saved) as a, sqlite3.connect(home / "custody.db") as b:
            a.backup(b)


def test_access_show_with_the_pin_refuses_an_edited_store_and_writes_nothing(dep):
    home, pins, req, root = dep
    out = root / "record.json"
    try:
        _sql(home, "UPDATE principals SET role='service-admin' WHERE name='billing-svc'")
        for ident in (req, "req-does-not-exist"):
            r = run_cli("access", "show", ident, "--record-out", str(out), "--home",
                        str(home), "--pin-file", str(pins))  # fmt: skip
            assert r.returncode == 6 and "fail their seal" in r.stderr, (ident, r.stderr)
            assert r.stdout == "" and not out.exists(), ident
        r = run_cli("access", "show", req, "--home", str(home))  # no PIN: shown, flagged
        assert r.returncode == 0 and "NOT verified" in r.stderr, r.stderr
        assert json.loads(r.stdout)["access_seal"] == "unverified"
    finally:
        _sql(home, "UPDATE principals SET role='service-user' WHERE name='billing-svc'")
    r = run_cli("access", "show", req, "--home", str(home), "--pin-file", str(pins))
    assert r.returncode == 0 and json.loads(r.stdout)["access_seal"] == "checked", r.stderr


def test_listings_with_the_pin_write_nothing_before_the_rows_pass(dep):
    """`access requests` and `access grants` expire requests and lapse grants (a store
    write and an audit entry each): given --pin-file on an edited store, the seal refuses
    first, so nothing is written or audited from rows that fail it."""
    home, pins, req, _root = dep
    _sql(home, f"UPDATE access_requests SET not_after=1 WHERE id='{req}'")
    try:
        _sql(home, "UPDATE principals SET role='service-admin' WHERE name='billing-svc'")
        for args in (("access", "requests"), ("access", "grants")):
            r = run_cli(*args, "--json", "--home", str(home), "--pin-file", str(pins))
            assert r.returncode == 6 and "fail their seal" in r.stderr, (args, r.stderr)
        db = sqlite3.connect(home / "custody.db")
        state = db.execute("SELECT state FROM access_requests WHERE id=?", (req,)).fetchone()
        db.close()
        assert state == ("pending",), state
        out = run_cli("audit", "tail", "--home", str(home), "--json", "-n", "200").stdout
        assert not [e for e in json.loads(out)["entries"] if e["op"] == "access request expire"]
    finally:
        _sql(home, "UPDATE principals SET role='service-user' WHERE name='billing-svc'")
