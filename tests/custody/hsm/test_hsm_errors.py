"""Error paths of the PKCS#11 adapter, on a real SoftHSMv2 token and real pkcs11 exceptions.

SoftHSM 2.6.1 never locks a user PIN (20 wrong logins still leave it usable, measured), so
PinLocked is checked at the translation helper with python-pkcs11's own exception class.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from pkcs11 import KeyType, Mechanism
from pkcs11 import exceptions as px

from custody.config import HsmConfig
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
from custody.hsm.pkcs11.errors import translate, translate_exception

pytestmark = pytest.mark.hsm


def _open(softhsm_token, tmp_path, **overrides):
    from custody.hsm.pkcs11.adapter import open_hsm

    _conf, label, pin = softhsm_token
    cfg = HsmConfig(**{"token_label": label, **{k: v for k, v in overrides.items() if k != "pin"}})
    return open_hsm(cfg, tmp_path, overrides.get("pin", pin))


def test_wrong_pin_is_pin_incorrect_and_never_echoed(softhsm_token, tmp_path):
    wrong = "wrong-pin-canary-7731"
    with pytest.raises(PinIncorrect) as err:
        _open(softhsm_token, tmp_path, pin=wrong)
    assert err.value.hint and isinstance(err.value.__cause__, px.PinIncorrect)
    assert wrong not in str(err.value) + repr(err.value)


def test_wrong_pin_while_token_already_logged_in(softhsm_token, tmp_path):
    """A second adapter shares the token's login, but its PIN is still checked."""
    with _open(softhsm_token, tmp_path) as first:
        with pytest.raises(PinIncorrect):
            _open(softhsm_token, tmp_path, pin="not-the-pin")
        with _open(softhsm_token, tmp_path) as second:
            assert len(second.random(8)) == 8
        assert len(first.random(8)) == 8  # closing the second did not log out the first


def test_missing_token_label_is_token_not_present(softhsm_token, tmp_path):
    with pytest.raises(TokenNotPresent) as err:
        _open(softhsm_token, tmp_path, token_label="no-such-token")
    assert "no-such-token" in err.value.title and "token_label" in err.value.hint


def test_wrong_slot_is_token_not_present(softhsm_token, tmp_path):
    with pytest.raises(TokenNotPresent):
        _open(softhsm_token, tmp_path, slot=424242)


def test_missing_module_is_token_not_present(softhsm_token, tmp_path):
    with pytest.raises(TokenNotPresent) as err:
        _open(softhsm_token, tmp_path, module=str(tmp_path / "libnothing.so"))
    assert "module" in err.value.hint


def test_unloadable_module_is_token_not_present(softhsm_token, tmp_path):
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(TokenNotPresent) as err:
        _open(softhsm_token, tmp_path, module=str(bogus))
    assert isinstance(err.value.__cause__, px.PKCS11Error)


def test_unsupported_mechanism(softhsm_token, tmp_path):
    with _open(softhsm_token, tmp_path) as h:
        h.require_mechanisms("AES_GCM", "AES_KEY_WRAP_PAD")
        with pytest.raises(MechanismUnsupported) as err:
            h.require_mechanisms("AES_GCM", "CHACHA20_POLY1305")
        assert "CKM_CHACHA20_POLY1305" in err.value.title and err.value.hint
        # A real token call with a mechanism SoftHSM lacks in C_Encrypt (RFC 5649 via
        # C_Encrypt), translated by the one helper.
        with pytest.raises(MechanismUnsupported) as err2, h._op("probe") as s:
            key = s.generate_key(KeyType.AES, 256, store=False)
            key.encrypt(bytes(32), mechanism=Mechanism.AES_KEY_WRAP_PAD)
        assert isinstance(err2.value.__cause__, px.MechanismInvalid)


def test_closed_session_is_session_closed(softhsm_token, tmp_path):
    h = _open(softhsm_token, tmp_path)
    h.close()
    with pytest.raises(SessionClosed):
        h.encrypt("root", 1, b"x", b"")


def test_gcm_tamper_is_integrity_error(softhsm_token, tmp_path):
    label = f"e{uuid.uuid4().hex[:8]}"
    with _open(softhsm_token, tmp_path) as h:
        h.generate_aes_key(label, 1, extractable=False)
        try:
            nonce, ct = h.encrypt(label, 1, b"payload", b"aad")
            with pytest.raises(IntegrityError) as err:
                h.decrypt(label, 1, nonce, ct[:-1] + bytes([ct[-1] ^ 1]), b"aad")
            assert not isinstance(err.value, HsmError)  # exit code 6, not 5
        finally:
            h.destroy_key(label, 1)


