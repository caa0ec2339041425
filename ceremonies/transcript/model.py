"""The transcript data model and its exact wire form.

Everything a transcript signs or hashes is RFC 8785 canonical JSON (see
:mod:`custody.canonical`); binary values are lowercase hex, times are integer Unix
seconds (UTC). Each signature covers ``domain_hash(TAG, ceremony_id, canonical(payload))``
so a signature from one kind of record, or one ceremony, never verifies as another.
``docs/transcripts.md`` describes the format field by field.

Parsing raises :class:`FormatError` (a :class:`TranscriptError`) with a description of the
first problem; serialising a parsed object gives back the same bytes.

Names (participants, signers, approvers), roles, steps, kinds and ids are restricted to the
strict patterns below when a record is built or parsed, so none of them can carry a
control character or an escape sequence to a terminal; free text (purpose, bodies) is
escaped by every renderer instead (:func:`custody.textsafe.printable`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from custody.audit.signers import ALGORITHMS, public_key_ok
from custody.canonical import canonical_bytes, domain_hash
from custody.errors import TranscriptError
from custody.signing import fingerprint

POLICY_TYPE = "custody.transcript.policy/v1"
TAG_POLICY_SIG = "custody/transcript/policy-sig/v1"
TAG_POLICY_DIGEST = "custody/transcript/policy/v1"
TAG_SCRIPT = "custody/transcript/script/v1"
TAG_GENESIS = "custody/transcript/genesis/v1"
TAG_CHAIN = "custody/transcript/chain/v1"
TAG_EVENT_SIG = "custody/transcript/event/v1"
TAG_APPROVAL = "custody/transcript/approval/v1"
TAG_ACTION = "custody/transcript/action/v1"
TAG_CHECKPOINT = "custody/transcript/checkpoint/v1"

KIND_OPEN = "ceremony.open"
KIND_CLOSE = "ceremony.close"
KIND_EXCEPTION = "exception"
META_KINDS = frozenset({KIND_OPEN, KIND_CLOSE, KIND_EXCEPTION})
DEFAULT_WINDOW = 600

_HEX = re.compile(r"^[0-9a-f]*$")
# \Z, not $: "$" also matches before a final newline.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")  # participant / signer names
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # roles, steps, kinds
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}\Z")  # action ids, deployment ids
_HEXID = re.compile(r"^[0-9a-f]{32,128}\Z")  # ceremony ids
_FP = re.compile(r"^[0-9a-f]{32}\Z")  # key fingerprints (keyid)
OUTCOMES = ("completed", "aborted")


def check_name(v: str, what: str = "participant name") -> str:
    """*v* when it is a valid participant name, else ValueError (no control characters)."""
    if not isinstance(v, str) or not _NAME.match(v):
        raise ValueError(f"bad {what} {v!r}")
    return v


def check_token(v: str, what: str) -> str:
    """*v* when it is a valid role, step or kind name, else ValueError."""
    if not isinstance(v, str) or not _TOKEN.match(v):
        raise ValueError(f"bad {what} {v!r}")
    return v


def check_id(v: str, what: str) -> str:
    """*v* when it is a valid action or deployment id, else ValueError."""
    if not isinstance(v, str) or not _ID.match(v):
        raise ValueError(f"bad {what} {v!r}")
    return v


def check_ceremony_id(v: str, what: str = "ceremony id") -> str:
    """*v* when it is a lowercase-hex ceremony id of 128 to 512 bits, else ValueError."""
    if not isinstance(v, str) or not _HEXID.match(v) or len(v) % 2:
        raise ValueError(f"bad {what} {v!r}")
    return v


class FormatError(TranscriptError):
    """A record is not in the transcript format."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"Malformed transcript record: {what}",
            "The bundle was altered or written by an incompatible tool.",
        )


def unhex(v: Any, what: str, n: int | None = None) -> bytes:
    """Strict lowercase hex to bytes (length *n* when given). Raises FormatError."""
    if not isinstance(v, str) or not _HEX.match(v) or len(v) % 2:
        raise FormatError(f"{what} is not lowercase hex")
    b = bytes.fromhex(v)
    if n is not None and len(b) != n:
        raise FormatError(f"{what} must be {n} bytes")
    return b


