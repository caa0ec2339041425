"""Quorum release of a secret marked ``release: quorum`` (docs/access.md).

A read of such a secret is never served directly, not even to a super-admin. The requester
(a person principal with an endorsed X25519 key) files a request of kind ``release``; m
approvers sign its digest (:mod:`custody.access.flow`); :func:`deliver` then checks the
approvals again, marks the request delivered *in the same transaction* that reads the value
(so it is delivered once: a second delivery, or a replayed approval, is refused and audited)
and seals the value to the requester's key: an ephemeral X25519 key agrees with theirs,
HKDF-SHA256 (RFC 5869) derives the AES-256-GCM key, and the header (request id, digest,
environment, path, version, recipient) is the AAD. Only the requester's ``NAME.enc.pem``
opens it (:func:`open_release`).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from custody.access.auditing import intended
from custody.access.flow import GrantFlow
from custody.access.policy import needs_mfa
from custody.access.records import body_digest, request_body
from custody.access.roles import Principal
from custody.canonical import canonical_bytes, load_json
from custody.errors import IntegrityError, PolicyError, UsageError

RELEASE_TYPE = "custody/sealed-release/v1"
_INFO = b"custody/sealed-release/x25519/v1"
QUORUM = "quorum"


def _raw(k: X25519PublicKey) -> bytes:
    return k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key(shared: bytes, eph: bytes, recipient: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO + eph + recipient)
    return hkdf.derive(shared)


def seal_release(
    value: str,
    recipient: bytes,
    *,
    header: dict[str, Any],
    rng: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Seal *value* to the raw X25519 key *recipient*; *header* (no secret) is bound as AAD.

    Raises:
        ValueError: *recipient* is not a 32-byte X25519 key.
    """
    eph = X25519PrivateKey.generate()
    eph_pub = _raw(eph.public_key())
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient))
    nonce = rng(12)
    h = {
        **header,
        "type": RELEASE_TYPE,
        "recipient": recipient.hex(),
        "ephemeral": eph_pub.hex(),
        "nonce": nonce.hex(),
    }
    ct = AESGCM(_key(shared, eph_pub, recipient)).encrypt(
        nonce, value.encode("utf-8"), canonical_bytes(h)
    )
    return canonical_bytes({"header": h, "ciphertext": base64.b64encode(ct).decode()})


def open_release(raw: bytes | str, private: X25519PrivateKey) -> tuple[dict[str, Any], str]:
    """Open a sealed release with the requester's X25519 private key.

    Returns:
        (the header, the value).

    Raises:
        IntegrityError: not a sealed release, sealed to another key, or altered.
    """
    try:
        doc = load_json(raw)
        h, ct = doc["header"], base64.b64decode(doc["ciphertext"], validate=True)
        if h["type"] != RELEASE_TYPE:
            raise ValueError("type")
        eph, rcpt, nonce = (bytes.fromhex(h[k]) for k in ("ephemeral", "recipient", "nonce"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(
            "Not a sealed release", "Use the file 'access release' wrote."
        ) from exc
    if rcpt != _raw(private.public_key()):
        raise IntegrityError(
            "This release is sealed to another principal's key",
            "Only the requester's NAME.enc.pem opens it.",
        )
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph))
        pt = AESGCM(_key(shared, eph, rcpt)).decrypt(nonce, ct, canonical_bytes(h))
    except (InvalidTag, ValueError) as exc:
        raise IntegrityError("The sealed release was altered", "Ask for a new release.") from exc
    return h, pt.decode("utf-8")


def set_rule(
    flow: GrantFlow,
    who: Principal,
    env: str,
    path: str,
    *,
    needed: int,
    mfa_code: str | None = None,
) -> None:
    """Mark (env, path) for quorum release by *needed* approvers (0: back to normal reads);
    a super-admin's decision (action ``keys``), audited.

    Raises:
        UsageError: no such secret, or *needed* out of 1..16.
        AccessDenied: *who* is not a super-admin.
    """
    if flow.store.secret(env, path) is None:
        raise UsageError(f"No secret {env}:{path}", "Check the environment and path.")
    if needed and not 1 <= needed <= 16:
        raise UsageError("--quorum must be 1..16", "")
    flow.ac.authorize(who, "keys", env, path, mfa_code=mfa_code)
    mode = QUORUM if needed else "normal"
    det = {"mode": mode, "needed": needed}
    target = f"{env}:{path}"
    with (
        intended(flow.ac.audit, "access release-rule", target, who.name, det) as ref,
        flow.ac.sealed(),
    ):
        flow.store.set_release_rule(env, path, mode=mode, needed=needed, by=who.name,
                                now=flow.ac.now())  # fmt: skip
    flow.ac.audit.append("access release-rule", target, who.name, details={**det, **ref})


