"""The PKCS#11 implementation of the :class:`custody.hsm.Hsm` port (python-pkcs11).

This module owns one logged-in R/W user session per adapter, the serialisation of every
call, and the PKCS#11 templates of custody's AES keys. It and its helpers
``custody.hsm.pkcs11_*`` (library loading, error translation, key pairs, selftest) are the
only modules in custody that import ``pkcs11``.

Facts it is built around (SoftHSM 2.6.1, python-pkcs11 0.10.1):

- python-pkcs11 initialises a module without OS locking, so every call holds the lock of
  its loaded module (shared by all adapters on it). Parallel HSM work uses processes.
- A process sees one SoftHSMv2 config at a time (see :mod:`custody.hsm.pkcs11.module`).
- SoftHSM rejects CKM_AES_KEY_WRAP_PAD in C_Encrypt (CKR_MECHANISM_INVALID).
  ``wrap_bytes`` therefore loads the bytes as a temporary session generic-secret key and
  uses C_WrapKey / C_UnwrapKey; the output is plain RFC 5649.
- SoftHSM answers a bad GCM tag or a bad KWP blob with CKR_GENERAL_ERROR; operations that
  authenticate input translate that to IntegrityError (:mod:`custody.hsm.pkcs11.errors`).
- The PIN is used for C_Login and not kept: a lost session means opening a new adapter.
"""

from __future__ import annotations

import fcntl
import hmac
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Self

from pkcs11 import KDF, Attribute, GCMParams, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as px

from custody.config import HsmConfig
from custody.errors import (
    HsmError,
    IntegrityError,
    KeyNotFound,
    MechanismUnsupported,
    SessionClosed,
    TokenNotPresent,
)
from custody.hsm import (
    KCV_LEN,
    KeyExists,
    KeyRef,
    KeyUse,
    SealedKey,
    SelftestReport,
    TokenInfo,
    object_label,
)
from custody.hsm.pkcs11.errors import translate
from custody.hsm.pkcs11.keypairs import (
    SIGN_MECHS,
    SIGNING_ALGORITHMS,
    KeyPairMixin,
    ec_point,
    generate_pair,
    p256_point,
)
from custody.hsm.pkcs11.module import SharedLogin, load_module

