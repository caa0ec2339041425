"""The second factor: TOTP (RFC 6238) enrolment, verification and lockout per principal.

Super-admin actions, recovery and reads of high-class secrets need a TOTP code as well as
the credential (issue 16, docs/mfa.md); :mod:`custody.access` asks :meth:`Mfa.verify`.

* **Codes.** RFC 6238 TOTP from ``cryptography`` (HMAC-SHA-1, 6 digits, 30-second steps:
  what every authenticator app defaults to), accepted one step either side of now
  (RFC 6238 section 5.2, for clock drift). A code is single-use: the step it matched is
  recorded per principal and a code of that step or an earlier one is refused (section
  5.2: "the verifier MUST NOT accept the second attempt of the same OTP"); the record is
  one conditional update, so of two concurrent uses of one code exactly one wins.
* **The secret.** 20 random bytes (RFC 4226 section 4's recommended 160 bits) from the
  token's RNG, stored as an object wrapped under the active ``secrets`` KEK (AES-256-GCM;
  the KEK is sealed by the root key on the token), so the store's file alone does not give
  it up and re-keying the ``secrets`` branch moves it like any secret's DEK. The wrapped
  plaintext names its principal: an enrolment row pointed at another principal's object
  is refused as an integrity failure. The secret leaves this module only in the
  :class:`Enrolment` (the terminal QR, the PNG and the ``otpauth://`` URI), never in a log,
  an audit entry, an error or a ``repr``.
* **Lockout.** ``max_failures`` consecutive refused codes (default 5) lock the principal
  for ``lockout_seconds`` (default 900); while locked every code is refused, right or wrong,
  and attempts do not extend the lockout. An accepted code clears the count.
* **Audit.** Enrolment and reset are logged before they act (:meth:`AuditLog.guard`); each
  verification's outcome is logged inside the store transaction that records it, so an
  unwritable audit log refuses the verification and changes nothing. Each failure is a
  ``denied`` ``mfa verify`` entry with its reason; each lockout a ``denied`` ``mfa lockout``.
"""

from __future__ import annotations

import base64
import hmac
import io
import re
import tomllib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from PIL import Image

from custody.access.seal import AccessSeal
from custody.audit.log import AuditLog
from custody.audit.scope import actor_name
from custody.canonical import canonical_bytes, strict_loads
from custody.clock import iso, parse, to_seconds, utcnow
from custody.errors import IntegrityError, PolicyError, UsageError
from custody.keys.hierarchy import KeyHierarchy
from custody.shares.card.facts import make_qr, qr_terminal
from custody.store.port import Store
from custody.store.rows import MfaRow

BRANCH = "secrets"
KIND = "mfa-totp"
DIGITS = 6
PERIOD = 30
ALGORITHM = "SHA1"
SECRET_BYTES = 20
TOLERANCE = 1  # steps either side of now
_PLAIN_TYPE = "custody/totp-secret/v1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_PNG_SCALE = 8