def _int(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise FormatError(f"{what} must be an integer")
    return v


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise FormatError(f"{what} must be a string")
    return v


def _keys(
    d: Any, what: str, required: set[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise FormatError(f"{what} must be an object")
    missing, extra = required - d.keys(), d.keys() - required - optional
    if missing or extra:
        raise FormatError(f"{what}: missing {sorted(missing)} / unexpected {sorted(extra)}")
    return d


def cid_bytes(ceremony_id: str) -> bytes:
    return unhex(ceremony_id, "ceremony id")


def signing_input(tag: str, ceremony_id: str, payload: Mapping[str, Any]) -> bytes:
    """``domain_hash(tag, ceremony id, canonical(payload))``: what every signature covers."""
    return domain_hash(tag, cid_bytes(ceremony_id), canonical_bytes(payload))


@dataclass(frozen=True, slots=True, kw_only=True)
class Sig:
    """One signature: the signer's roster name (or key id for the policy) and the bytes."""

    signer: str
    sig: bytes = field(repr=False)
    keyid: str | None = None

    def __post_init__(self) -> None:
        check_name(self.signer, "signer name")
        if self.keyid is not None and not _FP.match(self.keyid):
            raise ValueError(f"bad key id {self.keyid!r}")

    def to_json(self) -> dict[str, str]:
        d = {"signer": self.signer, "sig": self.sig.hex()}
        if self.keyid is not None:
            d["keyid"] = self.keyid
        return d

    @classmethod
    def from_json(cls, d: Any, *, keyed: bool = False) -> Sig:
        req = {"signer", "sig", "keyid"} if keyed else {"signer", "sig"}
        _keys(d, "signature", req)
        try:
            return cls(
                signer=_str(d["signer"], "signer"),
                sig=unhex(d["sig"], "sig"),
                keyid=_str(d["keyid"], "keyid") if keyed else None,
            )
        except ValueError as exc:
            raise FormatError(str(exc)) from exc


def parse_sigs(v: Any, *, keyed: bool = False) -> tuple[Sig, ...]:
    if not isinstance(v, list):
        raise FormatError("signatures must be a list")
    return tuple(Sig.from_json(s, keyed=keyed) for s in v)


@dataclass(frozen=True, slots=True, kw_only=True)
class RosterEntry:
    """An enrolled participant: name, role and public key with its validity window.

    ``alg`` is recorded with the key, never inferred from it: ``ed25519`` (a raw 32-byte
    key) or ``ecdsa-p256`` (an X9.62 uncompressed point, for a participant whose token has
    no CKM_EDDSA); every signature by the participant is checked under this algorithm only
    (:func:`custody.audit.signers.verify_signature`).
    """

    name: str
    role: str
    public: bytes
    valid_from: int
    valid_until: int
    revoked_at: int | None = None
    alg: str = "ed25519"

    def __post_init__(self) -> None:
        check_name(self.name)
        check_token(self.role, "role")
        if self.alg not in ALGORITHMS:
            raise ValueError(f"unsupported key algorithm {self.alg!r}")
        if not public_key_ok(self.alg, self.public):
            raise ValueError(f"{self.name}'s public key is not an {self.alg} key")
        if self.revoked_at is not None and self.revoked_at < self.valid_from:
            raise ValueError(f"{self.name} is revoked before their key is valid")
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def valid_at(self, t: int) -> str | None:
        """None when the key is usable at *t*, else why not."""
        if t < self.valid_from:
            return f"{self.name}'s key is not valid before {self.valid_from}"
        if t >= self.valid_until:
            return f"{self.name}'s key expired at {self.valid_until}"
        if self.revoked_at is not None and t >= self.revoked_at:
            return f"{self.name}'s key was revoked at {self.revoked_at}"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "alg": self.alg,
            "public": self.public.hex(),
            "fingerprint": self.fingerprint,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
            "revoked_at": self.revoked_at,
        }

    @classmethod
    def from_json(cls, d: Any) -> RosterEntry:
        _keys(
            d,
            "roster entry",
            {
                "name",
                "role",
                "alg",
                "public",
                "fingerprint",
                "valid_from",
                "valid_until",
                "revoked_at",
            },
        )
        try:
            e = cls(
                name=_str(d["name"], "name"),
                role=_str(d["role"], "role"),
                alg=_str(d["alg"], "alg"),
                public=unhex(d["public"], "public key"),
                valid_from=_int(d["valid_from"], "valid_from"),
                valid_until=_int(d["valid_until"], "valid_until"),
                revoked_at=(
                    None if d["revoked_at"] is None else _int(d["revoked_at"], "revoked_at")
                ),
            )
        except ValueError as exc:
            raise FormatError(str(exc)) from exc
        if d["fingerprint"] != e.fingerprint:
            raise FormatError(f"fingerprint of {e.name} does not match the key")
        return e


@dataclass(frozen=True, slots=True, kw_only=True)
class Threshold:
    """``count`` distinct participants holding ``role``."""

    role: str
    count: int

    def __post_init__(self) -> None:
        check_token(self.role, "threshold role")
        if self.count < 1:
            raise ValueError("threshold count must be >= 1")

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "count": self.count}

    @classmethod
    def from_json(cls, d: Any) -> Threshold:
        _keys(d, "threshold", {"role", "count"})
        try:
            return cls(role=_str(d["role"], "role"), count=_int(d["count"], "count"))
        except ValueError as exc:
            raise FormatError(str(exc)) from exc


def script_digest(script: Sequence[str]) -> str:
    return domain_hash(TAG_SCRIPT, canonical_bytes(list(script))).hex()


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What a ceremony may do, signed before it starts (the payload of ``policy.json``).

    ``thresholds`` maps a quorum-gated action kind to the approvals it needs;
    ``permissions`` maps a role to the event kinds its members may record (``"*"`` = all);
    ``close_quorum`` names the roles (and counts) that must sign the close checkpoint;
    ``exception_quorum`` is who must co-sign a deviation from ``script``.
    """

    ceremony_id: str
    purpose: str
    kind: str
    created_at: int
    roster: tuple[RosterEntry, ...]
    permissions: Mapping[str, tuple[str, ...]]
    thresholds: Mapping[str, Threshold] = field(default_factory=dict)
    script: tuple[str, ...] = ()
    close_quorum: Mapping[str, int] = field(default_factory=dict)
    exception_quorum: Threshold = Threshold(role="super-admin", count=1)
    approval_window: int = DEFAULT_WINDOW
    checkpoint_interval: int = 16
    policy_quorum: int = 1
    deployment: str = ""
    prev_checkpoint: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        check_ceremony_id(self.ceremony_id)
        check_token(self.kind, "ceremony kind")
        if self.deployment:
            check_id(self.deployment, "deployment id")
        for step in self.script:
            check_token(step, "script step")
        for role, kinds in self.permissions.items():
            check_token(role, "role")
            for k in kinds:
                if k != "*":
                    check_token(k, "event kind")
        for kind in self.thresholds:
            check_token(kind, "gated action kind")
        for role in self.close_quorum:
            check_token(role, "close quorum role")
        _check_prev_checkpoint(self.prev_checkpoint)
        names = [e.name for e in self.roster]
        if len(set(names)) != len(names):
            raise ValueError("duplicate participant in roster")
        if self.approval_window < 1 or self.checkpoint_interval < 1 or self.policy_quorum < 1:
            raise ValueError("window, checkpoint interval and policy quorum must be >= 1")
        if len(set(self.script)) != len(self.script):
            raise ValueError("script steps must be unique")
        roles = {e.role for e in self.roster}
        for kind, t in self.thresholds.items():
            if sum(1 for e in self.roster if e.role == t.role) < t.count:
                raise ValueError(f"threshold for {kind} exceeds enrolled {t.role}s")
        for role, n in self.close_quorum.items():
            if role not in roles or n < 1:
                raise ValueError(f"close quorum names role {role!r} with no members")

    @classmethod
    def new(cls, *, rng: Callable[[int], bytes] = os.urandom, **kw: Any) -> Policy:
        """A policy with a fresh 128-bit random ceremony id from *rng*."""
        return cls(ceremony_id=rng(16).hex(), **kw)

    def member(self, name: str) -> RosterEntry | None:
        for e in self.roster:
            if e.name == name:
                return e
        return None

    def may_record(self, role: str, kind: str) -> bool:
        allowed = self.permissions.get(role, ())
        return "*" in allowed or kind in allowed

    def payload(self) -> dict[str, Any]:
        return {
            "type": POLICY_TYPE,
            "ceremony_id": self.ceremony_id,
            "purpose": self.purpose,
            "kind": self.kind,
            "deployment": self.deployment,
            "created_at": self.created_at,
            "roster": [e.to_json() for e in self.roster],
            "permissions": {r: list(k) for r, k in self.permissions.items()},
            "thresholds": {k: t.to_json() for k, t in self.thresholds.items()},
            "script": list(self.script),
            "script_digest": script_digest(self.script),
            "close_quorum": dict(self.close_quorum),
            "exception_quorum": self.exception_quorum.to_json(),
            "approval_window": self.approval_window,
            "checkpoint_interval": self.checkpoint_interval,
            "policy_quorum": self.policy_quorum,
            "prev_checkpoint": None if self.prev_checkpoint is None else dict(self.prev_checkpoint),
        }

    def digest(self) -> bytes:
        return domain_hash(TAG_POLICY_DIGEST, canonical_bytes(self.payload()))

    def genesis(self) -> bytes:
        """The ``prev`` of event 0: binds the event chain to this exact policy."""
        return domain_hash(TAG_GENESIS, cid_bytes(self.ceremony_id), self.digest())

    @classmethod
    def from_payload(cls, d: Any) -> Policy:
        """Raises FormatError for anything but a well-formed policy payload."""
        _keys(
            d,
            "policy",
            set(
                cls(
                    ceremony_id="00" * 16,
                    purpose="",
                    kind="x",
                    created_at=0,
                    roster=(),
                    permissions={},
                ).payload()
            ),
        )
        if d["type"] != POLICY_TYPE:
            raise FormatError("unknown policy type")
        if not isinstance(d["script"], list) or not all(isinstance(s, str) for s in d["script"]):
            raise FormatError("script must be a list of step names")
        if d["script_digest"] != script_digest(d["script"]):
            raise FormatError("script digest does not match the script")
        for m in ("permissions", "thresholds", "close_quorum"):
            if not isinstance(d[m], dict):
                raise FormatError(f"{m} must be an object")
        if not isinstance(d["roster"], list):
            raise FormatError("roster must be a list")
        try:
            return cls(
                ceremony_id=_str(d["ceremony_id"], "ceremony_id"),
                purpose=_str(d["purpose"], "purpose"),
                kind=_str(d["kind"], "kind"),
                deployment=_str(d["deployment"], "deployment"),
                created_at=_int(d["created_at"], "created_at"),
                roster=tuple(RosterEntry.from_json(e) for e in d["roster"]),
                permissions={
                    r: tuple(_str(k, "kind") for k in v) for r, v in d["permissions"].items()
                },
                thresholds={k: Threshold.from_json(t) for k, t in d["thresholds"].items()},
                script=tuple(d["script"]),
                close_quorum={r: _int(n, "close quorum") for r, n in d["close_quorum"].items()},
                exception_quorum=Threshold.from_json(d["exception_quorum"]),
                approval_window=_int(d["approval_window"], "approval_window"),
                checkpoint_interval=_int(d["checkpoint_interval"], "checkpoint_interval"),
                policy_quorum=_int(d["policy_quorum"], "policy_quorum"),
                prev_checkpoint=d["prev_checkpoint"],
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise FormatError(str(exc)) from exc


PREV_FIELDS = frozenset({"ceremony", "tree_size", "root"})


def _check_prev_checkpoint(v: Mapping[str, Any] | None) -> None:
    """``prev_checkpoint`` is null or exactly ``{ceremony, tree_size, root}`` (what the
    runner stores after each completed ceremony: its final checkpoint)."""
    if v is None:
        return
    if not isinstance(v, Mapping) or set(v) != PREV_FIELDS:
        raise ValueError(f"prev_checkpoint must be null or an object with {sorted(PREV_FIELDS)}")
    check_ceremony_id(v["ceremony"], "prev_checkpoint ceremony")
    n = v["tree_size"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError("prev_checkpoint tree_size must be a positive integer")
    r = v["root"]
    if not isinstance(r, str) or not _HEX.match(r) or len(r) != 64:
        raise ValueError("prev_checkpoint root must be 32 bytes of lowercase hex")


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedPolicy:
    """``policy.json``: the payload and, apart from it, the signatures over it."""

    policy: Policy
    signatures: tuple[Sig, ...] = ()

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {"payload": self.policy.payload(), "signatures": [s.to_json() for s in self.signatures]}
        )

    @staticmethod
    def signing_input(policy: Policy) -> bytes:
        return signing_input(TAG_POLICY_SIG, policy.ceremony_id, policy.payload())

    def signed_by(self, *signers: Any) -> SignedPolicy:
        """Add signatures of *signers* (objects following the Signer protocol)."""
        data = self.signing_input(self.policy)
        new = tuple(
            Sig(signer=s.name, keyid=fingerprint(s.public), sig=s.sign(data)) for s in signers
        )
        return SignedPolicy(policy=self.policy, signatures=self.signatures + new)

    @classmethod
    def from_json(cls, d: Any) -> SignedPolicy:
        _keys(d, "policy.json", {"payload", "signatures"})
        return cls(
            policy=Policy.from_payload(d["payload"]),
            signatures=parse_sigs(d["signatures"], keyed=True),
        )
