"""The error types the TUI shows, for the screens and the app.

Screens import only TUI services (an import-linter contract keeps it so), so the library's
typed errors reach them through here. Every failure a user can meet is a
:class:`CustodyError` (title + hint), shown in the app's one error modal.
"""

from custody.errors import CustodyError, UsageError

__all__ = ["CustodyError", "UsageError"]
