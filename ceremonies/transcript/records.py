"""Events, approvals and checkpoints: the records that follow the policy in a bundle.

* An :class:`Event` is one line of ``events.jsonl``. Its ``signatures`` cover
  ``domain_hash(TAG_EVENT_SIG, ceremony id, canonical(event without "signatures"))``; its
  ``prev`` is :func:`chain_hash` of the previous line (the policy's genesis for seq 0).
* An :class:`Approval` is a participant's signed consent to one quorum-gated action,
  bound to the action's digest (:func:`action_digest`), with an expiry and a nonce.
* A :class:`Checkpoint` is one line of ``checkpoints.jsonl``: an RFC 9162 root over the
  first ``tree_size`` event lines, a consistency proof from the previous checkpoint, and
  signatures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from custody.audit.merkle import leaf_hash
from custody.canonical import canonical_bytes, domain_hash

from .model import (
    TAG_ACTION,
    TAG_APPROVAL,
    TAG_CHAIN,
    TAG_CHECKPOINT,
    TAG_EVENT_SIG,
    FormatError,
    Sig,
    _int,
    _keys,
    _str,
    check_ceremony_id,
    check_id,
    check_name,
    check_token,
    cid_bytes,
    parse_sigs,
    signing_input,
    unhex,
)

EVENT_FIELDS = {"seq", "prev", "ceremony", "time", "step", "kind", "actor", "body", "signatures"}


def chain_hash(line: bytes) -> bytes:
    """The hash the next event's ``prev`` must carry (line without its newline)."""
    return domain_hash(TAG_CHAIN, line)


def event_leaf(line: bytes) -> bytes:
    """RFC 9162 leaf hash of one event line (without its newline)."""
    return leaf_hash(line)


def action_digest(ceremony_id: str, action: str, action_id: str, params: Mapping[str, Any]) -> str:
    """The digest approvals are bound to: ceremony, action kind, action id and parameters."""
    body = canonical_bytes({"action": action, "action_id": action_id, "params": dict(params)})
    return domain_hash(TAG_ACTION, cid_bytes(ceremony_id), body).hex()


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One transcript event (see module docstring)."""

    seq: int
    prev: bytes
    ceremony: str
    time: int
    step: str
    kind: str
    actor: str
    body: Mapping[str, Any]
    signatures: tuple[Sig, ...] = ()
    unsigned_bytes: bytes | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_ceremony_id(self.ceremony, "event ceremony id")
        check_token(self.step, "step")
        check_token(self.kind, "event kind")
        check_name(self.actor, "actor name")

    def unsigned(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "prev": self.prev.hex(),
            "ceremony": self.ceremony,
            "time": self.time,
            "step": self.step,
            "kind": self.kind,
            "actor": self.actor,
            "body": self.body,
        }

    def signing_input(self, ceremony_id: str) -> bytes:
        if self.unsigned_bytes is not None:
            return domain_hash(TAG_EVENT_SIG, cid_bytes(ceremony_id), self.unsigned_bytes)
        return signing_input(TAG_EVENT_SIG, ceremony_id, self.unsigned())

    @classmethod
    def from_canonical_line(cls, line: bytes, obj: Any) -> Event:
        """Parse a line already known to be canonical, keeping its unsigned bytes.

        In RFC 8785 form the top-level ``"signatures"`` member sits between ``"seq"`` and
        ``"step"`` and its array holds only flat objects of strings, so cutting
        ``,"signatures":[...]`` out of the line yields exactly canonical(event without
        signatures) — one serialisation saved per event on verification.
        """
        ev = cls.from_json(obj)
        i = line.rfind(b',"signatures":[')
        j = line.find(b'],"step":', i)
        if i < 0 or j < 0:
            return ev
        return replace(ev, unsigned_bytes=line[:i] + line[j + 1 :])

    def to_line(self) -> bytes:
        d = self.unsigned()
        d["signatures"] = [s.to_json() for s in self.signatures]
        return canonical_bytes(d)

    @classmethod
    def from_json(cls, d: Any) -> Event:
        _keys(d, "event", EVENT_FIELDS)
        if not isinstance(d["body"], dict):
            raise FormatError("event body must be an object")
        try:
            return cls(
                seq=_int(d["seq"], "seq"),
                prev=unhex(d["prev"], "prev", 32),
                ceremony=_str(d["ceremony"], "ceremony"),
                time=_int(d["time"], "time"),
                step=_str(d["step"], "step"),
                kind=_str(d["kind"], "kind"),
                actor=_str(d["actor"], "actor"),
                body=d["body"],
                signatures=parse_sigs(d["signatures"]),
            )
        except ValueError as exc:
            raise FormatError(str(exc)) from exc


APPROVAL_FIELDS = {
    "ceremony",
    "action",
    "action_id",
    "action_digest",
    "approver",
    "issued_at",
    "expires_at",
    "nonce",
    "sig",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """A signed approval of one action; valid from ``issued_at`` until ``expires_at``."""

    ceremony: str
    action: str
    action_id: str
    action_digest: str
    approver: str
    issued_at: int
    expires_at: int
    nonce: str
    sig: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        check_ceremony_id(self.ceremony, "approval ceremony id")
        check_token(self.action, "approved action")
        check_id(self.action_id, "action id")
        check_name(self.approver, "approver name")

    def unsigned(self) -> dict[str, Any]:
        return {
            "ceremony": self.ceremony,
            "action": self.action,
            "action_id": self.action_id,
            "action_digest": self.action_digest,
            "approver": self.approver,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "nonce": self.nonce,
        }

    def signing_input(self) -> bytes:
        return signing_input(TAG_APPROVAL, self.ceremony, self.unsigned())

    def to_json(self) -> dict[str, Any]:
        d = self.unsigned()
        d["sig"] = self.sig.hex()
        return d

    @classmethod
    def from_json(cls, d: Any) -> Approval:
        _keys(d, "approval", APPROVAL_FIELDS)
        unhex(d["action_digest"], "action digest", 32)
        unhex(d["nonce"], "nonce", 16)
        try:
            return cls(
                ceremony=_str(d["ceremony"], "ceremony"),
                action=_str(d["action"], "action"),
                action_id=_str(d["action_id"], "action_id"),
                action_digest=d["action_digest"],
                approver=_str(d["approver"], "approver"),
                issued_at=_int(d["issued_at"], "issued_at"),
                expires_at=_int(d["expires_at"], "expires_at"),
                nonce=d["nonce"],
                sig=unhex(d["sig"], "approval sig"),
            )
        except ValueError as exc:
            raise FormatError(str(exc)) from exc

    @classmethod
    def create(
        cls,
        signer: Any,
        *,
        ceremony_id: str,
        action: str,
        action_id: str,
        digest: str,
        now: int,
        window: int = 600,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> Approval:
        """Sign an approval with *signer* (Signer protocol) valid for *window* seconds.

        Raises:
            HsmError: from an HSM-backed signer.
        """
        a = cls(
            ceremony=ceremony_id,
            action=action,
            action_id=action_id,
            action_digest=digest,
            approver=signer.name,
            issued_at=now,
            expires_at=now + window,
            nonce=rng(16).hex(),
        )
        return cls(**{**a.unsigned(), "sig": signer.sign(a.signing_input())})


CHECKPOINT_FIELDS = {
    "ceremony",
    "tree_size",
    "root",
    "time",
    "prev_size",
    "consistency",
    "final",
    "signatures",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A signed RFC 9162 tree head over the first ``tree_size`` events."""

    ceremony: str
    tree_size: int
    root: bytes
    time: int
    prev_size: int
    consistency: tuple[bytes, ...]
    final: bool
    signatures: tuple[Sig, ...] = ()

    def __post_init__(self) -> None:
        check_ceremony_id(self.ceremony, "checkpoint ceremony id")

    def unsigned(self) -> dict[str, Any]:
        return {
            "ceremony": self.ceremony,
            "tree_size": self.tree_size,
            "root": self.root.hex(),
            "time": self.time,
            "prev_size": self.prev_size,
            "consistency": [c.hex() for c in self.consistency],
            "final": self.final,
        }

    def signing_input(self, ceremony_id: str) -> bytes:
        return signing_input(TAG_CHECKPOINT, ceremony_id, self.unsigned())

    def to_line(self) -> bytes:
        d = self.unsigned()
        d["signatures"] = [s.to_json() for s in self.signatures]
        return canonical_bytes(d)

    @classmethod
    def from_json(cls, d: Any) -> Checkpoint:
        _keys(d, "checkpoint", CHECKPOINT_FIELDS)
        if not isinstance(d["consistency"], list) or not isinstance(d["final"], bool):
            raise FormatError("checkpoint consistency/final malformed")
        try:
            return cls(
                ceremony=_str(d["ceremony"], "ceremony"),
                tree_size=_int(d["tree_size"], "tree_size"),
                root=unhex(d["root"], "root", 32),
                time=_int(d["time"], "time"),
                prev_size=_int(d["prev_size"], "prev_size"),
                consistency=tuple(unhex(c, "consistency hash", 32) for c in d["consistency"]),
                final=d["final"],
                signatures=parse_sigs(d["signatures"]),
            )
        except ValueError as exc:
            raise FormatError(str(exc)) from exc


