"""Test fakes of the TUI's services: fixed data, no disk, no token.

:class:`StaticServices` (``tui.fakes.services``) and :class:`StaticCeremonyServices`
(``tui.fakes.ceremony``) implement the service protocols the screens use, so the snapshot
tests (and screenshots) render every screen in a deterministic state. Real modules never
import this package (an import-linter contract in pyproject.toml keeps it so).
"""

from tui.fakes.ceremony import StaticCeremonyServices
from tui.fakes.services import StaticServices

__all__ = ["StaticCeremonyServices", "StaticServices"]
