"""The PKCS#11 implementation of the :class:`custody.hsm.Hsm` port (python-pkcs11).

This module owns opening the token, one logged-in R/W user session per adapter and the
serialisation of every call. :class:`Pkcs11Hsm` gets its operations from mixins beside
it in ``custody.hsm.pkcs11``: ``secretkeys`` (AES key templates, lookup, lifecycle),
``wrapping`` (AES-GCM, seal/unseal with the ``sealing`` fallback, RFC 5649, sealing to a
public key), ``keypairs`` (signing, ECDH), ``mackeys`` (HMAC-SHA256) and ``counters``
(monotonic counters); ``module`` (library loading), ``errors`` (error translation) and
``selftest`` help. These are the only modules in custody that import ``pkcs11``.

Facts it is built around (SoftHSM 2.6.1, python-pkcs11 0.10.1):

- python-pkcs11 initialises a module without OS locking, so every call holds the lock of
  its loaded module (shared by all adapters on it). Parallel HSM work uses processes.
- A process sees one SoftHSMv2 config at a time (see :mod:`custody.hsm.pkcs11.module`).
- SoftHSM quirks of wrapping and integrity errors: see :mod:`custody.hsm.pkcs11.wrapping`.
- The PIN is used for C_Login and not kept: a lost session means opening a new adapter.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Self

from pkcs11 import Mechanism
from pkcs11 import exceptions as px

from custody.config import HsmConfig
from custody.errors import (
    HsmError,
    KeyNotFound,
    MechanismUnsupported,
    SessionClosed,
    TokenNotPresent,
)
from custody.hsm import KEK_SEALS, SelftestReport, TokenInfo
from custody.hsm.pkcs11 import probe
from custody.hsm.pkcs11.counters import CounterMixin
from custody.hsm.pkcs11.errors import translate
from custody.hsm.pkcs11.keypairs import SIGN_MECHS, SIGNING_ALGORITHMS, KeyPairMixin
from custody.hsm.pkcs11.mackeys import MacKeyMixin
from custody.hsm.pkcs11.module import SharedLogin, load_module
from custody.hsm.pkcs11.secretkeys import SecretKeyMixin
from custody.hsm.pkcs11.wrapping import WrappingMixin

SELFTEST_MECHANISMS = (
    "AES_KEY_GEN",
    "AES_GCM",
    "AES_KEY_WRAP_KWP",
    "AES_KEY_WRAP_PAD",
    "AES_KEY_WRAP",
    "AES_ECB",
    "AES_CBC_PAD",
    "SHA256_HMAC",
    "EC_EDWARDS_KEY_PAIR_GEN",
    "EDDSA",
    "EC_KEY_PAIR_GEN",
    "ECDSA",
    "ECDH1_DERIVE",
    "SHA256",
    "GENERIC_SECRET_KEY_GEN",
)

OPEN_ATTEMPTS = 4


@contextmanager
def softhsm_open_lock(conf: str | None) -> Iterator[None]:
    """Hold an exclusive lock beside a SoftHSMv2 config while opening a token (see above).

    Other PKCS#11 modules (no SoftHSM config) need no lock.
    """
    if not conf:
        yield
        return
    try:
        fh = open(f"{conf}.custody-lock", "a")  # noqa: SIM115 (held for the block)
    except OSError:
        yield  # a read-only config directory: fall back to retries alone
        return
    try:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        fh.close()  # releases the lock


def open_hsm(config: HsmConfig, home: Path, pin: str, **kwargs: Any) -> Pkcs11Hsm:
    """Open and log into the token that *config* names.

    Args:
        config: the ``[hsm]`` section of custody.toml.
        home: the custody home; ``config.softhsm_conf`` is resolved relative to it.
        pin: the token user PIN. It is used for C_Login and not kept.
        **kwargs: passed on to :class:`Pkcs11Hsm` (``signing_algorithms``,
            ``wrap_formats``).

    Returns:
        A logged-in adapter. Close it (or use it as a context manager) when done.

    Raises:
        TokenNotPresent: the module cannot be loaded, or no token has that label/slot.
        PinIncorrect: the token refused the PIN.
        PinLocked: the user PIN is locked.
        HsmError: another SoftHSM config is open in this process, or the login failed.
    """
    return Pkcs11Hsm(config, home, pin, **kwargs)


class Pkcs11Hsm(WrappingMixin, SecretKeyMixin, KeyPairMixin, MacKeyMixin, CounterMixin):
    """A logged-in PKCS#11 token: one R/W user session, every call serialised by a lock.

    Args:
        config: the ``[hsm]`` section of custody.toml.
        home: the custody home (for a relative ``softhsm_conf``).
        pin: the user PIN, used once for C_Login and not stored.
        signing_algorithms: preference order for new signing keys; the first one whose
            mechanisms the token offers is used.
        wrap_formats: preference order of key-wrap formats for new blobs (default RFC 5649,
            then RFC 3394); blobs of every format the token unwraps still open.
        kek_seals: preference order of the ways of sealing (:data:`custody.hsm.KEK_SEALS`,
            default AES-GCM, then the CBC-PAD + HMAC fallback); the first that passes its
            known-answer test is the token's, and must be the one the home records.

    Raises:
        See :func:`open_hsm`.
    """

    def __init__(
        self,
        config: HsmConfig,
        home: Path,
        pin: str,
        *,
        signing_algorithms: tuple[str, ...] = SIGNING_ALGORITHMS,
        wrap_formats: tuple[str, ...] = probe.WRAP_FORMATS,
        kek_seals: tuple[str, ...] = KEK_SEALS,
    ) -> None:
        unknown = set(signing_algorithms) - set(SIGN_MECHS)
        if unknown or not signing_algorithms:
            raise ValueError(f"signing_algorithms must be drawn from {SIGNING_ALGORITHMS}")
        self._config = config
        self._signing_algorithms = signing_algorithms
        if not wrap_formats or set(wrap_formats) - set(probe.WRAP_FORMATS):
            raise ValueError(f"wrap_formats must be drawn from {probe.WRAP_FORMATS}")
        self._wrap_formats = wrap_formats
        if not kek_seals or set(kek_seals) - set(KEK_SEALS):
            raise ValueError(f"kek_seals must be drawn from {KEK_SEALS}")
        self._kek_seals = kek_seals
        self._proofs = {}  # keypairs: public keys proven to belong to a private key
        self._login: SharedLogin | None = None
        conf = str((Path(home) / config.softhsm_conf).resolve()) if config.softhsm_conf else None
        # SoftHSMv2's file store rewrites token.object on every C_Login (PIN flags) and is not
        # atomic: a process that reads it meanwhile (C_Initialize, slot scan) may not see the
        # token at all. Custody processes therefore open SoftHSM tokens one at a time.
        with softhsm_open_lock(conf or os.environ.get("SOFTHSM2_CONF")):
            self._module = load_module(config.module, conf)
            self._lock = self._module.lock
            self._gcm_raw_slots = self._module.gcm_raw
            self._open(pin)

    def _open(self, pin: str) -> None:
        with self._lock:
            token = self._locate()
            self._token_label = token.label
            self._slot_id = int(token.slot.slot_id)
            where = f"log in to token {token.label!r}"
            with translate(where, opening=True):
                self._mechs = frozenset(
                    m.name for m in token.slot.get_mechanisms() if isinstance(m, Mechanism)
                )
                self._tok_info = (token.manufacturer_id, token.model, token.serial)
            self._login = self._module.login(token, pin)
            self._module.users.add(self)

    def _locate(self) -> Any:
        cfg = self._config
        action = f"open token {cfg.token_label!r} in {cfg.module}"
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            # SoftHSMv2 scans its token directory only at C_Initialize, and fails with
            # CKR_GENERAL_ERROR on a token deleted since; re-initialise when idle. A token
            # file that another program is rewriting also reads as absent for a moment.
            may_retry = attempt < OPEN_ATTEMPTS and not len(self._module.users)
            if attempt > 1:
                time.sleep(0.05 * attempt)
            found = []
            try:
                with translate(action, opening=True):
                    for slot in self._module.lib.get_slots(token_present=True):
                        if cfg.slot is not None and slot.slot_id != cfg.slot:
                            continue
                        with suppress(px.TokenNotPresent, px.TokenNotRecognised):
                            token = slot.get_token()
                            if token.label == cfg.token_label:
                                found.append(token)
            except HsmError:
                if not may_retry:
                    raise
                self._module.reinitialize(self._module.conf)
                continue
            if len(found) > 1:
                raise TokenNotPresent(
                    f"Several tokens are labelled {cfg.token_label!r}",
                    "Set [hsm] slot in custody.toml to choose one.",
                )
            if found:
                return found[0]
            if may_retry:
                self._module.reinitialize(self._module.conf)
        where = f"slot {cfg.slot}" if cfg.slot is not None else "any slot"
        raise TokenNotPresent(
            f"No token labelled {cfg.token_label!r} in {where} of {cfg.module}",
            "Check [hsm] token_label and slot in custody.toml and that the token is connected "
            "('softhsm2-util --show-slots' or 'pkcs11-tool --module MODULE -L' lists tokens).",
        )

    def __repr__(self) -> str:
        return (
            f"Pkcs11Hsm(module={self._config.module!r}, token={self._token_label!r}, "
            f"slot={self._slot_id}, open={self._login is not None})"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _op(self, action: str, *, integrity: bool = False) -> Iterator[Any]:
        """Hold the module lock, check the session, translate PKCS#11 errors."""
        with self._lock:
            if self._login is None:
                raise SessionClosed("The HSM session is closed", "Open the HSM again.")
            try:
                with translate(action, integrity=integrity):
                    yield self._login.session
            except SessionClosed:
                self._login.dead = True
                raise
            except KeyNotFound:
                self._login.keys.clear()
                raise

    def close(self) -> None:
        """Release the session (the last adapter on the token logs out). Idempotent."""
        with self._lock:
            login, self._login = self._login, None
            if login is not None:
                self._module.logout(login)
            self._module.users.discard(self)

    # --- token facts ----------------------------------------------------------------
    def info(self) -> TokenInfo:
        """Return the token's identity (no secrets)."""
        manufacturer, model, serial = self._tok_info
        lib_version = ".".join(str(v) for v in self._module.lib.library_version)
        return TokenInfo(
            module=self._config.module,
            slot_id=self._slot_id,
            label=self._token_label,
            manufacturer=manufacturer,
            model=model,
            serial=serial.decode(errors="replace") if isinstance(serial, bytes) else str(serial),
            library_version=lib_version,
        )

    def mechanisms(self) -> frozenset[str]:
        """Names of the mechanisms the token offers (``pkcs11.Mechanism`` names)."""
        return self._mechs

    def require_mechanisms(self, *names: str) -> None:
        """Raise unless the token offers every mechanism in *names*.

        Raises:
            MechanismUnsupported: one or more are missing (named in the title).
        """
        missing = [n for n in names if n not in self._mechs]
        if missing:
            raise MechanismUnsupported(
                f"The token does not offer {', '.join('CKM_' + n for n in missing)}",
                "Use a token or firmware that supports it; 'custody hsm selftest' lists "
                "what this token offers.",
            )

    def random(self, n: int) -> bytes:
        """*n* random bytes from the token's RNG (C_GenerateRandom).

        Raises:
            ValueError: n < 0.
            HsmError: the token failed.
        """
        if n < 0:
            raise ValueError("n must be >= 0")
        if n == 0:
            return b""
        with self._op("generate random bytes") as s:
            return bytes(s.generate_random(8 * n))

    # --- known-answer tests, preflight, selftest --------------------------------------
    def _profile(self, s: Any) -> probe.TokenProfile:
        """The token's profile (:mod:`custody.hsm.pkcs11.probe`), tested once per slot and
        module initialisation; the caller holds the module lock."""
        key = (self._slot_id, self._wrap_formats, self._kek_seals)
        prof = self._module.profiles.get(key)
        if prof is None:
            prof = self._module.profiles[key] = probe.profile(
                s, self._slot_id, self._mechs, self._wrap_formats, self._kek_seals
            )
        return prof

    def _checks(self) -> tuple[str, dict[str, str], dict[str, str], probe.TokenProfile]:
        from custody.hsm.pkcs11 import selftest as pkcs11_selftest

        with self._op("run the known-answer tests") as s:
            try:
                alg = self.signing_algorithm()
            except MechanismUnsupported:
                alg = ""
            prof = self._profile(s)
            results, errors = pkcs11_selftest.run_checks(s, alg, prof, self._mechs)
        return alg, results, errors, prof

    @staticmethod
    def _choices(prof: probe.TokenProfile, alg: str) -> dict[str, str]:
        return {
            "key_wrap": prof.wrap.describe() if prof.wrap else "none",
            "unwrap": ", ".join(f"{f} (CKM_{m.name})" for f, m in sorted(prof.unwrap.items()))
            or "none",
            "aes_gcm": {"native": "in token", "raw": "in token (raw call, see docs/hsm.md)"}.get(
                prof.gcm or "", "none"
            ),
            "kek_seal": prof.seal or "none",
            "allowed_mechanisms": "enforced" if prof.allowed_enforced else "not enforced",
            "signing": alg or "none",
        }

    def preflight(self, needs: tuple[str, ...] = ()) -> dict[str, str]:
        """Refuse a token that cannot do what custody needs, before anything is created.

        Runs the known-answer tests (session objects only, nothing stays on the token).

        Args:
            needs: check names (:data:`custody.hsm.pkcs11.probe.NEEDS`); default: the core
                checks and the in-token sealing of a rotated root.

        Returns:
            What custody uses on this token (wrap format and mechanism, GCM, signing).

        Raises:
            MechanismUnsupported: a needed check is missing or failed; the title names each.
        """
        alg, results, errors, prof = self._checks()
        wanted = needs or (*probe.NEEDS["core"], *probe.NEEDS["seal"])
        bad = probe.preflight_failures(results, errors, wanted)
        if bad:
            raise MechanismUnsupported(
                f"Token {self._token_label!r} is not suitable for custody: " + "; ".join(bad),
                "Nothing was created. custody needs AES key generation, in-token AES-GCM "
                "(or AES-ECB unwrap, AES-CBC-PAD and HMAC-SHA256 for its fallback), "
                "an AES key wrap (RFC 5649 or RFC 3394), AES-ECB for key check values and "
                "P-256 ECDH; 'custody hsm selftest' shows each check.",
            )
        if self._config.kek_seal is not None:
            self.kek_seal()  # a home's record must match the token (IntegrityError)
        return self._choices(prof, alg)

    def unwrap_formats(self) -> frozenset[str]:
        """The key-wrap formats (``rfc5649``, ``rfc3394``) whose blobs this token opens, by
        the known-answer test."""
        with self._op("run the known-answer tests") as s:
            return frozenset(self._profile(s).unwrap)

    def selftest(self) -> SelftestReport:
        """Report the mechanisms custody uses and run functional checks on session objects
        only (nothing is left on the token). Every check is pass, fail or missing; none
        raises.

        Raises:
            SessionClosed: the adapter is closed.
        """
        alg, results, errors, prof = self._checks()
        return SelftestReport(
            token=self.info(),
            mechanisms={m: m in self._mechs for m in SELFTEST_MECHANISMS},
            checks={k: v == probe.PASS for k, v in results.items()},
            results=results,
            errors=errors,
            signing_algorithm=alg,
            choices=self._choices(prof, alg),
        )


__all__ = ["Pkcs11Hsm", "open_hsm"]
