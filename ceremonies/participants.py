"""Participants: their signing identities and the deployment's roster.

A participant (custodian, super-admin, auditor or witness) owns a signing key, kept either
as encrypted PKCS#8 under their passphrase (``NAME.key.pem``, always Ed25519) or on their
own PKCS#11 token (``NAME.token.json``, a non-secret reference: module, token label, slot,
key label, algorithm and public key; see :func:`create_token_participant`), and hands the
coordinator a public identity file (``NAME.pub.json``)::

    {"alg": "ed25519", "public": "<64 hex>", "name": ..., "role": ..., "fingerprint": ...}

A token key is Ed25519 when the token offers CKM_EDDSA, else ECDSA P-256 when it offers
CKM_ECDSA (NSS softokn): then ``alg`` is ``ecdsa-p256`` and ``public`` the X9.62
uncompressed point (130 hex, starting ``04``); its signatures are raw r||s (64 bytes) over
SHA-256 of the signed data, exactly as PKCS#11's CKM_ECDSA returns them. The algorithm is
always written, and read back as written, never guessed from the key's length; a token
with neither mechanism is refused before anything is created.

A participant created with a passphrase also owns an X25519 encryption key
(``NAME.enc.pem``, encrypted PKCS#8 under the same passphrase). Its public half sits in
``NAME.pub.json`` as ``x25519``, with ``x25519_endorsement``: their signing key's signature
over it (:func:`endorsement_digest`). generate and reshare seal each share to it, so the
coordinator's disk never holds a share in plain text; a coordinator cannot swap in a key of
their own, because only the custodian's signing key endorses one.

The same file is a trust-key file for ``custody transcript verify --trust``. The roster
(:mod:`ceremonies.roster`, table ``participants``) records who is enrolled, in which role,
with which key, and for how long; enrolment and revocation happen only in an ``enrol``
ceremony (:mod:`ceremonies.runner`). Nothing here ever sees a passphrase or token PIN except
:func:`create_participant`, :func:`create_token_participant` and :func:`load_signer`, which
pass it straight to ``cryptography`` or to the token's C_Login.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from custody.audit.signers import (
    ALGORITHMS,
    ECDSA_P256,
    ED25519,
    Ed25519Signer,
    HsmSigner,
    public_key_ok,
    verify_signature,
)
from custody.canonical import domain_hash, load_json
from custody.config import DEFAULT_SOFTHSM_MODULE
from custody.errors import (
    ConfigError,
    IntegrityError,
    KeyNotFound,
    MechanismUnsupported,
    UsageError,
)
from custody.passphrase import check_strength
from custody.privatefile import PUBLIC, private_dir, write_private
from custody.signing import fingerprint, private_from_pem, private_to_pem, public_raw

if TYPE_CHECKING:
    from custody.hsm.pkcs11.adapter import Pkcs11Hsm

ROLES: tuple[str, ...] = ("custodian", "super-admin", "auditor", "witness")
KEY_VALIDITY_SECONDS = 5 * 365 * 24 * 3600
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")


def check_name(name: str) -> None:
    """Validate a participant name (the transcript roster's name rule).

    Raises:
        UsageError: empty, too long, or with characters outside ``[A-Za-z0-9._@-]``.
    """
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS or not name[0].isalnum():
        raise UsageError(
            f"Invalid participant name {name!r}",
            "Use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit.",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """A participant's public identity (the ``.pub.json`` file)."""

    name: str
    role: str
    public: bytes
    x25519: bytes | None = None
    x25519_endorsement: bytes | None = None
    alg: str = ED25519

    def __post_init__(self) -> None:
        if not public_key_ok(self.alg, self.public):
            raise ValueError(f"not an {self.alg} public key")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def to_json(self) -> dict[str, str]:
        d = {
            "alg": self.alg,
            "public": self.public.hex(),
            "name": self.name,
            "role": self.role,
            "fingerprint": self.fingerprint,
        }
        if self.x25519 is not None and self.x25519_endorsement is not None:
            d["x25519"] = self.x25519.hex()
            d["x25519_endorsement"] = self.x25519_endorsement.hex()
        return d

    def encryption_key(self) -> bytes | None:
        """The X25519 key shares are sealed to, if endorsed by this identity's signing key.

        Raises:
            IntegrityError: an encryption key is present but its endorsement does not
                verify (a swapped or altered key: never seal to it).
        """
        if self.x25519 is None:
            return None
        sig = self.x25519_endorsement or b""
        if not verify_signature(
            self.alg, self.public, sig, endorsement_digest(self.public, self.x25519)
        ):
            raise IntegrityError(
                f"{self.name}'s encryption key is not endorsed by their signing key",
                "Ask the custodian for their NAME.pub.json again, out of band.",
            )
        return self.x25519


ENC_SUFFIX = ".enc.pem"


def endorsement_digest(signing_public: bytes, x25519_public: bytes) -> bytes:
    """What a participant's signing key signs to endorse their X25519 encryption key."""
    return domain_hash("custody/encryption-key/v1", signing_public, x25519_public)


def _x_raw(k: X25519PrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


TOKEN_ENC_SUFFIX = ".enc.token.json"  # noqa: S105 (a file suffix, not a password)
TOKEN_ENC_TYPE = "custody/participant-encryption-key/token/v1"  # noqa: S105 (a type tag)


def token_enc_label(name: str) -> str:
    """The label of the AES key on participant *name*'s token that seals their X25519 key."""
    return f"participant-enc/{name}"


def _enc_aad(name: str, x25519_public: bytes) -> bytes:
    return TOKEN_ENC_TYPE.encode() + b"\0" + name.encode() + b"\0" + x25519_public


def load_encryption_key(path: Path, passphrase: str) -> X25519PrivateKey:
    """Open a participant's ``NAME.enc.pem``, or the ``NAME.enc.token.json`` of a
    participant whose keys live on their token (then *passphrase* is the token user PIN).

    Raises:
        ConfigError: unreadable, wrong passphrase, or not an X25519 key.
        HsmError: the token is missing or refuses the PIN.
        IntegrityError: the token does not open the sealed key (another token, or edited).
    """
    if str(path).endswith(TOKEN_ENC_SUFFIX):
        return _load_token_encryption_key(Path(path), passphrase)
    try:
        key = serialization.load_pem_private_key(
            Path(path).read_bytes(), password=passphrase.encode()
        )
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"Cannot open the encryption key {path}",
            "Check the path and the passphrase (the same as the signing key's).",
        ) from exc
    if not isinstance(key, X25519PrivateKey):
        raise ConfigError(f"{path} is not an X25519 key", "Use the NAME.enc.pem of the custodian.")
    return key


def _load_token_encryption_key(path: Path, pin: str) -> X25519PrivateKey:
    try:
        doc = load_json(path.read_text(encoding="utf-8"))
        if doc.get("type") != TOKEN_ENC_TYPE:
            raise ValueError("type")
        name, x_pub = str(doc["name"]), bytes.fromhex(doc["x25519"])
        nonce, sealed = bytes.fromhex(doc["nonce"]), bytes.fromhex(doc["sealed"])
        module, token_label = str(doc["module"]), str(doc["token_label"])
        slot = doc.get("slot")
        if slot is not None and not isinstance(slot, int):
            raise ValueError("slot")
        if len(x_pub) != 32 or len(nonce) != 12:
            raise ValueError("length")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{path} is not a token-held encryption key",
            "Use the NAME.enc.token.json written by 'custody participant new --token-label'.",
        ) from exc
    with _open_token(module, token_label, slot, pin) as hsm:
        raw = hsm.decrypt(token_enc_label(name), 1, nonce, sealed, _enc_aad(name, x_pub))
    key = X25519PrivateKey.from_private_bytes(raw)
    if _x_raw(key) != x_pub:
        raise IntegrityError(
            f"The key sealed in {path} is not the one it names",
            "The file was edited; use the one 'custody participant new' wrote.",
        )
    return key


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """One roster row."""

    name: str
    role: str
    public: bytes
    fingerprint: str
    valid_from: int
    valid_until: int
    revoked_at: int | None
    enrolled_by: str
    alg: str = ED25519

    def usable_at(self, now: int) -> str | None:
        """None when the key may sign at *now*, else the reason it may not."""
        if self.revoked_at is not None and now >= self.revoked_at:
            return f"{self.name}'s key was revoked"
        if now < self.valid_from:
            return f"{self.name}'s key is not valid yet"
        if now >= self.valid_until:
            return f"{self.name}'s key has expired"
        return None


