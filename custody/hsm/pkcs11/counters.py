"""Token-held monotonic counters: CKO_DATA objects that only a logged-in user can write.

A mixin of :class:`custody.hsm.pkcs11.adapter.Pkcs11Hsm`. The access seal binds a
generation number into its HMAC and keeps the newest generation here, on the token, so that
whoever can restore an older ``custody.db`` (with its then-valid seal) but does not hold the
PIN cannot roll the access state back (:mod:`custody.access.seal`).

SoftHSM 2.6.1 refuses C_SetAttributeValue on a data object's CKA_VALUE (CKR_ATTRIBUTE_READ_ONLY,
checked by hand with python-pkcs11 0.10.1), so a counter is not one object updated in place:
each advance creates a new private token object (CKA_PRIVATE, CKA_MODIFIABLE false, label
*label*, application ``custody-counter``) holding the 8-byte big-endian value, then destroys
every object of that label holding less. The counter's value is the largest held, so a
crash between the create and the destroys leaves the right value, and two processes
advancing at once never move it backwards (each destroys only smaller values). One of the
``custody.hsm.pkcs11`` modules, the only ones that import ``pkcs11``.

NSS softokn (3.87, through p11-kit) keeps no CKO_DATA token object at all: every template is
refused with CKR_ATTRIBUTE_VALUE_INVALID, while session data objects work. On such a token a
counter value is held instead by a CKK_GENERIC_SECRET token key labelled
``custody-counter:LABEL`` whose CKA_ID is the 8-byte big-endian value followed by the first 16 bytes
of SHA-256(LABEL): private, sensitive, non-extractable, non-modifiable and usable for
nothing (every usage flag false). The label's digest is in the id because NSS treats a new
token key of the same class and CKA_ID as an existing one and overwrites its label (seen:
the counter ``.../local-mfa:`` at value 1 replaced ``.../generation`` at 1); an id whose
digest is not its label's is ignored. Creating either object needs the logged-in user, as
before. The key form is read only when the label holds no data object (a token keeps one
form: the key form is used once a data object was refused, and SoftHSM never refuses one);
the largest value held wins.

Only private objects are read (every search names CKA_PRIVATE true). Any process that can
load the module may open a R/W session WITHOUT the PIN and create public token objects (a
R/W public session); a public object with a counter's label and application would
otherwise be read as its value (seen on SoftHSM 2.6.1: a planted public ``.../local-mfa:``
anchor at a high epoch made the binding look lifted, and ``custody access seal`` then
re-sealed tampered rows with the PIN alone). A private object needs the logged-in user.

Several processes share one token (CLI commands beside ``custody serve``, replicas of one
PostgreSQL store): an object found by one may be destroyed by another's advance before its
value is read or before this one destroys it. Such an object held a smaller value than one
still on the token, so it is skipped (CKR_OBJECT_HANDLE_INVALID), never an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.exceptions import (
    AttributeTypeInvalid,
    AttributeValueInvalid,
    ObjectHandleInvalid,
    TemplateInconsistent,
)

from custody.hsm.pkcs11.secretkeys import LABEL_ID_LEN, NO_USE, label_id

APPLICATION = "custody-counter"
KEY_PREFIX = APPLICATION + ":"  # the label of a key-held value: KEY_PREFIX + label
WIDTH = 8
KEY_BITS = 128
# How a token that keeps no CKO_DATA token object refuses one (NSS softokn).
NO_DATA_OBJECTS = (AttributeValueInvalid, AttributeTypeInvalid, TemplateInconsistent)


class CounterMixin:
    """Monotonic counters on the token; the adapter supplies the session and the lock."""

    _op: Callable[..., AbstractContextManager[Any]]
    _counters_as_keys: bool = False  # set once this token refused a data object

    @staticmethod
    def _counter_objects(s: Any, label: str) -> list[tuple[int, Any]]:
        data = {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.LABEL: label,
            Attribute.APPLICATION: APPLICATION,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
        }
        keys = {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
            Attribute.LABEL: KEY_PREFIX + label,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
        }
        for _ in range(8):  # a search that met an object destroyed meanwhile: search again
            held = []
            try:
                for o in s.get_objects(data):
                    held.append((_value(bytes(o[Attribute.VALUE])), o))
                if not held:  # a token with data objects never holds the key form
                    for o in s.get_objects(keys):
                        held.append((_key_value(bytes(o[Attribute.ID]), label), o))
            except ObjectHandleInvalid:  # destroyed by another process's advance
                continue
            return [(v, o) for v, o in held if v >= 0]
        raise ObjectHandleInvalid()

    def _hold(self, s: Any, label: str, value: int) -> None:
        """Create the object that holds *value* for *label*: a data object, or a key where
        the token keeps no data objects (see the module docstring)."""
        raw = value.to_bytes(WIDTH, "big")
        if not self._counters_as_keys:
            try:
                s.create_object(
                    {
                        Attribute.CLASS: ObjectClass.DATA,
                        Attribute.TOKEN: True,
                        Attribute.PRIVATE: True,
                        Attribute.MODIFIABLE: False,
                        Attribute.LABEL: label,
                        Attribute.APPLICATION: APPLICATION,
                        Attribute.VALUE: raw,
                    }
                )
                return
            except NO_DATA_OBJECTS:
                self._counters_as_keys = True
        s.generate_key(
            KeyType.GENERIC_SECRET,
            KEY_BITS,
            label=KEY_PREFIX + label,
            id=raw + label_id(label),
            store=True,
            template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.MODIFIABLE: False,
                **NO_USE,
            },
        )

    def counter(self, label: str) -> int | None:
        """The value of the counter *label* (None: the token holds no such counter).

        Raises:
            HsmError: the token failed.
        """
        with self._op(f"read counter {label!r}") as s:
            held = self._counter_objects(s, label)
            return max(v for v, _o in held) if held else None

    def counter_labels(self) -> list[str]:
        """The labels of every counter the token holds (each once, sorted): whether the
        token already anchors some other deployment's state (a first use is refused then).

        Raises:
            HsmError: the token failed.
        """
        with self._op("list counters") as s:
            labels = {
                str(o[Attribute.LABEL])
                for o in s.get_objects(
                    {
                        Attribute.CLASS: ObjectClass.DATA,
                        Attribute.APPLICATION: APPLICATION,
                        Attribute.TOKEN: True,
                        Attribute.PRIVATE: True,
                    }
                )
            }
            for o in s.get_objects(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                }
            ):
                name = str(o[Attribute.LABEL])
                if name.startswith(KEY_PREFIX):
                    labels.add(name[len(KEY_PREFIX) :])
            return sorted(labels)

    def advance_counter(self, label: str, value: int) -> int:
        """Raise the counter *label* to *value* (created if absent); never lowers it.

        Returns:
            The counter's value after the call (*value*, or a larger one already held).

        Raises:
            ValueError: *value* is negative or too large.
            HsmError: the token failed.
        """
        if not 0 <= value < 1 << (8 * WIDTH):
            raise ValueError("counter value out of range")
        with self._op(f"advance counter {label!r}") as s:
            held = self._counter_objects(s, label)
            top = max((v for v, _o in held), default=-1)
            if value > top:
                self._hold(s, label, value)
                top = value
            for v, o in held:
                if v < top:
                    with contextlib.suppress(ObjectHandleInvalid):
                        o.destroy()  # unless another process's advance destroyed it
            return top


def _value(raw: bytes) -> int:
    """A held counter value (-1: not one of custody's 8-byte values, ignored)."""
    return int.from_bytes(raw, "big") if len(raw) == WIDTH else -1


def _key_value(cka_id: bytes, label: str) -> int:
    """The value a key-held counter of *label* holds (-1: its id is not one of *label*)."""
    if len(cka_id) != WIDTH + LABEL_ID_LEN or cka_id[WIDTH:] != label_id(label):
        return -1
    return _value(cka_id[:WIDTH])
