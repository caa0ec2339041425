"""The PostgreSQL adapter's connection core: connecting, error mapping, statements and
transactions (the counterpart of :mod:`custody.store.sqlite_base`).

Only the store adapter modules (``custody/store/postgres*.py``) import :mod:`psycopg`; the
import-linter contract in ``pyproject.toml`` keeps it so.

Connecting. A location is a ``postgresql://user@host[:port]/db[?sslmode=...]`` URL with no
password in it (a URL is shown in argv, logs and configs). The password comes, in this
order, from ``CUSTODY_STORE_PASSWORD``, a 0600 password file (``store_password_file`` in
``custody.toml``), libpq's own ``PGPASSWORD`` or ``PGPASSFILE``, and else a prompt when a
terminal is attached. TLS is libpq's: ``sslmode=require|verify-ca|verify-full`` and
``sslrootcert=`` in the URL.

Transactions. A top-level :meth:`PostgresBase.transaction` takes the store's write lock
(``pg_advisory_xact_lock``) right after ``BEGIN``, like SQLite's ``BEGIN IMMEDIATE``: every
read-then-write of the key hierarchy, the lease and the ceremonies keeps SQLite's meaning
on a shared store. Only :meth:`PostgresBase.batch_transaction` (the re-key workers' batch,
whose rows are claimed with ``FOR UPDATE SKIP LOCKED``) runs beside other writers.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo

from custody.errors import ConfigError, StorageError
from custody.store.postgres_notify import notify_if_access

Params = Sequence[object] | dict[str, object]

WRITE_LOCK = 0x637573746F6479  # "custody": the store's write lock (advisory, per database)
PASSWORD_ENV = "CUSTODY_STORE_PASSWORD"  # noqa: S105 - the variable's name, not a password


def check_location(url: str) -> dict[str, Any]:
    """The connection parameters of *url*.

    Raises:
        ConfigError: not a PostgreSQL URL, or it holds a password.
    """
    try:
        params = pg_conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            "The store URL is not a valid PostgreSQL URL",
            "Write it as postgresql://USER@HOST[:PORT]/DB[?sslmode=verify-full].",
        ) from exc
    if params.get("password"):
        raise ConfigError(
            "The store URL holds a password",
            "Remove it from the URL; give it in a 0600 file (store_password_file), "
            f"{PASSWORD_ENV} or PGPASSWORD.",
        )
    if not params.get("dbname"):
        raise ConfigError("The store URL names no database", "Add /DBNAME to the URL.")
    return params


def describe(url: str) -> str:
    """*url* for messages: user, host, port and database, nothing else."""
    try:
        p = pg_conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://?"
    host = str(p.get("host", "localhost"))
    if host.startswith("/"):
        host = "[socket]"
    port = f":{p['port']}" if p.get("port") else ""
    return f"postgresql://{p.get('user', '')}@{host}{port}/{p.get('dbname', '')}"


def read_password_file(path: Path) -> str:
    """The first line of a password file that only its owner can read.

    Raises:
        ConfigError: missing, or readable by group or others.
    """
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"The store password file {path} is readable by others",
                f"chmod 600 {path}",
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the store password file {path}", f"{exc.strerror or exc}."
        ) from exc
    return text.splitlines()[0] if text else ""


def resolve_password(password_file: Path | None) -> str | None:
    """The store password from the environment or the file (None: let libpq decide)."""
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    if password_file is not None:
        return read_password_file(password_file)
    return None  # libpq reads PGPASSWORD / PGPASSFILE itself


def storage_error(where: str, exc: Exception) -> StorageError:
    """A typed error for a foreign :mod:`psycopg` error (no SQL or values in the message)."""
    state = getattr(exc, "sqlstate", None) or ""
    msg = str(exc).lower()
    if not state and ("authentication failed" in msg or "no password supplied" in msg):
        state = "28P01"  # a failed connection carries no SQLSTATE: read libpq's message
    if isinstance(exc, psycopg.OperationalError) and not state:
        return StorageError(
            f"Cannot reach the store {where}",
            "Check the server, the URL, the password source and sslmode; nothing was changed.",
        )
    if state.startswith("28"):
        return StorageError(
            f"The store {where} refused the login",
            f"Check the user and the password ({PASSWORD_ENV}, the password file, PGPASSWORD).",
        )
    if state.startswith("23"):
        return StorageError(
            f"The store {where} refused a write that breaks a constraint ({state})",
            "Nothing was changed.",
        )
    if state in ("40001", "40P01"):
        return StorageError(f"The store {where} is busy", "A concurrent writer won; retry.")
    if state == "53100":
        return StorageError("The database server's disk is full", "Free space and retry.")
    return StorageError(
        f"Store error in {where}: {type(exc).__name__} {state}".rstrip(),
        "See the server's log; nothing was changed.",
    )


@functools.lru_cache(maxsize=4096)
def _placeholders(sql: str) -> str:
    """*sql* with ``?`` placeholders written as psycopg's ``%s``: the statements shared with
    the SQLite adapter (``custody/store/*_sql.py``) are written once with ``?`` and hold no
    literal ``?`` or ``%``; a statement already written with ``%s`` is unchanged."""
    return sql.replace("?", "%s")


def connect(url: str, *, password_file: Path | None = None, prompt: bool = True) -> Any:
    """An autocommit connection to *url* (transactions are explicit).

    Raises:
        ConfigError: a password in the URL, a bad URL or password file.
        StorageError: the server cannot be reached or refused the login.
    """
    check_location(url)
    password = resolve_password(password_file)
    kw: dict[str, Any] = {"autocommit": True, "connect_timeout": 15}
    if password is not None:
        kw["password"] = password
    try:
        return psycopg.connect(url, **kw)
    except psycopg.OperationalError as exc:
        needs = "password" in str(exc).lower() and password is None
        if needs and prompt and sys.stdin is not None and sys.stdin.isatty():
            kw["password"] = getpass.getpass(f"Password for {describe(url)}: ")
            try:
                return psycopg.connect(url, **kw)
            except psycopg.Error as exc2:
                raise storage_error(describe(url), exc2) from exc2
        raise storage_error(describe(url), exc) from exc


class PostgresBase:
    """One PostgreSQL connection (autocommit mode; transactions are explicit)."""

    def __init__(
        self, url: str, conn: Any, local: Path, *, password_file: Path | None = None
    ) -> None:
        self.url = url
        self.conn = conn
        self._password_file = password_file
        self._where = describe(url)
        self._local = local
        self._depth = 0
        self._locked = False  # the open transaction holds the store's write lock
        self._scans = 0

    @property
    def path(self) -> Path:
        """A local path in the home (its parent is where state beside the store goes)."""
        return self._local

    # -- statements ----------------------------------------------------------------
    def _cur(self, sql: str, params: Params | None = (), *, binary: bool = False) -> Any:
        if params:
            sql = _placeholders(sql)
        try:
            return self.conn.execute(sql, params or None, binary=binary)
        except psycopg.OperationalError as exc:
            if self._depth or not (self.conn.closed or self.conn.broken):
                raise storage_error(self._where, exc) from exc
            # The connection died between transactions (a server restart or failover, an
            # idle timeout): nothing of ours was in flight, so connect again and run the
            # statement (a read, or the BEGIN of a new transaction) once more. Inside a
            # transaction the error stands: its outcome is the caller's to decide.
            self.conn = connect(self.url, password_file=self._password_file, prompt=False)
            try:
                return self.conn.execute(sql, params or None, binary=binary)
            except psycopg.Error as exc2:
                raise storage_error(self._where, exc2) from exc2
        except psycopg.Error as exc:
            raise storage_error(self._where, exc) from exc

    def _rows(self, sql: str, params: Params = (), *, binary: bool = False) -> list[Any]:
        cur = self._cur(sql, params, binary=binary)
        try:
            return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise storage_error(self._where, exc) from exc

    def _one(self, sql: str, params: Params = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _scalar(self, sql: str, params: Params = ()) -> Any:
        row = self._one(sql, params)
        return None if row is None else row[0]

    def _iter(self, sql: str, params: Params = ()) -> Iterator[Any]:
        for rows in self._batches(sql, params, 2000):
            yield from rows

    def _batches(self, sql: str, params: Params = (), size: int = 10_000) -> Iterator[list[Any]]:
        """The rows of one query in lists of up to *size*, through a server-side cursor
        inside a read snapshot (so a long scan neither loads every row nor sees a row
        twice)."""
        with self._read_snapshot():
            try:
                self._scans += 1  # a name of its own: scans may nest
                with self.conn.cursor(name=f"scan{self._scans}") as cur:
                    cur.itersize = size
                    cur.execute(_placeholders(sql) if params else sql, params or None)
                    while rows := cur.fetchmany(size):
                        yield rows
            except psycopg.Error as exc:
                raise storage_error(self._where, exc) from exc

    def read_snapshot(self) -> contextlib.AbstractContextManager[None]:
        """:meth:`custody.store.port.StoreCore.read_snapshot`."""
        return self._read_snapshot()

    def cached_reads(self) -> contextlib.AbstractContextManager[None]:
        """:meth:`custody.store.port.StoreCore.cached_reads`: every read goes to the
        server (PostgreSQL has no cheap equivalent of SQLite's ``data_version``)."""
        return contextlib.nullcontext()

    @contextmanager
    def _read_snapshot(self) -> Iterator[None]:
        """One REPEATABLE READ transaction around several reads, unless a transaction is
        already open (then its own view holds)."""
        if self._depth:
            yield
            return
        self._run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self._depth = 1
        try:
            yield
        finally:
            self._quiet("COMMIT")
            self._depth = 0

    def _write(self, sql: str, params: Params = ()) -> Any:
        """Run one write statement in a transaction (the caller's, or its own); a write of
        an access-control table also notifies the other replicas on commit."""
        with self.transaction() if not self._depth else contextlib.nullcontext():
            cur = self._cur(sql, params)
            self._notify(sql)
            return cur

    def _notify(self, sql: str) -> None:
        try:
            notify_if_access(self.conn, sql)
        except psycopg.Error as exc:
            raise storage_error(self._where, exc) from exc

    def _write_many(self, sql: str, rows: Iterable[Params]) -> int:
        rows = list(rows)
        if not rows:
            return 0
        with self.transaction() if not self._depth else contextlib.nullcontext():
            try:
                with self.conn.cursor() as cur:
                    cur.executemany(_placeholders(sql), rows)
                    n = int(cur.rowcount)
                notify_if_access(self.conn, sql)
                return n
            except psycopg.Error as exc:
                raise storage_error(self._where, exc) from exc

    def _insert_unique(self, sql: str, params: Params, taken: StorageError) -> None:
        """Run one write in the caller's transaction; if it breaks a constraint (a row with
        the same key or unique value), raise *taken* instead of the generic error."""
        try:
            self.conn.execute(_placeholders(sql), params)
            notify_if_access(self.conn, sql)
        except psycopg.IntegrityError as exc:
            raise taken from exc
        except psycopg.Error as exc:
            raise storage_error(self._where, exc) from exc

    def _copy(
        self, sql: str, rows: Iterable[Sequence[object]], *, types: Sequence[str] = ()
    ) -> None:
        """``COPY ... FROM STDIN`` of *rows*, inside the caller's transaction (*types*: the
        column types, for ``FORMAT BINARY``)."""
        self._require_transaction("A bulk copy")
        try:
            with self.conn.cursor() as cur, cur.copy(sql) as cp:
                if types:
                    cp.set_types(list(types))
                for r in rows:
                    cp.write_row(r)
        except psycopg.Error as exc:
            raise storage_error(self._where, exc) from exc

    def _run(self, sql: str) -> None:
        self._cur(sql)

    def _quiet(self, sql: str) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.execute(sql)

    # -- transactions --------------------------------------------------------------
    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @contextmanager
    def _tx(self, *, lock: bool, rollback: bool = False) -> Iterator[None]:
        if self._depth:
            name = f"sp{self._depth}"
            self._run(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._quiet(f"ROLLBACK TO SAVEPOINT {name}")
                self._quiet(f"RELEASE SAVEPOINT {name}")
                raise
            finally:
                self._depth -= 1
            self._run(f"RELEASE SAVEPOINT {name}")
            return
        self._run("BEGIN")
        self._depth = 1
        try:
            if lock:
                self._cur("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                self._locked = True
            yield
            if rollback:
                self._quiet("ROLLBACK")
            else:
                self._run("COMMIT")
        except BaseException:
            self._quiet("ROLLBACK")
            raise
        finally:
            self._depth = 0
            self._locked = False

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """``BEGIN`` and the store's write lock ... ``COMMIT`` (rolled back on any
        exception); nested: a savepoint."""
        return self._tx(lock=True)

    def batch_transaction(self) -> contextlib.AbstractContextManager[None]:
        """A write transaction *without* the store's write lock, for re-key batches: its
        rows are claimed with ``FOR UPDATE SKIP LOCKED``, so batches run side by side."""
        return self._tx(lock=False)

    @contextmanager
    def rehearsal(self) -> Iterator[None]:
        """A write transaction that always rolls back."""
        if self._depth:
            raise StorageError("A rehearsal cannot run inside a transaction", "This is a bug.")
        with self._tx(lock=True, rollback=True):
            yield

    def _require_transaction(self, what: str) -> None:
        if not self._depth:
            raise StorageError(f"{what} must run inside a transaction", "This is a bug.")
