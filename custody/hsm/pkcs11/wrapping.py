"""Wrapping and sealing under token keys: AES-GCM, key-wrap export/import (the token's
RFC 5649 or RFC 3394, chosen by :mod:`custody.hsm.pkcs11.probe`), sealing to a recovery
public key, and RFC 5649 of raw key bytes.

- On NSS softokn, python-pkcs11 0.10.1 cannot make a GCM encryption or a
  CKM_AES_KEY_WRAP_KWP wrap (the module under-reports the output length); those calls go
  through :mod:`custody.hsm.pkcs11.raw` when that exact error comes back.

A mixin of :class:`custody.hsm.pkcs11.adapter.Pkcs11Hsm`, built on the secret-key helpers
of :mod:`custody.hsm.pkcs11.secretkeys`. It is one of the ``custody.hsm.pkcs11`` modules,
the only ones that import ``pkcs11``.

- SoftHSM rejects CKM_AES_KEY_WRAP_PAD in C_Encrypt (CKR_MECHANISM_INVALID).
  ``wrap_bytes`` therefore loads the bytes as a temporary session generic-secret key and
  uses C_WrapKey / C_UnwrapKey; the output is plain RFC 5649.
- SoftHSM answers a bad GCM tag or a bad KWP blob with CKR_GENERAL_ERROR; operations that
  authenticate input translate that to IntegrityError (:mod:`custody.hsm.pkcs11.errors`).
"""

from __future__ import annotations

import hmac
from contextlib import suppress
from typing import Any

from pkcs11 import KDF, Attribute, GCMParams, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as px

from custody.config import HsmConfig
from custody.errors import HsmError, IntegrityError, MechanismUnsupported
from custody.hsm import (
    KEK_SEAL_GCM,
    KekSealMismatch,
    KeyRef,
    KeyUse,
    SealedKey,
    decode_wrapped,
    encode_wrapped,
    object_label,
)
from custody.hsm.pkcs11 import raw, sealing
from custody.hsm.pkcs11.keypairs import ec_point, generate_pair, p256_point
from custody.hsm.pkcs11.probe import WrapChoice, buffer_too_small, wrap_with
from custody.hsm.pkcs11.secretkeys import KCV_ID_PREFIX, KWP, NO_USE, SecretKeyMixin

GCM_NONCE_LEN = 12
WRAPPED_AES256_LEN = 40  # RFC 5649: 8-byte AIV block + 32 bytes


