"""The store port: every read and write of a deployment's store, as typed methods.

No SQL crosses this boundary. Callers (the key hierarchy, re-key, backups, ceremonies, the
TUI and the CLI) call these methods with the row types of :mod:`custody.store.rows`; an
adapter (:mod:`custody.store.sqlite` today, a PostgreSQL one later, see ``docs/store.md``)
turns them into its dialect and maps every driver error to
:class:`~custody.errors.StorageError`.

Transactions: every write method is atomic on its own. :meth:`StoreCore.transaction` groups
several calls into one unit that commits at the end of the block or rolls back if the block
raises; a nested ``transaction()`` is a savepoint (its own rollback leaves the outer unit
intact). Methods that must see their own unit's writes (:meth:`KeyStore.claim_objects`,
:meth:`KeyStore.kek_users` inside a state change) are called inside one.

Batch claims: :meth:`KeyStore.claim_objects` has ``SELECT ... FOR UPDATE SKIP LOCKED``
semantics. The rows it returns belong to the calling transaction until that transaction
ends; no concurrent claimer is handed any of them. PostgreSQL does this with row locks;
SQLite with its single write lock, held from ``BEGIN IMMEDIATE`` to ``COMMIT``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from custody.model import KeyState
from custody.store.rows import (
    AccessApprovalRow,
    AccessRequestRow,
    BackupEntry,
    CeremonyRow,
    GrantRow,
    IncidentRow,
    JobRow,
    KekRewrap,
    KekVersion,
    LeaseRow,
    MfaRow,
    NewKek,
    NewObject,
    NewRoot,
    ObjectCheck,
    ObjectCipher,
    ObjectMove,
    ParticipantRow,
    PendingVersion,
    PrincipalRow,
    RootVersion,
    RunningJob,
    SampledCipher,
    SealedKek,
    SecretRow,
    SecretVersionRow,
    ShareSetRow,
    StoredObject,
)


class StoreCore(Protocol):
    """Opening, transactions, metadata and integrity."""

    @property
    def path(self) -> Path:
        """Where the store lives (its file, or a local directory for state beside it)."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """One atomic unit of work: commit at the end, roll back on any exception."""
        ...

    def rehearsal(self) -> AbstractContextManager[None]:
        """A write transaction that is always rolled back (to time real writes safely)."""
        ...

    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...

    def read_snapshot(self) -> AbstractContextManager[None]:
        """One consistent view around several reads (REPEATABLE READ on PostgreSQL, a WAL
        read transaction on SQLite), or the open transaction's own view inside one. No
        write may run inside it (outside a transaction)."""
        ...

    def cached_reads(self) -> AbstractContextManager[None]:
        """One request's reads: inside, an adapter may answer a plain read from the results
        of earlier ones, but only while nothing has been committed since (checked on
        entry, for other connections and processes; on every read, for this one's own
        writes). Reads inside a transaction or a read snapshot always go to the store.
        Where the engine offers no cheap check (PostgreSQL), it changes nothing."""
        ...

    def change_counter(self) -> object | None:
        """A value that differs whenever the stored rows may have changed since it was last
        read (another connection committed, or this one wrote), or None when the engine
        offers none. A long-lived caller may skip re-checking rows it checked while the
        value stays the same; with None it checks every time."""
        ...

    def check(self) -> None:
        """Run the engine's integrity check. Raises StorageError when damaged."""
        ...

    def close(self) -> None: ...

    def watch_access(self, on_change: Callable[[str], None]) -> Watch | None:
        """Call *on_change* (on another thread) whenever any process commits a change to
        the access-control rows: PostgreSQL's LISTEN/NOTIFY, so that replicas drop what
        they cached at once. None where the adapter has no notifications (SQLite)."""
        ...


class Watch(Protocol):
    """A running change watch (:meth:`StoreCore.watch_access`)."""

    def close(self) -> None: ...


