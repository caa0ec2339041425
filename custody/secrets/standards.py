"""Generation standards: how each category's value is made, and the rule a supplied value
must pass. One table (:data:`RULES`) drives both, so ``secret generate`` and ``secret put``
can never disagree.

- **API keys** (external, internal, test): ``PREFIX_`` + 43 base64url characters (256 bits
  from the HSM's RNG) + 6 base62 characters of CRC-32 over everything before them. The
  prefix names the service and its environment (``pay_live``); the checksum lets a scanner
  recognise a leaked key, and tell it from a random string, without a database lookup (as
  GitHub's token format does). The store refuses a key it already holds.
- **Encryption, transport, backup keys**: 256 bits from the HSM's RNG, hex.
- **Signing and certificate private keys**: an Ed25519 or EC P-256 private key, PKCS#8 PEM,
  generated here (``cryptography``) from the operating system's CSPRNG; a supplied key must
  be Ed25519, P-256/P-384, or RSA of at least 3072 bits.
- **Passwords and credentials** (database, service, VPN, system, development): at least 16
  characters with lower case, upper case, digits and symbols; generated ones are 24
  characters from the HSM's RNG; a supplied one must also pass zxcvbn (10^12 guesses).
- **JWT, session and webhook secrets, OAuth client secrets, service tokens**: at least 256
  bits: 43 or more base64url characters (or 64 hex).
- **Configuration secrets**: any non-empty UTF-8 text up to 64 KiB (no generator).
"""

from __future__ import annotations

import base64
import re
import string
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from custody.errors import UsageError
from custody.passphrase import WeakPassphrase, check_strength
from custody.secrets.categories import Category

Rng = Callable[[int], bytes]
MAX_VALUE = 64 * 1024
_B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_PREFIX = re.compile(r"^[a-z][a-z0-9]{1,15}(_[a-z0-9]{1,15}){0,2}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_HEX = re.compile(r"^[0-9a-f]+$")
API_KEY_BODY = 43  # 256 bits of base64url without padding
API_KEY_RE = re.compile(
    r"\b([a-z][a-z0-9]{1,15}(?:_[a-z0-9]{1,15}){0,2})_([A-Za-z0-9_-]{43})([0-9A-Za-z]{6})\b"
)
SYMBOLS = "!#$%&()*+,-./:;<=>?@[]^_{|}~"


class WeakSecret(UsageError):
    """A supplied value breaks its category's rule (the title names the rule, never the
    value)."""


def _b62(n: int, width: int) -> str:
    out = ""
    for _ in range(width):
        n, r = divmod(n, 62)
        out = _B62[r] + out
    return out


def _checksum(text: str) -> str:
    return _b62(zlib.crc32(text.encode("ascii")), 6)


def make_api_key(prefix: str, rng: Rng) -> str:
    """``PREFIX_`` + 43 base64url characters of 256 random bits + a 6-character CRC-32."""
    check_prefix(prefix)
    body = base64.urlsafe_b64encode(rng(32)).decode().rstrip("=")
    head = f"{prefix}_{body}"
    return head + _checksum(head)


def check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix):
        raise UsageError(
            f"Not an API key prefix: {prefix[:20]!r}",
            "Use 2-16 lowercase letters and digits, up to three parts joined by '_', "
            "starting with a letter: e.g. pay_live.",
        )
    return prefix


def api_key_valid(text: str) -> bool:
    """True when *text* is a well-formed API key whose checksum matches."""
    m = API_KEY_RE.fullmatch(text)
    return m is not None and _checksum(f"{m.group(1)}_{m.group(2)}") == m.group(3)


def find_api_keys(text: str) -> Iterator[tuple[int, str]]:
    """(offset, key) for each checksum-valid API key in *text*: a scanner's test that needs
    no database, and that random strings of the same shape fail (1 in 2^32)."""
    for m in API_KEY_RE.finditer(text):
        if _checksum(f"{m.group(1)}_{m.group(2)}") == m.group(3):
            yield m.start(), m.group(0)


def make_password(rng: Rng, length: int = 24) -> str:
    """*length* characters from the four classes, at least one of each, unbiased."""
    alphabet = string.ascii_lowercase + string.ascii_uppercase + string.digits + SYMBOLS
    while True:
        out: list[str] = []
        while len(out) < length:
            b = rng(1)[0]
            if b < 256 - 256 % len(alphabet):
                out.append(alphabet[b % len(alphabet)])
        pw = "".join(out)
        if _classes(pw) == 4:
            return pw


def _classes(s: str) -> int:
    return sum(
        (
            any(c.islower() for c in s),
            any(c.isupper() for c in s),
            any(c.isdigit() for c in s),
            any(c in SYMBOLS or not c.isalnum() for c in s),
        )
    )


@dataclass(frozen=True, slots=True)
class Rule:
    """A category's standard: what :func:`generate` makes and :func:`check` requires."""

    name: str
    text: str
    kind: str  # api-key | key256 | private-key | password | token256 | text


