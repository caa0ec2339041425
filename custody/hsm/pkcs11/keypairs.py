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

import contextlib
import hashlib
import hmac
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from pkcs11 import KDF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as px
from pkcs11.util.ec import encode_named_curve_parameters

from custody.errors import HsmError, IntegrityError, KeyNotFound, MechanismUnsupported

ED25519_OID = "1.3.101.112"  # RFC 8410
P256_OID = "1.2.840.10045.3.1.7"  # secp256r1, RFC 5480
SIGNING_ALGORITHMS = ("ed25519", "ecdsa-p256")
SIGN_MECHS = {
    "ed25519": (Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA),
    "ecdsa-p256": (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
}


PROOF_CACHE_LIMIT = 4096  # proofs kept per adapter (planted objects cannot grow it forever)


class KeyPairMixin:
    """Signing and ECDH operations; the adapter supplies the session, lock and facts.

    A pair is its private key: CKA_PRIVATE, so only the logged-in user can have made it.
    Its public half is a separate object that a session without the PIN may create or
    destroy (CKA_PRIVATE false, as in pairs made before custody generated it private), so
    the public key custody returns or verifies with is one *proven* to belong to the
    private key (:func:`proves`): a fresh challenge signed on the token and verified in
    process, or a token ECDH that the candidate's point reproduces in process. Other
    public keys labelled so are ignored. Signing and deriving use the private key alone.
    """

    _mechs: frozenset[str]
    _signing_algorithms: tuple[str, ...]
    _op: Callable[..., AbstractContextManager[Any]]
    # (label, use, private handle, public handle, public point) -> it proved the pair
    _proofs: dict[tuple[str, str, int, int, bytes], bool]

    def _private(self, s: Any, label: str, use: Attribute) -> Any | None:
        # a private key custody made is CKA_PRIVATE: one planted without the PIN (a R/W
        # public session may create a public CKO_PRIVATE_KEY of known value) is never used
        objs = list(
            s.get_objects(
                {
                    Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                    Attribute.LABEL: label,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    use: True,
                }
            )
        )
        if len(objs) > 1:
            raise HsmError(
                f"Several key pairs are labelled {label!r}",
                "Each is a private token object, made with the PIN: remove the duplicate.",
            )
        return objs[0] if objs else None

    def _public(self, s: Any, label: str, use: Attribute, priv: Any) -> bytes:
        """The public point (:func:`ec_point`) proven to belong to *priv*.

        Raises:
            IntegrityError: no public key labelled *label* belongs to *priv*.
        """
        alg = alg_of(priv)
        role = "sign" if use == Attribute.SIGN else "derive"
        cands = list(  # the search ends before any proof runs on the session
            s.get_objects(
                {
                    Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                    Attribute.LABEL: label,
                    Attribute.TOKEN: True,
                    Attribute.VERIFY: use == Attribute.SIGN,
                }
            )
        )
        proven: list[tuple[Any, bytes]] = []
        unproven = 0
        fresh = False  # a proof ran in this call (not all from the cache)
        for pub in cands:
            try:
                point = ec_point(pub)
            except (px.AttributeTypeInvalid, px.AttributeSensitive):
                unproven += 1
                continue
            key = (label, role, int(priv.handle), int(pub.handle), point)
            ok = self._proofs.get(key)
            if ok is None:
                if len(self._proofs) >= PROOF_CACHE_LIMIT:
                    self._proofs.clear()
                ok = self._proofs[key] = proves(priv, alg, use, point)
                fresh = True
            if ok:
                proven.append((pub, point))
            else:
                unproven += 1
        points = {point for _, point in proven}
        if len(points) > 1:
            # only x-only ECDH lets two points prove (Q and -Q, the same x): prefer the one
            # made with the PIN (a CKA_PRIVATE public key, as custody now generates them)
            points = {point for pub, point in proven if pub[Attribute.PRIVATE]} or points
        if len(points) == 1:
            point = points.pop()
            if fresh:  # once per proof, not on every use
                self._keep_private_copy([pub for pub, pt in proven if pt == point])
            return point
        if points:
            raise IntegrityError(
                f"Several public keys labelled {label!r} belong to its private key",
                "One was planted beside it (the same x coordinate, another y): custody "
                "cannot tell which it published. Remove the public key that is not the one "
                "custody published for it, while logged in.",
            )
        raise IntegrityError(
            f"The token key pair {label!r} has no public key that belongs to its private key"
            + (f" ({unproven} other public key(s) carry its label)" if unproven else ""),
            "Its public key was removed or replaced without the PIN; custody does not use "
            "an unproven one. Its private key still signs and derives. Restore the public "
            "key custody published for it (a public key object with that label, made while "
            "logged in), or create the key again under another label.",
        )

    @staticmethod
    def _keep_private_copy(pubs: list[Any]) -> None:
        """A pair made before public halves were CKA_PRIVATE: once its public half is
        proven, keep a CKA_PRIVATE copy of it (C_CopyObject), which no session without the
        PIN can see or destroy, so that removing the public one no longer leaves the pair
        without a public half. Best effort: where the token or the session refuses the copy
        (a read-only session, a token that cannot change CKA_PRIVATE on copy), the pair
        stays as it was and is proven from its public half, as before; a copy the token
        made public anyway (NSS softokn reports every public key CKA_PRIVATE false) is
        destroyed at once."""
        if not pubs or any(pub[Attribute.PRIVATE] for pub in pubs):
            return
        with contextlib.suppress(px.PKCS11Error):
            copy = pubs[0].copy({Attribute.PRIVATE: True})
            if not copy[Attribute.PRIVATE]:  # a token that keeps public keys public
                copy.destroy()

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
            IntegrityError: the pair exists and has no public key proven to be its own.
            HsmError: the token failed.
        """
        allowed = algorithms or self._signing_algorithms
        with self._op(f"create signing key {label!r}") as s:
            priv = self._private(s, label, Attribute.SIGN)
            if priv is None:
                alg = self.signing_algorithm(allowed)
                _, priv = generate_pair(s, label, alg, Attribute.SIGN, True)
            alg = alg_of(priv)
            if alg not in allowed:
                raise MechanismUnsupported(
                    f"Signing key {label!r} on the token is {alg}, not {' or '.join(allowed)}",
                    "Its signatures could not be verified; remove it, or use another label.",
                )
            return alg, self._public(s, label, Attribute.SIGN, priv)

    def _signer(self, s: Any, label: str) -> Any:
        priv = self._private(s, label, Attribute.SIGN)
        if priv is None:
            raise KeyNotFound(f"No signing key {label!r} on the token", "Create it first.")
        return priv

    def sign(self, label: str, data: bytes) -> bytes:
        """Sign *data*: Ed25519 (CKM_EDDSA) or ECDSA P-256 over SHA-256(data) (raw r||s).

        Raises:
            KeyNotFound: no such signing key.
            HsmError: the token failed.
        """
        with self._op(f"sign with {label!r}") as s:
            priv = self._signer(s, label)
            return bytes(sign_with(priv, alg_of(priv), data))

    def verify(self, label: str, data: bytes, signature: bytes) -> None:
        """Verify a signature made by :meth:`sign` with the key pair's public key (the one
        proven to belong to its private key), in process.

        Raises:
            KeyNotFound: no such signing key.
            IntegrityError: the signature does not verify, or the pair has no proven
                public key.
            HsmError: the token failed.
        """
        with self._op(f"verify with {label!r}", integrity=True) as s:
            priv = self._signer(s, label)
            alg = alg_of(priv)
            if not verify_point(alg, self._public(s, label, Attribute.SIGN, priv), data, signature):
                raise IntegrityError(
                    f"Bad signature for key {label!r}", "The data or the signature was altered."
                )

    def ensure_ecdh_key(self, label: str) -> bytes:
        """Create a P-256 key pair with CKA_DERIVE if absent; return its X9.62 public point.

        Raises:
            MechanismUnsupported: the token lacks EC_KEY_PAIR_GEN.
            IntegrityError: the pair exists and has no proven public key.
            HsmError: the token failed.
        """
        with self._op(f"create ECDH key {label!r}") as s:
            priv = self._private(s, label, Attribute.DERIVE)
            if priv is None:
                _, priv = generate_pair(s, label, "ecdsa-p256", Attribute.DERIVE, True)
            return self._public(s, label, Attribute.DERIVE, priv)

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
            priv = self._private(s, label, Attribute.DERIVE)
            if priv is None:
                raise KeyNotFound(f"No ECDH key {label!r} on the token", "Create it first.")
            return ecdh_secret(priv, point)


# --- helpers shared with the selftest -------------------------------------------------
def generate_pair(s: Any, label: str | None, alg: str, use: Attribute, store: bool) -> Any:
    """Generate a key pair (*store*: token objects, else session objects); (pub, priv)."""
    curve = ED25519_OID if alg == "ed25519" else P256_OID
    pub_t = {
        Attribute.EC_PARAMS: encode_named_curve_parameters(curve),
        Attribute.TOKEN: store,
        # a token public key no session without the PIN can see, destroy or copy
        Attribute.PRIVATE: store,
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


def alg_of(key: Any) -> str:
    """The signing algorithm of an EC key object (public or private)."""
    kt = key[Attribute.KEY_TYPE]
    if kt == KeyType.EC_EDWARDS:
        return "ed25519"
    if kt == KeyType.EC:
        return "ecdsa-p256"
    raise MechanismUnsupported(
        f"Token key {key.label!r} is not an EC key (CKA_KEY_TYPE {kt!r})",
        "custody makes Ed25519 and P-256 keys only; remove it, or use another label.",
    )


def verify_point(alg: str, point: bytes, data: bytes, signature: bytes) -> bool:
    """Verify a :func:`sign_with` signature in process against a public point
    (Ed25519: 32 raw bytes; P-256: X9.62, signature raw r||s over SHA-256(data))."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    try:
        if alg == "ed25519":
            Ed25519PublicKey.from_public_bytes(point).verify(signature, data)
        else:
            if len(signature) != 64:
                return False
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            r, s = int.from_bytes(signature[:32]), int.from_bytes(signature[32:])
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def proves(priv: Any, alg: str, use: Attribute, point: bytes) -> bool:
    """Whether *point* is the public half of the token key *priv*: a fresh random
    challenge signed with it verifies in process (a SIGN pair), or its ECDH with a fresh
    in-process ephemeral key gives the secret the ephemeral key and *point* give (a DERIVE
    pair). A token failure raises (translated by the caller), a mismatch is False."""
    if use == Attribute.SIGN:
        challenge = b"custody public key proof\0" + os.urandom(32)
        return verify_point(alg, point, challenge, sign_with(priv, alg, challenge))
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    try:
        theirs = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except (ValueError, TypeError):
        return False
    eph = ec.generate_private_key(ec.SECP256R1())
    eph_point = eph.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return hmac.compare_digest(ecdh_secret(priv, eph_point), eph.exchange(ec.ECDH(), theirs))


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