class KeyStore(Protocol):
    """Root versions, KEK versions and wrapped objects (:mod:`custody.keys`)."""

    # roots
    def roots(self) -> list[RootVersion]: ...
    def root_state(self, version: int) -> KeyState | None: ...
    def root_blob(self, version: int) -> bytes | None: ...
    def next_root_version(self) -> int: ...

    def add_root(self, root: NewRoot, *, activate: bool, now: str) -> None:
        """Insert a root version; with *activate* the old active root turns decrypt-only."""
        ...

    def set_root_state(
        self, version: int, state: KeyState, *, now: str, destroy_after: str | None
    ) -> None:
        """Change a root's state; ``destroyed`` also erases its blob."""
        ...

    def live_keks_under_root(self, version: int) -> int:
        """KEK versions (not destroyed) still sealed under root/v*version*."""
        ...

    # KEKs
    def keks(self, branch: str | None = None) -> list[KekVersion]: ...
    def sealed_kek(self, branch: str, version: int) -> SealedKek | None: ...
    def live_keks_not_under(self, root_version: int) -> list[SealedKek]: ...
    def rewrap_keks(self, rewraps: Sequence[KekRewrap]) -> None: ...
    def next_kek_version(self, branch: str) -> int: ...

    def add_kek(self, kek: NewKek, *, now: str) -> None:
        """Insert the branch's new active version; the old active one turns decrypt-only."""
        ...

    def active_kek_count(self, branch: str) -> int: ...
    def active_kek_versions(self) -> dict[str, int]: ...

    def set_kek_state(
        self, branch: str, version: int, state: KeyState, *, now: str, destroy_after: str | None
    ) -> None:
        """Change a KEK's state; ``destroyed`` also erases its sealed bytes."""
        ...

    def kek_users(self, branch: str, version: int) -> int:
        """Objects (and, for ``backup``, catalogued backups) under the version."""
        ...

    # objects
    def add_objects(self, objects: Sequence[NewObject], *, now: str) -> None: ...
    def stored_object(self, uid: bytes) -> StoredObject | None: ...

    def iter_objects(
        self,
        *,
        branch: str | None = None,
        kek_version: int | None = None,
        sample: int | None = None,
    ) -> Iterator[StoredObject]:
        """Objects (of one version, if given); *sample*: that many, chosen at random."""
        ...

    def object_page(
        self, branch: str, kek_version: int, *, after: int, limit: int
    ) -> list[tuple[int, StoredObject]]:
        """Up to *limit* objects of *branch*/v*kek_version* with a row id above *after*, as
        ``(id, object)`` in id order: one short read each, so a long scan can write between
        pages (the re-key verify step renews its lease there)."""
        ...

    def object_groups(
        self, *, sample: int | None = None, batch: int = 10_000
    ) -> Iterator[tuple[str, int, Sequence[ObjectCheck]]]:
        """Every object (or *sample* chosen at random) as ``(branch, kek_version, rows)``:
        grouped by the branch and version its row names, in lists of up to *batch*, all read
        from one snapshot. Do not write through this store while iterating."""
        ...

    def object_counts(self) -> dict[str, int]:
        """Objects by kind, from counters kept with every write (O(1) in the object count)."""
        ...

    def count_objects(self, branch: str, kek_version: int | None = None) -> int: ...

    def pending_versions(self, branch: str | None = None) -> list[PendingVersion]:
        """Non-active KEK versions that still wrap objects, by branch and version."""
        ...

    def claim_objects(self, branch: str, kek_version: int, limit: int) -> list[ObjectCipher]:
        """Claim up to *limit* objects under the version, lowest id first, for this
        transaction (``FOR UPDATE SKIP LOCKED``). Must be called inside
        :meth:`StoreCore.transaction`."""
        ...

    def move_objects(self, moves: Sequence[ObjectMove]) -> int:
        """Apply new envelopes, each only if the row is still under its old version.
        Returns how many rows changed."""
        ...

    def sample_ciphers(self, limit: int) -> list[SampledCipher]: ...


class RekeyStore(Protocol):
    """Re-key jobs, named leases, retirement holds."""

    def running_job(self, branch: str) -> RunningJob | None: ...
    def take_job(self, job_id: int, *, pid: int, now: str) -> None: ...
    def supersede_job(self, job_id: int, *, now: str) -> None: ...

    def start_job(
        self, branch: str, to_version: int, *, total: int, batch: int, pid: int, now: str
    ) -> int: ...

    def advance_job(self, job_id: int, *, moved: int, last_id: int, now: str) -> None: ...

    def finish_job(
        self, job_id: int, state: str, *, now: str, verified: int, verify_failed: int
    ) -> None: ...

    def recent_jobs(self, limit: int = 20) -> list[JobRow]: ...
    def lease(self, name: str) -> LeaseRow | None: ...
    def put_lease(self, lease: LeaseRow) -> None: ...

    def renew_lease(self, name: str, token: str, *, expires: str) -> bool:
        """Extend the lease if *token* still owns it; False if it was taken over."""
        ...

    def drop_lease(self, name: str, token: str) -> None: ...
    def holds(self) -> set[tuple[str, int]]: ...
    def add_hold(self, branch: str, version: int, *, reason: str, now: str) -> None: ...


