"""The error types the TUI shows, for the screens and the app.

Screens import only TUI services (an import-linter contract keeps it so), so the library's
typed errors reach them through here. Every failure a user can meet is a
:class:`CustodyError` (title + hint), shown in the app's one error modal.
"""

from custody.access.control import AccessDenied
from custody.errors import CustodyError, UsageError


def needs_totp(err: BaseException) -> bool:
    """Whether *err* is an access denial that a TOTP code would lift (the policy asks one
    of super-admin actions and high-class reads; docs/access.md)."""
    d = getattr(err, "decision", None) if isinstance(err, AccessDenied) else None
    return bool(d is not None and d.needs_mfa and "TOTP" in d.reason)


__all__ = ["AccessDenied", "CustodyError", "UsageError", "needs_totp"]
