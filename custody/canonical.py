"""Canonical JSON (RFC 8785, JCS) and the domain-separated digests built on it.

Everything custody signs or hashes is canonical bytes from :func:`canonical_bytes`, so a
verifier can re-derive them byte for byte. Binary values are carried as lowercase hex.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

_SAFE_INT = 2**53  # RFC 8785 integers: |n| < 2**53 (rfc8785's own bounds)
_LITERALS = {None: b"null", True: b"true", False: b"false"}
_FAST_DEPTH = 16  # deeper values take the library encoder


def _plain(v: str) -> bool:
    """A string RFC 8785 writes as it stands: printable ASCII without quote or backslash."""
    return v.isascii() and v.isprintable() and '"' not in v and "\\" not in v


def _fast(v: Any, depth: int = 0) -> bytes | None:
    """RFC 8785 bytes of *v* for the shapes custody writes most (plain strings, integers
    of JSON's safe range, booleans, null, and dicts and lists of those with plain keys),
    or None for anything else (the library then encodes it, or refuses it). Exact types
    only: a subclass (an enum, a bool for an int) is left to the library."""
    t = type(v)
    if t is str:
        return b'"' + v.encode() + b'"' if _plain(v) else None
    if t is int:
        return str(v).encode() if -_SAFE_INT < v < _SAFE_INT else None
    if v is None or t is bool:
        return _LITERALS[v]
    if depth >= _FAST_DEPTH:
        return None
    if t is dict:
        parts = []
        for k in v:
            if type(k) is not str or not _plain(k):
                return None
        # plain keys are ASCII: code-point order is RFC 8785's UTF-16 order
        for k in sorted(v):
            x = _fast(v[k], depth + 1)
            if x is None:
                return None
            parts.append(b'"' + k.encode() + b'":' + x)
        return b"{" + b",".join(parts) + b"}"
    if t is list or t is tuple:
        items = []
        for e in v:
            x = _fast(e, depth + 1)
            if x is None:
                return None
            items.append(x)
        return b"[" + b",".join(items) + b"]"
    return None


def canonical_bytes(obj: Any) -> bytes:
    """Serialise *obj* per RFC 8785. Raises ValueError/TypeError for unsupported values.

    The common plain shapes are written directly (:func:`_fast`, the same bytes, without
    the library's pure-Python walk); everything else goes through ``rfc8785``."""
    got = _fast(obj)
    if got is not None:
        return got
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


def domain_prefix(domain: str) -> bytes:
    """What :func:`domain_hash` hashes before the parts: the tag, length-prefixed."""
    d = domain.encode()
    return len(d).to_bytes(2, "big") + d


def domain_hash(domain: str, *parts: bytes) -> bytes:
    """SHA-256 over a domain tag and length-prefixed parts (no ambiguity between splits):
    ``domain_prefix(domain)``, then each part's length in 8 bytes big-endian and the part."""
    h = hashlib.sha256()
    h.update(domain_prefix(domain))
    for p in parts:
        h.update(len(p).to_bytes(8, "big") + p)
    return h.digest()


def _unique_pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in items:
        if k in out:
            raise ValueError("duplicate key in a JSON object")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_loads(raw: bytes | str) -> Any:
    """:func:`json.loads` without duplicate keys, ``NaN``/``Infinity`` or a RecursionError.

    Raises:
        ValueError: not strict JSON (see :func:`load_json`, which also checks that the
            document can be canonicalised).
    """
    try:
        return json.loads(raw, object_pairs_hook=_unique_pairs, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except TypeError as exc:  # not str/bytes
        raise ValueError("not JSON text") from exc


def load_json(raw: bytes | str) -> Any:
    """Parse JSON that someone else wrote (a file, a QR code, a peer's blob), strictly.

    Everything custody reads back is signed or hashed in canonical form, so a document that
    cannot be canonicalised is refused here, at the door, rather than deep inside a check:
    duplicate keys (two readers could see two values), ``NaN``/``Infinity``, strings with
    lone surrogates, integers outside the I-JSON range (beyond 2^53), and nesting deeper
    than the interpreter can follow.

    Raises:
        ValueError: one of the above, or not JSON at all. Callers map it to their typed
            error (title and hint).
    """
    doc = strict_loads(raw)
    try:
        canonical_bytes(doc)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    return doc