class WorkerStore(Protocol):
    """Parallel re-key workers (``custody rekey run --workers N``): batch transactions that
    may run beside each other, each checking the coordinator's lease without taking it.

    On PostgreSQL a batch transaction does not take the store's write lock, its rows are
    claimed with ``FOR UPDATE SKIP LOCKED`` (:meth:`KeyStore.claim_objects`), so N workers
    move N batches at once. On SQLite it is an ordinary write transaction (one writer at a
    time; workers then overlap only their rewrapping)."""

    def batch_transaction(self) -> AbstractContextManager[None]:
        """A write transaction for one re-key batch (see the class doc)."""
        ...

    def lease_holds(self, name: str, token: str, *, now: str) -> bool:
        """Inside a batch transaction: whether *token* still holds the unexpired lease
        *name*. The row stays share-locked until the batch ends, so a takeover
        (:meth:`RekeyStore.put_lease`) waits for the batch and every later batch of the
        old owner sees it lost."""
        ...


class BackupStore(Protocol):
    """The catalogue of backup files (:mod:`custody.backup`)."""

    def catalog_backup(self, entry: BackupEntry, *, now: str) -> None: ...

    def recatalog_backups(self, moves: Sequence[tuple[bytes, int, str]]) -> None:
        """``(file_id, kek_version, updated)`` after header rewraps."""
        ...

    def count_backups(self, kek_version: int) -> int: ...


class CeremonyStore(Protocol):
    """Participants, the ceremony registry, share sets, drills and incidents."""

    def participants(self) -> list[ParticipantRow]: ...
    def add_participant(self, p: ParticipantRow) -> None: ...
    def revoke_participant(self, name: str, *, now: int) -> bool: ...

    def ceremonies(self, *, state: str | None = None) -> list[CeremonyRow]:
        """Newest first (ties: the later-inserted row first)."""
        ...

    def ceremony(self, ceremony_id: str) -> CeremonyRow | None: ...
    def add_ceremony(self, c: CeremonyRow) -> None: ...
    def delete_ceremony(self, ceremony_id: str) -> None: ...
    def set_ceremony_pending(self, ceremony_id: str, pending: str, *, now: int) -> None: ...
    def set_ceremony_state(self, ceremony_id: str, state: str, *, now: int) -> None: ...
    def active_share_set(self) -> ShareSetRow | None: ...
    def retired_share_sets(self) -> list[ShareSetRow]: ...

    def replace_share_set(self, s: ShareSetRow, *, now: int) -> None:
        """Retire the active share set and record *s* (with its holders) as active."""
        ...

    def drill_passers(self, epoch: int, *, since: int) -> list[str]: ...

    def record_drill(
        self, ceremony_id: str, custodians: Sequence[str], *, epoch: int, at: int
    ) -> bool:
        """Record the ceremony's passes once; False if it was already recorded."""
        ...

    def last_drill(self, custodian: str, epoch: int | None) -> int | None: ...
    def has_drilled(self, custodian: str) -> bool: ...
    def put_incident(self, incident: IncidentRow) -> None: ...

    def revoke_access(self, *, now: int) -> dict[str, int]:
        """Revoke every unrevoked grant and session (tables added by later schema
        versions; absent ones are skipped). Returns how many rows per table."""
        ...


class SecretStore(Protocol):
    """Secrets (path, environment, category) and their versions (docs/secrets.md).

    Writes run inside :meth:`StoreCore.transaction`. Metadata never needs a decrypt."""

    def add_secret(self, row: SecretRow) -> None:
        """Insert a new secret. Raises StorageError when (env, path) exists."""
        ...

    def secret(self, env: str, path: str) -> SecretRow | None: ...

    def secrets(self, env: str | None = None, prefix: str = "") -> list[SecretRow]:
        """Secrets of *env* (every environment when None) whose path starts with *prefix*."""
        ...

    def update_secret(self, env: str, path: str, **fields: Any) -> None:
        """Change metadata columns (state, labels, owner, expiry, windows, failures)."""
        ...

    def add_secret_version(self, row: SecretVersionRow) -> None:
        """Insert a version. Raises StorageError when its ``lookup`` is already held."""
        ...

    def secret_versions(self, env: str, path: str) -> list[SecretVersionRow]: ...

    def secret_version(self, env: str, path: str, version: int) -> SecretVersionRow | None: ...

    def lookup_exists(self, lookup: bytes) -> bool:
        """Whether any version holds this uniqueness tag (API keys are globally unique)."""
        ...

    def set_version_state(self, env: str, path: str, version: int, state: str) -> None: ...

    def shred_secret_version(self, env: str, path: str, version: int) -> None:
        """Delete the version's DEK object and ciphertext; keep its metadata row."""
        ...


