"""ceremonies: the ceremony engine, transcripts, and the CLI.

Depends on :mod:`custody` only. The TUI (``tui``) sits on top of this package.
"""
