"""Settings and the small shared pieces of the TUI's services layer.

Owns :class:`Settings` (how the app was started), the :class:`Field` of every detail view,
and the clock type, so that the view-model modules (``services_status``,
``services_audit`` ...) share them without importing the services core.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from custody.clock import Clock, utcnow

__all__ = ["Clock", "Field", "Settings", "utcnow"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """How the app was started. Tests pin ``clock`` and set ``deterministic``.

    ``deterministic`` turns off cursor blink and animations (snapshot tests).
    ``paint_marker``: a file that receives ``time.monotonic()`` at first paint and when
    the dashboard data has loaded (the start-up bench); ``exit_after_paint`` then quits.
    """

    home: Path
    pin_file: Path | None = None
    clock: Clock = utcnow
    theme: str = "textual-dark"
    deterministic: bool = False
    paint_marker: Path | None = None
    exit_after_paint: bool = False

    @classmethod
    def from_env(cls, home: Path, pin_file: Path | None) -> Settings:
        marker = os.environ.get("CUSTODY_TUI_PAINT_MARKER")
        return cls(
            home=home,
            pin_file=pin_file,
            theme=os.environ.get("CUSTODY_TUI_THEME", "textual-dark"),
            paint_marker=Path(marker) if marker else None,
            exit_after_paint=os.environ.get("CUSTODY_TUI_EXIT_AFTER_PAINT") == "1",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    """One labelled value of a detail view."""

    label: str
    value: str


def _date(iso: str) -> str:
    return iso[:10] if iso else ""
