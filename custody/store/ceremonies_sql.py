"""The ceremony tables' SQL (:class:`custody.store.port.CeremonyStore`: participants, the
ceremony registry, share sets, drills, incidents), shared by the SQLite and PostgreSQL
adapters: portable statements with ``?`` placeholders, run by the adapter's base class
(:mod:`custody.store.queries`). Two things are each engine's own, on the adapter class:
:attr:`CeremonyQueries.SAME_SECOND` and :meth:`CeremonyQueries._columns`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from custody.store.queries import Runners
from custody.store.rows import (
    CeremonyRow,
    IncidentRow,
    ParticipantRow,
    ShareHolderRow,
    ShareSetRow,
)

_CEREMONY = (
    "SELECT id, kind, state, coordinator, bundle, created, expires, updated, pending "
    "FROM ceremonies"
)
_SHARE_SET = (
    "SELECT epoch, ceremony_id, policy_digest, dealer_public, rk_kcv, rk_public, scheme, "
    "state, created, retired_at FROM share_sets"
)
_ACCESS_TABLES = ("grants", "sessions")  # added by later schema versions


def _ceremony(r: Any) -> CeremonyRow:
    return CeremonyRow(
        id=r[0],
        kind=r[1],
        state=r[2],
        coordinator=r[3],
        bundle=r[4],
        created=r[5],
        expires=r[6],
        updated=r[7],
        pending=r[8],
    )


class CeremonyQueries(Runners):
    """The ``participants``, ``ceremonies``, ``share_sets``, ``share_holders``, ``drills``
    and ``incidents`` tables."""

    # the order of ceremonies created in the same second, newest first (SQLite: rowid)
    SAME_SECOND = "updated DESC, id DESC"

    def _columns(self, table: str) -> set[str]:
        """The column names of *table* (empty when the store has no such table)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- participants
    def participants(self) -> list[ParticipantRow]:
        rows = self._rows(
            "SELECT name, role, public, fingerprint, valid_from, valid_until, revoked_at, "
            "enrolled_by, enrolled_in, alg FROM participants ORDER BY role, name"
        )
        return [
            ParticipantRow(
                name=r[0],
                role=r[1],
                public=bytes(r[2]),
                fingerprint=r[3],
                valid_from=r[4],
                valid_until=r[5],
                revoked_at=r[6],
                enrolled_by=r[7],
                enrolled_in=r[8],
                alg=r[9],
            )
            for r in rows
        ]

    def add_participant(self, p: ParticipantRow) -> None:
        self._write(
            "INSERT INTO participants(name, role, alg, public, fingerprint, valid_from, "
            "valid_until, revoked_at, enrolled_by, enrolled_in) VALUES(?,?,?,?,?,?,?,?,?,?)",
            (
                p.name,
                p.role,
                p.alg,
                p.public,
                p.fingerprint,
                p.valid_from,
                p.valid_until,
                p.revoked_at,
                p.enrolled_by,
                p.enrolled_in,
            ),
        )

    def revoke_participant(self, name: str, *, now: int) -> bool:
        cur = self._write(
            "UPDATE participants SET revoked_at=? WHERE name=? AND revoked_at IS NULL",
            (now, name),
        )
        return bool(cur.rowcount == 1)

    # ---------------------------------------------------------------- the registry
    def ceremonies(self, *, state: str | None = None) -> list[CeremonyRow]:
        sql: str = _CEREMONY
        params: tuple[str, ...] = ()
        if state is not None:
            sql, params = sql + " WHERE state=?", (state,)
        rows = self._rows(sql + " ORDER BY created DESC, " + self.SAME_SECOND, params)
        return [_ceremony(r) for r in rows]

    def ceremony(self, ceremony_id: str) -> CeremonyRow | None:
        r = self._one(_CEREMONY + " WHERE id=?", (ceremony_id,))
        return None if r is None else _ceremony(r)

    def add_ceremony(self, c: CeremonyRow) -> None:
        self._write(
            "INSERT INTO ceremonies(id, kind, state, coordinator, bundle, created, "
            "expires, updated, pending) VALUES(?,?,?,?,?,?,?,?,?)",
            (
                c.id,
                c.kind,
                c.state,
                c.coordinator,
                c.bundle,
                c.created,
                c.expires,
                c.updated,
                c.pending,
            ),
        )

    def delete_ceremony(self, ceremony_id: str) -> None:
        self._write("DELETE FROM ceremonies WHERE id=?", (ceremony_id,))

    def set_ceremony_pending(self, ceremony_id: str, pending: str, *, now: int) -> None:
        self._write(
            "UPDATE ceremonies SET pending=?, updated=? WHERE id=?", (pending, now, ceremony_id)
        )

    def set_ceremony_state(self, ceremony_id: str, state: str, *, now: int) -> None:
        self._write(
            "UPDATE ceremonies SET state=?, updated=? WHERE id=?", (state, now, ceremony_id)
        )

    # ------------------------------------------------------------------ share sets
    def _share_set(self, r: Any) -> ShareSetRow:
        holders = self._rows(
            "SELECT custodian, fingerprint, group_index, member_index, commitment "
            "FROM share_holders WHERE epoch=?",
            (r[0],),
        )
        return ShareSetRow(
            epoch=r[0],
            ceremony_id=r[1],
            policy_digest=r[2],
            dealer_public=bytes(r[3]),
            rk_kcv=r[4],
            rk_public=bytes(r[5]),
            scheme=r[6],
            state=r[7],
            created=r[8],
            retired_at=r[9],
            holders=tuple(
                ShareHolderRow(
                    custodian=h[0],
                    fingerprint=h[1],
                    group_index=h[2],
                    member_index=h[3],
                    commitment=h[4],
                )
                for h in holders
            ),
        )

    def active_share_set(self) -> ShareSetRow | None:
        r = self._one(_SHARE_SET + " WHERE state='active' ORDER BY epoch DESC")
        return None if r is None else self._share_set(r)

    def retired_share_sets(self) -> list[ShareSetRow]:
        return [self._share_set(r) for r in self._rows(_SHARE_SET + " WHERE state!='active'")]

    def replace_share_set(self, s: ShareSetRow, *, now: int) -> None:
        with self.transaction():
            self._write(
                "UPDATE share_sets SET state='retired', retired_at=? WHERE state='active'",
                (now,),
            )
            self._write(
                "INSERT INTO share_sets(epoch, ceremony_id, policy_digest, dealer_public, "
                "rk_kcv, rk_public, scheme, state, created) VALUES(?,?,?,?,?,?,?,?,?)",
                (
                    s.epoch,
                    s.ceremony_id,
                    s.policy_digest,
                    s.dealer_public,
                    s.rk_kcv,
                    s.rk_public,
                    s.scheme,
                    s.state,
                    s.created,
                ),
            )
            self._write_many(
                "INSERT INTO share_holders(epoch, custodian, fingerprint, group_index, "
                "member_index, commitment) VALUES(?,?,?,?,?,?)",
                [
                    (
                        s.epoch,
                        h.custodian,
                        h.fingerprint,
                        h.group_index,
                        h.member_index,
                        h.commitment,
                    )
                    for h in s.holders
                ],
            )

    # ---------------------------------------------------------------------- drills
    def drill_passers(self, epoch: int, *, since: int) -> list[str]:
        rows = self._rows(
            "SELECT DISTINCT custodian FROM drills WHERE epoch=? AND passed_at>=?",
            (epoch, since),
        )
        return [r[0] for r in rows]

    def record_drill(
        self, ceremony_id: str, custodians: Sequence[str], *, epoch: int, at: int
    ) -> bool:
        with self.transaction():
            if self._one("SELECT 1 FROM drills WHERE ceremony_id=?", (ceremony_id,)):
                return False
            self._write_many(
                "INSERT INTO drills(ceremony_id, custodian, epoch, passed_at) VALUES(?,?,?,?)",
                [(ceremony_id, n, epoch, at) for n in custodians],
            )
            return True

    def last_drill(self, custodian: str, epoch: int | None) -> int | None:
        if epoch is None:
            at = self._scalar(
                "SELECT MAX(passed_at) FROM drills WHERE custodian=? AND epoch IS NULL",
                (custodian,),
            )
        else:
            at = self._scalar(
                "SELECT MAX(passed_at) FROM drills WHERE custodian=? AND epoch=?",
                (custodian, epoch),
            )
        return None if at is None else int(at)

    def has_drilled(self, custodian: str) -> bool:
        return bool(self._rows("SELECT 1 FROM drills WHERE custodian=? LIMIT 1", (custodian,)))

    # ------------------------------------------------------------------- incidents
    def put_incident(self, incident: IncidentRow) -> None:
        self._write(
            "INSERT INTO incidents(id, ceremony_id, reason, created, report) "
            "VALUES(?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
            "ceremony_id=excluded.ceremony_id, reason=excluded.reason, "
            "created=excluded.created, report=excluded.report",
            (
                incident.id,
                incident.ceremony_id,
                incident.reason,
                incident.created,
                incident.report,
            ),
        )

    def revoke_access(self, *, now: int) -> dict[str, int]:
        revoked: dict[str, int] = {}
        for t in _ACCESS_TABLES:
            if "revoked_at" in self._columns(t):
                # t is one of the fixed table names above, never input
                sql = f"UPDATE {t} SET revoked_at=? WHERE revoked_at IS NULL"  # noqa: S608
                revoked[t] = self._write(sql, (now,)).rowcount
        return revoked


__all__ = ["CeremonyQueries"]
