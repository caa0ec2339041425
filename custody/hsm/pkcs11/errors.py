"""Translation of python-pkcs11 exceptions into custody's typed errors.

This module owns the one boundary where ``pkcs11`` exceptions become
:class:`custody.errors.HsmError` subclasses (or :class:`~custody.errors.IntegrityError`), so
the adapter has a single ``with translate(...)`` instead of copy-pasted ``try``/``except``
blocks. Titles name the action and the object label (labels are not secret); they never
carry a PIN, key bytes, or the PKCS#11 library's own message (which can echo templates).

It is one of the ``custody.hsm.pkcs11`` modules, the only ones that import ``pkcs11``.

Measured on SoftHSM 2.6.1: a failed AES-GCM tag check and a tampered RFC 5649 blob both
come back as ``CKR_GENERAL_ERROR`` rather than ``CKR_ENCRYPTED_DATA_INVALID`` /
``CKR_WRAPPED_KEY_INVALID``. Operations that authenticate data therefore run with
``integrity=True``, which maps that code to :class:`~custody.errors.IntegrityError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pkcs11 import exceptions as px

from custody.errors import (
    CustodyError,
    HsmError,
    IntegrityError,
    KeyNotFound,
    MechanismUnsupported,
    PinIncorrect,
    PinLocked,
    SessionClosed,
    TokenNotPresent,
)
from custody.hsm import KeyNotExtractable

_REOPEN = "Check that the token is still connected, then run the command again."

# PKCS#11 v3.0 §5.1 return values, grouped by what custody tells the user.
_PIN_BAD = (px.PinIncorrect, px.PinInvalid, px.PinLenRange)
_SESSION_GONE = (
    px.SessionClosed,
    px.SessionHandleInvalid,
    px.DeviceRemoved,
    px.TokenNotPresent,
    px.TokenNotRecognised,
    px.UserNotLoggedIn,
)
_NO_TOKEN = (px.NoSuchToken, px.SlotIDInvalid, px.TokenNotPresent, px.TokenNotRecognised)
_MECH = (px.MechanismInvalid, px.MechanismParamInvalid, px.FunctionNotSupported)
_NO_KEY = (px.NoSuchKey, px.KeyHandleInvalid, px.ObjectHandleInvalid)
_UNEXTRACTABLE = (px.KeyUnextractable, px.KeyNotWrappable)
_BAD_DATA = (
    px.EncryptedDataInvalid,
    px.EncryptedDataLenRange,
    px.WrappedKeyInvalid,
    px.WrappedKeyLenRange,
    px.SignatureInvalid,
    px.SignatureLenRange,
    px.DataLenRange,
    px.GeneralError,  # SoftHSM 2.6.1's answer to a bad GCM tag or KWP integrity check
)


def translate_exception(
    exc: BaseException, action: str, *, opening: bool = False, integrity: bool = False
) -> CustodyError | None:
    """Map one ``pkcs11`` exception to a custody error, or ``None`` if it is not one.

    Args:
        exc: the exception raised by python-pkcs11.
        action: what custody was doing, for the title ("decrypt with root/v1").
        opening: the token is being located or logged into (not yet in use).
        integrity: the operation authenticates its input (GCM decrypt, unwrap, verify).

    Returns:
        The custody error to raise ``from exc``; ``None`` for a non-PKCS#11 exception.
    """
    if not isinstance(exc, px.PKCS11Error):
        return None
    return translate_pkcs11(exc, action, opening=opening, integrity=integrity)


def translate_pkcs11(
    exc: px.PKCS11Error, action: str, *, opening: bool = False, integrity: bool = False
) -> CustodyError:
    """Map one ``pkcs11`` exception to a custody error (see :func:`translate_exception`).

    Args:
        exc: the exception raised by python-pkcs11.
        action: what custody was doing, for the title.
        opening: the token is being located or logged into (not yet in use).
        integrity: the operation authenticates its input (GCM decrypt, unwrap, verify).

    Returns:
        The custody error to raise ``from exc``.
    """
    name = type(exc).__name__
    if isinstance(exc, px.PinLocked):
        return PinLocked(
            "The token's user PIN is locked",
            "Too many wrong PINs were tried. The security officer must unlock or reset the "
            "user PIN (for SoftHSMv2: re-initialise the PIN with the SO PIN).",
        )
    if isinstance(exc, px.PinExpired):
        return PinIncorrect(
            "The token's user PIN has expired", "Change the user PIN with the token's tools."
        )
    if isinstance(exc, _PIN_BAD):
        return PinIncorrect(
            "The token refused the PIN",
            "Check the PIN source (--pin-file, CUSTODY_PIN or the prompt). Repeated wrong "
            "PINs can lock the token.",
        )
    if opening and isinstance(exc, _NO_TOKEN):
        return TokenNotPresent(
            f"No token to {action}",
            "Check [hsm] module, slot and token_label in custody.toml, and that the token is "
            "connected ('pkcs11-tool --module MODULE -L' lists tokens).",
        )
    if isinstance(exc, _SESSION_GONE):
        return SessionClosed(f"The token session went away during: {action}", _REOPEN)
    if isinstance(exc, _MECH):
        return MechanismUnsupported(
            f"The token does not support the mechanism needed to {action}",
            "Run 'custody hsm selftest' to see what the token offers; custody needs AES-GCM, "
            "an AES key wrap (RFC 5649 or RFC 3394), AES-ECB and P-256 ECDH.",
        )
    if isinstance(exc, _NO_KEY):
        return KeyNotFound(
            f"The key is not on the token ({action})", "Run 'custody status' to list key versions."
        )
    if isinstance(exc, _UNEXTRACTABLE):
        return KeyNotExtractable(
            f"The token refuses to export the key ({action})",
            "The key is non-extractable (its backup blob already exists). Use the existing "
            "blob, or rotate to a new key version.",
        )
    if integrity and isinstance(exc, _BAD_DATA):
        return IntegrityError(
            f"Authentication failed: {action}",
            "The data, its associated data, the nonce or the key version does not match; "
            "the ciphertext may be damaged or tampered with.",
        )
    if isinstance(exc, px.GeneralError):
        return HsmError(
            f"The token reported a general error during: {action}",
            "custody serialises its own calls to the token, so this is the token's own "
            "failure: run 'custody hsm selftest' to see which mechanisms work on it, and "
            "check the token's logs.",
        )
    if isinstance(exc, (px.TokenWriteProtected, px.SessionReadOnly)):
        return HsmError(f"The token is read-only: {action}", "Use a writable token or slot.")
    if isinstance(exc, (px.DeviceMemory, px.HostMemory)):
        return HsmError(f"The token is out of memory: {action}", "Free objects on the token.")
    return HsmError(f"The token failed to {action} ({name})", "See the token's logs.")


@contextmanager
def translate(action: str, *, opening: bool = False, integrity: bool = False) -> Iterator[None]:
    """Run a block of PKCS#11 calls; re-raise any ``pkcs11`` exception as a custody error.

    Args:
        action: what the block does, for the error title. Must not contain secrets.
        opening: see :func:`translate_exception`.
        integrity: see :func:`translate_exception`.

    Raises:
        HsmError: or a subclass (TokenNotPresent, PinIncorrect, PinLocked, SessionClosed,
            MechanismUnsupported, KeyNotFound, KeyNotExtractable) for a PKCS#11 failure.
        IntegrityError: when *integrity* is set and the token rejected the data.
    """
    try:
        yield
    except px.PKCS11Error as exc:
        raise translate_pkcs11(exc, action, opening=opening, integrity=integrity) from exc
