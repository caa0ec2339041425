"""Known-answer tests that decide how custody uses a token, before anything is created.

This module owns the token *profile*: which key-wrap mechanism custody uses for new blobs,
which mechanism opens each blob format, whether in-token AES-GCM works (natively, or only
through the raw call of :mod:`custody.hsm.pkcs11.raw`), whether the AES-CBC-PAD +
HMAC-SHA256 sealing fallback works (:mod:`custody.hsm.pkcs11.sealing`), which of the two
seals KEKs, and whether the token enforces CKA_ALLOWED_MECHANISMS. Each answer comes from a
functional test on session objects
(CKA_TOKEN=false, destroyed at once) whose result is compared with an independent
implementation (``cryptography``), never from a mechanism's name: NSS softokn 3.87 offers
CKM_AES_KEY_WRAP_PAD, but it is PKCS#7 padding plus RFC 3394 (a 48-byte blob), not RFC 5649.

:func:`preflight_failures` names what a ceremony needs and the token lacks, so that an
unsuitable token is refused before any key, row or file exists. It is one of the
``custody.hsm.pkcs11`` modules, the only ones that import ``pkcs11``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from pkcs11 import Attribute, GCMParams, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as px

from custody.hsm import KEK_SEAL_CBC_HMAC, KEK_SEAL_GCM, KEK_SEALS, WRAP_RFC3394, WRAP_RFC5649
from custody.hsm.pkcs11 import raw, sealing

# Candidates in order of preference (PKCS#11 v3.0 §2.14): the standard RFC 5649 id, the
# vendor-era RFC 5649 id (SoftHSM), then RFC 3394, which a 32-byte key needs no padding for.
WRAP_CANDIDATES: tuple[tuple[str, Mechanism], ...] = (
    (WRAP_RFC5649, Mechanism.AES_KEY_WRAP_KWP),
    (WRAP_RFC5649, Mechanism.AES_KEY_WRAP_PAD),
    (WRAP_RFC3394, Mechanism.AES_KEY_WRAP),
)
PASS, FAIL, MISSING = "pass", "fail", "missing"


def buffer_too_small(exc: BaseException) -> bool:
    """python-pkcs11 0.10.1 raises a bare PKCS11Error for CKR_BUFFER_TOO_SMALL."""
    return type(exc) is px.PKCS11Error and "Buffer was too small" in str(exc)


@dataclass(frozen=True, slots=True)
class WrapChoice:
    """A key-wrap format and the mechanism that does it on this token."""

    fmt: str  # WRAP_RFC5649 or WRAP_RFC3394
    mechanism: Mechanism
    raw_call: bool = False  # wrapping needs the raw call (python-pkcs11 length bug)

    def describe(self) -> str:
        via = ", raw call" if self.raw_call else ""
        return f"{self.fmt} (CKM_{self.mechanism.name}{via})"


@dataclass(slots=True)
class TokenProfile:
    """What the known-answer tests found (see the module docstring)."""

    wrap: WrapChoice | None = None  # for new blobs; None: no mechanism wraps correctly
    unwrap: dict[str, Mechanism] = field(default_factory=dict)  # blob format -> mechanism
    gcm: str | None = None  # "native", "raw", or None when in-token AES-GCM does not work
    cbc_hmac: bool = False  # the AES-CBC-PAD + HMAC-SHA256 fallback passed its test
    seal: str | None = None  # KEK_SEAL_GCM or KEK_SEAL_CBC_HMAC: how seal keys seal
    allowed_enforced: bool = False
    results: dict[str, str] = field(default_factory=dict)  # check -> pass/fail/missing
    errors: dict[str, str] = field(default_factory=dict)  # check -> why it failed


def wrap_with(s: Any, slot_id: int, choice: WrapChoice, wrapping: Any, key: Any, n: int) -> bytes:
    """Wrap *key* (*n* bytes of value) under *wrapping* with *choice*."""
    if choice.raw_call:
        cap = -(-n // 8) * 8 + 8
        return raw.wrap_key(s, slot_id, int(choice.mechanism), wrapping.handle, key.handle, cap)
    return bytes(wrapping.wrap_key(key, mechanism=choice.mechanism))


def _secret(s: Any, raw_key: bytes, key_type: KeyType = KeyType.AES, **use: bool) -> Any:
    return s.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: key_type,
            Attribute.VALUE: raw_key,
            Attribute.TOKEN: False,
            Attribute.SENSITIVE: False,
            Attribute.EXTRACTABLE: True,
            Attribute.ENCRYPT: use.get("encrypt", False),
            Attribute.DECRYPT: use.get("encrypt", False),
            Attribute.WRAP: use.get("wrap", False),
            Attribute.UNWRAP: use.get("wrap", False),
        }
    )


def _destroy(*objs: Any) -> None:
    for o in objs:
        with suppress(px.PKCS11Error):
            o.destroy()


def _expected(fmt: str, kek: bytes, payload: bytes) -> bytes:
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap, aes_key_wrap_with_padding

    return (
        aes_key_wrap_with_padding(kek, payload)
        if fmt == WRAP_RFC5649
        else aes_key_wrap(kek, payload)
    )


def _probe_wrap(
    s: Any, slot_id: int, mechs: frozenset[str], prof: TokenProfile, formats: tuple[str, ...]
) -> None:
    kek_raw, payload = os.urandom(32), os.urandom(32)
    tried: list[str] = []

    def rank(c: tuple[str, Mechanism]) -> int:
        return formats.index(c[0]) if c[0] in formats else len(formats)

    for fmt, mech in sorted(WRAP_CANDIDATES, key=rank):  # stable: KWP before WRAP_PAD
        if mech.name not in mechs:
            continue
        want = _expected(fmt, kek_raw, payload)
        kek = _secret(s, kek_raw, wrap=True)
        target = _secret(s, payload)
        try:
            choice = WrapChoice(fmt, mech)
            try:
                got = wrap_with(s, slot_id, choice, kek, target, 32)
            except px.PKCS11Error as exc:
                if not buffer_too_small(exc):
                    raise
                choice = WrapChoice(fmt, mech, raw_call=True)
                got = wrap_with(s, slot_id, choice, kek, target, 32)
            if got == want and prof.wrap is None and fmt in formats:
                prof.wrap = choice
            elif got != want:
                tried.append(f"CKM_{mech.name} is not {fmt}")
        except (px.PKCS11Error, raw.RawCallError) as exc:
            tried.append(f"CKM_{mech.name} wrap failed ({type(exc).__name__})")
        try:
            back = kek.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.AES,
                want,
                mechanism=mech,
                store=False,
                template={
                    Attribute.TOKEN: False,
                    Attribute.SENSITIVE: False,
                    Attribute.EXTRACTABLE: True,
                },
            )
            ok = bytes(back[Attribute.VALUE]) == payload
            _destroy(back)
            if ok and fmt not in prof.unwrap:
                prof.unwrap[fmt] = mech
        except px.PKCS11Error as exc:
            tried.append(f"CKM_{mech.name} unwrap failed ({type(exc).__name__})")
        finally:
            _destroy(target, kek)
    if prof.wrap is not None:
        prof.results["key_wrap"] = PASS
    else:
        prof.results["key_wrap"] = FAIL if tried else MISSING
        prof.errors["key_wrap"] = "; ".join(tried) or "no AES key-wrap mechanism offered"


def _probe_gcm(s: Any, slot_id: int, mechs: frozenset[str], prof: TokenProfile) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if "AES_GCM" not in mechs:
        prof.results["aes_gcm"] = MISSING
        prof.errors["aes_gcm"] = "CKM_AES_GCM is not offered"
        return
    raw_key, nonce, aad, msg = os.urandom(32), os.urandom(12), b"custody kat", os.urandom(32)
    key = _secret(s, raw_key, encrypt=True)
    try:
        mode = "native"
        try:
            ct = bytes(
                key.encrypt(msg, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad))
            )
        except px.PKCS11Error as exc:
            if not buffer_too_small(exc):
                raise
            mode = "raw"
            ct = raw.gcm_encrypt(s, slot_id, key.handle, nonce, aad, msg)
        if ct != AESGCM(raw_key).encrypt(nonce, msg, aad):
            raise ValueError("AES-GCM output differs from the standard")
        back = bytes(
            key.decrypt(ct, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad))
        )
        if back != msg:
            raise ValueError("AES-GCM decryption gave a wrong result")
        try:
            key.decrypt(
                bytes([ct[0] ^ 1]) + ct[1:],
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, aad),
            )
        except px.PKCS11Error:
            prof.gcm = mode
            prof.results["aes_gcm"] = PASS
            return
        raise ValueError("a tampered AES-GCM ciphertext was accepted")
    except (px.PKCS11Error, raw.RawCallError, ValueError) as exc:
        prof.results["aes_gcm"] = FAIL
        prof.errors["aes_gcm"] = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
    finally:
        _destroy(key)


def _probe_cbc_hmac(s: Any, mechs: frozenset[str], prof: TokenProfile) -> None:
    """The sealing fallback (:mod:`custody.hsm.pkcs11.sealing`) against ``cryptography``:
    the two keys unwrapped under a known seal key by AES-ECB, CBC-PAD and HMAC outputs, a
    decryption, and a tampered tag refused."""
    import hmac

    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    missing = [m for m in sealing.MECHANISMS if m.name not in mechs]
    if missing:
        prof.results["cbc_hmac"] = MISSING
        prof.errors["cbc_hmac"] = "not offered: " + ", ".join(f"CKM_{m.name}" for m in missing)
        return
    seal_raw, aad, msg = os.urandom(32), b"custody kat", os.urandom(32)
    root = s.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.VALUE: seal_raw,
            Attribute.TOKEN: False,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.UNWRAP: True,
        }
    )
    try:
        blob = sealing.seal(s, root, msg, aad, enforced=False)
        r, iv, ct, tag = sealing.split(blob)
        dec = Cipher(algorithms.AES(seal_raw), modes.ECB()).decryptor()  # noqa: S305
        k = dec.update(r) + dec.finalize()
        k_enc, k_mac = k[: sealing.KEY_LEN], k[sealing.KEY_LEN :]
        pad = padding.PKCS7(128).padder()
        enc = Cipher(algorithms.AES(k_enc), modes.CBC(iv)).encryptor()
        want_ct = enc.update(pad.update(msg) + pad.finalize()) + enc.finalize()
        want_tag = hmac.new(k_mac, sealing.mac_input(aad, blob[: -sealing.TAG_LEN]), "sha256")
        if ct != want_ct or tag != want_tag.digest():
            raise ValueError("AES-CBC-PAD or HMAC-SHA256 output differs from the standard")
        if sealing.unseal(s, root, blob, aad, enforced=False) != msg:
            raise ValueError("the sealed blob did not open to the same bytes")
        try:
            sealing.unseal(s, root, blob[:-1] + bytes([blob[-1] ^ 1]), aad, enforced=False)
        except sealing.TagMismatch:
            prof.cbc_hmac = True
            prof.results["cbc_hmac"] = PASS
            return
        raise ValueError("a tampered tag was accepted")
    except (px.MechanismInvalid, px.FunctionNotSupported) as exc:  # SoftHSM 2.6: no ECB unwrap
        prof.results["cbc_hmac"] = MISSING
        prof.errors["cbc_hmac"] = f"AES-ECB unwrap or CBC-PAD/HMAC refused ({type(exc).__name__})"
    except (px.PKCS11Error, ValueError) as exc:
        prof.results["cbc_hmac"] = FAIL
        prof.errors["cbc_hmac"] = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
    finally:
        _destroy(root)


def _choose_seal(prof: TokenProfile, seals: tuple[str, ...]) -> None:
    works = {KEK_SEAL_GCM: prof.gcm is not None, KEK_SEAL_CBC_HMAC: prof.cbc_hmac}
    prof.seal = next((m for m in seals if works[m]), None)
    if prof.seal is not None:
        prof.results["kek_seal"] = PASS
        return
    tried = [m for m in seals if m in works]
    prof.results["kek_seal"] = (
        MISSING if all(prof.results.get(c) == MISSING for c in ("aes_gcm", "cbc_hmac")) else FAIL
    )
    prof.errors["kek_seal"] = "neither " + " nor ".join(tried) + " works on this token"


def _probe_allowed(s: Any) -> bool:
    """Whether CKA_ALLOWED_MECHANISMS is enforced: a GCM-only key must refuse AES-ECB."""
    try:
        key = s.generate_key(
            KeyType.AES,
            256,
            store=False,
            template={
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
                Attribute.ALLOWED_MECHANISMS: [Mechanism.AES_GCM],
            },
        )
    except px.PKCS11Error:
        return False
    try:
        key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
    except px.PKCS11Error:
        return True
    finally:
        _destroy(key)
    return False


WRAP_FORMATS = (WRAP_RFC5649, WRAP_RFC3394)  # preference for new blobs


def profile(
    s: Any,
    slot_id: int,
    mechs: frozenset[str],
    wrap_formats: tuple[str, ...] = WRAP_FORMATS,
    kek_seals: tuple[str, ...] = KEK_SEALS,
) -> TokenProfile:
    """Run the known-answer tests on session *s* (the caller holds the module lock).

    *wrap_formats* orders (and limits) the formats new blobs may use; every format a
    mechanism unwraps correctly is still recorded, so old blobs of any format open.
    *kek_seals* orders (and limits) the ways of sealing (:data:`custody.hsm.KEK_SEALS`):
    the first that passes is the token's.
    """
    prof = TokenProfile()
    steps: tuple[tuple[str, Callable[[], None]], ...] = (
        ("key_wrap", lambda: _probe_wrap(s, slot_id, mechs, prof, wrap_formats)),
        ("aes_gcm", lambda: _probe_gcm(s, slot_id, mechs, prof)),
        ("cbc_hmac", lambda: _probe_cbc_hmac(s, mechs, prof)),
    )
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 (a KAT reports, it never crashes)
            prof.results[name] = FAIL
            prof.errors[name] = type(exc).__name__
    _choose_seal(prof, kek_seals)
    try:
        prof.allowed_enforced = _probe_allowed(s)
    except Exception:  # noqa: BLE001
        prof.allowed_enforced = False
    return prof


# What each use of the token needs (check names of the selftest).
NEEDS: dict[str, tuple[str, ...]] = {
    "core": ("random", "aes_key_gen", "kek_seal", "key_wrap", "kcv"),
    "seal": ("ecdh", "ecdh_wrap"),  # sealing a rotated root to the share set's P-256 key
}


def preflight_failures(
    results: dict[str, str], errors: dict[str, str], needs: Iterable[str]
) -> list[str]:
    """``"name: why"`` for each needed check that did not pass."""
    out = []
    for name in needs:
        st = results.get(name, MISSING)
        if st != PASS:
            out.append(f"{name} {st}" + (f" ({errors[name]})" if name in errors else ""))
    return out
