"""The one error tree of custody.

Every failure a user can cause or meet is a :class:`CustodyError` with a short *title*
(what went wrong) and a *hint* (what to do about it). The CLI and the TUI show both. Each
subtree maps to a documented process exit code (see ``docs/cli.md``).

Messages never carry secret material: callers pass descriptions, never values. A caller's
bug (for example ``threshold > n``) raises ``ValueError``/``TypeError`` instead.
"""

from __future__ import annotations


class CustodyError(Exception):
    """Root of every expected custody failure.

    Args:
        title: one line saying what went wrong. Must not contain secrets.
        hint: one or two sentences saying what to do next.
    """

    exit_code = 1

    def __init__(self, title: str, hint: str = "") -> None:
        super().__init__(title)
        self.title = title
        self.hint = hint

    def __str__(self) -> str:
        return self.title if not self.hint else f"{self.title} (hint: {self.hint})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(title={self.title!r}, hint={self.hint!r})"


class UsageError(CustodyError):
    """Bad command-line usage or bad input values that are not integrity failures."""

    exit_code = 2


class ConfigError(CustodyError):
    """Missing or invalid deployment home, config file or credentials source."""

    exit_code = 3


class StorageError(CustodyError):
    """The SQLite store or a file could not be read or written (corrupt, locked, disk full)."""

    exit_code = 4


class HsmError(CustodyError):
    """A PKCS#11 failure translated at the adapter boundary."""

    exit_code = 5


class TokenNotPresent(HsmError):
    """The configured token (label/slot) is not there, or the module cannot be loaded."""


class PinIncorrect(HsmError):
    """The token refused the PIN."""


class PinLocked(HsmError):
    """The token locked the PIN after too many wrong attempts."""


class SessionClosed(HsmError):
    """The session or the token went away while in use."""


class MechanismUnsupported(HsmError):
    """The token does not offer a mechanism custody needs."""


class KeyNotFound(HsmError):
    """No key with that label and version exists on the token."""


class IntegrityError(CustodyError):
    """Something failed to verify: a share, an unwrap, a transcript or the audit chain."""

    exit_code = 6


class ShareError(IntegrityError):
    """A share or a set of shares is malformed, mismatched or insufficient."""


class TranscriptError(IntegrityError):
    """A transcript bundle failed verification or could not be recorded."""


class AuditError(IntegrityError):
    """The audit log failed to verify or could not be appended (operation refused)."""


class PolicyError(CustodyError):
    """An action is not allowed by policy: quorum not met, approval stale, wrong role."""

    exit_code = 7


class CeremonyError(CustodyError):
    """A ceremony cannot proceed in its current state."""

    exit_code = 8


EXIT_CODES: dict[str, int] = {
    "ok": 0,
    "CustodyError": CustodyError.exit_code,
    "UsageError": UsageError.exit_code,
    "ConfigError": ConfigError.exit_code,
    "StorageError": StorageError.exit_code,
    "HsmError": HsmError.exit_code,
    "IntegrityError": IntegrityError.exit_code,
    "PolicyError": PolicyError.exit_code,
    "CeremonyError": CeremonyError.exit_code,
    "interrupted": 130,
}
