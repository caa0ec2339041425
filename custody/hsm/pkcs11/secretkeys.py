"""Custody's AES secret keys on the token: their templates, lookup, KCVs and lifecycle.

A mixin of :class:`custody.hsm.pkcs11.adapter.Pkcs11Hsm` (generate, find, list, destroy,
lock), and the object helpers the wrapping operations build on (:mod:`.wrapping`): the
handle cache, the key check value, usage checks and short-lived session keys. It is one of
the ``custody.hsm.pkcs11`` modules, the only ones that import ``pkcs11``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as px

from custody.errors import HsmError, KeyNotFound, MechanismUnsupported
from custody.hsm import KCV_LEN, KEK_SEAL_CBC_HMAC, KeyExists, KeyRef, KeyUse, object_label
from custody.hsm.pkcs11 import sealing
from custody.hsm.pkcs11.module import SharedLogin

KWP = Mechanism.AES_KEY_WRAP_PAD  # RFC 5649
_VERSIONED = re.compile(r"^(?P<label>.+)/v(?P<version>[0-9]+)$")
LABEL_ID_LEN = 16


def label_id(label: str) -> bytes:
    """A CKA_ID derived from a token key's label: the first 16 bytes of SHA-256(label).
    NSS softokn treats a new token key of the same class and CKA_ID as an existing one and
    overwrites its label, so keys found by label (MAC keys, key-held counters) each carry
    an id of their own."""
    return hashlib.sha256(label.encode()).digest()[:LABEL_ID_LEN]


NO_USE = {
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
# On a token that seals with the AES-CBC-PAD + HMAC fallback, a "seal" key only unwraps
# the two session keys of a blob and takes its KCV, both by AES-ECB (SEAL_FALLBACK,
# custody.hsm.pkcs11.sealing).
# No custody key allows AES-ECB: a KCV is CKA_CHECK_VALUE, or computed at import on a
# short-lived ECB-only session copy (see _kcv_of_blob).
USES: dict[str, tuple[dict[Attribute, bool], list[Mechanism]]] = {
    "seal": (
        {**NO_USE, Attribute.ENCRYPT: True, Attribute.DECRYPT: True},
        [Mechanism.AES_GCM],
    ),
    "wrap": ({**NO_USE, Attribute.WRAP: True, Attribute.UNWRAP: True}, [KWP]),
}
SEAL_FALLBACK = (
    {**NO_USE, Attribute.UNWRAP: True, Attribute.ENCRYPT: True},
    sealing.SEAL_KEY_MECHANISMS,
)
KCV_ID_PREFIX = b"kcv:"  # CKA_ID of an unwrapped key: the KCV the token computed at import


class SecretKeyMixin:
    """AES secret-key operations; the adapter supplies the session, lock and login."""

    _login: SharedLogin | None
    _op: Callable[..., AbstractContextManager[Any]]
    _profile: Callable[[Any], Any]  # the adapter's known-answer profile (probe.TokenProfile)

    def _allowed(self, s: Any, mechs: list[Mechanism]) -> dict[Attribute, Any]:
        """CKA_ALLOWED_MECHANISMS for a template, on a token that enforces it. NSS softokn
        3.87 ignores the attribute and fails to store it on a token object
        (CKR_GENERAL_ERROR), so it is left out where the known-answer test found it not
        enforced."""
        return {Attribute.ALLOWED_MECHANISMS: mechs} if self._profile(s).allowed_enforced else {}

    def _use(self, s: Any, use: KeyUse) -> tuple[dict[Attribute, bool], list[Mechanism]]:
        """The usage flags and allowed mechanisms of a new key for *use* on this token."""
        if use == "seal" and self._profile(s).seal == KEK_SEAL_CBC_HMAC:
            return SEAL_FALLBACK
        return USES[use]

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
        # CKA_PRIVATE: custody makes every key private (only the logged-in user can create
        # one); a public object under a live label, planted without the PIN, is not it.
        objs = list(
            s.get_objects(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.LABEL: lbl,
                    Attribute.PRIVATE: True,
                }
            )
        )
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

    def _kcv_of_blob(self, s: Any, wrapping_key: Any, blob: bytes, mech: Mechanism) -> str:
        """Known-answer check of a wrapped *blob* (raw, unwrapped with *mech*): unwrap it
        inside the token into a session key that can do nothing but AES-ECB (sensitive,
        non-extractable), take its KCV, destroy it. Nothing of the key reaches the host but
        the 3-byte KCV."""
        probe = wrapping_key.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.AES,
            blob,
            mechanism=mech,
            store=False,
            template={
                Attribute.TOKEN: False,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                **NO_USE,
                Attribute.ENCRYPT: True,
                **self._allowed(s, [Mechanism.AES_ECB]),
            },
        )
        try:
            return bytes(probe.encrypt(bytes(16), mechanism=Mechanism.AES_ECB))[:KCV_LEN].hex()
        finally:
            with suppress(px.PKCS11Error):
                probe.destroy()

    @contextmanager
    def _temp_key(
        self,
        s: Any,
        raw: bytes,
        key_type: KeyType,
        mechs: tuple[Mechanism, ...] = (KWP,),
        **use: bool,
    ) -> Iterator[Any]:
        """A session (non-token) secret key holding *raw*, destroyed on exit. A wrapping
        key (*wrap* or *unwrap*) is limited to *mechs* (on a token that enforces it)."""
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
            template.update(self._allowed(s, list(mechs)))
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
            use: ``"seal"`` (AES-GCM encrypt/decrypt only; on a token that seals with the
                fallback, AES-ECB unwrap and KCV only) or ``"wrap"`` (RFC 5649 only).

        Returns:
            A reference with the key check value.

        Raises:
            KeyExists: that version is already on the token.
            HsmError: the token failed (a subclass says why).
        """
        with self._op(f"generate {object_label(label, version)}") as s:
            attrs, mechs = self._use(s, use)
            lbl = self._absent(s, label, version)
            template = {
                Attribute.TOKEN: not extractable,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: extractable,
                Attribute.MODIFIABLE: extractable,  # only to be copied, locked
                **self._allowed(s, mechs),
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
            query = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.PRIVATE: True}
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