def deliver(
    flow: GrantFlow,
    request_id: str,
    who: Principal,
    reveal: Callable[[str, str], tuple[int, str]],
    *,
    mfa_code: str | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Deliver an approved release once, sealed to the requester.

    Args:
        flow: the grant flow (store, audit log, clock).
        request_id: the release request.
        who: the acting principal; must be the requester.
        reveal: ``(env, path) -> (version, value)``: reads the current value (the vault).

    Returns:
        (the sealed file's bytes, a summary without the value).

    Raises:
        PolicyError: not the requester; not approved (too few valid approvals bound to this
            request); expired; already delivered (a replay); the request was altered.
        UsageError: not a release request; the requester has no encryption key.
    """
    flow.ac.check_rows()  # the requester's x25519 key, the approvers, the rule: sealed
    r = flow.get(request_id)
    target = f"{r.env}:{r.path}"
    audit = flow.ac.audit

    def refuse(why: str, hint: str = "") -> PolicyError:
        audit.append("access release", target, who.name, outcome="denied",
                     details={"request": r.id, "reason": why})  # fmt: skip
        return PolicyError(f"Release {r.id} refused: {why}", hint)

    if r.kind != "release":
        raise UsageError(f"{r.id} is not a release request", "Use 'custody access request'.")
    if who.name != r.requester:
        raise refuse(f"only the requester {r.requester} receives it")
    if r.state == "released":
        raise refuse("it was already delivered once", "Request a new release.")
    now = flow.ac.now()
    if now >= r.not_after:
        raise refuse("its window has passed", "Request a new release.")
    if body_digest(request_body(r, flow.deployment)) != r.digest:
        raise refuse("the request was altered in the store")
    good = flow.valid_approvals(r)
    needed = flow.needed(r)
    if len(good) < needed or r.state != "approved":
        raise refuse(f"{len(good)} of {needed} approvals bound to this request")
    if needs_mfa(who, "read", r.security_class):
        ok, err = flow.ac.mfa_check(who, mfa_code)
        if not ok:
            raise refuse(
                "a TOTP code is needed" + (f" ({err.title})" if err else ""),
                "Give it with --mfa-code-file or $CUSTODY_MFA_CODE.",
            )
    row = flow.store.principal(r.requester)
    if row is None or row.x25519 is None:
        raise UsageError(
            f"{r.requester} has no encryption key to seal to",
            "Add them with their NAME.pub.json (with its endorsed x25519 key).",
        )
    det = {"request": r.id, "approvers": [a.approver for a in good]}
    with intended(audit, "access release", target, who.name, det) as ref, flow.store.transaction():
        version, value = reveal(r.env, r.path)
        header = {"request": r.id, "digest": r.digest, "env": r.env, "path": r.path,
                  "version": version, "requester": r.requester}  # fmt: skip
        sealed = seal_release(value, row.x25519, header=header)
        digest = hashlib.sha256(sealed).hexdigest()
        if not flow.store.record_release(r.id, version=version, sealed_sha256=digest, now=now):
            raise PolicyError(f"Release {r.id} was already delivered", "Request a new release.")
        flow.store.set_access_request_state(r.id, "released", now=now)
    info = {"request": r.id, "env": r.env, "path": r.path, "version": version,
            "sealed_sha256": digest, "approvers": [a.approver for a in good]}  # fmt: skip
    audit.append("access release", target, who.name, details={**info, **ref})
    return sealed, info


__all__ = ["QUORUM", "RELEASE_TYPE", "deliver", "open_release", "seal_release", "set_rule"]
