"""Terminal-safe text: what every renderer applies to strings that came from a bundle or a log.

A transcript bundle or an audit log is attacker-controlled input to whoever displays it. A
name, step or body value holding an escape sequence (ESC, CSI, OSC), a carriage return, a
backspace, a bidirectional override or a line separator could redraw the terminal, so that
an INVALID report reads as VALID. :func:`printable` turns every such code point into a
visible escape (``\\x1b``, ``\\u202e``) and doubles a backslash, so the output holds only
printable characters, spaces and nothing that can move the cursor. Renderers apply it to
each untrusted string; their own layout (newlines between lines) stays theirs.
"""

from __future__ import annotations

import unicodedata

# Unicode general categories that never reach a terminal raw: controls (Cc: C0, DEL, C1),
# format characters (Cf: bidi overrides, zero-width joiners), surrogates, private use,
# unassigned, and the line/paragraph separators (Zl, Zp).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(ch: str) -> str:
    o = ord(ch)
    if o <= 0xFF:
        return f"\\x{o:02x}"
    if o <= 0xFFFF:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def printable(value: object) -> str:
    """``str(value)`` with every non-printable code point shown as an escape.

    Args:
        value: anything; non-strings are converted with ``str`` first.

    Returns:
        A single line of printable text: no control, format or separator characters
        (tab and newline included) and every backslash doubled, so the escapes are
        unambiguous.
    """
    s = value if isinstance(value, str) else str(value)
    if s.isprintable() and "\\" not in s:
        return s
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == " " or (ch.isprintable() and unicodedata.category(ch) not in _UNSAFE_CATEGORIES):
            out.append(ch)
        else:
            out.append(_escape(ch))
    return "".join(out)


def is_printable(value: str) -> bool:
    """True when :func:`printable` would leave *value* unchanged."""
    return printable(value) == value


def printable_lines(text: str) -> str:
    """*text* with each line made :func:`printable`; its own newlines are kept."""
    return "\n".join(printable(line) for line in text.split("\n"))
