"""What approvers sign, and the signed record a grant leaves (verifiable offline).

A request's *body* binds the requester, the environment, the path, the actions, the window
(``not_before``, ``not_after``), a 16-byte nonce, the justification, the security class and
the number of approvers needed, in a deployment; its *digest* is SHA-256 over a domain tag
and the body's RFC 8785 bytes. Each approver signs, with their participant signing key (Ed25519,
or ECDSA P-256 for a key on a token without CKM_EDDSA), the canonical approval ``{type,
request_digest, approver, approved_at}``. An approval by a P-256 key carries ``"alg":
"ecdsa-p256"`` in the record (absent: Ed25519, as every record before P-256); it counts only
under a pinned key of that same algorithm. A grant's *record* is
the body, the digest and the approvals with their public keys: :func:`verify_record` checks it
with nothing but the keys an auditor pinned, so an approval that a super-admin wrote into the
store without the approver's key does not verify, an approval of one request does not count
for another (its digest differs), and the requester never counts as their own approver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from custody.audit.signers import ALGORITHMS, ED25519, verify_signature
from custody.canonical import canonical_bytes, domain_hash
from custody.errors import IntegrityError
from custody.store.rows import AccessApprovalRow, AccessRequestRow

REQUEST_TYPE = "custody/access-request/v1"
APPROVAL_TYPE = "custody/access-approval/v1"
RECORD_TYPE = "custody/grant-record/v1"
DEFAULT_HIGH_APPROVERS = 2


def request_body(r: AccessRequestRow, deployment: str) -> dict[str, Any]:
    """The signed fields of a request (no secret in them)."""
    return {
        "type": REQUEST_TYPE,
        "deployment": deployment,
        "id": r.id,
        "kind": r.kind,
        "requester": r.requester,
        "env": r.env,
        "path": r.path,
        "actions": sorted(r.actions),
        "window": {"not_before": r.not_before, "not_after": r.not_after},
        "nonce": r.nonce,
        "reason": r.reason,
        "security_class": r.security_class,
        "needed": r.needed,
    }


def body_digest(body: Mapping[str, Any]) -> str:
    return domain_hash(REQUEST_TYPE, canonical_bytes(dict(body))).hex()


def approval_input(digest: str, approver: str, approved_at: int) -> bytes:
    """The bytes an approver signs for the request whose digest is *digest*."""
    doc = {
        "type": APPROVAL_TYPE,
        "request_digest": digest,
        "approver": approver,
        "approved_at": approved_at,
    }
    return APPROVAL_TYPE.encode() + b"\0" + canonical_bytes(doc)


def needed_for(security_class: str, *, high_approvers: int = DEFAULT_HIGH_APPROVERS) -> int:
    """Approvers a class needs: *high_approvers* for high, one for medium and low."""
    return high_approvers if security_class == "high" else 1


def build_record(
    r: AccessRequestRow,
    deployment: str,
    approvals: Sequence[AccessApprovalRow],
    *,
    grant_id: str,
    algs: Mapping[bytes, str] | None = None,
) -> dict[str, Any]:
    """The signed record of a grant. *algs*: public key -> algorithm of the approvers whose
    key is not Ed25519 (recorded as ``alg`` on their approval)."""
    body = request_body(r, deployment)
    entries = []
    for a in approvals:
        entry: dict[str, Any] = {
            "approver": a.approver,
            "public": a.public.hex(),
            "approved_at": a.approved_at,
            "sig": a.sig.hex(),
        }
        alg = (algs or {}).get(a.public, ED25519)
        if alg != ED25519:
            entry["alg"] = alg
        entries.append(entry)
    return {
        "type": RECORD_TYPE,
        "grant": grant_id,
        "request": body,
        "digest": body_digest(body),
        "approvals": entries,
    }


def _bad(why: str) -> IntegrityError:
    return IntegrityError(f"The grant record does not verify: {why}", "Do not rely on it.")


def verify_record(
    doc: Any,
    pinned: Mapping[bytes, str],
    *,
    algs: Mapping[bytes, str] | None = None,
    high_approvers: int = DEFAULT_HIGH_APPROVERS,
) -> dict[str, Any]:
    """Verify a grant record offline against pinned keys.

    Args:
        doc: the parsed record.
        pinned: public key -> name, from the identity files the verifier pinned.
        algs: public key -> algorithm of the pinned keys that are not Ed25519. An approval
            counts only when the algorithm it names (``alg``, absent: Ed25519) is its
            pinned key's, and its signature verifies under that algorithm alone.
        high_approvers: the fewest approvers a high-class grant needs (whatever it says).

    Returns:
        A summary: grant, requester, env, path, actions, window, approvers.

    Raises:
        IntegrityError: malformed; the digest does not match the request; too few distinct
            pinned approvers (other than the requester) signed this very digest.
    """
    try:
        if doc["type"] != RECORD_TYPE:
            raise _bad("not a grant record")
        body = doc["request"]
        if body["type"] != REQUEST_TYPE:
            raise _bad("not a request")
        digest = body_digest(body)
        if doc["digest"] != digest:
            raise _bad("the request was altered (digest mismatch)")
        requester = str(body["requester"])
        needed = max(int(body["needed"]), needed_for(str(body["security_class"]),
                     high_approvers=high_approvers))  # fmt: skip
        good: dict[str, bytes] = {}
        problems: list[str] = []
        for a in doc["approvals"]:
            public = bytes.fromhex(a["public"])
            name = str(a["approver"])
            if public not in pinned:
                problems.append(f"{name}'s key is not pinned")
                continue
            if pinned[public] != name:
                problems.append(f"the key signing as {name} is pinned as {pinned[public]}")
                continue
            if name == requester:
                problems.append(f"{name} is the requester")
                continue
            alg = a.get("alg", ED25519)
            want = (algs or {}).get(public, ED25519)
            if alg != want or alg not in ALGORITHMS:
                problems.append(f"{name} signed as {str(alg)[:20]!r}, pinned as {want}")
                continue
            sig = bytes.fromhex(a["sig"])
            if not verify_signature(
                alg, public, sig, approval_input(digest, name, int(a["approved_at"]))
            ):
                problems.append(f"{name}'s signature is bad")
                continue
            if name in good or public in good.values():
                problems.append(f"{name} approved twice")
                continue
            good[name] = public
    except IntegrityError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _bad(f"malformed ({type(exc).__name__})") from exc
    if len(good) < needed:
        why = "; ".join(problems) if problems else "no approvals"
        raise _bad(f"{len(good)} of {needed} approvers verified ({why})")
    return {
        "grant": doc.get("grant"),
        "requester": requester,
        "env": body["env"],
        "path": body["path"],
        "actions": body["actions"],
        "window": body["window"],
        "security_class": body["security_class"],
        "approvers": sorted(good),
        "needed": needed,
    }


__all__ = [
    "DEFAULT_HIGH_APPROVERS",
    "approval_input",
    "body_digest",
    "build_record",
    "needed_for",
    "request_body",
    "verify_record",
]
