"""Access requests, approvals and grants (issue 16 item 9, docs/access.md).

Two tables: the requests (pending first, each with a countdown to the end of its window,
its approvals so far out of those needed) and the grants (live first, then lapsed and
revoked). ``n`` records a new request for a named principal (``custody access request ...
--as NAME``); ``s`` signs the highlighted request with your participant key, whose
passphrase is typed into the non-echoing prompt, then the TOTP code for an approver who
must give one (``custody access approve``); ``x`` revokes
the highlighted grant after a confirmation (``custody access revoke``). Enter opens the
detail of a row. Every operation goes through :mod:`tui.services.access`, the same library
calls and audit entries as the CLI.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from tui.screens.base import ItemTable, Payload, ServiceScreen
from tui.screens.modals import ConfirmModal, DetailScreen, PinPrompt, TextPrompt
from tui.services.access import (
    UNVERIFIED_NOTE,
    AccessView,
    ApproveOutcome,
    GrantItem,
    RequestItem,
    access_services,
    countdown,
    now_seconds,
)

STATE_STYLE = {
    "pending": "bold yellow",
    "live": "bold green",
    "granted": "green",
    "lapsed": "dim",
    "expired": "dim",
    "revoked": "red",
}


ACTION_SHORT = {"metadata": "meta"}  # the 80-column table; the detail says it in full


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _styled(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


class AccessLoaded(Payload[AccessView]):
    pass


class Approved(Payload[ApproveOutcome]):
    pass


class Requested(Payload[RequestItem]):
    pass


class Revoked(Payload[GrantItem]):
    pass


class SignAsked(Payload[tuple[str, str, bool]]):
    """(request id, key path, whether a TOTP code is needed): no secret."""


FORM = (
    ("principal", "requesting principal (a service or person)"),
    ("env", "environment, e.g. prod"),
    ("path", "secret path, or a prefix ending in /"),
    ("duration", "for how long: 30m, 2h, 1d"),
    ("why", "why (recorded in the audit log)"),
    ("actions", "actions: read metadata list (empty: read metadata)"),
)


class RequestModal(ModalScreen[dict[str, str] | None]):
    """The request form; returns its fields, or None. Nothing typed here is secret."""

    AUTO_FOCUS = "#req-principal"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Request", priority=True),
    ]

    def __init__(self) -> None:
        super().__init__(classes="dialog-screen")

    def compose(self) -> ComposeResult:
        with Vertical(id="request-dialog", classes="dialog"):
            yield Label("Request time-limited access", classes="dialog-title")
            for f, hint in FORM:
                yield Input(id=f"req-{f}", placeholder=hint, compact=True)
            yield Static("Ctrl+S or Request. Approvers then sign it (s).", classes="dim")
            yield Button("Request", id="req-go", variant="primary", compact=True)
        yield Footer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_submit()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        missing = [i for i in self.query(Input) if not i.value.strip() and i.id != "req-actions"]
        if missing:
            missing[0].focus()
        else:
            self.action_submit()

    def action_submit(self) -> None:
        val = {f: self.query_one(f"#req-{f}", Input).value.strip() for f, _ in FORM}
        missing = [f for f, _ in FORM if f != "actions" and not val[f]]
        if missing:
            self.notify(f"Fill in: {', '.join(missing)}.", severity="error")
            return
        self.dismiss(val)

    def action_cancel(self) -> None:
        self.dismiss(None)


class AccessScreen(ServiceScreen):
    """Requests with their countdowns and approvals; grants and their state."""

    BINDINGS = [
        Binding("n", "new_request", "Request"),
        Binding("s", "approve", "Sign"),
        Binding("x", "revoke", "Revoke"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.view: AccessView | None = None
        self.last_key = ""  # the approver's key path (a path, not a secret), to prefill
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with VerticalScroll(id="access"):
            yield Static("loading ...", id="acc-summary")
            seal = Static(Text(UNVERIFIED_NOTE, style="bold red"), id="acc-unverified")
            seal.display = False  # shown once a view read without the token says so
            yield seal
            yield ItemTable(id="acc-requests", title="Requests")
            yield ItemTable(id="acc-grants", title="Grants")
        yield Footer()

    def on_mount(self) -> None:
        req = self.query_one("#acc-requests", DataTable)
        for label, key in (
            ("request", "id"),
            ("requester", "who"),
            ("target", "target"),
            ("signed", "signed"),
            ("left", "left"),
            ("state", "state"),
        ):
            req.add_column(label, key=key)
        grants = self.query_one("#acc-grants", DataTable)
        for label, key in (
            ("grant", "id"),
            ("principal", "who"),
            ("target", "target"),
            ("actions", "actions"),
            ("left", "left"),
            ("state", "state"),
        ):
            grants.add_column(label, key=key)
        req.focus()
        self.action_refresh()
        self._timer = self.set_interval(1.0, self._tick)

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()

    def on_screen_resume(self) -> None:
        if self._timer is not None:
            self._timer.resume()

    def _services(self) -> Any:
        return access_services(self.app)

    def _now(self) -> int:
        return now_seconds(self.app)

    # -- loading ---------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False, exclusive=True, group="access-load")
    def load(self) -> None:
        self.post_message(AccessLoaded(self._services().view()))

    def on_access_loaded(self, msg: AccessLoaded) -> None:
        self.view = v = msg.value
        now = self._now()
        pending = sum(1 for r in v.requests if r.state == "pending")
        live = sum(1 for g in v.grants if g.state == "live")
        self.query_one("#acc-summary", Static).update(
            Text(f"{pending} pending request(s), {live} live grant(s) of {len(v.grants)}")
        )
        self.query_one("#acc-unverified", Static).display = not v.verified
        extra = max(0, self.app.size.width - 80)  # a wider terminal shows more of each name
        who_w, target_w = 10 + extra // 5, 22 + extra // 2
        req = self.query_one("#acc-requests", DataTable)
        req.clear()
        for r in v.requests:
            req.add_row(
                _short(r.id, 11 + extra // 8),
                _short(r.requester, who_w),
                _short(r.target, target_w),
                f"{len(r.approvers)}/{r.needed}",
                self._left(r, now),
                _styled(self._state(r, now)),
                key=r.id,
            )
        grants = self.query_one("#acc-grants", DataTable)
        grants.clear()
        for g in v.grants:
            grants.add_row(
                _short(g.id, 11 + extra // 8),
                _short(g.principal, who_w),
                _short(g.target, target_w),
                _short(",".join(ACTION_SHORT.get(a, a) for a in g.actions), 9),
                countdown(g.not_after - now) if g.state == "live" else "-",
                _styled(g.state),
                key=g.id,
            )

    @staticmethod
    def _state(r: RequestItem, now: int) -> str:
        return "expired" if r.state == "pending" and r.seconds_left(now) <= 0 else r.state

    @staticmethod
    def _left(r: RequestItem, now: int) -> str:
        return countdown(r.seconds_left(now)) if r.state == "pending" else "-"

    def _tick(self) -> None:
        """Count the pending requests' windows and the live grants down, once a second."""
        if self.view is None:
            return
        now = self._now()
        req = self.query_one("#acc-requests", DataTable)
        for r in self.view.requests:
            if r.state == "pending":
                req.update_cell(r.id, "left", self._left(r, now))
                req.update_cell(r.id, "state", _styled(self._state(r, now)))
        grants = self.query_one("#acc-grants", DataTable)
        for g in self.view.grants:
            if g.state == "live":
                grants.update_cell(g.id, "left", countdown(g.not_after - now))

    # -- selection -------------------------------------------------------------------

    def _row(self, table_id: str) -> str | None:
        t = self.query_one(table_id, DataTable)
        if t.row_count == 0:
            return None
        key = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value
        return str(key) if key is not None else None

    def _request(self) -> RequestItem | None:
        rid = self._row("#acc-requests")
        if self.view is None or rid is None:
            return None
        return next((r for r in self.view.requests if r.id == rid), None)

    def _grant(self) -> GrantItem | None:
        gid = self._row("#acc-grants")
        if self.view is None or gid is None:
            return None
        return next((g for g in self.view.grants if g.id == gid), None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if self.view is None:
            return
        key = event.row_key.value
        now = self._now()
        for r in self.view.requests:
            if r.id == key:
                self.app.push_screen(DetailScreen(f"Request {r.id}", r.fields(now)))
                return
        for g in self.view.grants:
            if g.id == key:
                self.app.push_screen(DetailScreen(f"Grant {g.id}", g.fields(now)))
                return

    # -- operations ------------------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="access-op")
    def run_request(self, form: dict[str, str]) -> None:
        svc = self._services()
        self.post_message(
            Requested(
                svc.request(
                    form["principal"],
                    form["env"],
                    form["path"],
                    form["duration"],
                    form["why"],
                    form["actions"],
                )
            )
        )

    @work(thread=True, exit_on_error=False, group="access-op")
    def run_approve(
        self, request_id: str, key_path: str, passphrase: str, mfa_code: str | None
    ) -> None:
        svc = self._services()
        self.post_message(Approved(svc.approve(request_id, key_path, passphrase, mfa_code)))

    @work(thread=True, exit_on_error=False, group="access-op")
    def run_revoke(self, grant_id: str, reason: str) -> None:
        self.post_message(Revoked(self._services().revoke(grant_id, reason)))

    def action_new_request(self) -> None:
        def got(form: dict[str, str] | None) -> None:
            if form:
                self.run_request(form)

        self.app.push_screen(RequestModal(), got)

    def on_requested(self, msg: Requested) -> None:
        r = msg.value
        self.notify(f"Request {r.id} recorded: it needs {r.needed} approver(s).")
        self.action_refresh()

    def action_approve(self) -> None:
        r = self._request()
        if r is None or r.state != "pending":
            self.notify("Highlight a pending request to sign.", severity="warning")
            return
        if r.seconds_left(self._now()) <= 0:
            self.notify(f"Request {r.id} has expired; ask again.", severity="warning")
            return

        def got_key(path: str | None) -> None:
            if path:
                self.last_key = path
                self.check_code(r.id, path)

        self.app.push_screen(
            TextPrompt(f"Sign {r.id}: your participant key (NAME.key.pem)", self.last_key),
            got_key,
        )

    @work(thread=True, exit_on_error=False, group="access-op")
    def check_code(self, request_id: str, key_path: str) -> None:
        needs = self._services().approve_needs_code(request_id, key_path)
        self.post_message(SignAsked((request_id, key_path, needs)))

    def on_sign_asked(self, msg: SignAsked) -> None:
        """The key's passphrase, then (for an approver who must give one) the TOTP code;
        both in non-echoing prompts, handed straight to the worker."""
        request_id, path, needs_code = msg.value
        what = "participant token PIN" if path.endswith(".token.json") else "key passphrase"

        def got_secret(secret: str | None) -> None:
            if secret is None:
                return
            if not needs_code:
                self.run_approve(request_id, path, secret, None)
                return

            def got_code(code: str | None) -> None:
                if code:
                    self.run_approve(request_id, path, secret, code)

            self.app.push_screen(PinPrompt("approver's TOTP code (authenticator app)"), got_code)

        self.app.push_screen(PinPrompt(what), got_secret)

    def on_approved(self, msg: Approved) -> None:
        self.notify(msg.value.message)
        self.action_refresh()

    def action_revoke(self) -> None:
        g = self._grant()
        if g is None or g.state != "live":
            self.notify("Highlight a live grant to revoke.", severity="warning")
            return

        def got_reason(reason: str | None) -> None:
            if reason is None:
                return

            def answer(yes: bool | None) -> None:
                if yes:
                    self.run_revoke(g.id, reason)

            self.app.push_screen(
                ConfirmModal(
                    f"Revoke {g.id}?",
                    f"{g.principal} loses {','.join(g.actions)} on {g.target} now. "
                    "This is audited and cannot be undone.",
                ),
                answer,
            )

        self.app.push_screen(TextPrompt(f"Why revoke {g.id}?", "revoked early"), got_reason)

    def on_revoked(self, msg: Revoked) -> None:
        self.notify(f"Revoked {msg.value.id} ({msg.value.principal} on {msg.value.target}).")
        self.action_refresh()
