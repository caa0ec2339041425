"""``custody store migrate --to postgresql://...``: copy a SQLite home's store and audit log
into PostgreSQL, verify every row, and only then switch the home's config.

1. Both sides are brought to the current schema by the one migration runner (the SQLite
   store by opening it; the PostgreSQL database by opening it with ``create``). A target
   that already belongs to another deployment is refused.
2. ``custody.db`` and ``audit.db`` are held with ``BEGIN IMMEDIATE`` (readers go on, no
   writer) from the first row read until the config is switched, so nothing is written to
   the old store after the copy was taken.
3. Every table is copied in primary-key order with ``INSERT ... ON CONFLICT DO UPDATE``,
   after deleting target rows the source does not have. A run that was interrupted, or
   one over a target that already holds the copy, converges to the source: the command is
   resumable and idempotent.
4. Verification reads every table back from both sides: the row counts and a SHA-256 over
   every row in key order must match, table by table; the audit chain is verified from
   PostgreSQL with :meth:`custody.audit.log.AuditLog.verify` and its head must equal the
   source's.
5. Only then is ``store = "postgresql://..."`` written to ``custody.toml`` (atomically).
   The SQLite files stay in the home, unused, as the fallback (docs/store.md).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from custody.audit.log import AUDIT_DB, AuditLog
from custody.config import Config, Home
from custody.errors import IntegrityError, UsageError
from custody.store import postgres_import as pg
from custody.store.postgres import PostgresStore
from custody.store.postgres_audit import PostgresAuditStore
from custody.store.postgres_base import check_location, describe

__all__ = ["MigrationReport", "describe", "migrate"]
from custody.store.sqlite import SqliteStore
from custody.store.sqlite_export import SqliteExport, Table

AUDIT_TABLES = {
    "meta": "audit_meta",
    "entries": "audit_entries",
    "checkpoints": "audit_checkpoints",
    "seals": "audit_seals",
}


@dataclass(frozen=True, slots=True)
class TableReport:
    source: str
    target: str
    rows: int
    digest: str


@dataclass(slots=True)
class MigrationReport:
    url: str
    tables: list[TableReport] = field(default_factory=list)
    pruned: int = 0
    audit_entries: int = 0
    switched: bool = False
    already: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "to": self.url,
            "switched": self.switched,
            "already": self.already,
            "pruned": self.pruned,
            "audit_entries": self.audit_entries,
            "tables": [
                {"table": t.target, "rows": t.rows, "sha256": t.digest} for t in self.tables
            ],
        }


def _value(v: Any) -> bytes:
    """One value, typed, for the row digest (an int and its text never collide)."""
    if v is None:
        return b"n"
    if isinstance(v, bool | int):
        return b"i" + str(int(v)).encode()
    if isinstance(v, float):
        return b"f" + struct.pack(">d", v)
    if isinstance(v, str):
        return b"s" + v.encode()
    return b"b" + bytes(v)


def _digest(batches: Iterable[list[Any]], bytea: set[int]) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for batch in batches:
        for row in batch:
            n += 1
            for i, v in enumerate(row):
                if i in bytea and isinstance(v, str):
                    v = v.encode()  # TEXT in a BLOB column: copied as its UTF-8
                e = _value(v)
                h.update(len(e).to_bytes(4, "big") + e)
            h.update(b"\x1e")
    return n, h.hexdigest()


def _copy_table(
    src: SqliteExport, dst: PostgresStore, table: Table, target: str
) -> tuple[int, TableReport]:
    types = pg.columns(dst, target)
    if not types:
        raise IntegrityError(
            f"The target has no table {target} (the source has {table.name})",
            "The two stores are at different schema versions; upgrade custody. Nothing "
            "was switched.",
        )
    missing = [c for c in table.columns if c not in types]
    if missing:
        raise IntegrityError(
            f"The target's {target} lacks column {missing[0]}",
            "The stores are at different schema versions. Nothing was switched.",
        )
    have = pg.keys(dst, target, table.pk)
    pk_at = [table.columns.index(c) for c in table.pk]
    seen: set[tuple[Any, ...]] = set()
    for batch in src.rows(table):
        seen.update(tuple(r[i] for i in pk_at) for r in batch)
        pg.upsert(dst, target, table.columns, table.pk, batch, types)
    pruned = pg.prune(dst, target, table.pk, have - seen)
    bytea = {i for i, c in enumerate(table.columns) if types[c] == "bytea"}
    n_src, d_src = _digest(src.rows(table), bytea)
    n_dst, d_dst = _digest(pg.rows(dst, target, table.columns, table.pk), bytea)
    if (n_src, d_src) != (n_dst, d_dst) or pg.count(dst, target) != src.count(table):
        raise IntegrityError(
            f"The copy of {table.name} does not match ({n_src} rows -> {n_dst})",
            "Nothing was switched; run 'custody store migrate' again.",
        )
    return pruned, TableReport(table.name, target, n_src, d_src)


def migrate(
    home: Home,
    url: str,
    *,
    password_file: Path | None = None,
    store_password_file: str | None = None,
    before_switch: Callable[[MigrationReport], None] | None = None,
) -> MigrationReport:
    """Copy *home*'s SQLite store and audit log into the PostgreSQL store at *url*, verify
    it, and switch the config (see the module doc).

    Args:
        password_file: the store's 0600 password file, if any.
        store_password_file: that file as the config will name it.
        before_switch: called after verification, before the config is written (tests
            interrupt the migration there).

    Raises:
        UsageError: the home is already on another PostgreSQL store. ConfigError: a bad
            URL. (A home already on *url* is left alone: ``already`` in the report.)
        IntegrityError: the target holds another deployment, or a copy did not verify
            (nothing was switched). StorageError: either store failed.
    """
    check_location(url)
    config = home.load()
    if config.store == url:
        return MigrationReport(url=describe(url), already=True)  # done before: nothing to do
    if config.store is not None:
        raise UsageError(
            f"This home's store is already PostgreSQL ({describe(config.store)})",
            "Nothing to migrate.",
        )
    SqliteStore.open(home.db_path).close()  # the source at the current schema
    report = MigrationReport(url=describe(url))
    dst = PostgresStore.open(url, create=True, local=home.db_path, password_file=password_file)
    store_src: SqliteExport | None = None
    audit_src: SqliteExport | None = None
    try:
        theirs = dst.get_meta("deployment_id")
        if theirs is not None and theirs != config.deployment_id:
            raise IntegrityError(
                "The target PostgreSQL store holds another deployment",
                "Give an empty database. Nothing was copied.",
            )
        store_src = SqliteExport(home.db_path)
        for t in store_src.tables():
            pruned, rep = _copy_table(store_src, dst, t, t.name)
            report.pruned += pruned
            report.tables.append(rep)
        pg.reset_identities(dst)
        audit_path = home.root / AUDIT_DB
        if audit_path.exists():
            AuditLog(audit_path).close()  # the source log's schema, as its writers make it
            audit_src = SqliteExport(audit_path)
            src_log = {r[0]: r[1] for b in audit_src.rows(_meta(audit_src)) for r in b}
            PostgresAuditStore(
                url,
                durable=False,
                timeout=30.0,
                new_log_id=lambda: str(src_log.get("log_id", "")),
                password_file=password_file,
            ).close()  # the audit tables
            for t in audit_src.tables():
                if t.name not in AUDIT_TABLES:
                    raise IntegrityError(
                        f"The audit database has an unknown table {t.name[:40]!r}",
                        "Nothing was switched.",
                    )
                pruned, rep = _copy_table(audit_src, dst, t, AUDIT_TABLES[t.name])
                report.pruned += pruned
                report.tables.append(rep)
            log = AuditLog(url, password_file=password_file)
            try:
                audit = log.verify()
                n = log.size()
            finally:
                log.close()
            if not audit.ok:
                raise IntegrityError(
                    "The copied audit chain does not verify on PostgreSQL",
                    f"{audit.problems[0]}. Nothing was switched.",
                )
            report.audit_entries = n
        if before_switch is not None:
            before_switch(report)
        home.write_config(
            _switched(config, url, store_password_file)
        )  # the SQLite locks are still held
        report.switched = True
        return report
    finally:
        for s in (audit_src, store_src):
            if s is not None:
                s.close()
        dst.close()


def _meta(src: SqliteExport) -> Table:
    for t in src.tables():
        if t.name == "meta":
            return t
    raise IntegrityError("The audit database has no meta table", "It is not a custody log.")


def _switched(config: Config, url: str, pwfile: str | None) -> Config:
    return replace(config, store=url, store_password_file=pwfile)
