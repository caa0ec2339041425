"""Key-version states and the rules for moving between them.

A version is ``active`` (wraps new objects), then ``decrypt-only`` once a newer version is
current, then ``disabled`` only when it wraps nothing, then ``destroy-scheduled`` (still
cancellable) and finally ``destroyed``. The store enforces "wraps nothing" at the moment of
disabling (:mod:`custody.keys.hierarchy`).
"""

from __future__ import annotations

from enum import StrEnum


class KeyState(StrEnum):
    ACTIVE = "active"
    DECRYPT_ONLY = "decrypt-only"
    DISABLED = "disabled"
    DESTROY_SCHEDULED = "destroy-scheduled"
    DESTROYED = "destroyed"


ALLOWED: dict[KeyState, frozenset[KeyState]] = {
    KeyState.ACTIVE: frozenset({KeyState.DECRYPT_ONLY}),
    KeyState.DECRYPT_ONLY: frozenset({KeyState.DISABLED, KeyState.ACTIVE}),
    KeyState.DISABLED: frozenset({KeyState.DESTROY_SCHEDULED, KeyState.DECRYPT_ONLY}),
    KeyState.DESTROY_SCHEDULED: frozenset({KeyState.DESTROYED, KeyState.DISABLED}),
    KeyState.DESTROYED: frozenset(),
}

BRANCHES: tuple[str, ...] = ("data", "backup", "secrets")

CAN_DECRYPT = frozenset({KeyState.ACTIVE, KeyState.DECRYPT_ONLY})


def can_move(src: KeyState, dst: KeyState) -> bool:
    return dst in ALLOWED[src]
