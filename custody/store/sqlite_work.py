"""SQLite adapter: re-key jobs, leases, retirement holds, the backup catalogue. The
statements are shared (:mod:`custody.store.work_sql`); only a new job's id is SQLite's own."""

from __future__ import annotations

from custody.store.sqlite_base import SqliteBase
from custody.store.work_sql import WorkQueries


class SqliteWork(SqliteBase, WorkQueries):
    def start_job(
        self, branch: str, to_version: int, *, total: int, batch: int, pid: int, now: str
    ) -> int:
        cur = self._write(
            "INSERT INTO rekey_jobs(branch, to_version, state, total, batch, owner_pid, started, "
            "updated) VALUES(?,?,?,?,?,?,?,?)",
            (branch, to_version, "running", total, batch, pid, now, now),
        )
        return int(cur.lastrowid or 0)
