"""Audit-log records and their pure verification (entries, checkpoints, proofs).

An entry is one RFC 8785 canonical JSON object
``{log, seq, prev, time, actor, op, target, outcome, details}``; ``prev`` is the chain hash
of the previous entry (the log's genesis for seq 0). Entries are the leaves of an RFC 9162
tree; a checkpoint signs ``{type, log, tree_size, root, time}``. A proof is a
self-contained JSON document: the entry, its index, the inclusion path and the signed
checkpoint, checkable with :func:`check_proof` and a pinned key only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from custody.audit.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from custody.audit.signers import TrustKey, verify_signature
from custody.canonical import canonical_bytes, domain_hash, is_canonical
from custody.errors import AuditError, IntegrityError
from custody.signing import fingerprint

TAG_GENESIS = "custody/audit/genesis/v1"
TAG_CHAIN = "custody/audit/chain/v1"
TAG_CHECKPOINT = "custody/audit/checkpoint/v1"
TAG_HMAC = "custody/audit/hmac/v1"
CHECKPOINT_TYPE = "custody.audit.checkpoint/v1"
PROOF_TYPE = "custody.audit.proof/v1"
OUTCOMES = ("intent", "ok", "denied", "failed")
ENTRY_FIELDS = ("log", "seq", "prev", "time", "actor", "op", "target", "outcome", "details")


def genesis(log_id: str) -> bytes:
    return domain_hash(TAG_GENESIS, bytes.fromhex(log_id))


def chain_hash(line: bytes) -> bytes:
    return domain_hash(TAG_CHAIN, line)


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
            if k.fingerprint == s.get("keyid") and verify_signature(k.alg, k.public, sig, data):
                names.append(k.name)
    return names


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditReport:
    """Outcome of :func:`verify_log`."""

    entries: int
    checkpoints: int
    problems: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


def verify_log(
    log_id: str,
    lines: Sequence[bytes],
    cps: Sequence[bytes],
    trust: Sequence[TrustKey] | None = None,
) -> AuditReport:
    """Verify an audit log's entries and checkpoints (pure).

    Checks: canonical entries with contiguous ``seq`` and ``prev`` links from the log's
    genesis; every checkpoint's root against the entries; RFC 9162 consistency between
    successive checkpoints; checkpoint signatures (pinned keys when *trust* is given).
    """
    problems: list[str] = []
    head = genesis(log_id)
    tree = MerkleTree()
    for i, line in enumerate(lines):
        try:
            e = json.loads(line)
            if not is_canonical(line) or tuple(sorted(e)) != tuple(sorted(ENTRY_FIELDS)):
                problems.append(f"entry {i} is not a canonical audit entry")
            elif e["seq"] != i or e["log"] != log_id or e["prev"] != head.hex():
                problems.append(f"entry {i} breaks the chain (seq {e['seq']})")
            elif e["outcome"] not in OUTCOMES:
                problems.append(f"entry {i} has unknown outcome {e['outcome']!r}")
        except (ValueError, TypeError, KeyError):
            problems.append(f"entry {i} is unreadable")
        head = chain_hash(line)
        tree.append(leaf_hash(line))
    prev_size, prev_root = 0, tree.root(0)
    for raw in cps:
        try:
            cp = json.loads(raw)
            size, root = int(cp["tree_size"]), bytes.fromhex(cp["root"])
            if cp["type"] != CHECKPOINT_TYPE or cp["log"] != log_id:
                raise ValueError("foreign checkpoint")
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"unreadable checkpoint ({exc})")
            continue
        if not prev_size <= size <= tree.size:
            problems.append(f"checkpoint at size {size} is beyond the log or out of order")
            continue
        if root != tree.root(size):
            problems.append(f"checkpoint at size {size}: root does not match the entries")
        try:
            verify_consistency(
                prev_size, size, prev_root, root, tree.consistency_proof(prev_size, size)
            )
        except IntegrityError:
            problems.append(f"checkpoint at size {size} is not consistent with size {prev_size}")
        if not checkpoint_signers(cp, trust):
            problems.append(
                f"checkpoint at size {size} has no valid signature"
                + (" by a pinned key" if trust is not None else "")
            )
        prev_size, prev_root = size, root
    notes = [f"{len(lines)} entries chained", f"{len(cps)} checkpoints, last at size {prev_size}"]
    if prev_size < len(lines):
        notes.append(f"{len(lines) - prev_size} entries after the last checkpoint")
    if trust is None:
        notes.append("checkpoint keys were not pinned (--trust): signatures are self-asserted")
    return AuditReport(
        entries=len(lines), checkpoints=len(cps), problems=tuple(problems), notes=tuple(notes)
    )


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
