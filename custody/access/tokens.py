"""Service API tokens: 256 random bits, shown once, stored only as a salted hash.

A token reads ``cst_<id>_<secret>``: ``id`` (16 hex digits) is a public lookup key, so
checking a token reads one row and never compares against every stored hash; ``secret`` is 32
bytes from the RNG (base64url, 43 characters). The store keeps ``id``, a random 16-byte salt
and SHA-256 over a domain tag, the salt and the secret (:func:`custody.canonical.domain_hash`);
the comparison is constant-time (:func:`hmac.compare_digest`). A 256-bit secret makes a fast
hash as strong as a slow one: there is nothing to brute-force.
"""

from __future__ import annotations

import base64
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from custody.canonical import domain_hash

PREFIX = "cst"
SECRET_BYTES = 32  # 256 bits
_DOMAIN = "custody/access-token/v1"


@dataclass(frozen=True, slots=True)
class Minted:
    """A new token: ``token`` is shown once to whoever made it; the rest is stored."""

    token_id: str
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)
    token: str = field(repr=False)


def _digest(salt: bytes, secret: bytes) -> bytes:
    return domain_hash(_DOMAIN, salt, secret)


def mint(rng: Callable[[int], bytes] = os.urandom) -> Minted:
    """A new token from *rng* (the HSM's RNG when the token is logged in)."""
    token_id = rng(8).hex()
    secret = rng(SECRET_BYTES)
    salt = rng(16)
    text = f"{PREFIX}_{token_id}_" + base64.urlsafe_b64encode(secret).decode().rstrip("=")
    return Minted(token_id=token_id, salt=salt, digest=_digest(salt, secret), token=text)


def parse(token: str) -> tuple[str, bytes] | None:
    """``(id, secret)`` of a well-formed token, else None (never raises on bad input)."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 16:
        return None
    try:
        int(parts[1], 16)
        secret = base64.urlsafe_b64decode(parts[2] + "=")
    except ValueError:
        return None
    if len(secret) != SECRET_BYTES or parts[1] != parts[1].lower():
        return None
    if base64.urlsafe_b64encode(secret).decode().rstrip("=") != parts[2]:
        return None  # one spelling per token: no skipped junk, padding or unused low bits
    return parts[1], secret


def matches(secret: bytes, salt: bytes, digest: bytes) -> bool:
    """Whether *secret* is the one whose salted hash is *digest* (constant time)."""
    return hmac.compare_digest(_digest(salt, secret), digest)


__all__ = ["PREFIX", "SECRET_BYTES", "Minted", "matches", "mint", "parse"]
