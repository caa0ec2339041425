"""Canonical JSON (RFC 8785, JCS) and the domain-separated digests built on it.

Everything custody signs or hashes is canonical bytes from :func:`canonical_bytes`, so a
verifier can re-derive them byte for byte. Binary values are carried as lowercase hex.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785


def canonical_bytes(obj: Any) -> bytes:
    """Serialise *obj* per RFC 8785. Raises ValueError/TypeError for unsupported values."""
    try:
        return rfc8785.dumps(obj)
    except rfc8785.CanonicalizationError as exc:  # floats out of range, non-str keys...
        raise ValueError(f"not canonicalisable: {exc}") from exc


def is_canonical(raw: bytes) -> bool:
    """True when *raw* is exactly the RFC 8785 form of the JSON it holds."""
    try:
        return canonical_bytes(json.loads(raw)) == raw
    except (ValueError, TypeError):
        return False


def domain_hash(domain: str, *parts: bytes) -> bytes:
    """SHA-256 over a domain tag and length-prefixed parts (no ambiguity between splits)."""
    h = hashlib.sha256()
    d = domain.encode()
    h.update(len(d).to_bytes(2, "big") + d)
    for p in parts:
        h.update(len(p).to_bytes(8, "big") + p)
    return h.digest()