def create_participant(name: str, role: str, passphrase: str, out_dir: Path) -> tuple[Path, Path]:
    """Create a signing key and write ``NAME.key.pem`` (0600) and ``NAME.pub.json``.

    Args:
        name: the participant's name.
        role: one of :data:`ROLES`.
        passphrase: protects the private key (encrypted PKCS#8).
        out_dir: where to write the two files (created if needed).

    Returns:
        (private key path, public identity path).

    Raises:
        WeakPassphrase: zxcvbn estimates fewer than 10^12 guesses for *passphrase*
            (:func:`custody.passphrase.check_strength`); nothing is written.
        UsageError: bad name or role, or the files already exist (never overwritten).
        StorageError: the directory cannot be written, or others can write to it.
    """
    check_name(name)
    if role not in ROLES:
        raise UsageError(f"Unknown role {role!r}", f"Use one of: {', '.join(ROLES)}.")
    check_strength(passphrase, what=f"the key passphrase for {name}", user_inputs=(name, role))
    key = Ed25519PrivateKey.generate()
    enc = X25519PrivateKey.generate()
    x_pub = _x_raw(enc)
    ident = Identity(
        name=name,
        role=role,
        public=public_raw(key),
        x25519=x_pub,
        x25519_endorsement=key.sign(endorsement_digest(public_raw(key), x_pub)),
    )
    key_path, pub_path = out_dir / f"{name}.key.pem", out_dir / f"{name}.pub.json"
    enc_path = out_dir / f"{name}{ENC_SUFFIX}"
    for p in (key_path, pub_path, enc_path):
        if p.exists():
            raise UsageError(f"{p} already exists", "Nothing was changed; choose another --out.")
    private_dir(out_dir)
    write_private(key_path, private_to_pem(key, passphrase.encode()), exclusive=True)
    enc_pem = enc.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    )
    write_private(enc_path, enc_pem, exclusive=True)
    write_private(pub_path, _ident_bytes(ident), mode=PUBLIC, exclusive=True)
    return key_path, pub_path


