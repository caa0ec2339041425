"""The versioned key hierarchy: root versions (in the HSM), KEKs, and wrapped objects.

Root key versions live on the token as ``root/vN``; the store records their KCV, state and
(after a generate ceremony) the root-key blob wrapped under RK. KEKs (branches ``data``,
``backup``, ``secrets``) are random 256-bit keys sealed under the current root with AES-GCM
*inside the HSM*; DEKs and other objects are sealed under a KEK version *in process*
(AES-256-GCM via ``cryptography``). Every ciphertext is an envelope
(:mod:`custody.keys.wrapped`) naming the key id and version it is under.

The HSM unwraps a KEK once per job (:meth:`KeyHierarchy.kek_plaintext` caches it for the
life of this object); DEKs never make a per-object HSM round trip.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from custody.canonical import domain_hash
from custody.errors import (
    CeremonyError,
    IntegrityError,
    KeyNotFound,
    PolicyError,
    UsageError,
)
from custody.hsm import Hsm, kcv_of_bytes
from custody.keys import wrapped as envelope
from custody.model import BRANCHES, CAN_DECRYPT, KeyState, can_move
from custody.store.sqlite import Store

ROOT_LABEL = "root"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def kek_context(branch: str, version: int) -> bytes:
    return f"custody/kek/{branch}/v{version}".encode()


def object_context(uid: bytes) -> bytes:
    return b"custody/obj/" + uid


def object_digest(uid: bytes, plaintext: bytes) -> bytes:
    """Digest recorded for an object's plaintext, to check a later decrypt against."""
    return domain_hash("custody/object-digest/v1", uid, plaintext)


@dataclass(frozen=True, slots=True, kw_only=True)
class RootVersion:
    version: int
    state: KeyState
    kcv: str
    epoch: int | None
    has_blob: bool
    created: str
    state_changed: str
    destroy_after: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class KekVersion:
    branch: str
    version: int
    state: KeyState
    kcv: str
    root_version: int
    created: str
    state_changed: str
    destroy_after: str | None
    objects: int


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    checked: int
    failed: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failed


def _check_branch(branch: str) -> None:
    if branch not in BRANCHES:
        raise UsageError(f"Unknown KEK branch {branch!r}", f"Use one of: {', '.join(BRANCHES)}.")


