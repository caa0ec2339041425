"""Audit-log records and their pure verification (entries, checkpoints, proofs).

An entry is one RFC 8785 canonical JSON object
``{log, seq, prev, time, actor, op, target, outcome, details}``; ``prev`` is the chain hash
of the previous entry (the log's genesis for seq 0). Entries are the leaves of an RFC 9162
tree; a checkpoint signs ``{type, log, tree_size, root, time}``. A proof is a
self-contained JSON document: the entry, its index, the inclusion path and the signed
checkpoint, checkable with :func:`check_proof` and a pinned key only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from custody.audit.merkle import leaf_hash, verify_inclusion
from custody.audit.signers import TrustKey, verify_signature
from custody.canonical import canonical_bytes, domain_hash
from custody.errors import AuditError, IntegrityError
from custody.signing import fingerprint

TAG_GENESIS = "custody/audit/genesis/v1"
TAG_CHAIN = "custody/audit/chain/v1"
TAG_CHECKPOINT = "custody/audit/checkpoint/v1"
TAG_HMAC = "custody/audit/hmac/v1"
TAG_SEAL = "custody/audit/seal/v1"
CHECKPOINT_TYPE = "custody.audit.checkpoint/v1"
PROOF_TYPE = "custody.audit.proof/v1"
OUTCOMES = ("intent", "ok", "denied", "failed")
ENTRY_FIELDS = ("log", "seq", "prev", "time", "actor", "op", "target", "outcome", "details")


def genesis(log_id: str) -> bytes:
    return domain_hash(TAG_GENESIS, bytes.fromhex(log_id))


def chain_hash(line: bytes) -> bytes:
    return domain_hash(TAG_CHAIN, line)


def seal_input(log_id: str, seq: int, chain: bytes) -> bytes:
    """What a seal MACs: the chain hash of entry *seq*, which commits to every entry up to it."""
    return domain_hash(TAG_SEAL, log_id.encode(), seq.to_bytes(8, "big"), chain)


def checkpoint_signing_input(payload: Mapping[str, Any]) -> bytes:
    return domain_hash(
        TAG_CHECKPOINT, bytes.fromhex(str(payload["log"])), canonical_bytes(dict(payload))
    )


def sign_checkpoint(payload: Mapping[str, Any], signer: Any) -> dict[str, Any]:
    """The stored checkpoint object: payload plus ``signatures`` (Signer protocol)."""
    sig = signer.sign(checkpoint_signing_input(payload))
    return {
        **payload,
        "signatures": [
            {
                "signer": signer.name,
                "alg": signer.alg,
                "keyid": fingerprint(signer.public),
                "public": signer.public.hex(),
                "sig": sig.hex(),
            }
        ],
    }


def _payload(cp: Mapping[str, Any]) -> dict[str, Any]:
    return {k: cp[k] for k in ("type", "log", "tree_size", "root", "time")}


def checkpoint_signers(cp: Mapping[str, Any], trust: Sequence[TrustKey] | None) -> list[str]:
    """Names of the keys whose signature on *cp* verifies.

    With *trust*, only pinned keys count; without it, the key embedded in the checkpoint
    is used and reported as ``self-asserted``.
    """
    data = checkpoint_signing_input(_payload(cp))
    names = []
    for s in cp.get("signatures", []):
        try:
            sig = bytes.fromhex(s["sig"])
        except (KeyError, ValueError, TypeError):
            continue
        if trust is None:
            pub = bytes.fromhex(s.get("public", ""))
            if verify_signature(s.get("alg", ""), pub, sig, data):
                names.append(f"{s.get('signer')} (self-asserted key {fingerprint(pub)[:16]})")
            continue
        for k in trust:
            # the pinned key's algorithm only, and the signature must say the same: no key
            # is ever read as another algorithm
            if (
                k.fingerprint == s.get("keyid")
                and s.get("alg", "ed25519") == k.alg
                and verify_signature(k.alg, k.public, sig, data)
            ):
                names.append(k.name)
    return names


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditReport:
    """Outcome of :func:`custody.audit.verify.audit_report`."""

    entries: int
    checkpoints: int
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


def check_proof(doc: Mapping[str, Any], trust: Sequence[TrustKey]) -> str:
    """Check a self-contained inclusion proof against pinned keys. Returns a summary.

    Raises:
        AuditError: malformed proof, checkpoint not signed by a pinned key, or the entry is
            not included at that index in the checkpointed tree.
    """
    try:
        if doc["type"] != PROOF_TYPE:
            raise ValueError("not an audit proof")
        entry, cp = doc["entry"], doc["checkpoint"]
        index, size = int(doc["leaf_index"]), int(cp["tree_size"])
        path = [bytes.fromhex(h) for h in doc["inclusion"]]
        root = bytes.fromhex(cp["root"])
        line = canonical_bytes(entry)
        same_log = entry["log"] == cp["log"] and entry["seq"] == index
    except (KeyError, ValueError, TypeError) as exc:
        raise AuditError(
            "The audit proof is malformed", f"Re-export it with 'custody audit proof' ({exc})."
        ) from exc
    signers = checkpoint_signers(cp, trust)
    if not signers:
        raise AuditError(
            "The proof's checkpoint is not signed by a pinned key",
            "Pin the audit signing key of this deployment with --trust.",
        )
    if not same_log:
        raise AuditError(
            "The entry does not belong to the checkpointed log at that index",
            "The proof was altered.",
        )
    try:
        verify_inclusion(leaf_hash(line), index, size, path, root)
    except IntegrityError as exc:
        raise AuditError(
            "The entry is not included in the signed checkpoint",
            "The entry or the proof was altered.",
        ) from exc
    return (
        f"entry {index} ({entry['op']} {entry['target']} by {entry['actor']}: "
        f"{entry['outcome']}) is in the log at tree size {size}, "
        f"signed by {', '.join(signers)}"
    )
