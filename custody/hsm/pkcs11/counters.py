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

from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import ObjectHandleInvalid

APPLICATION = "custody-counter"
WIDTH = 8


class CounterMixin:
    """Monotonic counters on the token; the adapter supplies the session and the lock."""

    _op: Callable[..., AbstractContextManager[Any]]

    @staticmethod
    def _counter_objects(s: Any, label: str) -> list[tuple[int, Any]]:
        template = {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.LABEL: label,
            Attribute.APPLICATION: APPLICATION,
            Attribute.TOKEN: True,
        }
        for _ in range(8):  # a search that met an object destroyed meanwhile: search again
            held = []
            try:
                for o in s.get_objects(template):
                    held.append((int.from_bytes(bytes(o[Attribute.VALUE]), "big"), o))
            except ObjectHandleInvalid:  # destroyed by another process's advance
                continue
            return held
        raise ObjectHandleInvalid()

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
            objs = s.get_objects(
                {
                    Attribute.CLASS: ObjectClass.DATA,
                    Attribute.APPLICATION: APPLICATION,
                    Attribute.TOKEN: True,
                }
            )
            return sorted({str(o[Attribute.LABEL]) for o in objs})

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
                s.create_object(
                    {
                        Attribute.CLASS: ObjectClass.DATA,
                        Attribute.TOKEN: True,
                        Attribute.PRIVATE: True,
                        Attribute.MODIFIABLE: False,
                        Attribute.LABEL: label,
                        Attribute.APPLICATION: APPLICATION,
                        Attribute.VALUE: value.to_bytes(WIDTH, "big"),
                    }
                )
                top = value
            for v, o in held:
                if v < top:
                    with contextlib.suppress(ObjectHandleInvalid):
                        o.destroy()  # unless another process's advance destroyed it
            return top
