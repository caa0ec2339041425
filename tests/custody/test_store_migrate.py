"""``custody store migrate --to URL`` (custody/store_migrate.py): a SQLite home copied into
PostgreSQL, every row and the audit chain verified, the config switched only then; an
interrupted run resumes and converges; a second run is a no-op; and what an insider cannot
launder through a migration (a rewritten audit entry, a target of another deployment)."""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

import psycopg
import pytest

from custody.config import Home
from custody.errors import IntegrityError
from custody.store.rows import NewObject
from custody.store.sqlite import SqliteStore
from custody.store_migrate import migrate
from tests.conftest import run_cli
from tests.rekey_fixtures import cli, cli_json, make_deployment

pytestmark = pytest.mark.postgres
VALUE = "Canary-Value-7f3a!Qx9#Lm2@Zr8$Wt"


class Interrupted(Exception):
    pass


def _stop(_report) -> None:
    raise Interrupted


def _store_of(home: Path) -> str | None:
    return tomllib.loads((home / "custody.toml").read_text()).get("store")


def test_migrate_resume_and_use_the_migrated_home(tmp_path: Path, pg_url: str) -> None:
    home, pins = make_deployment(tmp_path / "d", data_objects=500)
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    put = run_cli(
        *("secret", "put", "app/db", "--env", "prod", "--stdin", "--category"),
        *("database-credential", "--owner", "app", "--home", str(home), "--pin-file", str(pins)),
        input=VALUE,
    )
    assert put.returncode == 0, put.stderr
    # 1. a run that dies after copying (before the switch) leaves the home on SQLite
    with pytest.raises(Interrupted):
        migrate(Home(home), pg_url, before_switch=_stop)
    assert _store_of(home) is None
    # 2. the home keeps working on SQLite meanwhile: a new object, a deleted one
    s = SqliteStore.open(home / "custody.db")
    s.add_objects(
        [
            NewObject(
                uid=b"\x01" * 16,
                kind="dek",
                branch="data",
                kek_version=1,
                wrapped=b"x",
                digest=b"d",
                label=None,
            )
        ],
        now="2026-01-01T00:00:00+00:00",
    )
    with s.tx() as c:
        c.execute("DELETE FROM objects WHERE uid = ?", (b"\x01" * 16,))
        c.execute("DELETE FROM objects WHERE id = (SELECT MIN(id) FROM objects)")
    s.close()
    # 3. the CLI resumes: the copy converges to the source (the deleted row is pruned)
    out = cli_json(home, None, "store", "migrate", "--to", pg_url)
    assert out["switched"] is True and out["pruned"] >= 1, out
    rows = {t["table"]: t["rows"] for t in out["tables"]}
    assert rows["objects"] == 500 and rows["audit_entries"] >= 8
    assert _store_of(home) == pg_url
    # 4. the home now runs on PostgreSQL: the same keys, secrets and one audit chain
    with psycopg.connect(pg_url) as c:
        (n,) = c.execute("SELECT COUNT(*) FROM objects").fetchone() or (0,)
        assert n == 500
    got = cli_json(home, pins, "secret", "get", "app/db", "--env", "prod")
    assert got["value"] == VALUE
    assert cli_json(home, pins, "rekey", "verify", "--all")["failed"] == []
    cli(home, pins, "dek", "generate", "--count", "3")  # new ids do not collide with copied
    ver = cli(home, None, "audit", "verify")
    assert "VALID" in ver.stdout
    with psycopg.connect(pg_url) as c:
        ops = [bytes(r[0]) for r in c.execute("SELECT line FROM audit_entries ORDER BY seq")]
    assert any(b'"op":"store migrate"' in x and b'"outcome":"ok"' in x for x in ops)
    # 5. idempotent: a second run changes nothing
    again = cli_json(home, None, "store", "migrate", "--to", pg_url)
    assert again["already"] is True and again["switched"] is False


def test_a_rewritten_audit_entry_is_not_laundered(tmp_path: Path, pg_url: str) -> None:
    home, _pins = make_deployment(tmp_path / "d", data_objects=5)
    with sqlite3.connect(home / "audit.db") as c:  # an insider rewrites who did what
        (line,) = c.execute("SELECT line FROM entries WHERE seq = 1").fetchone()
        c.execute(
            "UPDATE entries SET line = ? WHERE seq = 1",
            (bytes(line).replace(b'"ok"', b'"denied"'),),
        )
    with pytest.raises(IntegrityError, match="does not verify"):
        migrate(Home(home), pg_url)
    assert _store_of(home) is None  # nothing was switched


def test_a_target_of_another_deployment_is_refused(tmp_path: Path, pg_url: str) -> None:
    a, _ = make_deployment(tmp_path / "a")
    b, _ = make_deployment(tmp_path / "b")
    migrate(Home(a), pg_url)
    with pytest.raises(IntegrityError, match="another deployment"):
        migrate(Home(b), pg_url)
    assert _store_of(b) is None
