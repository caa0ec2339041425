"""The secret-material guard: transcripts carry commitments, KCVs and fingerprints, never secrets.

:func:`secret_findings` returns where an event body holds something secret-shaped. The
recorder refuses such an event before it is written, and the verifier's ``no-secrets``
check runs the same function, so a hand-edited bundle is caught too. Rules:

* anywhere: a key named like a secret (``share``, ``mnemonic``, ``seed``, ``pin``,
  ``passphrase``, ``private_key``...) with a non-empty value; a string that looks like a
  mnemonic (12 to 33 lowercase words of which most are SLIP-0039 words, or exactly 20 or
  33 short lowercase words);
* in share events (kind ``share`` or ``share.*``): a long hex (>= 32 digits) or base64-like
  string under a key that is not a declared public field (``*digest``, ``*commitment``,
  ``kcv``, ``*fingerprint``, ``*hash``, ``*root``, ``*public*``, ``nonce``, ``*_id``...).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

SECRET_KEYS = frozenset(
    {
        "share",
        "shares",
        "share_value",
        "mnemonic",
        "mnemonics",
        "words",
        "secret",
        "secrets",
        "seed",
        "pin",
        "so_pin",
        "passphrase",
        "password",
        "private",
        "private_key",
        "privkey",
        "master_secret",
        "rk",
        "recovery_key",
        "plaintext",
        "key_bytes",
        "key_material",
        "dek",
    }
)
PUBLIC_SUFFIXES = (
    "digest",
    "commitment",
    "commitments",
    "kcv",
    "fingerprint",
    "sha256",
    "hash",
    "root",
    "public",
    "public_key",
    "pubkey",
    "nonce",
    "sig",
    "signature",
    "_id",
    "id",
    "ceremony",
    "prev",
)
_HEXISH = re.compile(r"^(0x)?[0-9a-fA-F]{32,}$")
_B64ISH = re.compile(r"^[A-Za-z0-9+/_-]{24,}={0,2}$")
_WORD = re.compile(r"^[a-z]{3,8}$")


@lru_cache(maxsize=1)
def _slip39_words() -> frozenset[str]:
    try:
        from shamir_mnemonic.wordlist import WORDLIST
    except ImportError:  # the guard still works on shape alone
        return frozenset()
    return frozenset(WORDLIST)


def looks_like_mnemonic(s: str) -> bool:
    words = s.split()
    if not 12 <= len(words) <= 33 or not all(_WORD.match(w) for w in words):
        return False
    known = _slip39_words()
    if known and sum(w in known for w in words) * 4 >= len(words) * 3:
        return True
    return len(words) in (20, 33)


def _public_key_name(key: str) -> bool:
    k = key.lower()
    return k.endswith(PUBLIC_SUFFIXES) or "public" in k


def _walk(v: Any, path: str, key: str) -> Iterator[tuple[str, str, Any]]:
    yield path, key, v
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _walk(x, f"{path}.{k}", str(k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from _walk(x, f"{path}[{i}]", key)


def is_share_kind(kind: str) -> bool:
    return kind == "share" or kind.startswith("share.")


def secret_findings(kind: str, body: Any) -> list[str]:
    """Paths in *body* that hold secret-shaped values (empty when clean)."""
    out: list[str] = []
    strict = is_share_kind(kind)
    for path, key, v in _walk(body, "body", ""):
        if key.lower() in SECRET_KEYS and v not in (None, "", [], {}, False):
            out.append(f"{path} is a secret-named field")
        elif isinstance(v, str):
            if looks_like_mnemonic(v):
                out.append(f"{path} looks like a mnemonic")
            elif (
                strict
                and not _public_key_name(key)
                and (_HEXISH.match(v) or (_B64ISH.match(v) and re.search(r"\d", v)))
            ):
                out.append(f"{path} holds undeclared key-sized data")
    return out
