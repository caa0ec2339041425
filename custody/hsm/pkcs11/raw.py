"""Raw PKCS#11 calls through ``ctypes`` for the two calls python-pkcs11 0.10.1 gets wrong
on some modules.

python-pkcs11 asks a module for the output length (a call with a NULL buffer) and then
passes exactly that length on. NSS softokn 3.87 under-reports it for CKM_AES_GCM encryption
(by the 16-byte tag: 32 for 32 bytes in) and for CKM_AES_KEY_WRAP_KWP wrapping, answers the
second call with CKR_BUFFER_TOO_SMALL, and python-pkcs11 raises
``PKCS11Error("Buffer was too small. Should never see this.")``. The fix belongs in
python-pkcs11 (grow the buffer and retry); until then these helpers make the same call
with a buffer of the length the mechanism defines (GCM: input + tag; RFC 5649: the input
rounded up to 8 bytes, plus 8), on the session and object handles python-pkcs11 already
holds, through python-pkcs11's own CK_FUNCTION_LIST (see :func:`_functions`). See
docs/hsm.md.

It is one of the ``custody.hsm.pkcs11`` modules; it does not import ``pkcs11`` itself.
"""

from __future__ import annotations

import ctypes
from typing import Any

CK_ULONG = ctypes.c_ulong
CKR_OK = 0
CKR_BUFFER_TOO_SMALL = 0x150
CKM_AES_GCM = 0x1087
# Index of each function pointer in CK_FUNCTION_LIST after CK_VERSION (PKCS#11 v2.40 §5.2).
_ENCRYPT_INIT, _ENCRYPT, _WRAP_KEY = 29, 30, 60
_N_FUNCS = 61


class RawCallError(Exception):
    """A raw call failed; *rv* is the CK_RV the module returned."""

    def __init__(self, what: str, rv: int) -> None:
        super().__init__(f"{what} returned CKR 0x{rv:x}")
        self.rv = rv


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class _FunctionList(ctypes.Structure):
    _fields_ = [("version", _Version)] + [(f"f{i}", ctypes.c_void_p) for i in range(_N_FUNCS)]


class _Mechanism(ctypes.Structure):
    _fields_ = [
        ("mechanism", CK_ULONG),
        ("pParameter", ctypes.c_void_p),
        ("ulParameterLen", CK_ULONG),
    ]


class _GcmParams(ctypes.Structure):  # PKCS#11 v2.40 CK_GCM_PARAMS (with ulIvBits)
    _fields_ = [
        ("pIv", ctypes.c_void_p),
        ("ulIvLen", CK_ULONG),
        ("ulIvBits", CK_ULONG),
        ("pAAD", ctypes.c_void_p),
        ("ulAADLen", CK_ULONG),
        ("ulTagBits", CK_ULONG),
    ]


class _SessionInfo(ctypes.Structure):
    _fields_ = [("slotID", CK_ULONG), ("state", CK_ULONG), ("flags", CK_ULONG), ("err", CK_ULONG)]


_GET_SESSION_INFO = 15
# python-pkcs11 0.10.1 keeps the module's CK_FUNCTION_LIST pointer as the first C field of
# every object that calls the module (``cdef class HasFuncList``, no vtable), right after the
# CPython object header. A module such as the p11-kit proxy hands every C_GetFunctionList
# caller its own, separately initialised instance, so only that very pointer reaches the
# sessions python-pkcs11 opened. It is checked before use (see :func:`_functions`).
_FUNCLIST_OFFSET = 2 * ctypes.sizeof(ctypes.c_void_p)


# The layout above is python-pkcs11 0.10.1's (pinned in pyproject.toml); another version
# gets no raw call (its GCM/KWP then fails the known-answer test, and preflight says so).
LAYOUT_VERSION = "0.10.1"


def _layout_known() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("python-pkcs11") == LAYOUT_VERSION
    except PackageNotFoundError:
        return False


