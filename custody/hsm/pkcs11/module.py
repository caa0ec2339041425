"""Loading PKCS#11 modules once per process, and the lock that serialises each one.

This module owns the process-wide registry of loaded PKCS#11 libraries. It is one of the
``custody.hsm.pkcs11`` modules, the only ones that import ``pkcs11``.

- ``pkcs11.lib(path)`` is a per-path singleton in python-pkcs11 0.10.1: a second call
  returns the same object and never re-reads the environment.
- python-pkcs11 calls C_Initialize without OS locking, so two threads on one module fail
  (CKR_GENERAL_ERROR). Every adapter on a module shares that module's ``RLock``.
- SoftHSMv2 reads ``SOFTHSM2_CONF`` and scans its token directory only at C_Initialize.
  A process sees one SoftHSM config at a time: switching config (or picking up a token
  created after the module was initialised) needs C_Finalize + C_Initialize, which would
  invalidate every open session. custody does it only while no adapter is open on the
  module, and otherwise refuses with a typed error.
- ``SOFTHSM2_CONF`` is set only around C_Initialize and then restored, so the process
  environment stays what the caller made it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, Mechanism, TokenFlag
from pkcs11 import exceptions as px
from pkcs11.attributes import AttributeMapper

from custody.errors import HsmError, TokenNotPresent
from custody.hsm.pkcs11.errors import translate, translate_pkcs11


@dataclass(eq=False)
class LoadedModule:
    """One loaded PKCS#11 module: its lib, the SoftHSM conf it was initialised with, the
    lock every adapter on it shares, and the adapters currently open on it."""

    lib: Any
    conf: str | None
    lock: Any = field(default_factory=threading.RLock)
    users: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)
    logins: dict[int, SharedLogin] = field(default_factory=dict)
    profiles: dict[Any, Any] = field(default_factory=dict)  # (slot, formats) -> TokenProfile
    gcm_raw: set[int] = field(default_factory=set)  # slots whose GCM encrypt needs raw.py
    _pin_key: bytes = field(default_factory=lambda: os.urandom(32), repr=False)

    def login(self, token: Any, pin: str) -> SharedLogin:
        """Return the logged-in R/W session of *token*, logging in if none is open.

        PKCS#11 login state is per application and token (v3.0 §5.6): a second C_Login
        fails with CKR_USER_ALREADY_LOGGED_IN, and C_Logout on any session logs out all of
        them. So adapters on one token share one session, reference-counted. A later
        adapter's PIN is compared with an HMAC of the first one's under a random
        per-process key (the PIN itself is not kept).

        Raises:
            PinIncorrect: wrong PIN (checked by the token, or against the shared login).
            PinLocked: the token reports the user PIN locked.
            HsmError: code outside custody already logged in to this token.
        """
        slot = int(token.slot.slot_id)
        verifier = hmac.new(self._pin_key, pin.encode(), hashlib.sha256).digest()
        with self.lock:
            shared = self.logins.get(slot)
            if shared is not None and not shared.dead:
                if not hmac.compare_digest(shared.verifier, verifier):
                    raise translate_pkcs11(px.PinIncorrect(), "log in")
                shared.users += 1
                return shared
            with translate(f"log in to token {token.label!r}", opening=True):
                if token.flags & TokenFlag.USER_PIN_LOCKED:
                    raise px.PinLocked()
                try:
                    session = token.open(rw=True, user_pin=pin, attribute_mapper=attribute_mapper())
                except px.UserAlreadyLoggedIn as exc:
                    raise HsmError(
                        "The token is already logged in by other code in this process",
                        "Open the token only through custody's adapter in this process.",
                    ) from exc
            shared = self.logins[slot] = SharedLogin(session=session, verifier=verifier)
            return shared

    def logout(self, shared: SharedLogin) -> None:
        """Release one adapter's hold; the last one closes the session (and logs out)."""
        with self.lock:
            shared.users -= 1
            if shared.users > 0:
                return
            with suppress(px.PKCS11Error):
                shared.session.close()
            for slot, entry in list(self.logins.items()):
                if entry is shared:
                    del self.logins[slot]

    def reinitialize(self, conf: str | None) -> None:
        """C_Finalize + C_Initialize under *conf*; only while no adapter is open on it."""
        action = "re-initialise the PKCS#11 module"
        with self.lock, _softhsm_conf(conf), translate(action, opening=True):
            self.logins.clear()  # C_Finalize ends every session
            self.profiles.clear()
            self.lib.reinitialize()
        self.conf = conf


