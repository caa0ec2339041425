"""The TOTP enrolments' SQL (:class:`custody.store.port.MfaStore`, docs/mfa.md), shared by
the SQLite and PostgreSQL adapters: portable statements with ``?`` placeholders, run by the
adapter's base class (:mod:`custody.store.queries`).

The table holds no secret: the TOTP secret is an objects row wrapped under the ``secrets``
KEK branch, named by ``object_uid``. :meth:`MfaQueries.use_mfa_step` is the single-use rule
as one conditional ``UPDATE``: of two concurrent verifications of the same code, one wins
(on PostgreSQL under READ COMMITTED, the second writer of the same step waits for the first
one's row lock, re-checks ``last_step < step`` against the committed row, and updates
nothing).
"""

from __future__ import annotations

from typing import Any

from custody.errors import StorageError
from custody.store.queries import Runners
from custody.store.rows import MfaRow

_COLUMNS = (
    "principal, object_uid, digits, period, algorithm, enrolled_at, confirmed_at, last_step, "
    "last_used, failures, locked_until"
)
_SELECT = f"SELECT {_COLUMNS} FROM mfa_enrolments"  # noqa: S608 (a literal column list)
_INSERT = f"INSERT INTO mfa_enrolments({_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?,?)"


def _row(r: Any) -> MfaRow:
    return MfaRow(
        principal=r[0],
        object_uid=bytes(r[1]),
        digits=r[2],
        period=r[3],
        algorithm=r[4],
        enrolled_at=r[5],
        confirmed_at=r[6],
        last_step=r[7],
        last_used=r[8],
        failures=r[9],
        locked_until=r[10],
    )


class MfaQueries(Runners):
    """The ``mfa_enrolments`` table."""

    def mfa_enrolment(self, principal: str) -> MfaRow | None:
        r = self._one(_SELECT + " WHERE principal=?", (principal,))
        return None if r is None else _row(r)

    def mfa_enrolments(self) -> list[MfaRow]:
        return [_row(r) for r in self._rows(_SELECT + " ORDER BY principal")]

    def add_mfa_enrolment(self, row: MfaRow) -> None:
        self._require_transaction("add_mfa_enrolment")
        if self._one("SELECT 1 FROM mfa_enrolments WHERE principal=?", (row.principal,)):
            raise StorageError(f"{row.principal} already has an MFA enrolment", "Reset it first.")
        self._write(
            _INSERT,
            (
                row.principal,
                row.object_uid,
                row.digits,
                row.period,
                row.algorithm,
                row.enrolled_at,
                row.confirmed_at,
                row.last_step,
                row.last_used,
                row.failures,
                row.locked_until,
            ),
        )

    def delete_mfa_enrolment(self, principal: str) -> MfaRow | None:
        self._require_transaction("delete_mfa_enrolment")
        row = self.mfa_enrolment(principal)
        if row is None:
            return None
        self._write("DELETE FROM mfa_enrolments WHERE principal=?", (principal,))
        self._write("DELETE FROM objects WHERE uid=?", (row.object_uid,))
        return row

    def use_mfa_step(self, principal: str, step: int, *, now: str) -> bool:
        cur = self._write(
            "UPDATE mfa_enrolments SET last_step=?, last_used=?, failures=0, locked_until=NULL,"
            " confirmed_at=COALESCE(confirmed_at, ?)"
            " WHERE principal=? AND (last_step IS NULL OR last_step < ?)"
            " AND (locked_until IS NULL OR locked_until <= ?)",
            (step, now, now, principal, step, now),
        )
        return bool(cur.rowcount == 1)

    def fail_mfa(self, principal: str, *, limit: int, locked_until: str) -> tuple[int, bool]:
        self._require_transaction("fail_mfa")
        self._write("UPDATE mfa_enrolments SET failures=failures+1 WHERE principal=?", (principal,))
        n = int(self._scalar("SELECT failures FROM mfa_enrolments WHERE principal=?", (principal,)))
        if n < limit:
            return n, False
        self._write(
            "UPDATE mfa_enrolments SET failures=0, locked_until=? WHERE principal=?",
            (locked_until, principal),
        )
        return n, True


__all__ = ["MfaQueries"]
