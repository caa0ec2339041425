"""custody's Textual terminal app.

``tui`` sits on top of the dependency chain (``tui -> ceremonies -> custody``). Nothing in
``custody`` or ``ceremonies`` imports it statically: ``custody tui`` loads :mod:`tui.app`
lazily so that the CLI never pays for (or depends on) importing Textual.
"""
