"""The row types of the store port (:mod:`custody.store.port`).

Every port method takes and returns these (or plain ints, strings and bytes), never a
driver's row or cursor, so an adapter for another engine returns the same values. Times are
what the tables hold: ISO-8601 strings in the key and re-key tables (:mod:`custody.clock`),
integer Unix seconds in the ceremony tables.

Two hot-path rows are :class:`~typing.NamedTuple` rather than dataclasses, so a re-key batch
of 10,000 rows unpacks at tuple speed: :class:`ObjectCipher` and :data:`ObjectMove`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from custody.model import KeyState


# ------------------------------------------------------------------------- key hierarchy
@dataclass(frozen=True, slots=True, kw_only=True)
class RootVersion:
    """One root key version (the key itself lives on the token as ``root/vN``)."""

    version: int
    state: KeyState
    kcv: str
    epoch: int | None
    has_blob: bool
    created: str
    state_changed: str
    destroy_after: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRoot:
    """A root version to record (``blob``: RK-wrapped root key from a ceremony, if any)."""

    version: int
    kcv: str
    epoch: int | None
    blob: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class KekVersion:
    """One KEK version of a branch, with how many objects it wraps."""

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
class SealedKek:
    """A KEK version's sealed bytes (under root/v``root_version``) and what checks them."""

    branch: str
    version: int
    state: KeyState
    root_version: int
    wrapped: bytes
    kcv: str
    destroy_after: str | None

    def __repr__(self) -> str:  # the sealed bytes are not secret, but keep reprs short
        return f"SealedKek({self.branch}/v{self.version}, {self.state})"


@dataclass(frozen=True, slots=True, kw_only=True)
class NewKek:
    """A new KEK version to record as the branch's active version."""

    branch: str
    version: int
    kcv: str
    root_version: int
    wrapped: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class KekRewrap:
    """A KEK version re-sealed under another root version."""

    branch: str
    version: int
    root_version: int
    wrapped: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class NewObject:
    """A wrapped object (DEK or secret value) to insert."""

    uid: bytes
    kind: str
    branch: str
    kek_version: int
    wrapped: bytes
    digest: bytes
    label: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredObject:
    """A wrapped object as read back for decryption or verification."""

    uid: bytes
    wrapped: bytes
    branch: str
    kek_version: int
    digest: bytes


ObjectCheck = tuple[bytes, bytes, bytes]
"""``(uid, wrapped, digest)`` of an object read for verification: a plain tuple, as the
driver returns it, so a million of them cost no per-row object."""


class ObjectCipher(NamedTuple):
    """``(id, uid, wrapped)`` of an object claimed by a re-key batch."""

    id: int
    uid: bytes
    wrapped: bytes


class ObjectMove(NamedTuple):
    """One object's new envelope: applied only if it is still under ``old_version``."""

    wrapped: bytes
    new_version: int
    updated: str
    id: int
    old_version: int


class SampledCipher(NamedTuple):
    """An object's cipher and version, sampled to time the rewrap pipeline."""

    id: int
    uid: bytes
    wrapped: bytes
    kek_version: int


class PendingVersion(NamedTuple):
    """A non-active KEK version that still wraps ``objects`` objects."""

    branch: str
    version: int
    objects: int


# ------------------------------------------------------------------------------ re-key
@dataclass(frozen=True, slots=True, kw_only=True)
class JobRow:
    """A re-key job as recorded in the store (the TUI polls these for live progress)."""

    id: int
    branch: str
    to_version: int
    state: str
    total: int
    done: int
    batch: int
    owner_pid: int | None
    started: str
    updated: str
    finished: str | None
    verified: int | None
    verify_failed: int | None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__} | {"fraction": self.fraction}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningJob:
    """The running job of a branch: where a resumed run continues."""

    id: int
    to_version: int
    done: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRow:
    """A named lease's row. ``token`` identifies the owner; it is never shown."""

    name: str
    token: str
    owner_pid: int
    owner_host: str
    acquired: str
    expires: str

    def __repr__(self) -> str:
        return f"LeaseRow({self.name!r}, pid={self.owner_pid}, host={self.owner_host!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupEntry:
    """A catalogued backup file and the backup KEK version its header is sealed under."""

    file_id: bytes
    path: str
    kek_version: int
    size: int