_API = Rule(
    "api-key",
    "PREFIX_ + 43 base64url characters (256 bits) + a 6-character CRC-32 checksum",
    "api-key",
)
_KEY = Rule("key-256", "256 bits from the HSM's RNG, as 64 lowercase hex digits", "key256")
_PRIV = Rule(
    "private-key",
    "a PKCS#8 PEM private key: Ed25519, EC P-256/P-384, or RSA >= 3072 bits",
    "private-key",
)
_PASS = Rule(
    "password",
    "at least 16 characters with lower case, upper case, digits and symbols, and zxcvbn "
    ">= 10^12 guesses",
    "password",
)
_TOK = Rule(
    "token-256", "at least 256 bits: 43+ base64url characters or 64+ hex digits", "token256"
)
_TXT = Rule("text", "non-empty UTF-8 text, at most 64 KiB", "text")

RULES: dict[Category, Rule] = {
    Category.EXTERNAL_API_KEY: _API,
    Category.INTERNAL_API_KEY: _API,
    Category.TEST_API_KEY: _API,
    Category.SERVICE_TOKEN: _TOK,
    Category.WEBHOOK_SECRET: _TOK,
    Category.DATABASE_CREDENTIAL: _PASS,
    Category.SERVICE_CREDENTIAL: _PASS,
    Category.VPN_CREDENTIAL: _PASS,
    Category.SYSTEM_CREDENTIAL: _PASS,
    Category.DEVELOPMENT_CREDENTIAL: _PASS,
    Category.DATA_ENCRYPTION_KEY: _KEY,
    Category.TRANSPORT_KEY: _KEY,
    Category.BACKUP_KEY: _KEY,
    Category.SIGNING_KEY: _PRIV,
    Category.CERTIFICATE_PRIVATE_KEY: _PRIV,
    Category.OAUTH_CLIENT_SECRET: _TOK,
    Category.JWT_SECRET: _TOK,
    Category.SESSION_SECRET: _TOK,
    Category.CONFIGURATION_SECRET: _TXT,
}


def generate(category: Category, rng: Rng, *, prefix: str | None = None) -> tuple[str, str]:
    """A new value for *category*, and where its randomness came from.

    Args:
        rng: the HSM's random generator (``Hsm.random``).
        prefix: the API key prefix (required for API key categories).

    Returns:
        (value, source): *source* is ``hsm-rng`` or ``os-csprng`` (private keys).

    Raises:
        UsageError: an API key category without *prefix*, or a category with no generator.
    """
    rule = RULES[category]
    if rule.kind == "api-key":
        if not prefix:
            raise UsageError(
                f"A {category.value} needs --prefix", "Give the service prefix, e.g. pay_live."
            )
        return make_api_key(prefix, rng), "hsm-rng"
    if rule.kind == "key256":
        return rng(32).hex(), "hsm-rng"
    if rule.kind == "token256":
        return base64.urlsafe_b64encode(rng(32)).decode().rstrip("="), "hsm-rng"
    if rule.kind == "password":
        return make_password(rng), "hsm-rng"
    if rule.kind == "private-key":
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem.decode(), "os-csprng"
    raise UsageError(
        f"custody does not generate a {category.value}",
        "Supply the value with 'custody secret put' (from a file or stdin).",
    )


def _weak(category: Category, why: str) -> WeakSecret:
    rule = RULES[category]
    return WeakSecret(
        f"The value is refused for a {category.value}: {why}",
        f"The rule ({rule.name}): {rule.text}.",
    )


def check(category: Category, value: str, *, prefix: str | None = None) -> None:
    """Require *value* to meet *category*'s rule.

    Raises:
        WeakSecret: the rule it breaks (never the value).
    """
    rule = RULES[category]
    if not value or len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE:
        raise _weak(category, "empty or larger than 64 KiB")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise _weak(category, "not valid UTF-8 text")
    if rule.kind == "api-key":
        if not api_key_valid(value):
            raise _weak(category, "not in the API key format, or its checksum does not match")
        if prefix and not value.startswith(prefix + "_"):
            raise _weak(category, f"it does not carry the prefix {prefix}_")
    elif rule.kind == "key256":
        if not (len(value) == 64 and _HEX.match(value)):
            raise _weak(category, "not 64 lowercase hex digits (256 bits)")
        if len(set(value)) < 8:
            raise _weak(category, "it has almost no entropy")
    elif rule.kind == "token256":
        bits = (
            len(value) * 4 if _HEX.match(value) else len(value) * 6 if _B64URL.match(value) else 0
        )
        if bits < 256:
            raise _weak(category, "fewer than 256 bits (or not base64url/hex)")
        if len(set(value)) < 12:
            raise _weak(category, "it has almost no entropy")
    elif rule.kind == "password":
        if len(value) < 16:
            raise _weak(category, "shorter than 16 characters")
        if _classes(value) < 4:
            raise _weak(category, "it lacks one of lower case, upper case, digits, symbols")
        try:
            check_strength(value, what="the value", user_inputs=(category.value,))
        except WeakPassphrase as exc:
            raise _weak(category, "zxcvbn finds it guessable") from exc
    elif rule.kind == "private-key":
        try:
            key = serialization.load_pem_private_key(value.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise _weak(category, "not an unencrypted PKCS#8/PEM private key") from exc
        ok = (
            isinstance(key, ed25519.Ed25519PrivateKey)
            or (
                isinstance(key, ec.EllipticCurvePrivateKey)
                and key.curve.name in ("secp256r1", "secp384r1")
            )
            or (isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 3072)
        )
        if not ok:
            raise _weak(category, "not Ed25519, P-256/P-384, or RSA >= 3072 bits")
