"""The auditor's pinned identities: who they vouch for, under which name and in which role.

A transcript proves only what the auditor's own pins let it prove. Each pin is a public key
with a name and (usually) a role, obtained out of band: from the enrolment records, a
printed key sheet, or the person. The verifier counts a signer toward a quorum of role R
only when the signer's roster key is pinned under the same name with role R; a key pinned
without a role (a bare hex file) identifies someone but counts toward nothing.

Pin files (``--trust FILE``, repeatable) hold one of:

* an identity: JSON ``{"alg": "ed25519", "public": "<64 hex>", "name": "...",
  "role": "super-admin"}`` (a participant's ``NAME.pub.json`` has this form; a
  ``fingerprint`` member, when present, must match the key);
* a list: JSON ``{"type": "custody.transcript.pins/v1", "pins": [identity, ...]}``;
* a bare line of 64 hex digits: an Ed25519 key with no role, named after the file.

Every pin carries its key's algorithm (``alg``): ``ed25519`` or ``ecdsa-p256`` (a
participant whose token has no CKM_EDDSA; ``public`` is then the 130-hex uncompressed
point). A pin counts for a roster entry only when both the key and the algorithm match
(:meth:`Pins.standing`): an Ed25519 pin never vouches for a P-256 roster key, nor the
reverse, and a roster entry whose algorithm differs from its pin's is an identity problem.

The role in a pin is the auditor's statement, not the participant's: pin a role only after
checking it against the enrolment record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from custody.audit.signers import ALGORITHMS, TrustKey, parse_trust_key
from custody.canonical import load_json
from custody.errors import UsageError
from custody.textsafe import printable

from .model import RosterEntry, check_name

PINS_TYPE = "custody.transcript.pins/v1"
ROLES = ("super-admin", "custodian", "witness", "auditor")
SUPER_ADMIN = "super-admin"


def _bad(what: str) -> UsageError:
    return UsageError(
        f"Not a pin file: {what}",
        'Give {"alg": "ed25519", "public": "<64 hex>", "name": "...", "role": "..."}, '
        f'{{"type": "{PINS_TYPE}", "pins": [...]}} or 64 hex digits.',
    )


def _checked(k: TrustKey) -> TrustKey:
    try:
        check_name(k.name, "pinned name")
    except ValueError as exc:
        raise _bad(f"the name {printable(k.name)!r} is not a participant name") from exc
    if k.alg not in ALGORITHMS:  # pragma: no cover - parse_trust_key refuses others
        raise _bad(f"unsupported key algorithm {printable(k.alg)}")
    if k.role is not None and k.role not in ROLES:
        raise _bad(f"unknown role {printable(k.role)!r} (use one of {', '.join(ROLES)})")
    return k


def load_pins(raw: bytes, *, default_name: str = "pinned") -> tuple[TrustKey, ...]:
    """The pins in one pin file (see the module docstring).

    Raises:
        UsageError: the file is in none of the forms, a name or role is not allowed, or a
            fingerprint does not match its key.
    """
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:  # read as it is, never with replacement characters
        raise _bad("not UTF-8 text") from exc
    doc = None
    if text.startswith("{"):
        try:
            doc = load_json(text)
        except ValueError as exc:
            raise _bad("not JSON") from exc
    if isinstance(doc, dict) and doc.get("type") == PINS_TYPE:
        items = doc.get("pins")
        if not isinstance(items, list) or set(doc) != {"type", "pins"}:
            raise _bad("a pin list needs exactly 'type' and 'pins' (a list)")
        out = []
        for item in items:
            if not isinstance(item, dict) or not item.get("name"):
                raise _bad("every pin in a list needs a name")
            out.append(_checked(parse_trust_key(json.dumps(item).encode())))
        return tuple(out)
    return (_checked(parse_trust_key(raw, default_name=default_name)),)


@dataclass(frozen=True, slots=True)
class Pins:
    """A consistent set of pins (one key per name, one name per key)."""

    keys: tuple[TrustKey, ...]

    @classmethod
    def of(cls, keys: Iterable[TrustKey]) -> Pins:
        """Merge pins; the same pin twice is kept once.

        Raises:
            UsageError: one name pinned with two keys or roles, or one key under two names.
        """
        by_name: dict[str, TrustKey] = {}
        by_key: dict[bytes, TrustKey] = {}
        for k in keys:
            _checked(k)
            clash = [o for o in (by_name.get(k.name), by_key.get(k.public)) if o and o != k]
            if clash:
                other = clash[0]
                raise UsageError(
                    f"Conflicting pins for {printable(k.name)}: {k.fingerprint} "
                    f"({k.role or 'no role'}) and {printable(other.name)} {other.fingerprint} "
                    f"({other.role or 'no role'})",
                    "Pin each identity once, with one key and one role.",
                )
            by_name[k.name] = by_key[k.public] = k
        return cls(tuple(by_name.values()))

    def __bool__(self) -> bool:
        return bool(self.keys)

    def by_key(self, public: bytes) -> TrustKey | None:
        return next((k for k in self.keys if k.public == public), None)

    def for_entry(self, entry: RosterEntry) -> TrustKey | None:
        """The pin of *entry*'s key under *entry*'s own algorithm (None otherwise)."""
        k = self.by_key(entry.public)
        return k if k is not None and k.alg == entry.alg else None

    def by_fingerprint(self, fp: str | None) -> TrustKey | None:
        return next((k for k in self.keys if k.fingerprint == fp), None)

    def by_name(self, name: str) -> TrustKey | None:
        return next((k for k in self.keys if k.name == name), None)

    def with_role(self, role: str) -> tuple[TrustKey, ...]:
        return tuple(k for k in self.keys if k.role == role)

    def standing(self, entry: RosterEntry, role: str) -> str | None:
        """None when *entry* counts toward a quorum of *role*, else why it does not."""
        k = self.by_key(entry.public)
        if k is None:
            return "not pinned"
        if k.alg != entry.alg:
            return f"pinned as an {k.alg} key, the roster records {entry.alg}"
        if k.name != entry.name:
            return f"key pinned for {k.name}"
        if k.role is None:
            return "pinned without a role"
        if k.role != role:
            return f"pinned as {k.role}, not {role}"
        if entry.role != role:
            return f"a {entry.role} in the roster, not a {role}"
        return None

    def identity_problems(self, roster: Sequence[RosterEntry]) -> list[str]:
        """Roster entries that contradict a pin: same name with another key, a pinned key
        under another name, or a pinned identity enrolled in another role."""
        out = []
        for e in roster:
            named, keyed = self.by_name(e.name), self.by_key(e.public)
            if named is not None and named.public != e.public:
                out.append(
                    f"roster entry {e.name} has key {e.fingerprint}, but {e.name} is pinned "
                    f"with key {named.fingerprint}"
                )
            if keyed is not None and keyed.alg != e.alg:
                out.append(
                    f"roster entry {e.name} records its key {e.fingerprint} as {e.alg}, but it "
                    f"is pinned as {keyed.alg}"
                )
            if keyed is not None and keyed.name != e.name:
                out.append(
                    f"roster entry {e.name} uses the key {e.fingerprint} pinned for {keyed.name}"
                )
            if (
                named is not None
                and named.public == e.public
                and named.role is not None
                and named.role != e.role
            ):
                out.append(f"{e.name} is pinned as {named.role}, but the roster enrols a {e.role}")
        return out


def and_list(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(names) <= 1:
        return "".join(names) or "none"
    return ", ".join(names[:-1]) + " and " + names[-1]