GCM_NONCE_LEN = 12
WRAPPED_AES256_LEN = 40  # RFC 5649: 8-byte AIV block + 32 bytes
KWP = Mechanism.AES_KEY_WRAP_PAD  # RFC 5649
SELFTEST_MECHANISMS = (
    "AES_KEY_GEN",
    "AES_GCM",
    "AES_KEY_WRAP_PAD",
    "AES_ECB",
    "EC_EDWARDS_KEY_PAIR_GEN",
    "EDDSA",
    "EC_KEY_PAIR_GEN",
    "ECDSA",
    "ECDH1_DERIVE",
    "SHA256",
    "GENERIC_SECRET_KEY_GEN",
)
_VERSIONED = re.compile(r"^(?P<label>.+)/v(?P<version>[0-9]+)$")
_NO_USE = {
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
}
# What a token AES key may do, by use: the usage flags and CKA_ALLOWED_MECHANISMS (PKCS#11
# v3.0 §4.4). "seal" keys (roots, hold keys) only do AES-GCM; "wrap" keys only RFC 5649.
# No custody key allows AES-ECB: a KCV is CKA_CHECK_VALUE, or computed at import on a
# short-lived ECB-only session copy (see _kcv_of_blob).
_USES: dict[str, tuple[dict[Attribute, bool], list[Mechanism]]] = {
    "seal": (
        {**_NO_USE, Attribute.ENCRYPT: True, Attribute.DECRYPT: True},
        [Mechanism.AES_GCM],
    ),
    "wrap": ({**_NO_USE, Attribute.WRAP: True, Attribute.UNWRAP: True}, [KWP]),
}
KCV_ID_PREFIX = b"kcv:"  # CKA_ID of an unwrapped key: the KCV the token computed at import


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
        **kwargs: passed on to :class:`Pkcs11Hsm` (``signing_algorithms``).

    Returns:
        A logged-in adapter. Close it (or use it as a context manager) when done.

    Raises:
        TokenNotPresent: the module cannot be loaded, or no token has that label/slot.
        PinIncorrect: the token refused the PIN.
        PinLocked: the user PIN is locked.
        HsmError: another SoftHSM config is open in this process, or the login failed.
    """
    return Pkcs11Hsm(config, home, pin, **kwargs)


class Pkcs11Hsm(KeyPairMixin):
    """A logged-in PKCS#11 token: one R/W user session, every call serialised by a lock.

    Args:
        config: the ``[hsm]`` section of custody.toml.
        home: the custody home (for a relative ``softhsm_conf``).
        pin: the user PIN, used once for C_Login and not stored.
        signing_algorithms: preference order for new signing keys; the first one whose
            mechanisms the token offers is used.

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
    ) -> None:
        unknown = set(signing_algorithms) - set(SIGN_MECHS)
        if unknown or not signing_algorithms:
            raise ValueError(f"signing_algorithms must be drawn from {SIGNING_ALGORITHMS}")
        self._config = config
        self._signing_algorithms = signing_algorithms
        self._login: SharedLogin | None = None
        conf = str((Path(home) / config.softhsm_conf).resolve()) if config.softhsm_conf else None
        # SoftHSMv2's file store rewrites token.object on every C_Login (PIN flags) and is not
        # atomic: a process that reads it meanwhile (C_Initialize, slot scan) may not see the
        # token at all. Custody processes therefore open SoftHSM tokens one at a time.
        with softhsm_open_lock(conf or os.environ.get("SOFTHSM2_CONF")):
            self._module = load_module(config.module, conf)
            self._lock = self._module.lock
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

    # --- AES secret keys on the token ------------------------------------------------
    def _secret(self, s: Any, label: str, version: int) -> Any:
        """The key ``label/vN``: a token object, or a volatile session object of this login
        (see :meth:`generate_aes_key`). Handles are cached per shared session (a
        C_FindObjects per call cost ~3x in throughput); a stale handle fails as KeyNotFound
        and clears it."""
        lbl = object_label(label, version)
        cache = self._login.keys if self._login is not None else {}
        if lbl in cache:
            return cache[lbl]
        # No CKA_TOKEN in the query: session objects are visible only to this process.
        objs = list(s.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: lbl}))
        if not objs:
            raise KeyNotFound(f"No key {lbl} on the token", "Run 'custody status' to list keys.")
        if len(objs) > 1:
            raise HsmError(f"Several keys are labelled {lbl}", "Remove the duplicate.")
        cache[lbl] = objs[0]
        return objs[0]

    def _absent(self, s: Any, label: str, version: int) -> str:
        lbl = object_label(label, version)
        with suppress(KeyNotFound):
            self._secret(s, label, version)
            raise KeyExists(
                f"Key {lbl} already exists on the token",
                "Key versions are never overwritten; use the next version number.",
            )
        return lbl

    @staticmethod
    def _kcv(key: Any) -> str:
        """The key check value: CKA_CHECK_VALUE (computed by the token at generation), else
        the KCV the token computed when the key was unwrapped (CKA_ID ``kcv:...``, the key is
        non-modifiable), else AES-ECB of a zero block (keys made before custody restricted
        mechanisms)."""
        with suppress(px.PKCS11Error):
            cv = bytes(key[Attribute.CHECK_VALUE])
            if len(cv) >= KCV_LEN:
                return cv[:KCV_LEN].hex()
        with suppress(px.PKCS11Error):
            kid = bytes(key[Attribute.ID] or b"")
            if kid.startswith(KCV_ID_PREFIX) and len(kid) == len(KCV_ID_PREFIX) + KCV_LEN:
                return kid[len(KCV_ID_PREFIX) :].hex()
        return bytes(key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:KCV_LEN].hex()

    @classmethod
    def _ref(cls, key: Any, label: str, version: int) -> KeyRef:
        return KeyRef(
            label=label,
            version=version,
            kcv=cls._kcv(key),
            extractable=bool(key[Attribute.EXTRACTABLE]),
        )

    @staticmethod
    def _usable(key: Any, use: Attribute, label: str, version: int) -> Any:
        """*key*, if its usage flag *use* is set (python-pkcs11 would raise AttributeError)."""
        if not key[use]:
            raise MechanismUnsupported(
                f"{object_label(label, version)} is not allowed to {use.name.lower()}",
                "Each custody key does only what it is made for (CKA_ALLOWED_MECHANISMS).",
            )
        return key

    @staticmethod
    def _kcv_of_blob(wrapping_key: Any, blob: bytes) -> str:
        """Known-answer check of an RFC 5649 *blob*: unwrap it inside the token into a
        session key that can do nothing but AES-ECB (sensitive, non-extractable), take its
        KCV, destroy it. Nothing of the key reaches the host but the 3-byte KCV."""
        probe = wrapping_key.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.AES,
            blob,
            mechanism=KWP,
            store=False,
            template={
                Attribute.TOKEN: False,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                **_NO_USE,
                Attribute.ENCRYPT: True,
                Attribute.ALLOWED_MECHANISMS: [Mechanism.AES_ECB],
            },
        )
        try:
            return bytes(probe.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:KCV_LEN].hex()
        finally:
            with suppress(px.PKCS11Error):
                probe.destroy()

    @contextmanager
    def _temp_key(self, s: Any, raw: bytes, key_type: KeyType, **use: bool) -> Iterator[Any]:
        """A session (non-token) secret key holding *raw*, destroyed on exit. A wrapping
        key (*wrap* or *unwrap*) is limited to CKM_AES_KEY_WRAP_PAD."""
        template = {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: key_type,
            Attribute.VALUE: raw,
            Attribute.TOKEN: False,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: not use.get("extractable", False),
            Attribute.EXTRACTABLE: use.get("extractable", False),
            Attribute.WRAP: use.get("wrap", False),
            Attribute.UNWRAP: use.get("unwrap", False),
        }
        if use.get("wrap") or use.get("unwrap"):
            template[Attribute.ALLOWED_MECHANISMS] = [KWP]
        key = s.create_object(template)
        try:
            yield key
        finally:
            with suppress(px.PKCS11Error):
                key.destroy()

    def generate_aes_key(
        self, label: str, version: int, *, extractable: bool, use: KeyUse = "seal"
    ) -> KeyRef:
        """Generate a sensitive AES-256 key limited to *use* (CKA_ALLOWED_MECHANISMS).

        A non-extractable key is a token object at once. An *extractable* key is never a
        token object: it is a volatile session object of this login, visible to this
        process only, until :meth:`set_non_extractable` stores a non-extractable token copy.
        If the process dies or the session closes first, the token drops it, so a crash
        never leaves an extractable key behind.

        Args:
            label: key name (``root``, ``data`` ...); the object label is ``label/vN``.
            version: key version.
            extractable: whether it may be wrapped out (once, for its backup blob).
            use: ``"seal"`` (AES-GCM encrypt/decrypt only) or ``"wrap"`` (RFC 5649 only).

        Returns:
            A reference with the key check value.

        Raises:
            KeyExists: that version is already on the token.
            HsmError: the token failed (a subclass says why).
        """
        attrs, mechs = _USES[use]
        with self._op(f"generate {object_label(label, version)}") as s:
            lbl = self._absent(s, label, version)
            template = {
                Attribute.TOKEN: not extractable,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: extractable,
                Attribute.MODIFIABLE: extractable,  # only to be copied, locked
                Attribute.ALLOWED_MECHANISMS: mechs,
                **attrs,
            }
            key = s.generate_key(
                KeyType.AES, 256, label=lbl, store=not extractable, template=template
            )
            return self._ref(key, label, version)

    def find_key(self, label: str, version: int) -> KeyRef:
        """Look up a key by label and version (a token key, or a volatile key of this login).

        Raises:
            KeyNotFound: it is not on the token.
            HsmError: the token failed.
        """
        with self._op(f"find {object_label(label, version)}") as s:
            return self._ref(self._secret(s, label, version), label, version)

    def list_keys(self, label: str | None = None) -> list[KeyRef]:
        """All versioned secret keys (optionally of one *label*), sorted; volatile keys of
        this login included.

        Raises:
            HsmError: the token failed.
        """
        with self._op("list keys") as s:
            out = []
            query = {Attribute.CLASS: ObjectClass.SECRET_KEY}
            for key in list(s.get_objects(query)):  # no C_Encrypt inside C_FindObjects
                m = _VERSIONED.match(key.label or "")
                if m and (label is None or m["label"] == label):
                    out.append(self._ref(key, m["label"], int(m["version"])))
            return sorted(out, key=lambda r: (r.label, r.version))

    def destroy_key(self, label: str, version: int) -> None:
        """Destroy a key (C_DestroyObject).

        Raises:
            KeyNotFound: it is not on the token.
            HsmError: the token failed.
        """
        with self._op(f"destroy {object_label(label, version)}") as s:
            self._secret(s, label, version).destroy()
            if self._login is not None:
                self._login.keys.pop(object_label(label, version), None)

    def set_non_extractable(self, label: str, version: int) -> None:
        """Lock a key: it can never be wrapped out again. Idempotent.

        A volatile key (see :meth:`generate_aes_key`) is copied to a token object with
        CKA_EXTRACTABLE false and CKA_MODIFIABLE false (C_CopyObject), and the session copy
        is destroyed. A token key made extractable by an older custody has CKA_EXTRACTABLE
        cleared (one-way, PKCS#11 v3.0 §4.4).

        Raises:
            KeyNotFound: it is not on the token.
            HsmError: the token refused.
        """
        lbl = object_label(label, version)
        with self._op(f"make {lbl} non-extractable") as s:
            key = self._secret(s, label, version)
            if not key[Attribute.TOKEN]:
                locked = key.copy(
                    {
                        Attribute.TOKEN: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.MODIFIABLE: False,
                    }
                )
                if self._login is not None:
                    self._login.keys[lbl] = locked
                key.destroy()
            elif key[Attribute.EXTRACTABLE]:  # SoftHSM: setting False twice is AttributeReadOnly
                key[Attribute.EXTRACTABLE] = False

    def seal_to_public(self, label: str, version: int, recipient_public: bytes) -> SealedKey:
        """Wrap a key for the holder of a P-256 private key, entirely inside the token.

        An ephemeral P-256 key pair is generated as session objects; CKM_ECDH1_DERIVE (null
        KDF) with *recipient_public* derives a session AES-256 key that is sensitive,
        non-extractable and limited to CKM_AES_KEY_WRAP_PAD; it wraps the key (RFC 5649).
        The blob is then unwrapped again inside the token and its KCV compared (a
        known-answer round trip). The ephemeral private key and the derived key are
        destroyed; only the ephemeral public point and the blob leave the token.

        Args:
            label, version: the key to wrap (it must be extractable).
            recipient_public: the recipient's X9.62 uncompressed P-256 point.

        Returns:
            The ephemeral public point, the blob and the key's KCV.

        Raises:
            IntegrityError: *recipient_public* is not a valid P-256 point, or the blob did
                not unwrap to the same key.
            KeyNotFound: no such key.
            KeyNotExtractable: the key is non-extractable.
            HsmError: the token failed (a subclass says why).
        """
        point = p256_point(recipient_public)
        lbl = object_label(label, version)
        with self._op(f"seal {lbl} to the recovery public key") as s:
            target = self._secret(s, label, version)
            kcv = self._kcv(target)
            pub, priv = generate_pair(s, None, "ecdsa-p256", Attribute.DERIVE, False)
            try:
                eph = ec_point(pub)
                k = priv.derive_key(
                    KeyType.AES,
                    256,
                    mechanism=Mechanism.ECDH1_DERIVE,
                    mechanism_param=(KDF.NULL, None, point),
                    store=False,
                    template={
                        Attribute.TOKEN: False,
                        Attribute.PRIVATE: True,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        **_NO_USE,
                        Attribute.WRAP: True,
                        Attribute.UNWRAP: True,
                        Attribute.ALLOWED_MECHANISMS: [KWP],
                    },
                )
                try:
                    wrapped = bytes(k.wrap_key(target, mechanism=KWP))
                    if self._kcv_of_blob(k, wrapped) != kcv:
                        raise IntegrityError(
                            f"The sealed blob of {lbl} does not unwrap to the same key",
                            "The token is faulty; do not rely on this blob.",
                        )
                finally:
                    with suppress(px.PKCS11Error):
                        k.destroy()
            finally:
                for obj in (priv, pub):
                    with suppress(px.PKCS11Error):
                        obj.destroy()
            return SealedKey(ephemeral_public=eph, wrapped=wrapped, kcv=kcv)

    def export_wrapped(self, label: str, version: int, wrapping_key: bytes) -> bytes:
        """Wrap a token key under raw AES key bytes (RK) with RFC 5649 (CKM_AES_KEY_WRAP_PAD).

        The wrapping key exists only as a session object for the duration of the call. The
        blob is unwrapped again inside the token and its KCV compared before it is returned
        (a known-answer round trip).

        Raises:
            ValueError: *wrapping_key* is not 16, 24 or 32 bytes.
            KeyNotFound: no such key.
            KeyNotExtractable: the key is non-extractable.
            IntegrityError: the blob did not unwrap to the same key.
            HsmError: the token failed.
        """
        _check_aes(wrapping_key)
        lbl = object_label(label, version)
        with self._op(f"wrap {lbl} for export") as s:
            target = self._secret(s, label, version)
            with self._temp_key(s, wrapping_key, KeyType.AES, wrap=True, unwrap=True) as wk:
                blob = bytes(wk.wrap_key(target, mechanism=KWP))
                if self._kcv_of_blob(wk, blob) != self._kcv(target):
                    raise IntegrityError(
                        f"The blob of {lbl} does not unwrap to the same key",
                        "The token is faulty; do not rely on this blob.",
                    )
                return blob

    def import_wrapped(
        self,
        label: str,
        version: int,
        wrapping_key: bytes,
        blob: bytes,
        *,
        use: KeyUse = "seal",
    ) -> KeyRef:
        """Unwrap an RFC 5649 *blob* under raw AES key bytes straight into a token key that
        is sensitive, non-extractable, non-modifiable and limited to *use*.

        Its KCV is taken first on an ECB-only session copy (:meth:`_kcv_of_blob`) and kept
        in CKA_ID, since SoftHSM 2.6.1 computes no CKA_CHECK_VALUE for unwrapped keys.

        Raises:
            ValueError: *wrapping_key* is not 16, 24 or 32 bytes.
            KeyExists: that version is already on the token.
            IntegrityError: the blob is not 40 bytes, or does not unwrap under this key.
            HsmError: the token failed.
        """
        _check_aes(wrapping_key)
        if len(blob) != WRAPPED_AES256_LEN:
            # SoftHSM reports CKA_VALUE_LEN=0 after C_UnwrapKey and refuses it in the
            # template, so the length is checked on the blob: RFC 5649 of 32 bytes is 40.
            raise IntegrityError(
                f"The blob for {object_label(label, version)} is not a wrapped AES-256 key",
                f"A wrapped root key is {WRAPPED_AES256_LEN} bytes; check the blob's source.",
            )
        attrs, mechs = _USES[use]
        with self._op(f"unwrap {object_label(label, version)}", integrity=True) as s:
            lbl = self._absent(s, label, version)
            with self._temp_key(s, wrapping_key, KeyType.AES, unwrap=True) as wk:
                kcv = self._kcv_of_blob(wk, blob)
                # SoftHSM refuses CKA_MODIFIABLE=false in an unwrap template, so the key
                # is unwrapped as a session object and copied to a locked token object.
                tmp = wk.unwrap_key(
                    ObjectClass.SECRET_KEY,
                    KeyType.AES,
                    blob,
                    label=lbl,
                    mechanism=KWP,
                    store=False,
                    template={
                        Attribute.TOKEN: False,
                        Attribute.PRIVATE: True,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.ID: KCV_ID_PREFIX + bytes.fromhex(kcv),
                        Attribute.ALLOWED_MECHANISMS: mechs,
                        **attrs,
                    },
                )
                try:
                    key = tmp.copy({Attribute.TOKEN: True, Attribute.MODIFIABLE: False})
                finally:
                    with suppress(px.PKCS11Error):
                        tmp.destroy()
            return self._ref(key, label, version)

    def encrypt(
        self, label: str, version: int, plaintext: bytes, aad: bytes
    ) -> tuple[bytes, bytes]:
        """AES-256-GCM under a token key with a fresh 12-byte nonce from the token's RNG.

        Returns:
            (nonce, ciphertext || 16-byte tag).

        Raises:
            KeyNotFound: no such key.
            HsmError: the token failed.
        """
        with self._op(f"encrypt with {object_label(label, version)}") as s:
            key = self._usable(self._secret(s, label, version), Attribute.ENCRYPT, label, version)
            nonce = bytes(s.generate_random(8 * GCM_NONCE_LEN))
            ct = key.encrypt(
                plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
            )
            return nonce, bytes(ct)

    def decrypt(
        self, label: str, version: int, nonce: bytes, ciphertext: bytes, aad: bytes
    ) -> bytes:
        """AES-256-GCM decryption under a token key.

        Raises:
            ValueError: the nonce is not 12 bytes.
            KeyNotFound: no such key.
            IntegrityError: the tag does not verify (data, aad, nonce or key differ).
            HsmError: the token failed.
        """
        if len(nonce) != GCM_NONCE_LEN:
            raise ValueError("the AES-GCM nonce must be 12 bytes")
        with self._op(f"decrypt with {object_label(label, version)}", integrity=True) as s:
            key = self._usable(self._secret(s, label, version), Attribute.DECRYPT, label, version)
            return bytes(
                key.decrypt(
                    ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
                )
            )

    def wrap_bytes(self, label: str, version: int, key_bytes: bytes) -> bytes:
        """RFC 5649 wrap of raw key bytes under a token key.

        SoftHSM refuses CKM_AES_KEY_WRAP_PAD in C_Encrypt, so the bytes become a temporary
        session generic-secret key that C_WrapKey wraps; the output is plain RFC 5649.
        SoftHSM 2.6.1 zero-pads the key to a multiple of 8 bytes *before* wrapping (so the
        blob's length indicator is wrong), hence only multiples of 8 bytes are accepted;
        every key custody wraps is 16 or 32 bytes.

        Raises:
            ValueError: *key_bytes* is empty or not a multiple of 8 bytes.
            KeyNotFound: no such key.
            HsmError: the token failed.
        """
        if not key_bytes or len(key_bytes) % 8:
            raise ValueError("key_bytes must be a non-empty multiple of 8 bytes")
        with self._op(f"wrap bytes under {object_label(label, version)}") as s:
            kek = self._usable(self._secret(s, label, version), Attribute.WRAP, label, version)
            return self._wrap_raw(s, kek, key_bytes)

    def _wrap_raw(self, s: Any, kek: Any, raw: bytes) -> bytes:
        with self._temp_key(s, raw, KeyType.GENERIC_SECRET, extractable=True) as tmp:
            return bytes(kek.wrap_key(tmp, mechanism=KWP))

    def unwrap_bytes(self, label: str, version: int, blob: bytes) -> bytes:
        """Undo :meth:`wrap_bytes`: RFC 5649 unwrap under a token key, return the bytes.

        SoftHSM 2.6.1's C_UnwrapKey keeps the RFC 5649 zero padding (a 20-byte key comes
        back as 24 bytes). A value that could carry padding (ending in a zero byte) is
        accepted only if it re-wraps to *blob* (RFC 5649 is deterministic), so a wrong
        length is refused rather than returned.

        Raises:
            KeyNotFound: no such key.
            IntegrityError: the blob fails the RFC 5649 integrity check, or holds a key
                whose length the token cannot reproduce exactly.
            HsmError: the token failed.
        """
        with self._op(f"unwrap bytes under {object_label(label, version)}", integrity=True) as s:
            kek = self._usable(self._secret(s, label, version), Attribute.UNWRAP, label, version)
            tmp = kek.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.GENERIC_SECRET,
                blob,
                mechanism=KWP,
                store=False,
                template={
                    Attribute.TOKEN: False,
                    Attribute.SENSITIVE: False,
                    Attribute.EXTRACTABLE: True,
                },
            )
            try:
                value = bytes(tmp[Attribute.VALUE])
            finally:
                tmp.destroy()
            # A trailing zero could be RFC 5649 padding that the token kept; a genuine
            # value re-wraps to the same blob (RFC 5649 is deterministic).
            maybe_padded = len(value) % 8 == 0 and value[-1:] == b"\0"
            if maybe_padded and not hmac.compare_digest(self._wrap_raw(s, kek, value), blob):
                raise IntegrityError(
                    f"The token cannot unwrap this blob under {object_label(label, version)}"
                    " to its exact length",
                    "Its key is not a multiple of 8 bytes, which SoftHSM 2.6 mishandles; "
                    "unwrap it with another RFC 5649 implementation.",
                )
            return value

    # --- selftest ---------------------------------------------------------------------
    def selftest(self) -> SelftestReport:
        """Report the mechanisms custody uses and run functional checks on session objects
        only (nothing is left on the token).

        Raises:
            SessionClosed: the adapter is closed.
        """
        from custody.hsm.pkcs11 import selftest as pkcs11_selftest

        with self._op("run the selftest") as s:
            try:
                alg = self.signing_algorithm()
            except MechanismUnsupported:
                alg = ""
            checks, errors = pkcs11_selftest.run_checks(s, alg)
        return SelftestReport(
            token=self.info(),
            mechanisms={m: m in self._mechs for m in SELFTEST_MECHANISMS},
            checks=checks,
            errors=errors,
            signing_algorithm=alg,
        )


def _check_aes(raw: bytes) -> None:
    if len(raw) not in (16, 24, 32):
        raise ValueError("a wrapping key must be 16, 24 or 32 bytes of AES key")


__all__ = ["Pkcs11Hsm", "open_hsm"]
