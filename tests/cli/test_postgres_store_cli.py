"""The CLI on a PostgreSQL store, end to end: ``init --store URL`` (no SQLite file in the
home), DEKs, a KEK rotation and ``rekey run``, a secret put/get, and what an insider cannot
do (a password in the URL, a snapshot of the SQLite file that is not there)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from tests.conftest import run_cli
from tests.pg_fixtures import PgServer
from tests.rekey_fixtures import cli, cli_json, write_pins

pytestmark = pytest.mark.postgres
VALUE = "Canary-Value-7f3a!Qx9#Lm2@Zr8$Wt"


def pg_home(tmp_path: Path, url: str) -> tuple[Path, Path]:
    pins = write_pins(tmp_path / "pins")
    home = tmp_path / "home"
    r = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--dev-root", "--store", url)
    assert r.returncode == 0, r.stderr
    return home, pins


def test_a_deployment_on_postgresql_end_to_end(tmp_path: Path, pg_url: str) -> None:
    home, pins = pg_home(tmp_path, pg_url)
    assert not (home / "custody.db").exists()
    assert f'store = "{pg_url}"' in (home / "custody.toml").read_text()
    cli(home, pins, "kek", "rotate", "--branch", "data")
    cli(home, pins, "dek", "generate", "--count", "40")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    put = run_cli(
        *("secret", "put", "app/db", "--env", "prod", "--stdin", "--category"),
        *("database-credential", "--owner", "app", "--home", str(home)),
        *("--pin-file", str(pins), "--json"),
        input=VALUE,
    )
    assert put.returncode == 0, put.stderr
    cli(home, pins, "kek", "rotate", "--branch", "data")
    run = cli_json(home, pins, "rekey", "run")
    assert run["ok"] is True
    got = json.loads(cli(home, pins, "secret", "get", "app/db", "--env", "prod", "--json").stdout)
    assert got["value"] == VALUE
    ver = cli(home, pins, "dek", "verify").stdout
    assert "41 ok, 0 failed" in ver or "40 ok, 0 failed" in ver, ver
    # the rows are in PostgreSQL: every data DEK now under data/v2, none left under v1
    with psycopg.connect(pg_url) as c:
        rows = c.execute(
            "SELECT kek_version, COUNT(*) FROM objects WHERE branch='data' GROUP BY 1"
        ).fetchall()
        assert rows == [(2, 40)]
        assert c.execute("SELECT state FROM kek_versions WHERE branch='data' AND version=1")
    # the audit chain is in the same PostgreSQL store, not in a file of the home
    assert not (home / "audit.db").exists()
    ver = cli(home, None, "audit", "verify")
    assert "VALID" in ver.stdout, ver.stdout
    with psycopg.connect(pg_url) as c:
        ops = [r[0] for r in c.execute("SELECT line FROM audit_entries ORDER BY seq")]
        assert any(b'"op":"rekey.run"' in bytes(x) or b"rekey" in bytes(x) for x in ops)
    # a snapshot of the embedded SQLite file is refused, with the way to back up instead
    snap = cli(
        *(home, None, "store", "snapshot", "--out", str(tmp_path / "s.db")),
        *("--key", str(tmp_path / "admin.key.pem")),
        check=False,
    )
    assert snap.returncode != 0 and "pg_dump" in snap.stderr
    assert not (tmp_path / "s.db").exists()


def test_init_refuses_a_password_in_the_url(tmp_path: Path, pg_server: PgServer) -> None:
    url = pg_server.url(pg_server.new_database(), tcp=True).replace(
        "custody@", f"custody:{pg_server.password}@"
    )
    pins = write_pins(tmp_path / "pins")
    home = tmp_path / "home"
    r = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--store", url)
    assert r.returncode != 0 and "holds a password" in r.stderr
    assert pg_server.password not in r.stderr + r.stdout
    assert not (home / "custody.toml").exists()


def test_password_file_of_the_config_is_used(tmp_path: Path, pg_server: PgServer) -> None:
    url = pg_server.url(pg_server.new_database(), tcp=True)
    pw = tmp_path / "store.pw"
    pw.write_text(pg_server.password + "\n")
    pw.chmod(0o600)
    pins = write_pins(tmp_path / "pins")
    home = tmp_path / "home"
    r = run_cli(
        *("init", "--home", str(home), "--pin-file", str(pins), "--store", url),
        *("--store-password-file", str(pw)),
    )
    assert r.returncode == 0, r.stderr
    st = cli_json(home, pins, "status")
    assert st["deployment_id"]
    pw.chmod(0o644)  # an insider loosens the file: custody refuses to read it
    r = cli(home, pins, "status", check=False)
    assert r.returncode != 0 and "readable by others" in r.stderr
    assert pg_server.password not in r.stderr
