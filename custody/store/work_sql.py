"""The SQL of re-key jobs, named leases, retirement holds and the backup catalogue
(:class:`custody.store.port.RekeyStore` and :class:`~custody.store.port.BackupStore`),
shared by the SQLite and PostgreSQL adapters.

Portable statements with ``?`` placeholders, run by the adapter's base class (see
:mod:`custody.store.queries`); upserts are ``INSERT ... ON CONFLICT ... DO UPDATE``, which
both engines run. Only :meth:`start_job` is each engine's own (how the new row's id comes
back: ``lastrowid`` on SQLite, ``RETURNING`` on PostgreSQL), in
:mod:`custody.store.sqlite_work` and :mod:`custody.store.postgres_work`.
"""

from __future__ import annotations

from collections.abc import Sequence

from custody.store.queries import Runners
from custody.store.rows import BackupEntry, JobRow, LeaseRow, RunningJob


class WorkQueries(Runners):
    # ------------------------------------------------------------------------- jobs
    def running_job(self, branch: str) -> RunningJob | None:
        r = self._one(
            "SELECT id, to_version, done FROM rekey_jobs WHERE branch=? AND "
            "state='running' ORDER BY id DESC LIMIT 1",
            (branch,),
        )
        return None if r is None else RunningJob(id=int(r[0]), to_version=r[1], done=int(r[2]))

    def take_job(self, job_id: int, *, pid: int, now: str) -> None:
        self._write("UPDATE rekey_jobs SET owner_pid=?, updated=? WHERE id=?", (pid, now, job_id))

    def supersede_job(self, job_id: int, *, now: str) -> None:
        self._write(
            "UPDATE rekey_jobs SET state='superseded', finished=? WHERE id=?", (now, job_id)
        )

    def advance_job(self, job_id: int, *, moved: int, last_id: int, now: str) -> None:
        self._write(
            "UPDATE rekey_jobs SET done=rekey_jobs.done+?, last_id=?, updated=? WHERE id=?",
            (moved, last_id, now, job_id),
        )

    def finish_job(
        self, job_id: int, state: str, *, now: str, verified: int, verify_failed: int
    ) -> None:
        self._write(
            "UPDATE rekey_jobs SET state=?, finished=?, updated=?, verified=?, "
            "verify_failed=? WHERE id=?",
            (state, now, now, verified, verify_failed, job_id),
        )

    def recent_jobs(self, limit: int = 20) -> list[JobRow]:
        rows = self._rows(
            "SELECT id, branch, to_version, state, total, done, batch, owner_pid, started, "
            "updated, finished, verified, verify_failed FROM rekey_jobs ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            JobRow(
                id=r[0],
                branch=r[1],
                to_version=r[2],
                state=r[3],
                total=r[4],
                done=r[5],
                batch=r[6],
                owner_pid=r[7],
                started=r[8],
                updated=r[9],
                finished=r[10],
                verified=r[11],
                verify_failed=r[12],
            )
            for r in rows
        ]

    # ----------------------------------------------------------------------- leases
    def lease(self, name: str) -> LeaseRow | None:
        r = self._one(
            "SELECT name, token, owner_pid, owner_host, acquired, expires FROM rekey_lease "
            "WHERE name=?",
            (name,),
        )
        if r is None:
            return None
        return LeaseRow(
            name=r[0], token=r[1], owner_pid=r[2], owner_host=r[3], acquired=r[4], expires=r[5]
        )

    def put_lease(self, lease: LeaseRow) -> None:
        self._write(
            "INSERT INTO rekey_lease(name, token, owner_pid, owner_host, acquired, "
            "expires) VALUES(?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
            "token=excluded.token, owner_pid=excluded.owner_pid, owner_host=excluded.owner_host, "
            "acquired=excluded.acquired, expires=excluded.expires",
            (
                lease.name,
                lease.token,
                lease.owner_pid,
                lease.owner_host,
                lease.acquired,
                lease.expires,
            ),
        )

    def renew_lease(self, name: str, token: str, *, expires: str) -> bool:
        cur = self._write(
            "UPDATE rekey_lease SET expires=? WHERE name=? AND token=?", (expires, name, token)
        )
        return bool(cur.rowcount == 1)

    def drop_lease(self, name: str, token: str) -> None:
        self._write("DELETE FROM rekey_lease WHERE name=? AND token=?", (name, token))

    # ------------------------------------------------------------------------ holds
    def holds(self) -> set[tuple[str, int]]:
        return {(r[0], int(r[1])) for r in self._rows("SELECT branch, version FROM retire_holds")}

    def add_hold(self, branch: str, version: int, *, reason: str, now: str) -> None:
        self._write(
            "INSERT INTO retire_holds(branch, version, reason, created) VALUES(?,?,?,?) "
            "ON CONFLICT(branch, version) DO UPDATE SET reason=excluded.reason, "
            "created=excluded.created",
            (branch, version, reason, now),
        )

    # ---------------------------------------------------------------------- backups
    def catalog_backup(self, entry: BackupEntry, *, now: str) -> None:
        self._write(
            "INSERT INTO backups(file_id, path, kek_version, size, created, updated) "
            "VALUES(?,?,?,?,?,?) ON CONFLICT(file_id) DO UPDATE SET path=excluded.path, "
            "kek_version=excluded.kek_version, size=excluded.size, updated=excluded.updated",
            (entry.file_id, entry.path, entry.kek_version, entry.size, now, now),
        )

    def recatalog_backups(self, moves: Sequence[tuple[bytes, int, str]]) -> None:
        self._write_many(
            "UPDATE backups SET kek_version=?, updated=? WHERE file_id=?",
            [(v, t, fid) for fid, v, t in moves],
        )

    def count_backups(self, kek_version: int) -> int:
        return int(self._scalar("SELECT COUNT(*) FROM backups WHERE kek_version=?", (kek_version,)))


__all__ = ["WorkQueries"]
