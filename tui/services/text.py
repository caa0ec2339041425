"""Safe text for screens: strings from a bundle, a log or an error, escaped for display.

Screens reach the library only through :mod:`tui.services`; this is their door to
:mod:`custody.textsafe` (non-printable characters and escape sequences are shown escaped).
"""

from __future__ import annotations

from custody.textsafe import printable, printable_lines

__all__ = ["printable", "printable_lines"]
