"""Quorum rules for signed approvals (pure).

An approval counts toward a quorum only when it is signed by an enrolled participant whose
key is valid at the time, in the required role, bound to this ceremony and to the action's
digest, inside its window (at most the policy's approval window long), and not used
before. Approvals are counted by distinct participant, never by signature. The transcript
verifier applies the same rules afterwards; these run first so that the CLI can name the
cause of a refusal before anything is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ceremonies.transcript.records import Approval
from custody.audit.signers import verify_signature
from custody.errors import PolicyError


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumResult:
    """Who counted, who did not and why, and whether the threshold is met."""

    counted: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]
    needed: int
    role: str
    accepted: tuple[Approval, ...] = ()
    """The approval that counted for each counted approver (the first valid one handed
    in), in the order of ``counted``: what the action records, once each."""

    @property
    def met(self) -> bool:
        return len(self.counted) >= self.needed

    def describe(self) -> str:
        s = f"{len(self.counted)}/{self.needed} {self.role}s ({', '.join(self.counted) or 'none'})"
        if self.rejected:
            s += "; not counted: " + "; ".join(f"{n}: {why}" for n, why in self.rejected)
        return s


def count_approvals(
    approvals: Iterable[Approval],
    *,
    members: Mapping[str, tuple[str, str, bytes, str | None]],
    role: str,
    needed: int,
    ceremony_id: str,
    action: str,
    action_id: str,
    digest: str,
    now: int,
    window: int,
    used_nonces: Iterable[str] = (),
) -> QuorumResult:
    """Count approvals toward a quorum of *needed* distinct *role* members.

    Args:
        approvals: the signed approvals handed in.
        members: roster name -> (role, key algorithm, raw public key, reason the key is
            unusable now or None); the algorithm is the roster's (``ed25519`` or
            ``ecdsa-p256``), never read from the approval.
        role: the role that must approve.
        needed: how many distinct participants.
        ceremony_id, action, action_id, digest: what the approvals must be bound to.
        now: the time the action will be recorded.
        window: the longest allowed approval lifetime, in seconds.
        used_nonces: nonces of approvals already used.

    Returns:
        The :class:`QuorumResult` (never raises for bad approvals; they are listed). Its
        ``accepted`` holds one valid approval per counted participant (a later, different
        approval of someone already counted is neither counted nor recorded).
    """
    used = set(used_nonces)
    counted: list[str] = []
    accepted: list[Approval] = []
    rejected: list[tuple[str, str]] = []
    for a in approvals:
        m = members.get(a.approver)
        why: str | None = None
        if m is None:
            why = "is not enrolled"
        else:
            m_role, alg, public, unusable = m
            if not verify_signature(alg, public, a.sig, a.signing_input()):
                why = "has a bad signature"
            elif unusable:
                why = unusable
            elif m_role != role:
                why = f"is a {m_role}, not a {role}"
            elif a.ceremony != ceremony_id:
                why = "was given for another ceremony"
            elif a.action != action or a.action_id != action_id or a.action_digest != digest:
                why = "is bound to a different action"
            elif now > a.expires_at:
                why = f"expired at {a.expires_at} (now {now})"
            elif now < a.issued_at:
                why = "is dated in the future"
            elif a.expires_at - a.issued_at > window:
                why = f"outlives the {window}s approval window"
            elif a.nonce in used:
                why = "was already used"
        if why:
            rejected.append((a.approver, why))
            continue
        used.add(a.nonce)
        if a.approver not in counted:  # distinct participants: a second approval never counts
            counted.append(a.approver)
            accepted.append(a)
    return QuorumResult(
        counted=tuple(counted),
        rejected=tuple(rejected),
        needed=needed,
        role=role,
        accepted=tuple(accepted),
    )


def require_quorum(result: QuorumResult, *, action: str) -> None:
    """Raise unless *result* meets its threshold.

    Raises:
        PolicyError: naming each approval that did not count and why.
    """
    if not result.met:
        raise PolicyError(
            f"Quorum not met for {action}: {result.describe()}",
            f"Collect fresh approvals from {result.needed} distinct enrolled "
            f"{result.role}s with 'custody ceremony approve', then resume.",
        )