class KeyHierarchy:
    """Operations on the hierarchy of one deployment (store + HSM)."""

    def __init__(self, store: Store, hsm: Hsm | None, *, clock: Callable[[], datetime] = utcnow):
        self.store = store
        self._hsm = hsm
        self.clock = clock
        self._kek_cache: dict[tuple[str, int], bytes] = {}

    def __repr__(self) -> str:
        return f"KeyHierarchy(store={self.store!r}, cached_keks={len(self._kek_cache)})"

    @property
    def has_hsm(self) -> bool:
        return self._hsm is not None

    @property
    def hsm(self) -> Hsm:
        if self._hsm is None:
            raise UsageError("This operation needs the HSM", "Provide the token PIN.")
        return self._hsm

    def forget_keys(self) -> None:
        """Drop cached KEK plaintexts (end of a job)."""
        self._kek_cache.clear()

    # ------------------------------------------------------------------ roots
    def roots(self) -> list[RootVersion]:
        rows = self.store.query(
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

    def current_root(self) -> RootVersion:
        """The active root version.

        Raises:
            CeremonyError: there is no root key yet.
        """
        for r in reversed(self.roots()):
            if r.state is KeyState.ACTIVE:
                return r
        raise CeremonyError(
            "There is no active root key",
            "Run the generate ceremony ('custody ceremony generate') or 'custody init --dev-root'.",
        )

    def next_root_version(self) -> int:
        rows = self.store.query("SELECT COALESCE(MAX(version), 0) FROM root_versions")
        return int(rows[0][0]) + 1

    def record_root(
        self, version: int, kcv: str, *, blob: bytes | None, epoch: int | None, activate: bool
    ) -> RootVersion:
        """Record a root version that now exists on the token.

        When *activate*, it becomes the active root and the previous active root becomes
        decrypt-only, in one transaction. KEKs are *not* rewrapped here; see :meth:`rewrap_keks`.
        """
        now = iso(self.clock())
        with self.store.tx() as c:
            if activate:
                c.execute(
                    "UPDATE root_versions SET state=?, state_changed=? WHERE state=?",
                    (KeyState.DECRYPT_ONLY, now, KeyState.ACTIVE),
                )
            c.execute(
                "INSERT INTO root_versions(version, state, kcv, epoch, blob, created, "
                "state_changed) VALUES(?,?,?,?,?,?,?)",
                (
                    version,
                    KeyState.ACTIVE if activate else KeyState.DECRYPT_ONLY,
                    kcv,
                    epoch,
                    blob,
                    now,
                    now,
                ),
            )
        return next(r for r in self.roots() if r.version == version)

    def root_blob(self, version: int) -> bytes:
        rows = self.store.query("SELECT blob FROM root_versions WHERE version=?", (version,))
        if not rows or rows[0][0] is None:
            raise CeremonyError(f"No root-key blob for root/v{version}", "Use the offline copy.")
        return bytes(rows[0][0])

    def set_root_state(
        self, version: int, state: KeyState, *, destroy_after: str | None = None
    ) -> None:
        """Move a root version to *state* (staged retirement).

        ``destroy-scheduled`` records *destroy_after*; ``destroyed`` first deletes the key
        object from the token (C_DestroyObject; an already-absent key is fine) and then
        erases the root-key blob from the store, so neither copy of that root remains.

        Raises:
            PolicyError: the move is not allowed, or a KEK is still wrapped under it.
            UsageError: no such version, or ``destroyed`` without the HSM.
            HsmError: the token refused to destroy the key (the state is unchanged).
        """
        rows = self.store.query("SELECT state FROM root_versions WHERE version=?", (version,))
        if not rows:
            raise UsageError(f"No root/v{version}", "See 'custody status'.")
        src = KeyState(rows[0][0])
        if not can_move(src, state):
            raise PolicyError(
                f"root/v{version} cannot go from {src} to {state}", "See docs/keys.md."
            )
        with self.store.tx() as c:
            if state not in CAN_DECRYPT:
                (n,) = c.execute(
                    "SELECT COUNT(*) FROM kek_versions WHERE root_version=? AND state!=?",
                    (version, KeyState.DESTROYED),
                ).fetchone()
                if n:
                    raise PolicyError(
                        f"root/v{version} still wraps {n} KEK version(s)",
                        "Rewrap the KEKs under the current root first.",
                    )
            if state is KeyState.DESTROYED:
                # a replaced token may never have held it (recovery restores the current root)
                with contextlib.suppress(KeyNotFound):
                    self.hsm.destroy_key(ROOT_LABEL, version)
                c.execute("UPDATE root_versions SET blob=NULL WHERE version=?", (version,))
            c.execute(
                "UPDATE root_versions SET state=?, state_changed=?, destroy_after=? "
                "WHERE version=?",
                (
                    state,
                    iso(self.clock()),
                    destroy_after if state is KeyState.DESTROY_SCHEDULED else None,
                    version,
                ),
            )

    def create_dev_root(self) -> RootVersion:
        """Generate a non-extractable root in the HSM with no recovery shares (development)."""
        version = self.next_root_version()
        ref = self.hsm.generate_aes_key(ROOT_LABEL, version, extractable=False)
        return self.record_root(version, ref.kcv, blob=None, epoch=None, activate=True)

    def rewrap_keks(self, to_root: int) -> int:
        """Re-seal every live KEK version under root/v*to_root* (rotate-root).

        Each KEK is decrypted under its current root and encrypted under the new one inside
        the HSM; its KCV is checked before the row is updated, all in one transaction.

        Returns:
            The number of KEK versions rewrapped.
        """
        rows = self.store.query(
            "SELECT branch, version, root_version, wrapped, kcv FROM kek_versions "
            "WHERE state != ? AND root_version != ?",
            (KeyState.DESTROYED, to_root),
        )
        updates = []
        for branch, version, root_v, wrapped, kcv in rows:
            plain = self._open_kek(branch, version, root_v, bytes(wrapped))
            if kcv_of_bytes(plain) != kcv:
                raise IntegrityError(f"KEK {branch}/v{version} KCV mismatch", "Stop; investigate.")
            updates.append(
                (self._seal_kek(branch, version, to_root, plain), to_root, branch, version)
            )
        for sealed, root_v, branch, version in updates:
            self._open_kek(branch, version, root_v, sealed)  # verify before commit
        with self.store.tx() as c:
            c.executemany(
                "UPDATE kek_versions SET wrapped=?, root_version=? WHERE branch=? AND version=?",
                updates,
            )
        return len(updates)

    # ------------------------------------------------------------------- KEKs
    def _seal_kek(self, branch: str, version: int, root_version: int, plain: bytes) -> bytes:
        ctx = kek_context(branch, version)
        aad = envelope.header(ROOT_LABEL, root_version) + ctx
        nonce, body = self.hsm.encrypt(ROOT_LABEL, root_version, plain, aad)
        return envelope.header(ROOT_LABEL, root_version) + nonce + body

    def _open_kek(self, branch: str, version: int, root_version: int, wrapped: bytes) -> bytes:
        env = envelope.parse(wrapped)
        if env.key_id != ROOT_LABEL or env.key_version != root_version:
            raise IntegrityError(f"KEK {branch}/v{version} names the wrong root", "Store damaged.")
        ctx = kek_context(branch, version)
        return self.hsm.decrypt(ROOT_LABEL, root_version, env.nonce, env.body, env.aad(ctx))

    def keks(self, branch: str | None = None) -> list[KekVersion]:
        sql = (
            "SELECT k.branch, k.version, k.state, k.kcv, k.root_version, k.created, "
            "k.state_changed, k.destroy_after, "
            "(SELECT COUNT(*) FROM objects o WHERE o.branch=k.branch AND o.kek_version=k.version) "
            "FROM kek_versions k"
        )
        params: tuple[str, ...] = ()
        if branch is not None:
            sql += " WHERE k.branch=?"
            params = (branch,)
        rows = self.store.query(sql + " ORDER BY k.branch, k.version", params)
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
            for r in rows
        ]

    def current_kek(self, branch: str) -> KekVersion:
        """The active KEK version of *branch*.

        Raises:
            UsageError: unknown branch. CeremonyError: the branch has no KEK yet.
        """
        _check_branch(branch)
        for k in reversed(self.keks(branch)):
            if k.state is KeyState.ACTIVE:
                return k
        raise CeremonyError(
            f"The {branch} branch has no active KEK",
            f"Create one with 'custody kek rotate --branch {branch}'.",
        )

    def create_kek_version(self, branch: str) -> KekVersion:
        """Create a new KEK version under the current root and make it active.

        The previous active version becomes decrypt-only in the same transaction.
        """
        _check_branch(branch)
        root = self.current_root()
        plain = self.hsm.random(32)
        rows = self.store.query(
            "SELECT COALESCE(MAX(version), 0) FROM kek_versions WHERE branch=?", (branch,)
        )
        version = int(rows[0][0]) + 1
        sealed = self._seal_kek(branch, version, root.version, plain)
        now = iso(self.clock())
        with self.store.tx() as c:
            c.execute(
                "UPDATE kek_versions SET state=?, state_changed=? WHERE branch=? AND state=?",
                (KeyState.DECRYPT_ONLY, now, branch, KeyState.ACTIVE),
            )
            c.execute(
                "INSERT INTO kek_versions(branch, version, state, kcv, root_version, wrapped, "
                "created, state_changed) VALUES(?,?,?,?,?,?,?,?)",
                (
                    branch,
                    version,
                    KeyState.ACTIVE,
                    kcv_of_bytes(plain),
                    root.version,
                    sealed,
                    now,
                    now,
                ),
            )
        self._kek_cache[(branch, version)] = plain
        return next(k for k in self.keks(branch) if k.version == version)

    def kek_plaintext(self, branch: str, version: int, *, for_encrypt: bool = False) -> bytes:
        """The KEK's bytes, unwrapped once through the HSM and cached for this object's life.

        Raises:
            PolicyError: the version is not usable (disabled or destroyed, or not active when
                *for_encrypt*). IntegrityError: the unwrap failed its tag or KCV check.
        """
        rows = self.store.query(
            "SELECT state, root_version, wrapped, kcv FROM kek_versions "
            "WHERE branch=? AND version=?",
            (branch, version),
        )
        if not rows:
            raise IntegrityError(f"No KEK {branch}/v{version}", "The object names a missing key.")
        state, root_v, wrapped, kcv = rows[0]
        st = KeyState(state)
        if st not in CAN_DECRYPT or (for_encrypt and st is not KeyState.ACTIVE):
            raise PolicyError(f"KEK {branch}/v{version} is {st}", "Use the active version.")
        key = self._kek_cache.get((branch, version))
        if key is None:
            key = self._open_kek(branch, version, root_v, bytes(wrapped))
            if kcv_of_bytes(key) != kcv:
                raise IntegrityError(f"KEK {branch}/v{version} KCV mismatch", "Store damaged.")
            self._kek_cache[(branch, version)] = key
        return key

    # ---------------------------------------------------------------- objects
    def generate_deks(
        self,
        branch: str,
        count: int,
        *,
        kind: str = "dek",
        label: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[bytes]:
        """Create *count* random 256-bit data keys wrapped under the active KEK of *branch*.

        Like a KMS GenerateDataKey, but the plaintexts are not returned: only a digest of
        each is recorded, to verify later decrypts against. Returns the new objects' uids.
        """
        if count < 1:
            raise UsageError("--count must be at least 1", "Ask for one or more keys.")
        kek = self.current_kek(branch)
        key = self.kek_plaintext(branch, kek.version, for_encrypt=True)
        now = iso(self.clock())
        uids: list[bytes] = []
        batch = 5000
        for start in range(0, count, batch):
            rows = []
            for _ in range(min(batch, count - start)):
                uid = os.urandom(16)
                dek = os.urandom(32)
                wrapped = envelope.seal(key, branch, kek.version, dek, object_context(uid))
                rows.append(
                    (
                        uid,
                        kind,
                        branch,
                        kek.version,
                        wrapped,
                        object_digest(uid, dek),
                        label,
                        now,
                        now,
                    )
                )
                uids.append(uid)
            with self.store.tx() as c:
                c.executemany(
                    "INSERT INTO objects(uid, kind, branch, kek_version, wrapped, digest, label, "
                    "created, updated) VALUES(?,?,?,?,?,?,?,?,?)",
                    rows,
                )
            if progress:
                progress(len(rows))
        return uids

    def store_object(
        self, branch: str, plaintext: bytes, *, kind: str, label: str | None = None
    ) -> bytes:
        """Wrap *plaintext* (a key or secret value) under the active KEK and store it."""
        kek = self.current_kek(branch)
        key = self.kek_plaintext(branch, kek.version, for_encrypt=True)
        uid = os.urandom(16)
        wrapped = envelope.seal(key, branch, kek.version, plaintext, object_context(uid))
        now = iso(self.clock())
        with self.store.tx() as c:
            c.execute(
                "INSERT INTO objects(uid, kind, branch, kek_version, wrapped, digest, label, "
                "created, updated) VALUES(?,?,?,?,?,?,?,?,?)",
                (
                    uid,
                    kind,
                    branch,
                    kek.version,
                    wrapped,
                    object_digest(uid, plaintext),
                    label,
                    now,
                    now,
                ),
            )
        return uid

    def open_object(self, uid: bytes, wrapped: bytes, branch: str, kek_version: int) -> bytes:
        env = envelope.parse(wrapped)
        if env.key_id != branch or env.key_version != kek_version:
            raise IntegrityError("An object's envelope disagrees with its row", "Store damaged.")
        key = self.kek_plaintext(branch, kek_version)
        return envelope.open_sealed(key, env, object_context(uid))

    def unwrap_object(self, uid: bytes) -> bytes:
        """Decrypt one stored object by uid.

        Raises:
            UsageError: no such object. IntegrityError/PolicyError: it cannot be decrypted.
        """
        rows = self.store.query(
            "SELECT wrapped, branch, kek_version FROM objects WHERE uid=?", (uid,)
        )
        if not rows:
            raise UsageError("No such object", "Check the object id.")
        wrapped, branch, version = rows[0]
        return self.open_object(uid, bytes(wrapped), branch, version)

    def iter_objects(
        self, sample: int | None = None
    ) -> Iterable[tuple[bytes, bytes, str, int, bytes]]:
        sql = "SELECT uid, wrapped, branch, kek_version, digest FROM objects"
        if sample is not None:
            sql += f" ORDER BY RANDOM() LIMIT {int(sample)}"
        cur = self.store.conn.execute(sql)
        for row in cur:
            yield bytes(row[0]), bytes(row[1]), row[2], row[3], bytes(row[4])

    def verify_objects(
        self, sample: int | None = None, progress: Callable[[int], None] | None = None
    ) -> VerifyReport:
        """Decrypt objects and compare each to its recorded digest.

        Args:
            sample: check this many random objects; ``None`` checks all.
        """
        checked = 0
        failed: list[str] = []
        for uid, wrapped, branch, version, digest in self.iter_objects(sample):
            checked += 1
            try:
                plain = self.open_object(uid, wrapped, branch, version)
                if object_digest(uid, plain) != digest:
                    failed.append(uid.hex())
            except (IntegrityError, PolicyError):
                failed.append(uid.hex())
            if progress and checked % 1000 == 0:
                progress(1000)
        return VerifyReport(checked=checked, failed=tuple(failed))

    def object_counts(self) -> dict[str, int]:
        rows = self.store.query("SELECT kind, COUNT(*) FROM objects GROUP BY kind")
        return {k: n for k, n in rows}

    # ------------------------------------------------------ staged retirement
    # Additive API for re-key jobs (custody.rekey.jobs); see docs/rekey.md.
    @staticmethod
    def kek_users(conn: sqlite3.Connection, branch: str, version: int) -> int:
        """How many things are still wrapped under KEK *branch*/v*version*.

        Counts stored objects and, for the ``backup`` branch, catalogued backup files. Call it
        inside the transaction that changes the version's state, so the count cannot go stale.
        """
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM objects WHERE branch=? AND kek_version=?", (branch, version)
        ).fetchone()
        if branch == "backup":
            (b,) = conn.execute(
                "SELECT COUNT(*) FROM backups WHERE kek_version=?", (version,)
            ).fetchone()
            n += b
        return int(n)

    def set_kek_state(
        self,
        branch: str,
        version: int,
        state: KeyState,
        *,
        destroy_after: datetime | None = None,
        now: datetime | None = None,
    ) -> KekVersion:
        """Move a KEK version to *state* (staged retirement), checking the rules atomically.

        The current state is re-read and the "wraps nothing" rule is checked inside the same
        write transaction that changes the state, so no object can be wrapped under a version
        that has just been disabled.

        Args:
            branch: the KEK branch.
            version: the KEK version.
            state: the target state.
            destroy_after: required when *state* is ``destroy-scheduled``.
            now: the time of the change (defaults to the hierarchy's clock).

        Returns:
            The version after the change.

        Raises:
            UsageError: unknown branch or version, or a missing *destroy_after*.
            PolicyError: the move is not allowed, the version still wraps something, another
                version is active, or its destruction delay has not passed.
        """
        _check_branch(branch)
        now = now if now is not None else self.clock()
        with self.store.tx() as c:
            row = c.execute(
                "SELECT state, destroy_after FROM kek_versions WHERE branch=? AND version=?",
                (branch, version),
            ).fetchone()
            if row is None:
                raise UsageError(f"No KEK {branch}/v{version}", "See 'custody kek list'.")
            src = KeyState(row[0])
            if not can_move(src, state):
                raise PolicyError(
                    f"KEK {branch}/v{version} cannot go from {src} to {state}",
                    "See docs/rekey.md for the retirement stages.",
                )
            if state not in CAN_DECRYPT:
                users = self.kek_users(c, branch, version)
                if users:
                    raise PolicyError(
                        f"KEK {branch}/v{version} still wraps {users} object(s)",
                        f"Move them first with 'custody rekey run --branch {branch}'.",
                    )
            if state is KeyState.ACTIVE:
                (active,) = c.execute(
                    "SELECT COUNT(*) FROM kek_versions WHERE branch=? AND state=?",
                    (branch, KeyState.ACTIVE),
                ).fetchone()
                if active:
                    raise PolicyError(
                        f"The {branch} branch already has an active KEK",
                        "Only one version per branch is active.",
                    )
            after: str | None = None
            if state is KeyState.DESTROY_SCHEDULED:
                if destroy_after is None:
                    raise UsageError("A destruction needs a date", "Pass destroy_after.")
                after = iso(destroy_after)
            if state is KeyState.DESTROYED:
                if row[1] is None or datetime.fromisoformat(row[1]) > now:
                    raise PolicyError(
                        f"KEK {branch}/v{version} may not be destroyed before {row[1]}",
                        "Wait for the destruction delay, or cancel it.",
                    )
                # Erase the sealed key itself; the row stays as a record.
                c.execute(
                    "UPDATE kek_versions SET wrapped=X'' WHERE branch=? AND version=?",
                    (branch, version),
                )
                after = row[1]
            c.execute(
                "UPDATE kek_versions SET state=?, state_changed=?, destroy_after=? "
                "WHERE branch=? AND version=?",
                (state, iso(now), after, branch, version),
            )
        if state not in CAN_DECRYPT:
            self._kek_cache.pop((branch, version), None)
        return next(k for k in self.keks(branch) if k.version == version)
