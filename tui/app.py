"""The custody app: one factory, :func:`make_app`, for ``custody tui``, Pilot and snapshots.

The app owns the global key bindings, the theme, the screens (as Textual *modes*), and
the one place where errors become UI: :meth:`CustodyApp.report_error` turns a
:class:`~custody.errors.CustodyError` into an error modal with its title and hint. Screens
run blocking work in thread workers (see :class:`tui.screens.base.ServiceScreen`), whose
failures all end up there.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding

from custody.hardening import harden_process
from tui.screens.access import AccessScreen
from tui.screens.alerts import AlertsScreen
from tui.screens.audit_log import AuditLogScreen
from tui.screens.auditor import AuditorScreen
from tui.screens.ceremony import CeremonyScreen
from tui.screens.compliance import ComplianceScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.keys import KeysScreen
from tui.screens.rekey import RekeyScreen
from tui.screens.secrets import SecretsScreen
from tui.screens.service_accounts import ServiceAccountsScreen
from tui.services.errors import CustodyError
from tui.services.home import HomeServices, Services, Settings

LIGHT, DARK = "textual-light", "textual-dark"


class CustodyApp(App[None]):
    """custody's terminal app."""

    CSS_PATH = "app.tcss"
    TITLE = "custody"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    ENABLE_COMMAND_PALETTE = False
    MODES = {
        "dashboard": DashboardScreen,
        "keys": KeysScreen,
        "auditor": AuditorScreen,
        "ceremony": CeremonyScreen,
        "audit-log": AuditLogScreen,
        "rekey": RekeyScreen,
        "secrets": SecretsScreen,
        "access": AccessScreen,
        "alerts": AlertsScreen,
        "compliance": ComplianceScreen,
        "services": ServiceAccountsScreen,
    }
    DEFAULT_MODE = "dashboard"

    BINDINGS = [
        # The footer shows one key per action, the first not swallowed by a text field:
        # "? Help" and "q Quit" normally, "F1 Help" and "^q Quit" while typing. The screen
        # keys are listed in Help (?), so the footer fits 80 columns with the screen's own.
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit", "Quit", key_display="^q"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("f1", "help", "Help", key_display="F1"),
        Binding("d", "switch_mode('dashboard')", "Dashboard", show=False),
        Binding("k", "switch_mode('keys')", "Keys", show=False),
        Binding("a", "switch_mode('auditor')", "Auditor", show=False),
        Binding("c", "switch_mode('ceremony')", "Ceremonies", show=False),
        Binding("l", "switch_mode('audit-log')", "Audit log", show=False),
        Binding("j", "switch_mode('rekey')", "Re-key", show=False),
        Binding("e", "switch_mode('secrets')", "Secrets", show=False),
        # issue 16: upper case and "!", so that no screen's own keys shadow them
        Binding("G", "switch_mode('access')", "Access", show=False),
        Binding("exclamation_mark", "switch_mode('alerts')", "Alerts", show=False, key_display="!"),
        Binding("C", "switch_mode('compliance')", "Compliance", show=False),
        Binding("S", "switch_mode('services')", "Services", show=False),
        Binding("t", "toggle_theme", "Theme", show=False),
    ]

    def __init__(self, settings: Settings, services: Services) -> None:
        super().__init__()
        self.settings = settings
        self.services = services
        self.theme = settings.theme
        self.errors_shown: list[tuple[str, str]] = []  # (title, hint): for tests
        self.secret_services: Any = None  # tui.services.secrets, made on first use
        self._painted = False

    def __repr__(self) -> str:
        settings = getattr(self, "settings", None)
        return f"CustodyApp(home={str(settings.home) if settings else '?'!r})"

    def on_mount(self) -> None:
        self.sub_title = str(self.settings.home)
        if self.settings.deterministic:
            self.sub_title = "deterministic"
        self.call_after_refresh(self._first_paint)

    # -- start-up bench hook -------------------------------------------------------------

    def _mark(self, what: str) -> None:
        if self.settings.paint_marker is not None:
            with open(self.settings.paint_marker, "a", encoding="utf-8") as fh:
                fh.write(f"{what} {time.monotonic():.6f}\n")

    def _first_paint(self) -> None:
        if not self._painted:
            self._painted = True
            self._mark("paint")

    def data_loaded(self) -> None:
        """Called by the dashboard once its data is on screen (bench hook)."""
        self._mark("data")
        if self.settings.exit_after_paint:
            self.exit()

    # -- actions -------------------------------------------------------------------------

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT if self.theme == DARK else DARK

    async def action_quit(self) -> None:
        """Quit, after asking when a ceremony is open on the ceremony screen (what it
        would drop is named: the shares handed in this session and the words typed)."""
        from tui.screens.modals import ConfirmModal

        cer = getattr(self, "ceremony_screen", None)
        warning = cer.quit_warning() if cer is not None else None
        if warning is None:
            self.exit()
            return
        if isinstance(self.screen, ConfirmModal):
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.exit()

        self.push_screen(ConfirmModal("Quit with a ceremony open?", warning), answer)

    def action_help(self) -> None:
        from tui.screens.modals import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    # -- the one error handler -------------------------------------------------------------

    def report_error(self, err: BaseException) -> None:
        """Show *err* in the error modal. A CustodyError shows its title and hint; anything
        else is a bug and shows only its type (never its message, which could hold data)."""
        from tui.screens.modals import ErrorModal

        if isinstance(err, CustodyError):
            title, hint = err.title, err.hint
        else:
            title = f"Unexpected error ({type(err).__name__})"
            hint = "This is a bug in custody. Nothing was changed; please report it."
            self.log.error(f"unexpected {type(err).__name__} in a worker")
        self.errors_shown.append((title, hint))
        self.push_screen(ErrorModal(title, hint))


def make_app(settings: Settings, services: Services | None = None) -> CustodyApp:
    """Build the app. ``services`` defaults to the real home's services."""
    if settings.deterministic:
        from textual.widgets import Input

        Input.cursor_blink = False  # type: ignore[assignment]
    return CustodyApp(settings, services if services is not None else HomeServices(settings))


def run(home: Path, pin_file: Path | None) -> int:
    """Entry point for ``custody tui``. Core dumps are off before the app starts (the CLI
    has done it already; this covers a direct call)."""
    harden_process()
    app = make_app(Settings.from_env(home, pin_file))
    app.run()
    return 0