def _functions(session: Any, slot_id: int) -> Any:
    """The CK_FUNCTION_LIST python-pkcs11 uses for *session*, checked: python-pkcs11 is the
    version whose layout this reads, the pointer is the one its token object holds too, and
    C_GetSessionInfo through it names the session's slot."""
    if not _layout_known():
        raise RawCallError("the raw call (unknown python-pkcs11 layout)", 0x5)
    addr = ctypes.c_void_p.from_address(id(session) + _FUNCLIST_OFFSET).value
    same = ctypes.c_void_p.from_address(id(session.token) + _FUNCLIST_OFFSET).value
    if addr != same:
        raise RawCallError("locate the function list", 0x5)
    if not addr:
        raise RawCallError("locate the function list", 0x5)
    fl = _FunctionList.from_address(addr)
    info = _SessionInfo()
    get = ctypes.CFUNCTYPE(CK_ULONG, CK_ULONG, ctypes.POINTER(_SessionInfo))(
        getattr(fl, f"f{_GET_SESSION_INFO}")
    )
    rv = get(session.handle, ctypes.byref(info))
    if rv != CKR_OK or info.slotID != slot_id:
        raise RawCallError("C_GetSessionInfo", rv or 0x5)
    return fl


def _fn(fl: Any, index: int, *argtypes: Any) -> Any:
    addr = getattr(fl, f"f{index}")
    if not addr:
        raise RawCallError(f"function #{index}", 0x54)  # CKR_FUNCTION_NOT_SUPPORTED
    return ctypes.CFUNCTYPE(CK_ULONG, *argtypes)(addr)


def gcm_encrypt(
    session: Any, slot_id: int, key: int, nonce: bytes, aad: bytes, data: bytes
) -> bytes:
    """C_EncryptInit(CKM_AES_GCM, 128-bit tag) + C_Encrypt into len(data)+16 bytes."""
    iv = ctypes.create_string_buffer(nonce, len(nonce))
    ad = ctypes.create_string_buffer(aad, max(len(aad), 1))
    params = _GcmParams(
        ctypes.cast(iv, ctypes.c_void_p),
        len(nonce),
        8 * len(nonce),
        ctypes.cast(ad, ctypes.c_void_p) if aad else None,
        len(aad),
        128,
    )
    mech = _Mechanism(
        CKM_AES_GCM, ctypes.cast(ctypes.pointer(params), ctypes.c_void_p), ctypes.sizeof(params)
    )
    fl = _functions(session, slot_id)
    init = _fn(fl, _ENCRYPT_INIT, CK_ULONG, ctypes.POINTER(_Mechanism), CK_ULONG)
    rv = init(session.handle, ctypes.byref(mech), key)
    if rv != CKR_OK:
        raise RawCallError("C_EncryptInit", rv)
    src = ctypes.create_string_buffer(data, max(len(data), 1))
    cap = len(data) + 16
    out = ctypes.create_string_buffer(cap)
    n = CK_ULONG(cap)
    enc = _fn(
        fl,
        _ENCRYPT,
        CK_ULONG,
        ctypes.c_void_p,
        CK_ULONG,
        ctypes.c_void_p,
        ctypes.POINTER(CK_ULONG),
    )
    rv = enc(session.handle, src, len(data), out, ctypes.byref(n))
    if rv != CKR_OK:
        raise RawCallError("C_Encrypt", rv)
    return out.raw[: n.value]


def wrap_key(
    session: Any, slot_id: int, mechanism: int, wrapping: int, key: int, cap: int
) -> bytes:
    """C_WrapKey(*mechanism*, no parameter) into a *cap*-byte buffer."""
    mech = _Mechanism(mechanism, None, 0)
    fn = _fn(
        _functions(session, slot_id),
        _WRAP_KEY,
        CK_ULONG,
        ctypes.POINTER(_Mechanism),
        CK_ULONG,
        CK_ULONG,
        ctypes.c_void_p,
        ctypes.POINTER(CK_ULONG),
    )
    out = ctypes.create_string_buffer(cap)
    n = CK_ULONG(cap)
    rv = fn(session.handle, ctypes.byref(mech), wrapping, key, out, ctypes.byref(n))
    if rv != CKR_OK:
        raise RawCallError("C_WrapKey", rv)
    return out.raw[: n.value]