def gated_approvals(ev: Event, ceremony_id: str, what: str) -> tuple[str, str, list[Approval]]:
    """The action id, the action digest recomputed for *ceremony_id* (the policy's), and the
    approvals a gated event carries.

    Raises:
        FormatError, ValueError, TypeError: the body lacks them or they do not parse
        (*what* names the event in the message).
    """
    b = ev.body
    aid = b.get("action_id")
    if not isinstance(aid, str) or not isinstance(b.get("params"), dict):
        raise FormatError(f"{what} needs action_id and params")
    digest = action_digest(ceremony_id, ev.kind, aid, b["params"])
    raw = b.get("approvals")
    if not isinstance(raw, list):
        raise FormatError(f"{what} needs approvals")
    return aid, digest, [Approval.from_json(a) for a in raw]


def binding_problems(
    a: Approval,
    ev: Event,
    aid: str,
    digest: str,
    *,
    ceremony_id: str,
    window: int,
    nonces: dict[str, int],
) -> list[str]:
    """What binds *a* to this use, and fails: ceremony, action digest, validity window, the
    policy's approval window, and single use (its nonce is recorded in *nonces*)."""
    bad = []
    if a.ceremony != ceremony_id:
        bad.append("is for another ceremony")
    if a.action != ev.kind or a.action_id != aid or a.action_digest != digest:
        bad.append("is bound to a different action digest")
    if not a.issued_at <= ev.time <= a.expires_at:
        bad.append(f"is outside its window (issued {a.issued_at}, used {ev.time})")
    if a.expires_at - a.issued_at > window:
        bad.append(f"outlives the {window}s approval window")
    if a.nonce in nonces:
        bad.append(f"was already used at event {nonces[a.nonce]}")
    nonces[a.nonce] = ev.seq
    return bad