def _ident_bytes(ident: Identity) -> bytes:
    return (json.dumps(ident.to_json(), sort_keys=True) + "\n").encode()


TOKEN_SUFFIX = ".token.json"  # noqa: S105 (a file suffix, not a password)
_PROBE = b"custody participant token check\x00"


def token_key_label(name: str) -> str:
    """The label of participant *name*'s signing key on their token."""
    return f"participant/{name}"


TOKEN_ALGORITHMS: tuple[str, ...] = ("auto", *ALGORITHMS)
"""``--token-alg`` choices: ``auto`` is Ed25519 where the token offers CKM_EDDSA, else ECDSA
P-256 where it offers CKM_ECDSA (said in the output and recorded in the files)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRef:
    """A participant's token-held key (the ``NAME.token.json`` file). Holds no secret.

    ``alg`` is written into the file; a file without it predates ECDSA support and is read
    as Ed25519 (the only algorithm such files held), and its key must then be one.
    """

    module: str
    token_label: str
    slot: int | None
    key_label: str
    public: bytes
    alg: str = ED25519

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "pkcs11",
            "module": self.module,
            "token_label": self.token_label,
            "slot": self.slot,
            "key_label": self.key_label,
            "alg": self.alg,
            "public": self.public.hex(),
        }


def is_token_ref(path: Path) -> bool:
    """True when *path* names a ``NAME.token.json`` reference (not a ``.key.pem``)."""
    return Path(path).name.endswith(TOKEN_SUFFIX)


def load_token_ref(path: Path) -> TokenRef:
    """Read a ``NAME.token.json`` reference.

    Raises:
        ConfigError: unreadable, or not a PKCS#11 reference to an Ed25519 key (32 bytes) or
            an ECDSA P-256 key (an uncompressed point on the curve) as its ``alg`` says.
    """
    try:
        doc = load_json(Path(path).read_text(encoding="utf-8"))
        if doc.get("type") != "pkcs11":
            raise ValueError("type")
        slot = doc.get("slot")
        if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int)):
            raise ValueError("slot")
        alg = doc.get("alg", ED25519)  # absent: a file from before ECDSA, Ed25519 only
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise ValueError("alg")
        ref = TokenRef(
            module=str(doc["module"]),
            token_label=str(doc["token_label"]),
            slot=slot,
            key_label=str(doc["key_label"]),
            public=bytes.fromhex(doc["public"]),
            alg=alg,
        )
        if not public_key_ok(ref.alg, ref.public):
            raise ValueError("public")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{path} is not a participant token reference",
            "Use the NAME.token.json written by 'custody participant new --token-label'.",
        ) from exc
    return ref


def _open_token(
    module: str,
    token_label: str,
    slot: int | None,
    pin: str,
    algorithms: tuple[str, ...] = (ED25519,),
) -> Pkcs11Hsm:
    from custody.config import HsmConfig
    from custody.hsm.pkcs11.adapter import open_hsm

    # softhsm_conf stays None: a SoftHSMv2 module reads $SOFTHSM2_CONF (see docs/ceremonies.md)
    return open_hsm(
        HsmConfig(module=module, token_label=token_label, slot=slot),
        Path.cwd(),
        pin,
        signing_algorithms=algorithms,
    )


def _token_algorithms(choice: str) -> tuple[str, ...]:
    """The algorithms a new token key may get, in order of preference (Ed25519 first)."""
    if choice == "auto":
        return (ED25519, ECDSA_P256)
    if choice not in ALGORITHMS:
        raise UsageError(
            f"Unknown signing algorithm {choice!r}", f"Use one of: {', '.join(TOKEN_ALGORITHMS)}."
        )
    return (choice,)


def _has_secret_key(hsm: Pkcs11Hsm, label: str) -> bool:
    try:
        hsm.find_key(label, 1)
    except KeyNotFound:
        return False
    return True


def _x_private_raw(k: X25519PrivateKey) -> bytes:
    return k.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _has_signing_key(hsm: Pkcs11Hsm, label: str) -> bool:
    try:
        hsm.sign(label, _PROBE)
    except KeyNotFound:
        return False
    return True


def create_token_participant(
    name: str,
    role: str,
    out_dir: Path,
    *,
    token_label: str,
    pin: str,
    module: str = DEFAULT_SOFTHSM_MODULE,
    slot: int | None = None,
    algorithm: str = "auto",
) -> tuple[Path, Path]:
    """Generate the participant's signing key ON their PKCS#11 token (sensitive,
    non-extractable); write ``NAME.token.json`` (the non-secret reference) and
    ``NAME.pub.json`` (as :func:`create_participant` does), both recording the key's
    algorithm.

    The key is Ed25519 when the token offers CKM_EDDSA; with *algorithm* ``auto`` (the
    default) a token without it but with CKM_ECDSA gets an ECDSA P-256 key instead (NSS
    softokn). Before anything is written, a fresh probe signed by the token is verified in
    process (``cryptography``) under the recorded algorithm, so a key whose signatures no
    verifier accepts is never handed out.

    When the token offers AES-GCM, the participant also gets an X25519 encryption key (so
    generate and reshare can seal their share to them): it is sealed under a
    non-extractable AES key made on the token (``participant-enc/NAME``) into
    ``NAME.enc.token.json`` (mode 0600), and its public half, endorsed by the token's signing
    key, goes into ``NAME.pub.json``. :func:`load_encryption_key` opens it with the token PIN.

    Args:
        name: the participant's name; the key's label is ``participant/NAME``.
        role: one of :data:`ROLES`.
        out_dir: where to write the two files (created if needed).
        token_label: the participant's token; *slot* picks among tokens with that label.
        pin: the token user PIN (C_Login only; never written).
        module: the PKCS#11 library. For SoftHSMv2, ``$SOFTHSM2_CONF`` selects the config.
        algorithm: ``auto`` (Ed25519, else ECDSA P-256), ``ed25519`` or ``ecdsa-p256``.

    Returns:
        (token reference path, public identity path).

    Raises:
        UsageError: bad name, role or algorithm, the files exist, or the token already
            holds the label.
        MechanismUnsupported: the token offers none of the allowed algorithms (for
            ``auto``: neither CKM_EDDSA nor CKM_ECDSA); nothing is created.
        IntegrityError: the token's signature over the probe does not verify (the key
            stays on the token under ``participant/NAME``; no file is written).
        HsmError: the token is missing, or the PIN is wrong (PinIncorrect) or locked.
        StorageError: the directory cannot be written, or others can write to it.
    """
    check_name(name)
    if role not in ROLES:
        raise UsageError(f"Unknown role {role!r}", f"Use one of: {', '.join(ROLES)}.")
    ref_path, pub_path = out_dir / f"{name}{TOKEN_SUFFIX}", out_dir / f"{name}.pub.json"
    for p in (ref_path, pub_path):
        if p.exists():
            raise UsageError(f"{p} already exists", "Nothing was changed; choose another --out.")
    enc_path = out_dir / f"{name}{TOKEN_ENC_SUFFIX}"
    if enc_path.exists():
        raise UsageError(f"{enc_path} already exists", "Nothing was changed; choose another --out.")
    allowed = _token_algorithms(algorithm)
    label, enc_label = token_key_label(name), token_enc_label(name)
    enc_doc: dict[str, Any] | None = None
    x_pub: bytes | None = None
    endorsement: bytes | None = None
    with _open_token(module, token_label, slot, pin, allowed) as hsm:
        hsm.signing_algorithm(allowed)  # MechanismUnsupported before anything is created
        if _has_signing_key(hsm, label) or _has_secret_key(hsm, enc_label):
            raise UsageError(
                f"Token {token_label!r} already holds a key for {name!r}",
                "Nothing was changed; use another name or token.",
            )
        sealing = "AES_GCM" in hsm.mechanisms()
        alg, public = hsm.ensure_signing_key(label, allowed)
        if alg not in allowed or not public_key_ok(alg, bytes(public)):
            raise MechanismUnsupported(  # pragma: no cover - ensure_signing_key refuses it
                f"Token {token_label!r} made a {alg} key, not {' or '.join(allowed)}",
                "Use a token that offers CKM_EDDSA or CKM_ECDSA, or a passphrase-protected key.",
            )
        probe = _PROBE + os.urandom(32)
        if not verify_signature(alg, bytes(public), bytes(hsm.sign(label, probe)), probe):
            raise IntegrityError(
                f"Token {token_label!r} made an {alg} key whose signatures do not verify",
                f"No file was written; the key {label!r} stays on the token. Do not use this "
                "token for custody; see 'custody hsm selftest'.",
            )
        if sealing:
            # The X25519 key shares are sealed to is made here and kept only sealed under a
            # non-extractable AES key on the token, so opening a share needs the token and
            # its PIN, like signing; the signing key on the token endorses its public half.
            enc = X25519PrivateKey.generate()
            x_pub = _x_raw(enc)
            hsm.generate_aes_key(enc_label, 1, extractable=False, use="seal")
            nonce, sealed = hsm.encrypt(enc_label, 1, _x_private_raw(enc), _enc_aad(name, x_pub))
            del enc
            endorsement = bytes(hsm.sign(label, endorsement_digest(bytes(public), x_pub)))
            if not verify_signature(
                alg, bytes(public), endorsement, endorsement_digest(bytes(public), x_pub)
            ):
                raise IntegrityError(
                    f"Token {token_label!r} signed the encryption key's endorsement wrongly",
                    "Do not use this token for custody; see 'custody hsm selftest'.",
                )
            enc_doc = {
                "type": TOKEN_ENC_TYPE,
                "name": name,
                "module": module,
                "token_label": token_label,
                "slot": slot,
                "key_label": enc_label,
                "x25519": x_pub.hex(),
                "nonce": nonce.hex(),
                "sealed": sealed.hex(),
            }
    ref = TokenRef(
        module=module,
        token_label=token_label,
        slot=slot,
        key_label=label,
        public=bytes(public),
        alg=alg,
    )
    ident = Identity(
        name=name,
        role=role,
        public=ref.public,
        x25519=x_pub,
        x25519_endorsement=endorsement,
        alg=alg,
    )
    private_dir(out_dir)
    ref_bytes = (json.dumps(ref.to_json(), sort_keys=True) + "\n").encode()
    write_private(ref_path, ref_bytes, mode=PUBLIC, exclusive=True)
    if enc_doc is not None:
        enc_bytes = (json.dumps(enc_doc, sort_keys=True) + "\n").encode()
        write_private(enc_path, enc_bytes, exclusive=True)
    write_private(pub_path, _ident_bytes(ident), mode=PUBLIC, exclusive=True)
    return ref_path, pub_path


class TokenSigner(HsmSigner):
    """A participant's key on their own token; owns the HSM session (close it when done).

    *alg* is the algorithm the participant's reference records: a key of another algorithm
    under *label* is refused (MechanismUnsupported), never used under a guessed one.
    """

    def __init__(self, name: str, hsm: Pkcs11Hsm, label: str, alg: str = ED25519) -> None:
        super().__init__(name, hsm, label, (alg,))
        self._token = hsm

    def close(self) -> None:
        self._token.close()

    def renamed(self, name: str) -> TokenSigner:
        """The same key, on the same open token session, signing as *name* (its roster
        name). Closing either closes the session."""
        other = copy.copy(self)
        other._name = name
        return other

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_token_signer(ref_path: Path, pin: str, *, name: str | None = None) -> TokenSigner:
    """Open the token a ``NAME.token.json`` names and check it holds that very key.

    Raises:
        ConfigError: the reference file is bad.
        HsmError: token missing, wrong PIN (PinIncorrect), locked, or no such key
            (KeyNotFound).
        IntegrityError: the token's key is not the one the reference (and so NAME.pub.json)
            names.
    """
    ref = load_token_ref(ref_path)
    if name is None:
        name = Path(ref_path).name.removesuffix(TOKEN_SUFFIX)
    hsm = _open_token(ref.module, ref.token_label, ref.slot, pin, (ref.alg,))
    try:
        probe = _PROBE + os.urandom(32)
        sig = hsm.sign(ref.key_label, probe)  # KeyNotFound before anything is created
        try:
            signer = TokenSigner(name, hsm, ref.key_label, ref.alg)
        except MechanismUnsupported as exc:
            raise IntegrityError(
                f"The key {ref.key_label!r} on token {ref.token_label!r} is not the "
                f"{ref.alg} key {ref_path} names",
                "Insert the participant's own token, or check the reference file.",
            ) from exc
        if (
            signer.alg != ref.alg
            or signer.public != ref.public
            or not verify_signature(ref.alg, ref.public, sig, probe)
        ):
            raise IntegrityError(
                f"The key {ref.key_label!r} on token {ref.token_label!r} is not the one "
                f"{ref_path} names",
                "Insert the participant's own token, or check the reference file.",
            )
    except BaseException:
        hsm.close()
        raise
    return signer


def as_member(signer: Any, name: str) -> Any:
    """*signer* signing under its roster *name*: whoever signs is named by the roster entry
    its key matched, never by the key file's name (a renamed ``NAME.key.pem`` or
    ``NAME.token.json`` signs as the enrolled member). Other signers are returned as they
    are."""
    if signer.name == name:
        return signer
    if isinstance(signer, Ed25519Signer):
        return Ed25519Signer(name, signer.key)
    if isinstance(signer, TokenSigner):
        return signer.renamed(name)
    return signer


def load_identity(path: Path) -> Identity:
    """Read a ``.pub.json`` identity file.

    The ``alg`` member is required and read as written (``ed25519``: 64 hex; ``ecdsa-p256``:
    the 130-hex uncompressed point on the curve); the key must be of that algorithm.

    Raises:
        ConfigError: unreadable, no or an unknown ``alg``, a key not of that algorithm, or
            its fingerprint disagrees.
    """
    try:
        doc = load_json(Path(path).read_text(encoding="utf-8"))
        alg = doc.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise ValueError("alg")
        public = bytes.fromhex(doc["public"])
        if not public_key_ok(alg, public):
            raise ValueError("public key")
        x, xs = doc.get("x25519"), doc.get("x25519_endorsement")
        ident = Identity(
            name=str(doc["name"]),
            role=str(doc.get("role", "")),
            public=public,
            x25519=None if x is None else bytes.fromhex(x),
            x25519_endorsement=None if xs is None else bytes.fromhex(xs),
            alg=alg,
        )
        if ident.x25519 is not None and len(ident.x25519) != 32:
            raise ValueError("x25519 length")
        if "fingerprint" in doc and doc["fingerprint"] != ident.fingerprint:
            raise ValueError("fingerprint")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{path} is not a participant identity file",
            "Use the NAME.pub.json written by 'custody participant new'.",
        ) from exc
    return ident


def load_signer(
    key_path: Path, passphrase: str, *, name: str | None = None
) -> Ed25519Signer | TokenSigner:
    """Open a participant's key as a Signer.

    Args:
        key_path: the ``NAME.key.pem`` file, or a ``NAME.token.json`` reference.
        passphrase: the key's passphrase; for a token-held key, the token user PIN.
        name: the signer's roster name; default: the file name before ``.key.pem`` (or
            ``.token.json``).

    Returns:
        An :class:`Ed25519Signer`, or a :class:`TokenSigner` holding the token open (call
        its ``close()`` when done).

    Raises:
        ConfigError: unreadable file or wrong passphrase.
        HsmError, IntegrityError: see :func:`load_token_signer`.
    """
    if is_token_ref(key_path):
        return load_token_signer(key_path, passphrase, name=name)
    try:
        pem = Path(key_path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read the key file {key_path}", "Check the path.") from exc
    key = private_from_pem(pem, passphrase.encode())
    if name is None:
        name = Path(key_path).name.removesuffix(".pem").removesuffix(".key")
    return Ed25519Signer(name, key)