class MfaError(PolicyError):
    """A TOTP code was refused. ``reason``: ``wrong``, ``reused``, ``locked``,
    ``not-enrolled``, ``enrolled`` (enrolling twice) or ``revoked`` (enrolling a revoked
    principal)."""

    def __init__(self, title: str, hint: str = "", *, reason: str) -> None:
        super().__init__(title, hint)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class MfaPolicy:
    """The ``[mfa]`` table of ``custody.toml``: lockout threshold and period, QR issuer."""

    max_failures: int = 5
    lockout_seconds: int = 900
    issuer: str = "custody"

    def __post_init__(self) -> None:
        if not 1 <= self.max_failures <= 100:
            raise ValueError("max_failures must be 1..100")
        if not 1 <= self.lockout_seconds <= 7 * 86400:
            raise ValueError("lockout_seconds must be 1 s .. 7 days")
        if not _NAME.fullmatch(self.issuer):
            raise ValueError("issuer must be a short name (letters, digits, . _ @ -)")

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> MfaPolicy:
        """Raises UsageError on a bad value (the config names the field)."""
        try:
            return cls(
                max_failures=int(doc.get("max_failures", 5)),
                lockout_seconds=int(doc.get("lockout_seconds", 900)),
                issuer=str(doc.get("issuer", "custody")),
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(
                f"Bad [mfa] setting: {exc}", "Fix custody.toml (docs/mfa.md)."
            ) from exc

    @classmethod
    def for_home(cls, config_file: Path) -> MfaPolicy:
        """The policy in *config_file*'s ``[mfa]`` table (defaults when absent)."""
        try:
            doc = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            return cls()
        sec = doc.get("mfa", {})
        return cls.from_mapping(sec if isinstance(sec, dict) else {})


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrolment:
    """What an enrolment hands to the person enrolling, once. Every field but the name
    carries the TOTP secret: show it to that person only, never log it."""

    principal: str
    secret_b32: str = field(repr=False)
    uri: str = field(repr=False)
    qr_text: str = field(repr=False)
    png: bytes = field(repr=False)


def check_name(name: str) -> str:
    """A principal name: 1-64 of letters, digits, ``. _ @ -``, starting alphanumeric.

    Raises:
        UsageError: anything else.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            "A principal name is 1-64 letters, digits, '.', '_', '@' or '-'",
            "Use the principal's name as enrolled.",
        )
    return name


def _totp(key: bytes) -> TOTP:
    # RFC 6238 over HMAC-SHA-1 (the authenticator-app default): HMAC-SHA-1 is not broken
    return TOTP(key, DIGITS, SHA1(), PERIOD, enforce_key_length=True)  # noqa: S303


def totp_code(key: bytes, step: int) -> str:
    """The RFC 6238 code of *key* for time step *step* (``floor(unix_time / 30)``)."""
    return _totp(key).generate(step * PERIOD).decode("ascii")


def _png(uri: str) -> bytes:
    m = make_qr(uri.encode("ascii")).get_matrix()
    n = len(m)
    img = Image.new("1", (n, n), 1)
    img.putdata([0 if dark else 1 for row in m for dark in row])
    img = img.resize((n * _PNG_SCALE, n * _PNG_SCALE), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class Mfa:
    """TOTP second factors of one deployment.

    Args:
        store: the deployment's store.
        hierarchy: its key hierarchy (logged in to the token to enrol or verify: the
            secret is unwrapped under the ``secrets`` KEK).
        audit_log: the deployment's audit log.
        clock: the current time.
        policy: lockout threshold and period (default: 5 failures, 15 minutes).
        rng: random bytes (default: the token's RNG).
        actor: who is acting in enrolment and reset entries (default: the operator); a
            verification's actor is the principal whose code it is.
    """

    def __init__(
        self,
        store: Store,
        hierarchy: KeyHierarchy,
        audit_log: AuditLog,
        clock: Callable[[], datetime] = utcnow,
        *,
        policy: MfaPolicy | None = None,
        rng: Callable[[int], bytes] | None = None,
        actor: str | None = None,
        seal: AccessSeal | None = None,
    ) -> None:
        self.store = store
        self.seal = seal
        self.hierarchy = hierarchy
        self.audit = audit_log
        self._clock = clock
        self.policy = policy or MfaPolicy()
        self._rng = rng
        self._actor = actor

    def _sealed(self) -> AbstractContextManager[None]:
        """An enrolment write: checked against the access seal and re-sealed (with the token)."""
        return self.seal.write() if self.seal is not None else nullcontext()

    def __repr__(self) -> str:
        return f"Mfa({self.store!r})"

    # -- helpers -------------------------------------------------------------------
    def _random(self, n: int) -> bytes:
        if self._rng is not None:
            return bytes(self._rng(n))
        hsm = self.hierarchy.hsm
        if hsm is None:
            raise UsageError("This needs the token", "Give the token PIN (--pin-file).")
        return bytes(hsm.random(n))

    def _key(self, row: MfaRow) -> bytes:
        """Unwrap *row*'s secret and check it is this principal's.

        Raises:
            IntegrityError: the object is missing, does not decrypt, or names another
                principal. PolicyError/HsmError: the KEK cannot be used.
        """
        bad = IntegrityError(
            f"The MFA secret of {row.principal} does not check",
            "The store was altered; reset the principal's MFA and enrol again.",
        )
        self.hierarchy.hsm  # noqa: B018 - no token is a UsageError of its own, not damage
        try:
            plain = self.hierarchy.unwrap_object(row.object_uid)
        except UsageError:
            raise bad from None
        try:
            doc = strict_loads(plain)
            ok = doc["type"] == _PLAIN_TYPE and doc["principal"] == row.principal
            key = bytes.fromhex(doc["key"])
        except (ValueError, KeyError, TypeError):
            raise bad from None
        if not ok or len(key) < SECRET_BYTES:
            raise bad
        return key

    # -- enrolment -----------------------------------------------------------------
    def enrol(self, name: str) -> Enrolment:
        """Make and store a new TOTP secret for *name*; return it for the authenticator.

        An enrolment is confirmed by its first accepted code. An unconfirmed enrolment is
        replaced by a new one; a confirmed one must be reset (by a super-admin) first, so
        that a stolen credential cannot re-enrol a second factor of its own.

        Raises:
            UsageError: a bad name, no such principal, or no token (no RNG).
            MfaError: *name* is revoked, or already has a confirmed enrolment.
            AuditError: the intent could not be logged (nothing changed).
            CeremonyError: the ``secrets`` branch has no active KEK.
        """
        check_name(name)
        now = self._clock()
        who = self._actor or actor_name()
        details = {"digits": DIGITS, "period": PERIOD, "algorithm": ALGORITHM}
        with (
            self.audit.guard("mfa enrol", name, who, details=details),
            self._sealed(),
            self.store.transaction(),
        ):
            who_row = self.store.principal(name)
            if who_row is None:
                raise UsageError(
                    f"No principal {name}", "Add it first: 'custody principal add NAME'."
                )
            if who_row.revoked_at is not None:
                raise MfaError(
                    f"{name} is revoked", "A revoked principal has no MFA.", reason="revoked"
                )
            old = self.store.mfa_enrolment(name)
            if old is not None and old.confirmed_at is not None:
                raise MfaError(
                    f"{name} already has MFA (enrolled {old.enrolled_at})",
                    "A super-admin resets it first: 'custody mfa reset NAME'.",
                    reason="enrolled",
                )
            if old is not None:
                self.store.delete_mfa_enrolment(name)
            key = self._random(SECRET_BYTES)
            plain = canonical_bytes({"type": _PLAIN_TYPE, "principal": name, "key": key.hex()})
            uid = self.hierarchy.store_object(BRANCH, plain, kind=KIND, label=f"mfa:{name}")
            self.store.add_mfa_enrolment(
                MfaRow(
                    principal=name,
                    object_uid=uid,
                    digits=DIGITS,
                    period=PERIOD,
                    algorithm=ALGORITHM,
                    enrolled_at=iso(now),
                )
            )
        uri = _totp(key).get_provisioning_uri(name, self.policy.issuer)
        return Enrolment(
            principal=name,
            secret_b32=base64.b32encode(key).decode("ascii"),
            uri=uri,
            qr_text=qr_terminal(uri.encode("ascii")),
            png=_png(uri),
        )

    def enrolled(self, name: str) -> bool:
        """Whether *name* has a confirmed enrolment (its first code was accepted)."""
        row = self.store.mfa_enrolment(name)
        return row is not None and row.confirmed_at is not None

    def status(self, *, now: datetime | None = None) -> list[dict[str, Any]]:
        """Every enrolment's state (no secret): confirmed, last use, failures, lockout."""
        t = now or self._clock()
        return [
            {
                "principal": r.principal,
                "confirmed": r.confirmed_at is not None,
                "enrolled_at": r.enrolled_at,
                "confirmed_at": r.confirmed_at,
                "last_used": r.last_used,
                "failures": r.failures,
                "locked_until": r.locked_until,
                "locked": r.locked_until is not None and t < parse(r.locked_until),
            }
            for r in self.store.mfa_enrolments()
        ]

    def reset(
        self, name: str, *, reason: str = "", authorize: Callable[[], None] | None = None
    ) -> None:
        """Remove *name*'s enrolment and shred its secret. The principal can then enrol
        again. *authorize* (the front end's super-admin check) runs after the intent is
        logged, so a refused reset is audited as ``denied``.

        Raises:
            UsageError: a bad name, or no enrolment.
            PolicyError: *authorize* refused.
            AuditError: the intent could not be logged (nothing changed).
        """
        check_name(name)
        who = self._actor or actor_name()
        with self.audit.guard("mfa reset", name, who, details={"reason": reason[:200]}):
            if authorize is not None:
                authorize()
            with self._sealed(), self.store.transaction():
                if self.store.delete_mfa_enrolment(name) is None:
                    raise UsageError(f"{name} has no MFA enrolment", "See 'custody mfa list'.")

    # -- verification --------------------------------------------------------------
    def verify(self, name: str, code: str, *, now: datetime | None = None) -> None:
        """Accept *code* for *name* once, or raise.

        Raises:
            MfaError: not enrolled, locked out, a wrong code, or a code already used (a
                refusal is audited and counts towards the lockout, except when locked).
            AuditError: the outcome could not be logged (nothing was recorded, and the code
                is not accepted).
            IntegrityError: the stored secret does not check.
        """
        check_name(name)
        t = now or self._clock()
        secs = to_seconds(t)
        who = self._actor or name
        row = self.store.mfa_enrolment(name)
        if row is None:
            self._deny(name, who, secs, "not-enrolled", {})
            raise MfaError(
                f"{name} has no MFA enrolment",
                "Enrol first: 'custody mfa enrol NAME'.",
                reason="not-enrolled",
            )
        if row.locked_until is not None and t < parse(row.locked_until):
            self._deny(name, who, secs, "locked", {"locked_until": row.locked_until})
            raise MfaError(
                f"{name} is locked out of MFA until {row.locked_until}",
                "Too many wrong codes. Wait, or ask a super-admin to reset it.",
                reason="locked",
            )
        try:
            key = self._key(row)
        except IntegrityError as err:  # a store altered under this principal: on the record
            self.audit.append(
                "mfa verify",
                name,
                who,
                outcome="failed",
                details={"error": type(err).__name__, "title": err.title},
                now=secs,
            )
            raise
        step = secs // PERIOD
        given = code.strip().replace(" ", "") if isinstance(code, str) else ""
        matched = None
        if len(given) == DIGITS and given.isascii() and given.isdigit():
            for s in (step, step - 1, step + 1)[: 1 + 2 * TOLERANCE]:
                if hmac.compare_digest(totp_code(key, s).encode(), given.encode()):
                    matched = s
                    break
        if matched is not None:
            with self.store.transaction():
                if self.store.use_mfa_step(name, matched, now=iso(t)):
                    self.audit.append(
                        "mfa verify",
                        name,
                        who,
                        outcome="ok",
                        details={"step_offset": matched - step},
                        now=secs,
                    )
                    return
            # refused by the store: an earlier or equal step was used, or a concurrent
            # verification has just locked the principal out
            now_row = self.store.mfa_enrolment(name)
            if now_row is not None and now_row.locked_until and t < parse(now_row.locked_until):
                self._deny(name, who, secs, "locked", {"locked_until": now_row.locked_until})
                raise MfaError(
                    f"{name} is locked out of MFA until {now_row.locked_until}",
                    "Too many wrong codes. Wait, or ask a super-admin to reset it.",
                    reason="locked",
                )
        reason = "wrong" if matched is None else "reused"
        self._fail(name, who, t, reason)
        if reason == "reused":
            raise MfaError(
                f"That MFA code for {name} was already used",
                "Each code works once: wait for the next one.",
                reason="reused",
            )
        raise MfaError(
            f"Wrong MFA code for {name}",
            "Check the authenticator app and the device's clock.",
            reason="wrong",
        )

    def _deny(self, name: str, who: str, secs: int, reason: str, extra: Mapping[str, Any]) -> None:
        self.audit.append(
            "mfa verify",
            name,
            who,
            outcome="denied",
            details={"reason": reason, **extra},
            now=secs,
        )

    def _fail(self, name: str, who: str, t: datetime, reason: str) -> None:
        until = iso(t + timedelta(seconds=self.policy.lockout_seconds))
        secs = to_seconds(t)
        with self.store.transaction():
            n, locked = self.store.fail_mfa(
                name, limit=self.policy.max_failures, locked_until=until
            )
            self._deny(name, who, secs, reason, {"failures": n})
            if locked:
                self.audit.append(
                    "mfa lockout",
                    name,
                    who,
                    outcome="denied",
                    details={
                        "failures": n,
                        "locked_until": until,
                        "lockout_seconds": self.policy.lockout_seconds,
                    },
                    now=secs,
                )