_ULONG = struct.Struct("L")  # CK_ULONG, as python-pkcs11 packs it


def attribute_mapper() -> AttributeMapper:
    """python-pkcs11's attribute mapper, plus CKA_ALLOWED_MECHANISMS (a CK_MECHANISM_TYPE
    array, PKCS#11 v3.0 §4.4), which python-pkcs11 0.10.1 cannot pack on its own."""
    m = AttributeMapper()
    m.register_handler(
        Attribute.ALLOWED_MECHANISMS,
        lambda mechs: b"".join(_ULONG.pack(int(x)) for x in mechs),
        lambda raw: [_mechanism(x) for (x,) in _ULONG.iter_unpack(raw)],
    )
    return m


def _mechanism(x: int) -> Mechanism | int:
    try:
        return Mechanism(x)
    except ValueError:  # a vendor mechanism python-pkcs11 has no name for
        return x


@dataclass(eq=False)
class SharedLogin:
    """The one logged-in session of a token in this process, shared by its adapters."""

    session: Any = field(repr=False)
    verifier: bytes = field(repr=False)
    users: int = 1
    dead: bool = False  # the session went away; the next open logs in afresh
    keys: dict[str, Any] = field(default_factory=dict, repr=False)  # label -> key handle


@contextmanager
def _softhsm_conf(conf: str | None) -> Iterator[None]:
    """Set ``SOFTHSM2_CONF`` for one C_Initialize, then restore the caller's value, so a
    deployment's config does not leak into later opens that rely on the environment."""
    if conf is None:
        yield
        return
    before = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = conf
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = before


_MODULES: dict[str, LoadedModule] = {}
_MODULES_LOCK = threading.Lock()


def load_module(module: str, conf: str | None) -> LoadedModule:
    """Load (once per path) and initialise *module*, under SoftHSM config *conf*.

    Args:
        module: path of the PKCS#11 shared library.
        conf: absolute path of a SoftHSMv2 config, set as ``SOFTHSM2_CONF`` while the
            module initialises (then restored), or ``None`` to use the environment as it is.

    Returns:
        The process-wide entry for *module*.

    Raises:
        TokenNotPresent: the file is missing, or does not load/initialise as PKCS#11.
        HsmError: an adapter is open on *module* under a different SoftHSMv2 config.
    """
    if not Path(module).is_file():
        raise TokenNotPresent(
            f"PKCS#11 module {module} not found",
            "Install the HSM vendor's PKCS#11 library (for SoftHSMv2: 'apt-get install "
            "softhsm2'), or fix [hsm] module in custody.toml.",
        )
    wanted = conf if conf is not None else os.environ.get("SOFTHSM2_CONF")
    with _MODULES_LOCK:
        entry = _MODULES.get(module)
        if entry is None:
            try:
                with _softhsm_conf(wanted):
                    lib = pkcs11.lib(module)
                entry = _MODULES[module] = LoadedModule(lib=lib, conf=wanted)
            except px.PKCS11Error as exc:
                raise TokenNotPresent(
                    f"Cannot load or initialise PKCS#11 module {module}",
                    "Check that it is a PKCS#11 library for this machine; for SoftHSMv2, "
                    "check softhsm_conf in custody.toml and that its token directory exists.",
                ) from exc
        elif entry.conf != wanted:
            if len(entry.users):
                raise HsmError(
                    "This process already has another SoftHSMv2 config open",
                    "SoftHSMv2 reads its config once per process. Close the other HSM "
                    "session first, or use a separate process.",
                )
            entry.reinitialize(wanted)
        return entry
