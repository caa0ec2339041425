"""custody's Textual terminal app.

A front end beside the CLI (:mod:`custody_cli`), over ``ceremonies`` and ``custody``. Nothing
below imports it; the CLI's ``custody tui`` hands over to ``python -m tui``.
"""