class AccessStore(Protocol):
    """Principals, grant and release requests, approvals, grants (docs/access.md).

    Times are Unix seconds. Writes are atomic on their own; a request's approval and the
    grant it completes are written in one :meth:`StoreCore.transaction`."""

    def add_principal(self, row: PrincipalRow) -> None:
        """Insert a principal. Raises StorageError when the name is taken."""
        ...

    def principal(self, name: str) -> PrincipalRow | None: ...
    def principals(self) -> list[PrincipalRow]: ...
    def principal_by_token_id(self, token_id: str) -> PrincipalRow | None: ...

    def set_principal_token(
        self, name: str, *, token_id: str, salt: bytes, digest: bytes, now: int
    ) -> None:
        """Replace the principal's token (the old one stops working at once)."""
        ...

    def revoke_principal(self, name: str, *, now: int) -> bool:
        """Revoke the principal (and its token); False if unknown or already revoked."""
        ...

    def revoke_principal_token(self, name: str, *, now: int) -> bool: ...

    def add_access_request(self, row: AccessRequestRow) -> None: ...
    def access_request(self, request_id: str) -> AccessRequestRow | None: ...

    def access_requests(self, *, state: str | None = None) -> list[AccessRequestRow]:
        """Newest first."""
        ...

    def set_access_request_state(self, request_id: str, state: str, *, now: int) -> None: ...

    def add_access_approval(self, row: AccessApprovalRow) -> bool:
        """Record one approval; False when this approver already approved the request."""
        ...

    def access_approvals(self, request_id: str) -> list[AccessApprovalRow]: ...
    def add_grant(self, row: GrantRow) -> None: ...
    def grant(self, grant_id: str) -> GrantRow | None: ...

    def grants(self, *, principal: str | None = None, env: str | None = None) -> list[GrantRow]:
        """Grants (every state), newest first."""
        ...

    def revoke_grant(self, grant_id: str, *, now: int, by: str, reason: str) -> bool:
        """Revoke one unrevoked grant; False if unknown or already revoked."""
        ...

    def lapse_grants(self, *, now: int) -> list[GrantRow]:
        """Mark every unrevoked grant whose window ended by *now* as lapsed (once each);
        returns the grants newly lapsed, so each expiry is audited exactly once."""
        ...

    def revoke_grants_on(
        self, env: str, path: str, *, now: int, by: str, reason: str
    ) -> list[GrantRow]:
        """Revoke every unrevoked grant that covers (env, path); returns them as they were."""
        ...

    def release_rule(self, env: str, path: str) -> tuple[str, int] | None:
        """``(mode, needed)`` for a secret marked for quorum release, else None."""
        ...

    def release_rules(self) -> list[tuple[str, str, str, int]]:
        """Every release rule as ``(env, path, mode, needed)``, sorted (the access seal)."""
        ...

    def set_release_rule(
        self, env: str, path: str, *, mode: str, needed: int, by: str, now: int
    ) -> None: ...

    def record_release(
        self, request_id: str, *, version: int, sealed_sha256: str, now: int
    ) -> bool:
        """Mark the release as delivered; False if it already was (a replay)."""


class MfaStore(Protocol):
    """TOTP enrolments (docs/mfa.md). No secret is in these rows: the TOTP secret is an
    object (:meth:`KeyStore.add_objects`) wrapped under the ``secrets`` KEK branch."""

    def mfa_enrolment(self, principal: str) -> MfaRow | None: ...
    def mfa_enrolments(self) -> list[MfaRow]: ...

    def add_mfa_enrolment(self, row: MfaRow) -> None:
        """Insert (inside a transaction). Raises StorageError when one exists."""
        ...

    def delete_mfa_enrolment(self, principal: str) -> MfaRow | None:
        """Delete the enrolment and its secret's object (inside a transaction); the row
        that was deleted, or None."""
        ...

    def use_mfa_step(self, principal: str, step: int, *, now: str) -> bool:
        """Record *step* as used, only if it is later than the last used step and the
        principal is not locked out at *now* (ISO-8601, as ``locked_until``); atomic: one of
        two concurrent callers with the same step gets False, and so does a caller that a
        concurrent failure has just locked out. Resets the failure count and an ended
        lockout, and confirms the enrolment."""
        ...

    def fail_mfa(self, principal: str, *, limit: int, locked_until: str) -> tuple[int, bool]:
        """Count one refused code (inside a transaction). At *limit* consecutive failures
        the count restarts and the principal is locked until *locked_until*. Returns the
        count reached and whether this failure locked the principal."""
        ...


class Store(
    StoreCore,
    KeyStore,
    RekeyStore,
    WorkerStore,
    BackupStore,
    CeremonyStore,
    SecretStore,
    AccessStore,
    MfaStore,
    Protocol,
):
    """A deployment's store: everything above, behind one handle."""