class WrappingMixin(SecretKeyMixin):
    """Encrypt/decrypt, wrap/unwrap and sealing operations under token keys."""

    _slot_id: int
    _gcm_raw_slots: set[int]  # the module's slots whose GCM encrypt needs raw.py
    _config: HsmConfig
    _token_label: str

    # --- sealing under a seal key: AES-GCM, or the CBC-PAD + HMAC fallback -------------
    def _seal_mode(self, s: Any) -> str:
        """The token's way of sealing, checked against the home's record (None: a home
        from before the record, which was always AES-GCM)."""
        prof = self._profile(s)
        if prof.seal is None:
            raise MechanismUnsupported(
                f"Token {self._token_label!r} can seal neither with AES-GCM nor with "
                "AES-CBC-PAD + HMAC-SHA256",
                "'custody hsm selftest' shows the aes_gcm and cbc_hmac checks.",
            )
        recorded = self._config.kek_seal or KEK_SEAL_GCM
        mode: str = prof.seal
        if recorded != mode:
            raise KekSealMismatch(
                f"This home records KEK sealing {recorded!r}, but token "
                f"{self._token_label!r} seals with {mode!r}",
                "Nothing was sealed or opened. The record ([hsm] kek_seal in custody.toml) "
                "is set when the home is made, from the token's known-answer test; an edited "
                "record or a token of another kind is refused, so that sealing is never "
                "switched silently. Restore custody.toml, or use the kind of token the home "
                "was made on (docs/keys.md, 'Sealing KEKs under the root').",
            )
        return mode

    def kek_seal(self) -> str:
        """How this token seals (``aes-gcm`` or ``aes-cbc-hmac``), by the known-answer
        test, checked against the home's record.

        Raises:
            MechanismUnsupported: neither works on this token.
            IntegrityError: the home records the other one.
        """
        with self._op("choose how to seal") as s:
            return self._seal_mode(s)

    def seal(self, label: str, version: int, plaintext: bytes, aad: bytes) -> bytes:
        """Seal under the token key ``label/vN`` (see :meth:`custody.hsm.Hsm.seal`).

        Raises:
            MechanismUnsupported, IntegrityError: see :meth:`kek_seal`.
            KeyNotFound: no such key.
            HsmError: the token failed.
        """
        lbl = object_label(label, version)
        with self._op(f"seal under {lbl}") as s:
            mode = self._seal_mode(s)
            if mode != KEK_SEAL_GCM:
                key = self._usable(
                    self._secret(s, label, version), Attribute.UNWRAP, label, version
                )
                try:
                    return sealing.seal(
                        s, key, plaintext, aad, enforced=self._profile(s).allowed_enforced
                    )
                except sealing.TagMismatch as exc:
                    raise HsmError(f"The token failed to seal under {lbl}", str(exc)) from exc
        nonce, ct = self.encrypt(label, version, plaintext, aad)
        return nonce + ct

    def unseal(self, label: str, version: int, sealed: bytes, aad: bytes) -> bytes:
        """Open what :meth:`seal` made, the home's way only (no downgrade).

        Raises:
            IntegrityError: the blob, *aad* or the key differ, or the blob is not of the
                home's way; or the home's record differs from the token.
            KeyNotFound: no such key.
            HsmError: the token failed.
        """
        lbl = object_label(label, version)
        with self._op(f"open sealed data under {lbl}", integrity=True) as s:
            mode = self._seal_mode(s)
            if mode != KEK_SEAL_GCM:
                key = self._usable(
                    self._secret(s, label, version), Attribute.UNWRAP, label, version
                )
                try:
                    return sealing.unseal(
                        s, key, sealed, aad, enforced=self._profile(s).allowed_enforced
                    )
                except sealing.TagMismatch as exc:
                    raise IntegrityError(
                        f"The data sealed under {lbl} does not verify ({exc})",
                        f"Nothing was opened. This home seals with {mode}; the blob was "
                        "changed, or sealed under another key, for another purpose or another "
                        "way.",
                    ) from exc
        if len(sealed) < GCM_NONCE_LEN + 16:
            raise IntegrityError(
                f"The data sealed under {lbl} is too short for AES-GCM",
                "Nothing was opened; the stored blob is damaged.",
            )
        return self.decrypt(label, version, sealed[:GCM_NONCE_LEN], sealed[GCM_NONCE_LEN:], aad)

    def seal_to_public(self, label: str, version: int, recipient_public: bytes) -> SealedKey:
        """Wrap a key for the holder of a P-256 private key, entirely inside the token.

        An ephemeral P-256 key pair is generated as session objects; CKM_ECDH1_DERIVE (null
        KDF) with *recipient_public* derives a session AES-256 key that is sensitive,
        non-extractable and limited to key wrap; it wraps the key with the token's key wrap
        (RFC 5649, else RFC 3394; the blob records which).
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
            choice, unwrap_mech = self._wrap_choice(s)
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
                        **NO_USE,
                        Attribute.WRAP: True,
                        Attribute.UNWRAP: True,
                        **self._allowed(s, sorted({choice.mechanism, unwrap_mech})),
                    },
                )
                try:
                    wrapped = wrap_with(s, self._slot_id, choice, k, target, 32)
                    if self._kcv_of_blob(s, k, wrapped, unwrap_mech) != kcv:
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
            return SealedKey(
                ephemeral_public=eph, wrapped=encode_wrapped(choice.fmt, wrapped), kcv=kcv
            )

    def _wrap_choice(self, s: Any) -> tuple[WrapChoice, Mechanism]:
        """The key wrap for new blobs on this token and the mechanism that opens them."""
        prof = self._profile(s)
        if prof.wrap is None or prof.wrap.fmt not in prof.unwrap:
            raise MechanismUnsupported(
                "The token has no AES key wrap that passed the known-answer test",
                "custody needs RFC 5649 or RFC 3394 key wrap; 'custody hsm selftest' shows "
                "what failed.",
            )
        return prof.wrap, prof.unwrap[prof.wrap.fmt]

    def _unwrap_mech(self, s: Any, fmt: str) -> Mechanism:
        mech: Mechanism | None = self._profile(s).unwrap.get(fmt)
        if mech is None:
            raise MechanismUnsupported(
                f"The token cannot open {fmt} key-wrap blobs",
                "Its unwrap mechanisms failed the known-answer test; use a token that "
                "unwraps this format ('custody hsm selftest').",
            )
        return mech

    def check_wrapped(self, wrapping_key: bytes, blob: bytes) -> str:
        """Open a stored wrapped-key *blob* (either format, :func:`custody.hsm.decode_wrapped`)
        under *wrapping_key* into a short-lived ECB-only session object, and return its KCV.
        Nothing is stored on the token.

        Raises:
            ValueError: *wrapping_key* is not 16, 24 or 32 bytes.
            MechanismUnsupported: the token cannot unwrap that format.
            IntegrityError: the blob does not open under the key.
            HsmError: the token failed.
        """
        _check_aes(wrapping_key)
        fmt, body = decode_wrapped(blob)
        with self._op("open a wrapped key to check it", integrity=True) as s:
            mech = self._unwrap_mech(s, fmt)
            with self._temp_key(s, wrapping_key, KeyType.AES, (mech,), unwrap=True) as wk:
                return self._kcv_of_blob(s, wk, body, mech)

    def export_wrapped(self, label: str, version: int, wrapping_key: bytes) -> bytes:
        """Wrap a token key under raw AES key bytes (RK) with the token's key wrap (RFC 5649,
        else RFC 3394, chosen by the known-answer test; the blob records which, see
        :func:`custody.hsm.encode_wrapped`).

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
            choice, unwrap_mech = self._wrap_choice(s)
            target = self._secret(s, label, version)
            mechs = tuple(sorted({choice.mechanism, unwrap_mech}))
            with self._temp_key(s, wrapping_key, KeyType.AES, mechs, wrap=True, unwrap=True) as wk:
                blob = wrap_with(s, self._slot_id, choice, wk, target, 32)
                if self._kcv_of_blob(s, wk, blob, unwrap_mech) != self._kcv(target):
                    raise IntegrityError(
                        f"The blob of {lbl} does not unwrap to the same key",
                        "The token is faulty; do not rely on this blob.",
                    )
                return encode_wrapped(choice.fmt, blob)

    def import_wrapped(
        self,
        label: str,
        version: int,
        wrapping_key: bytes,
        blob: bytes,
        *,
        use: KeyUse = "seal",
    ) -> KeyRef:
        """Unwrap a stored *blob* (RFC 5649, or tagged RFC 3394) under raw AES key bytes
        straight into a token key that is sensitive, non-extractable, non-modifiable and
        limited to *use*.

        Its KCV is taken first on an ECB-only session copy (:meth:`_kcv_of_blob`) and kept
        in CKA_ID, since SoftHSM 2.6.1 computes no CKA_CHECK_VALUE for unwrapped keys.

        Raises:
            ValueError: *wrapping_key* is not 16, 24 or 32 bytes.
            KeyExists: that version is already on the token.
            IntegrityError: the blob is not 40 bytes, or does not unwrap under this key.
            HsmError: the token failed.
        """
        _check_aes(wrapping_key)
        fmt, blob = decode_wrapped(blob)
        if len(blob) != WRAPPED_AES256_LEN:
            # SoftHSM reports CKA_VALUE_LEN=0 after C_UnwrapKey and refuses it in the
            # template, so the length is checked on the blob: RFC 5649 of 32 bytes is 40.
            raise IntegrityError(
                f"The blob for {object_label(label, version)} is not a wrapped AES-256 key",
                f"A wrapped root key is {WRAPPED_AES256_LEN} bytes; check the blob's source.",
            )
        with self._op(f"unwrap {object_label(label, version)}", integrity=True) as s:
            attrs, mechs = self._use(s, use)
            lbl = self._absent(s, label, version)
            mech = self._unwrap_mech(s, fmt)
            with self._temp_key(s, wrapping_key, KeyType.AES, (mech,), unwrap=True) as wk:
                kcv = self._kcv_of_blob(s, wk, blob, mech)
                # SoftHSM refuses CKA_MODIFIABLE=false in an unwrap template, so the key
                # is unwrapped as a session object and copied to a locked token object.
                tmp = wk.unwrap_key(
                    ObjectClass.SECRET_KEY,
                    KeyType.AES,
                    blob,
                    label=lbl,
                    mechanism=mech,
                    store=False,
                    template={
                        Attribute.TOKEN: False,
                        Attribute.PRIVATE: True,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.ID: KCV_ID_PREFIX + bytes.fromhex(kcv),
                        **self._allowed(s, mechs),
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
            if self._slot_id not in self._gcm_raw_slots:
                try:
                    ct = key.encrypt(
                        plaintext,
                        mechanism=Mechanism.AES_GCM,
                        mechanism_param=GCMParams(nonce, aad),
                    )
                    return nonce, bytes(ct)
                except px.PKCS11Error as exc:
                    if not buffer_too_small(exc):
                        raise
                    self._gcm_raw_slots.add(self._slot_id)  # see custody.hsm.pkcs11.raw
            try:
                return nonce, raw.gcm_encrypt(s, self._slot_id, key.handle, nonce, aad, plaintext)
            except raw.RawCallError as exc:
                raise HsmError(
                    f"The token failed to encrypt with {object_label(label, version)} "
                    f"(CKR 0x{exc.rv:x})",
                    "See the token's logs; 'custody hsm selftest' checks AES-GCM.",
                ) from exc

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


def _check_aes(raw: bytes) -> None:
    if len(raw) not in (16, 24, 32):
        raise ValueError("a wrapping key must be 16, 24 or 32 bytes of AES key")
