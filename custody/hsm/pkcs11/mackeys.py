"""Token-held MAC keys: HMAC-SHA256 under a generic secret key that never leaves the token.

A mixin of :class:`custody.hsm.pkcs11.adapter.Pkcs11Hsm`. The audit log seals its chain
head with such a key (:class:`custody.audit.signers.HsmSealer`), so that someone who can
write ``audit.db`` but does not hold the token cannot recompute a valid seal. The key is a
CKK_GENERIC_SECRET of 256 bits, sensitive, non-extractable and non-modifiable, whose only
use is CKM_SHA256_HMAC (CKA_SIGN/CKA_VERIFY, and CKA_ALLOWED_MECHANISMS where the token can
store it on a token object: NSS softokn cannot, and fails the whole generation with
CKR_GENERAL_ERROR, so the attribute is set only where the adapter's probe found it
enforced, as for the AES keys). Its CKA_ID is the first 16 bytes of SHA-256(label): NSS
treats a new token key of the same class and CKA_ID as an existing one and overwrites its
label, so two MAC keys with the same (empty) id would become one. It is found by label,
key type and CKA_PRIVATE true: any process that loads the module may create a public token
key without the PIN (a R/W public session), and a public HMAC key of known value under the
seal key's label was otherwise used by ``custody access seal``, after which whoever planted
it could re-seal any row. Label and key type keep it apart from custody's versioned AES
keys. One of the ``custody.hsm.pkcs11`` modules, the only ones that import ``pkcs11``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from custody.errors import HsmError, KeyNotFound
from custody.hsm.pkcs11.secretkeys import NO_USE, label_id

HMAC = Mechanism.SHA256_HMAC
MAC_KEY_BITS = 256


class MacKeyMixin:
    """HMAC-SHA256 keys on the token; the adapter supplies the session and the lock."""

    _op: Callable[..., AbstractContextManager[Any]]
    _allowed: Callable[[Any, list[Mechanism]], dict[Attribute, Any]]

    @staticmethod
    def _mac_key(s: Any, label: str) -> Any | None:
        objs = list(
            s.get_objects(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                    Attribute.LABEL: label,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                }
            )
        )
        if len(objs) > 1:
            raise HsmError(f"Several MAC keys are labelled {label!r}", "Remove the duplicate.")
        return objs[0] if objs else None

    def ensure_mac_key(self, label: str) -> None:
        """Create the HMAC-SHA256 key *label* on the token if absent.

        Raises:
            HsmError: the token failed (a subclass says why).
        """
        with self._op(f"create MAC key {label!r}") as s:
            if self._mac_key(s, label) is None:
                s.generate_key(
                    KeyType.GENERIC_SECRET,
                    MAC_KEY_BITS,
                    label=label,
                    id=label_id(label),
                    store=True,
                    template={
                        Attribute.TOKEN: True,
                        Attribute.PRIVATE: True,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.MODIFIABLE: False,
                        **NO_USE,
                        Attribute.SIGN: True,
                        Attribute.VERIFY: True,
                        **self._allowed(s, [HMAC]),
                    },
                )

    def mac(self, label: str, data: bytes) -> bytes:
        """HMAC-SHA256 of *data* under the token key *label* (32 bytes).

        Raises:
            KeyNotFound: no such MAC key (create it with :meth:`ensure_mac_key`).
            HsmError: the token failed.
        """
        with self._op(f"MAC with {label!r}") as s:
            key = self._mac_key(s, label)
            if key is None:
                raise KeyNotFound(
                    f"No MAC key {label!r} on the token",
                    "Create it with 'custody audit checkpoint --seal' on this token.",
                )
            return bytes(key.sign(data, mechanism=HMAC))
