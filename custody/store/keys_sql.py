"""The key hierarchy's SQL (:class:`custody.store.port.KeyStore`: root versions, KEK
versions and wrapped objects), shared by the SQLite and PostgreSQL adapters.

Portable statements with ``?`` placeholders, run by the adapter's base class (see
:mod:`custody.store.queries`). The re-key batch (``claim_objects``, ``move_objects``) is
each engine's own: row locks and a binary ``COPY`` on PostgreSQL, the database's write
lock and a temp table on SQLite (:mod:`custody.store.sqlite_keys`,
:mod:`custody.store.postgres_keys`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from custody.model import KeyState
from custody.store.queries import Runners
from custody.store.rows import (
    KekRewrap,
    KekVersion,
    NewKek,
    NewObject,
    NewRoot,
    ObjectCheck,
    ObjectMove,
    PendingVersion,
    RootVersion,
    SampledCipher,
    SealedKek,
    StoredObject,
)

_KEKS = (
    "SELECT k.branch, k.version, k.state, k.kcv, k.root_version, k.created, "
    "k.state_changed, k.destroy_after, "
    "(SELECT CAST(COALESCE(SUM(t.n), 0) AS BIGINT) FROM object_tally t "
    "WHERE t.branch=k.branch AND t.kek_version=k.version) "
    "FROM kek_versions k"
)
_SEALED = (
    "SELECT branch, version, state, root_version, wrapped, kcv, destroy_after FROM kek_versions"
)


def _sealed(r: Any) -> SealedKek:
    return SealedKek(
        branch=r[0],
        version=r[1],
        state=KeyState(r[2]),
        root_version=r[3],
        wrapped=bytes(r[4]),
        kcv=r[5],
        destroy_after=r[6],
    )


def _sample(sql: str, sample: int | None) -> str:
    return sql if sample is None else sql + f" ORDER BY RANDOM() LIMIT {int(sample)}"


def move_rounds(moves: Sequence[ObjectMove]) -> list[list[ObjectMove]]:
    """*moves* in successive rounds with at most one move of each id per round, so applying
    the rounds in order gives the result of applying the moves one by one."""
    rounds: list[list[ObjectMove]] = []
    seen: dict[int, int] = {}
    for m in moves:
        k = seen.get(m.id, 0)
        seen[m.id] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(m)
    return rounds


class KeyQueries(Runners):
    """The ``root_versions``, ``kek_versions``, ``objects`` and ``object_tally`` tables
    (all of :class:`~custody.store.port.KeyStore` but the re-key batch)."""

    # ------------------------------------------------------------------------ roots
    def roots(self) -> list[RootVersion]:
        rows = self._rows(
            "SELECT version, state, kcv, epoch, blob IS NOT NULL, created, state_changed, "
            "destroy_after FROM root_versions ORDER BY version"
        )
        return [
            RootVersion(
                version=r[0],
                state=KeyState(r[1]),
                kcv=r[2],
                epoch=r[3],
                has_blob=bool(r[4]),
                created=r[5],
                state_changed=r[6],
                destroy_after=r[7],
            )
            for r in rows
        ]

    def root_state(self, version: int) -> KeyState | None:
        s = self._scalar("SELECT state FROM root_versions WHERE version=?", (version,))
        return None if s is None else KeyState(s)

    def root_blob(self, version: int) -> bytes | None:
        b = self._scalar("SELECT blob FROM root_versions WHERE version=?", (version,))
        return None if b is None else bytes(b)

    def next_root_version(self) -> int:
        return int(self._scalar("SELECT COALESCE(MAX(version), 0) FROM root_versions")) + 1

    def add_root(self, root: NewRoot, *, activate: bool, now: str) -> None:
        with self.transaction():
            if activate:
                self._write(
                    "UPDATE root_versions SET state=?, state_changed=? WHERE state=?",
                    (KeyState.DECRYPT_ONLY, now, KeyState.ACTIVE),
                )
            self._write(
                "INSERT INTO root_versions(version, state, kcv, epoch, blob, created, "
                "state_changed) VALUES(?,?,?,?,?,?,?)",
                (
                    root.version,
                    KeyState.ACTIVE if activate else KeyState.DECRYPT_ONLY,
                    root.kcv,
                    root.epoch,
                    root.blob,
                    now,
                    now,
                ),
            )

    def set_root_state(
        self, version: int, state: KeyState, *, now: str, destroy_after: str | None
    ) -> None:
        with self.transaction():
            if state is KeyState.DESTROYED:
                self._write("UPDATE root_versions SET blob=NULL WHERE version=?", (version,))
            self._write(
                "UPDATE root_versions SET state=?, state_changed=?, destroy_after=? "
                "WHERE version=?",
                (state, now, destroy_after, version),
            )

    def live_keks_under_root(self, version: int) -> int:
        return int(
            self._scalar(
                "SELECT COUNT(*) FROM kek_versions WHERE root_version=? AND state!=?",
                (version, KeyState.DESTROYED),
            )
        )

    # ------------------------------------------------------------------------- KEKs
    def keks(self, branch: str | None = None) -> list[KekVersion]:
        sql: str = _KEKS
        params: tuple[str, ...] = ()
        if branch is not None:
            sql, params = sql + " WHERE k.branch=?", (branch,)
        return [
            KekVersion(
                branch=r[0],
                version=r[1],
                state=KeyState(r[2]),
                kcv=r[3],
                root_version=r[4],
                created=r[5],
                state_changed=r[6],
                destroy_after=r[7],
                objects=r[8],
            )
            for r in self._rows(sql + " ORDER BY k.branch, k.version", params)
        ]

    def sealed_kek(self, branch: str, version: int) -> SealedKek | None:
        r = self._one(_SEALED + " WHERE branch=? AND version=?", (branch, version))
        return None if r is None else _sealed(r)

    def live_keks_not_under(self, root_version: int) -> list[SealedKek]:
        rows = self._rows(
            _SEALED + " WHERE state != ? AND root_version != ?", (KeyState.DESTROYED, root_version)
        )
        return [_sealed(r) for r in rows]

    def rewrap_keks(self, rewraps: Sequence[KekRewrap]) -> None:
        self._write_many(
            "UPDATE kek_versions SET wrapped=?, root_version=? WHERE branch=? AND version=?",
            [(k.wrapped, k.root_version, k.branch, k.version) for k in rewraps],
        )

    def next_kek_version(self, branch: str) -> int:
        n = self._scalar(
            "SELECT COALESCE(MAX(version), 0) FROM kek_versions WHERE branch=?", (branch,)
        )
        return int(n) + 1

    def add_kek(self, kek: NewKek, *, now: str) -> None:
        with self.transaction():
            self._write(
                "UPDATE kek_versions SET state=?, state_changed=? WHERE branch=? AND state=?",
                (KeyState.DECRYPT_ONLY, now, kek.branch, KeyState.ACTIVE),
            )
            self._write(
                "INSERT INTO kek_versions(branch, version, state, kcv, root_version, wrapped, "
                "created, state_changed) VALUES(?,?,?,?,?,?,?,?)",
                (
                    kek.branch,
                    kek.version,
                    KeyState.ACTIVE,
                    kek.kcv,
                    kek.root_version,
                    kek.wrapped,
                    now,
                    now,
                ),
            )

    def active_kek_count(self, branch: str) -> int:
        return int(
            self._scalar(
                "SELECT COUNT(*) FROM kek_versions WHERE branch=? AND state=?",
                (branch, KeyState.ACTIVE),
            )
        )

    def active_kek_versions(self) -> dict[str, int]:
        rows = self._rows(
            "SELECT branch, version FROM kek_versions WHERE state=?", (KeyState.ACTIVE,)
        )
        return {r[0]: int(r[1]) for r in rows}

    def set_kek_state(
        self, branch: str, version: int, state: KeyState, *, now: str, destroy_after: str | None
    ) -> None:
        with self.transaction():
            if state is KeyState.DESTROYED:  # erase the sealed key; the row stays as a record
                self._write(
                    "UPDATE kek_versions SET wrapped=? WHERE branch=? AND version=?",
                    (b"", branch, version),
                )
            self._write(
                "UPDATE kek_versions SET state=?, state_changed=?, destroy_after=? "
                "WHERE branch=? AND version=?",
                (state, now, destroy_after, branch, version),
            )

    def kek_users(self, branch: str, version: int) -> int:
        n = int(
            self._scalar(
                "SELECT COUNT(*) FROM objects WHERE branch=? AND kek_version=?", (branch, version)
            )
        )
        if branch == "backup":
            n += int(self._scalar("SELECT COUNT(*) FROM backups WHERE kek_version=?", (version,)))
        return n

    # ---------------------------------------------------------------------- objects
    def add_objects(self, objects: Sequence[NewObject], *, now: str) -> None:
        with self.transaction():
            self._write_many(
                "INSERT INTO objects(uid, kind, branch, kek_version, wrapped, digest, label, "
                "created, updated) VALUES(?,?,?,?,?,?,?,?,?)",
                [
                    (o.uid, o.kind, o.branch, o.kek_version, o.wrapped, o.digest, o.label, now, now)
                    for o in objects
                ],
            )
            counts = Counter((o.branch, o.kek_version, o.kind) for o in objects)
            self._bump_tally([(b, v, k, n) for (b, v, k), n in counts.items()])

    def _bump_tally(self, deltas: Sequence[tuple[str, int, str, int]]) -> None:
        """Add to the object counters (migration 5), inside the caller's transaction."""
        self._write_many(
            "INSERT INTO object_tally(branch, kek_version, kind, n) VALUES(?,?,?,?) "
            "ON CONFLICT(branch, kek_version, kind) DO UPDATE SET n = object_tally.n + excluded.n",
            deltas,
        )

    def stored_object(self, uid: bytes) -> StoredObject | None:
        r = self._one(
            "SELECT uid, wrapped, branch, kek_version, digest FROM objects WHERE uid=?", (uid,)
        )
        if r is None:
            return None
        return StoredObject(
            uid=bytes(r[0]), wrapped=bytes(r[1]), branch=r[2], kek_version=r[3], digest=bytes(r[4])
        )

    def iter_objects(
        self,
        *,
        branch: str | None = None,
        kek_version: int | None = None,
        sample: int | None = None,
    ) -> Iterator[StoredObject]:
        sql = "SELECT uid, wrapped, branch, kek_version, digest FROM objects"
        params: tuple[object, ...] = ()
        if branch is not None:
            sql, params = sql + " WHERE branch=? AND kek_version=?", (branch, kek_version)
        for r in self._iter(_sample(sql, sample), params):
            yield StoredObject(
                uid=bytes(r[0]),
                wrapped=bytes(r[1]),
                branch=r[2],
                kek_version=r[3],
                digest=bytes(r[4]),
            )

    def object_page(
        self, branch: str, kek_version: int, *, after: int, limit: int
    ) -> list[tuple[int, StoredObject]]:
        # objects_by_version is (branch, kek_version, id) since migration 9: an index range
        rows = self._rows(
            "SELECT id, uid, wrapped, digest FROM objects "
            "WHERE branch=? AND kek_version=? AND id>? ORDER BY id LIMIT ?",
            (branch, kek_version, int(after), int(limit)),
        )
        return [
            (
                int(r[0]),
                StoredObject(
                    uid=bytes(r[1]),
                    wrapped=bytes(r[2]),
                    branch=branch,
                    kek_version=kek_version,
                    digest=bytes(r[3]),
                ),
            )
            for r in rows
        ]

    def object_groups(
        self, *, sample: int | None = None, batch: int = 10_000
    ) -> Iterator[tuple[str, int, Sequence[ObjectCheck]]]:
        # One read transaction (a WAL snapshot) over all statements, so an object moved by a
        # concurrent re-key is seen exactly once; the per-version queries walk the
        # objects_by_version index, in row order within a version.
        with self._read_snapshot():
            if sample is not None:
                sampled: dict[tuple[str, int], list[ObjectCheck]] = {}
                for r in self._rows(
                    "SELECT branch, kek_version, uid, wrapped, digest FROM objects "
                    "ORDER BY RANDOM() LIMIT ?",
                    (int(sample),),
                ):
                    sampled.setdefault((r[0], r[1]), []).append((r[2], r[3], r[4]))
                for (branch, version), rows in sampled.items():
                    yield branch, version, rows
                return
            groups = self._rows("SELECT DISTINCT branch, kek_version FROM objects ORDER BY 1, 2")
            for branch, version in groups:
                for rows in self._batches(
                    "SELECT uid, wrapped, digest FROM objects WHERE branch=? AND kek_version=?",
                    (branch, version),
                    batch,
                ):
                    yield branch, version, rows

    def object_counts(self) -> dict[str, int]:
        # object_tally is kept by triggers on objects (migration 5), in the same transaction
        return dict(
            self._rows(
                "SELECT kind, CAST(SUM(n) AS BIGINT) FROM object_tally GROUP BY kind "
                "HAVING SUM(n) > 0"
            )
        )

    def count_objects(self, branch: str, kek_version: int | None = None) -> int:
        if kek_version is None:
            return int(self._scalar("SELECT COUNT(*) FROM objects WHERE branch=?", (branch,)))
        return int(
            self._scalar(
                "SELECT COUNT(*) FROM objects WHERE branch=? AND kek_version=?",
                (branch, kek_version),
            )
        )

    def pending_versions(self, branch: str | None = None) -> list[PendingVersion]:
        sql = (
            "SELECT o.branch, o.kek_version, COUNT(*) FROM objects o JOIN kek_versions k "
            "ON k.branch=o.branch AND k.version=o.kek_version WHERE k.state!=?"
        )
        params: tuple[str, ...] = (KeyState.ACTIVE,)
        if branch is not None:
            sql += " AND o.branch=?"
            params += (branch,)
        rows = self._rows(sql + " GROUP BY o.branch, o.kek_version ORDER BY 1, 2", params)
        return [PendingVersion(r[0], int(r[1]), int(r[2])) for r in rows]

    def sample_ciphers(self, limit: int) -> list[SampledCipher]:
        rows = self._rows("SELECT id, uid, wrapped, kek_version FROM objects LIMIT ?", (limit,))
        return [SampledCipher(*r) for r in rows]


__all__ = ["KeyQueries", "move_rounds"]