def test_another_softhsm_conf_while_open_then_switch(softhsm_token, tmp_path):
    """One process sees one SoftHSM config; switching works once nothing is open."""
    from custody.hsm import softhsm
    from custody.hsm.pkcs11.adapter import open_hsm

    conf2 = softhsm.write_conf(tmp_path / "second")
    softhsm.init_token(conf2, "second", "so-pin-2222", "user-pin-2222")
    other = HsmConfig(token_label="second", softhsm_conf=str(conf2))
    env_before = os.environ.get("SOFTHSM2_CONF")
    with _open(softhsm_token, tmp_path):
        with pytest.raises(HsmError) as err:
            open_hsm(other, tmp_path, "user-pin-2222")
        assert "config" in err.value.title
    with open_hsm(other, Path(tmp_path), "user-pin-2222") as h2:
        assert h2.info().label == "second"
    assert os.environ.get("SOFTHSM2_CONF") == env_before  # not leaked into the process
    with _open(softhsm_token, tmp_path) as h:  # and back to the session token
        assert h.info().label == softhsm_token[1]


def test_token_created_after_initialise_is_found(softhsm_token, tmp_path):
    """SoftHSM scans its token directory only at C_Initialize; the adapter re-initialises."""
    from custody.hsm import softhsm

    conf, _label, _pin = softhsm_token
    with _open(softhsm_token, tmp_path):
        pass  # the module is initialised now
    late = f"late-{uuid.uuid4().hex[:6]}"
    softhsm.init_token(conf, late, "so-pin-3333", "user-pin-3333")
    try:
        with _open(softhsm_token, tmp_path, token_label=late, pin="user-pin-3333") as h:
            assert h.info().label == late
    finally:
        softhsm.delete_token(conf, late)


# --- the translation helper, with python-pkcs11's real exception classes -----------------
@pytest.mark.parametrize(
    ("exc", "kwargs", "expected"),
    [
        (px.PinIncorrect, {}, PinIncorrect),
        (px.PinLenRange, {}, PinIncorrect),
        (px.PinLocked, {}, PinLocked),
        (px.PinLocked, {"opening": True}, PinLocked),
        (px.NoSuchToken, {"opening": True}, TokenNotPresent),
        (px.SlotIDInvalid, {"opening": True}, TokenNotPresent),
        (px.TokenNotPresent, {"opening": True}, TokenNotPresent),
        (px.TokenNotPresent, {}, SessionClosed),
        (px.SessionClosed, {}, SessionClosed),
        (px.SessionHandleInvalid, {}, SessionClosed),
        (px.DeviceRemoved, {}, SessionClosed),
        (px.UserNotLoggedIn, {}, SessionClosed),
        (px.MechanismInvalid, {}, MechanismUnsupported),
        (px.MechanismParamInvalid, {}, MechanismUnsupported),
        (px.FunctionNotSupported, {}, MechanismUnsupported),
        (px.NoSuchKey, {}, KeyNotFound),
        (px.KeyHandleInvalid, {}, KeyNotFound),
        (px.KeyUnextractable, {}, KeyNotExtractable),
        (px.EncryptedDataInvalid, {"integrity": True}, IntegrityError),
        (px.WrappedKeyInvalid, {"integrity": True}, IntegrityError),
        (px.GeneralError, {"integrity": True}, IntegrityError),
        (px.GeneralError, {}, HsmError),
        (px.EncryptedDataInvalid, {}, HsmError),
        (px.DeviceMemory, {}, HsmError),
        (px.AttributeReadOnly, {}, HsmError),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_translation_table(exc, kwargs, expected):
    err = translate_exception(exc(), "do the thing with root/v1", **kwargs)
    assert err is not None
    assert type(err) is expected
    assert err.title and err.hint
    with pytest.raises(expected) as raised, translate("do the thing", **kwargs):
        raise exc("library text that must not be shown: 1234-secret")
    assert raised.value.__cause__.__class__ is exc
    assert "1234-secret" not in str(raised.value)


def test_translation_leaves_other_exceptions_alone():
    assert translate_exception(ValueError("x"), "act") is None
    with pytest.raises(ValueError), translate("act"):
        raise ValueError("caller bug")
    with pytest.raises(KeyNotFound), translate("act"):
        raise KeyNotFound("already typed", "hint")
    assert issubclass(KeyNotExtractable, HsmError) and issubclass(HsmError, CustodyError)