# -------------------------------------------------------------------------- ceremonies
@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantRow:
    name: str
    role: str
    public: bytes
    fingerprint: str
    valid_from: int
    valid_until: int
    revoked_at: int | None
    enrolled_by: str
    enrolled_in: str | None = None
    alg: str = "ed25519"


@dataclass(frozen=True, slots=True, kw_only=True)
class CeremonyRow:
    id: str
    kind: str
    state: str
    coordinator: str | None
    bundle: str
    created: int
    expires: int
    updated: int
    pending: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareHolderRow:
    custodian: str
    fingerprint: str
    group_index: int
    member_index: int
    commitment: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareSetRow:
    epoch: int
    ceremony_id: str
    policy_digest: str
    dealer_public: bytes
    rk_kcv: str
    rk_public: bytes
    scheme: str
    state: str
    created: int
    retired_at: int | None = None
    holders: tuple[ShareHolderRow, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class IncidentRow:
    id: str
    ceremony_id: str
    reason: str
    created: int
    report: str


# ------------------------------------------------------------------------------- secrets
@dataclass(frozen=True, slots=True, kw_only=True)
class SecretRow:
    """A secret's metadata: everything but the values (readable without decrypting)."""

    env: str
    path: str
    category: str
    security_class: str
    owner: str
    state: str
    current_version: int | None
    pending_version: int | None
    previous_version: int | None
    next_version: int
    expires: str
    created: str
    updated: str
    deleted_at: str | None = None
    destroy_after: str | None = None
    rotation_failures: int = 0
    prefix: str | None = None
    previous_until: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretVersionRow:
    """One version: its value sealed under its own DEK (``dek_uid``, an objects row). A
    destroyed version keeps its row with ``dek_uid``, ``ciphertext`` and ``value_mac`` gone."""

    env: str
    path: str
    version: int
    state: str
    dek_uid: bytes | None
    ciphertext: bytes | None = field(repr=False)
    value_mac: bytes | None
    lookup: bytes | None
    source: str
    created: str


# ------------------------------------------------------------------------- access control
@dataclass(frozen=True, slots=True, kw_only=True)
class PrincipalRow:
    """A principal (docs/access.md). A person has ``public`` (their participant signing key)
    and maybe ``x25519`` (the key sealed releases are made to); a service has a token, kept
    only as ``token_id`` (public lookup part), ``token_salt`` and ``token_hash``."""

    name: str
    kind: str
    role: str
    services: tuple[str, ...]
    envs: tuple[str, ...]
    created: int
    created_by: str
    public: bytes | None = None
    x25519: bytes | None = None
    token_id: str | None = None
    token_salt: bytes | None = field(default=None, repr=False)
    token_hash: bytes | None = field(default=None, repr=False)
    token_created: int | None = None
    token_revoked_at: int | None = None
    revoked_at: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRequestRow:
    """A request for a time-limited grant (``kind='grant'``) or a quorum release
    (``kind='release'``): what approvers sign is the digest of these fields."""

    id: str
    kind: str
    requester: str
    env: str
    path: str
    actions: tuple[str, ...]
    not_before: int
    not_after: int
    nonce: str
    reason: str
    security_class: str
    needed: int
    digest: str
    state: str
    created: int
    updated: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessApprovalRow:
    """One approver's Ed25519 signature over a request's digest."""

    request_id: str
    approver: str
    public: bytes
    sig: bytes
    approved_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantRow:
    """An active (or lapsed, or revoked) grant, with its signed record (JSON text)."""

    id: str
    request_id: str
    principal: str
    env: str
    path: str
    actions: tuple[str, ...]
    not_before: int
    not_after: int
    created: int
    record: str
    revoked_at: int | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None


# ----------------------------------------------------------------------------------- MFA
@dataclass(frozen=True, slots=True, kw_only=True)
class MfaRow:
    """One principal's TOTP enrolment (docs/mfa.md). The secret itself is not here: it is
    an objects row (``object_uid``) wrapped under the ``secrets`` KEK branch.

    ``last_step`` is the last TOTP time step accepted (a code is used once); ``failures``
    counts consecutive refused codes; ``locked_until`` (ISO-8601) ends a lockout."""

    principal: str
    object_uid: bytes
    digits: int
    period: int
    algorithm: str
    enrolled_at: str
    confirmed_at: str | None = None
    last_step: int | None = None
    last_used: str | None = None
    failures: int = 0
    locked_until: str | None = None
