"""Token-held key pairs: signing (Ed25519 or ECDSA P-256) and ECDH P-256.

This module owns the PKCS#11 templates and mechanisms of custody's asymmetric token keys,
as a mixin of :class:`custody.hsm.pkcs11.adapter.Pkcs11Hsm`. It is one of the
``custody.hsm.pkcs11`` modules, the only ones that import ``pkcs11``.

- Ed25519 is CKM_EC_EDWARDS_KEY_PAIR_GEN with the RFC 8410 OID in CKA_EC_PARAMS, signed
  with CKM_EDDSA (PKCS#11 v3.0 §2.3.14). Its CKA_EC_POINT is a DER OCTET STRING wrapping
  the 32 raw public key bytes.
- Without EdDSA, signing uses P-256 with CKM_ECDSA over a SHA-256 digest computed in
  process (SoftHSM has no CKM_ECDSA_SHA256). Signatures are raw r||s (64 bytes).
- ECDH is CKM_ECDH1_DERIVE with the null KDF into a session generic secret, whose value
  is read and destroyed; the peer point is validated in process first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from pkcs11 import KDF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from custody.errors import HsmError, IntegrityError, KeyNotFound, MechanismUnsupported

ED25519_OID = "1.3.101.112"  # RFC 8410
P256_OID = "1.2.840.10045.3.1.7"  # secp256r1, RFC 5480
SIGNING_ALGORITHMS = ("ed25519", "ecdsa-p256")
SIGN_MECHS = {
    "ed25519": (Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA),
    "ecdsa-p256": (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
}


class KeyPairMixin:
    """Signing and ECDH operations; the adapter supplies the session, lock and facts."""

    _mechs: frozenset[str]
    _signing_algorithms: tuple[str, ...]
    _op: Callable[..., AbstractContextManager[Any]]

    def _pair(self, s: Any, label: str, use: Attribute) -> tuple[Any, Any] | None:
        def one(cls: ObjectClass, attrs: dict[Attribute, bool]) -> Any:
            objs = list(
                s.get_objects(
                    {Attribute.CLASS: cls, Attribute.LABEL: label, Attribute.TOKEN: True, **attrs}
                )
            )
            if len(objs) > 1:
                raise HsmError(f"Several key pairs are labelled {label!r}", "Remove the duplicate.")
            return objs[0] if objs else None

        # a private key custody made is CKA_PRIVATE: one planted without the PIN (a R/W
        # public session may create a public CKO_PRIVATE_KEY of known value) is never used
        priv = one(ObjectClass.PRIVATE_KEY, {use: True, Attribute.PRIVATE: True})
        pub = one(ObjectClass.PUBLIC_KEY, {Attribute.VERIFY: use == Attribute.SIGN})
        if priv is None or pub is None:
            return None
        return pub, priv

    def signing_algorithm(self, algorithms: tuple[str, ...] | None = None) -> str:
        """The algorithm a new signing key gets on this token: the first of *algorithms*
        (default: the adapter's preference, ``ed25519`` then ``ecdsa-p256``) it offers.

        Raises:
            MechanismUnsupported: the token offers none of them.
        """
        algorithms = algorithms or self._signing_algorithms
        for alg in algorithms:
            if all(m.name in self._mechs for m in SIGN_MECHS[alg]):
                return alg
        names = " nor ".join("CKM_" + SIGN_MECHS[a][1].name for a in algorithms)
        raise MechanismUnsupported(
            f"The token offers no {names}"
            if len(algorithms) == 1
            else f"The token offers neither {names}",
            "Nothing was created. This key must be "
            + " or ".join(algorithms)
            + "; use a token that offers it, or a passphrase-protected key.",
        )

    def ensure_signing_key(
        self, label: str, algorithms: tuple[str, ...] | None = None
    ) -> tuple[str, bytes]:
        """Create the signing key pair *label* if absent (Ed25519 if offered, else P-256).

        Args:
            label: the key pair's label.
            algorithms: the only algorithms the caller can verify (default: the adapter's
                preference). A token offering none of them is refused before anything is
                created, and an existing key of another algorithm is refused too: no
                silent fallback to a key whose signatures nobody checks.

        Returns:
            (algorithm, public key): ``("ed25519", raw 32 bytes)`` or
            ``("ecdsa-p256", X9.62 uncompressed point)``.

        Raises:
            MechanismUnsupported: the token offers none of *algorithms*, or *label* exists
                with another algorithm.
            HsmError: the token failed.
        """
        allowed = algorithms or self._signing_algorithms
        with self._op(f"create signing key {label!r}") as s:
            pair = self._pair(s, label, Attribute.SIGN)
            if pair is None:
                alg = self.signing_algorithm(allowed)
                pair = generate_pair(s, label, alg, Attribute.SIGN, True)
            alg = alg_of(pair[0])
            if alg not in allowed:
                raise MechanismUnsupported(
                    f"Signing key {label!r} on the token is {alg}, not {' or '.join(allowed)}",
                    "Its signatures could not be verified; remove it, or use another label.",
                )
            return alg, ec_point(pair[0])

    def _signer(self, s: Any, label: str) -> tuple[Any, Any]:
        pair = self._pair(s, label, Attribute.SIGN)
        if pair is None:
            raise KeyNotFound(f"No signing key {label!r} on the token", "Create it first.")
        return pair

    def sign(self, label: str, data: bytes) -> bytes:
        """Sign *data*: Ed25519 (CKM_EDDSA) or ECDSA P-256 over SHA-256(data) (raw r||s).

        Raises:
            KeyNotFound: no such signing key.
            HsmError: the token failed.
        """
        with self._op(f"sign with {label!r}") as s:
            pub, priv = self._signer(s, label)
            return bytes(sign_with(priv, alg_of(pub), data))

    def verify(self, label: str, data: bytes, signature: bytes) -> None:
        """Verify a signature made by :meth:`sign` with the token's public key.

        Raises:
            KeyNotFound: no such signing key.
            IntegrityError: the signature does not verify.
            HsmError: the token failed.
        """
        with self._op(f"verify with {label!r}", integrity=True) as s:
            pub, _ = self._signer(s, label)
            if not verify_with(pub, alg_of(pub), data, signature):
                raise IntegrityError(
                    f"Bad signature for key {label!r}", "The data or the signature was altered."
                )

    def ensure_ecdh_key(self, label: str) -> bytes:
        """Create a P-256 key pair with CKA_DERIVE if absent; return its X9.62 public point.

        Raises:
            MechanismUnsupported: the token lacks EC_KEY_PAIR_GEN.
            HsmError: the token failed.
        """
        with self._op(f"create ECDH key {label!r}") as s:
            pair = self._pair(s, label, Attribute.DERIVE)
            if pair is None:
                pair = generate_pair(s, label, "ecdsa-p256", Attribute.DERIVE, True)
            return ec_point(pair[0])

    def ecdh_derive(self, label: str, peer_public: bytes) -> bytes:
        """CKM_ECDH1_DERIVE (null KDF) of the token key with *peer_public*.

        The peer point is checked to be on P-256 first (no invalid-curve input reaches the
        token).

        Returns:
            The 32-byte shared secret (the x coordinate), for the caller's HKDF.

        Raises:
            IntegrityError: *peer_public* is not a valid P-256 point.
            KeyNotFound: no ECDH key *label*.
            HsmError: the token failed.
        """
        point = p256_point(peer_public)
        with self._op(f"derive with ECDH key {label!r}") as s:
            pair = self._pair(s, label, Attribute.DERIVE)
            if pair is None:
                raise KeyNotFound(f"No ECDH key {label!r} on the token", "Create it first.")
            return ecdh_secret(pair[1], point)


# --- helpers shared with the selftest -------------------------------------------------
def generate_pair(s: Any, label: str | None, alg: str, use: Attribute, store: bool) -> Any:
    """Generate a key pair (*store*: token objects, else session objects); (pub, priv)."""
    curve = ED25519_OID if alg == "ed25519" else P256_OID
    pub_t = {
        Attribute.EC_PARAMS: encode_named_curve_parameters(curve),
        Attribute.TOKEN: store,
        Attribute.VERIFY: use == Attribute.SIGN,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
        Attribute.DERIVE: False,
    }
    priv_t = {
        Attribute.TOKEN: store,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: use == Attribute.SIGN,
        Attribute.DERIVE: use == Attribute.DERIVE,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
    }
    key_type, mech = (
        (KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN)
        if alg == "ed25519"
        else (KeyType.EC, Mechanism.EC_KEY_PAIR_GEN)
    )
    kw = {"label": label} if label else {}
    return s.generate_keypair(
        key_type, mechanism=mech, store=store, public_template=pub_t, private_template=priv_t, **kw
    )


def ec_point(pub: Any) -> bytes:
    """CKA_EC_POINT without its DER OCTET STRING wrapper (PKCS#11 v3.0 §2.3.3)."""
    b = bytes(pub[Attribute.EC_POINT])
    if len(b) >= 2 and b[0] == 0x04 and b[1] < 0x80 and b[1] == len(b) - 2:
        return b[2:]
    if len(b) >= 3 and b[0] == 0x04 and b[1] == 0x81 and b[2] == len(b) - 3:
        return b[3:]
    return b


def alg_of(pub: Any) -> str:
    return "ed25519" if pub[Attribute.KEY_TYPE] == KeyType.EC_EDWARDS else "ecdsa-p256"


def sign_with(priv: Any, alg: str, data: bytes) -> bytes:
    if alg == "ed25519":
        return bytes(priv.sign(data, mechanism=Mechanism.EDDSA))
    return bytes(priv.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA))


def verify_with(pub: Any, alg: str, data: bytes, signature: bytes) -> bool:
    if alg == "ed25519":
        return bool(pub.verify(data, signature, mechanism=Mechanism.EDDSA))
    return bool(pub.verify(hashlib.sha256(data).digest(), signature, mechanism=Mechanism.ECDSA))


def p256_point(peer_public: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer_public)
    except (ValueError, TypeError) as exc:
        raise IntegrityError(
            "The peer public key is not a valid P-256 point", "Ask the peer to send it again."
        ) from exc
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def ecdh_secret(priv: Any, point: bytes) -> bytes:
    secret = priv.derive_key(
        KeyType.GENERIC_SECRET,
        256,
        mechanism=Mechanism.ECDH1_DERIVE,
        mechanism_param=(KDF.NULL, None, point),
        store=False,
        template={Attribute.TOKEN: False, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
    )
    try:
        return bytes(secret[Attribute.VALUE])
    finally:
        secret.destroy()
