"""The auditor view: verify a transcript bundle offline against trust keys you pinned.

Type a bundle path, pin one or more public-key files (Enter in the trust field adds one),
then verify (Ctrl+R). Each check shows pass or fail with its names, quorums are listed,
and the event timeline can be filtered by actor or kind (``actor=alice``, ``kind=approve``
or any text). Ctrl+S exports the report (``.json`` or text). Pin files hold identities
with a name and a role (``NAME.pub.json`` or a pin list). Strings from the bundle arrive
escaped from the services and are shown as plain :class:`Text`, never parsed as markup.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Input, Static

from tui.screens.base import ItemTable, ServiceScreen
from tui.screens.modals import DetailScreen, TextPrompt
from tui.services.home import AuditView, BundleRow, EventRow, Field, Services


class Verified(Message):
    def __init__(self, view: AuditView) -> None:
        super().__init__()
        self.view = view


class Pinned(Message):
    def __init__(self, path: str, names: tuple[str, ...]) -> None:
        super().__init__()
        self.path = path
        self.names = names


class BundlesListed(Message):
    def __init__(self, rows: tuple[BundleRow, ...]) -> None:
        super().__init__()
        self.rows = rows


class Exported(Message):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path


def event_matches(e: EventRow, flt: str) -> bool:
    """Filter terms, all of which must match: ``actor=X``, ``kind=Y``, or free text."""
    for term in flt.split():
        name, sep, value = term.partition("=")
        if sep and name == "actor":
            if value.lower() not in e.actor.lower():
                return False
        elif sep and name == "kind":
            if value.lower() not in e.kind.lower():
                return False
        elif term.lower() not in f"{e.actor} {e.kind} {e.step}".lower():
            return False
    return True


class AuditorScreen(ServiceScreen):
    """Offline transcript verification for an auditor."""

    BINDINGS = [
        Binding("ctrl+r", "verify", "Verify"),
        Binding("ctrl+s", "export", "Export"),
        Binding("ctrl+l", "unpin", "Unpin keys"),
        Binding("escape", "leave_field", "Leave field"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.trust_keys: list[str] = []
        self.pinned_names: dict[str, tuple[str, ...]] = {}
        self.view: AuditView | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with VerticalScroll(id="auditor"):
            with Horizontal(id="aud-inputs"):
                yield Input(id="bundle", placeholder="bundle path (dir or archive)")
                yield Input(id="trust", placeholder="trust key file, Enter to pin")
            yield Static("pinned: none", id="pinned")
            yield ItemTable(id="bundles", title="Bundles in this home (Enter verifies)")
            yield Static("not verified yet", id="verdict")
            yield ItemTable(id="checks", title="Checks")
            yield ItemTable(id="quorums", title="Quorums")
            yield Input(id="filter", placeholder="filter: actor=NAME kind=KIND or text")
            yield ItemTable(id="timeline", title="Timeline")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#bundles", DataTable).add_columns("ceremony", "kind", "state", "bundle")
        self.query_one("#bundles").display = False
        self.list_bundles(self.app.services)  # type: ignore[attr-defined]
        self.query_one("#checks", DataTable).add_columns("result", "check", "detail")
        self.query_one("#quorums", DataTable).add_columns("quorum")
        self.query_one("#timeline", DataTable).add_columns("seq", "time", "step", "kind", "actor")
        self.query_one("#bundle", Input).focus()

    # -- inputs --------------------------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="bundles")
    def list_bundles(self, services: Services) -> None:
        self.post_message(BundlesListed(services.bundles()))

    def on_bundles_listed(self, msg: BundlesListed) -> None:
        t = self.query_one("#bundles", DataTable)
        t.clear()
        for r in msg.rows:
            t.add_row(
                Text(r.ceremony_id), Text(r.kind), Text(r.state), Text(r.bundle), key=r.bundle
            )
        t.display = bool(msg.rows)

    def _show_pinned(self) -> None:
        names = [
            f"{p} ({', '.join(self.pinned_names.get(p, ()))})" if p in self.pinned_names else p
            for p in self.trust_keys
        ]
        self.query_one("#pinned", Static).update(Text(f"pinned: {'; '.join(names) or 'none'}"))

    def pin_trust_key(self, path: str) -> None:
        """Pin a public-key file (the auditor's own copy, never one from the bundle). It is
        read at once: a directory, a PIN file or any non-key is refused and not pinned."""
        path = path.strip()
        if path and path not in self.trust_keys:
            self.check_trust_key(self.app.services, path)  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, group="pin")
    def check_trust_key(self, services: Services, path: str) -> None:
        self.post_message(Pinned(path, services.trust_key_names(path)))

    def on_pinned(self, msg: Pinned) -> None:
        if msg.path not in self.trust_keys:
            self.trust_keys.append(msg.path)
        self.pinned_names[msg.path] = msg.names
        self._show_pinned()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "trust":
            self.pin_trust_key(event.value)
            event.input.value = ""
        elif event.input.id == "bundle":
            self.action_verify()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self._fill_timeline()

    def action_unpin(self) -> None:
        self.trust_keys.clear()
        self.pinned_names.clear()
        self._show_pinned()

    def action_leave_field(self) -> None:
        self.query_one("#checks", DataTable).focus()

    # -- verification ----------------------------------------------------------------------

    def action_verify(self) -> None:
        bundle = self.query_one("#bundle", Input).value.strip()
        self.query_one("#verdict", Static).update("verifying ...")
        self.verify(self.app.services, bundle, tuple(self.trust_keys))  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, exclusive=True, group="verify")
    def verify(self, services: Services, bundle: str, trust: tuple[str, ...]) -> None:
        self.post_message(Verified(services.verify_bundle(bundle, trust)))

    def on_verified(self, msg: Verified) -> None:
        v = self.view = msg.view
        passed = sum(c.ok for c in v.checks)
        verdict = Text.assemble(
            ("PASS" if v.ok else "FAIL", "bold green" if v.ok else "bold red"),
            f"  {passed}/{len(v.checks)} checks passed",
            (f"  ceremony {v.ceremony_id}" if v.ceremony_id else "", "dim"),
            (f"  proves: {v.proves}" if v.proves else "", ""),
        )
        self.query_one("#verdict", Static).update(verdict)
        checks = self.query_one("#checks", DataTable)
        checks.clear()
        for c in sorted(v.checks, key=lambda c: c.ok):  # failures first
            checks.add_row(
                Text("pass", style="green") if c.ok else Text("FAIL", style="bold red"),
                Text(c.id),
                Text(c.detail),
                key=f"check-{c.id}",
            )
        q = self.query_one("#quorums", DataTable)
        q.clear()
        for i, line in enumerate(v.quorums or ("no quorum-gated actions",)):
            q.add_row(Text(line), key=f"q-{i}")
        self._fill_timeline()
        checks.focus()

    def _fill_timeline(self) -> None:
        t = self.query_one("#timeline", DataTable)
        t.clear()
        if self.view is None:
            return
        flt = self.query_one("#filter", Input).value.strip()
        shown = [e for e in self.view.events if event_matches(e, flt)]
        for e in shown:
            t.add_row(
                str(e.seq),
                e.time[:19],
                Text(e.step),
                Text(e.kind),
                Text(e.actor),
                key=f"ev-{e.seq}",
            )
        t.border_title = f"Timeline ({len(shown)}/{len(self.view.events)})"

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = str(event.row_key.value)
        if event.data_table.id == "bundles":
            self.query_one("#bundle", Input).value = key
            self.action_verify()
            return
        if self.view is None:
            return
        if key.startswith("check-"):
            c = next(c for c in self.view.checks if f"check-{c.id}" == key)
            self.app.push_screen(
                DetailScreen(
                    f"Check {c.id}",
                    [
                        Field(label="check", value=c.id),
                        Field(label="result", value="pass" if c.ok else "FAIL"),
                        Field(label="detail", value=c.detail),
                    ],
                )
            )
        elif key.startswith("ev-"):
            e = next(e for e in self.view.events if f"ev-{e.seq}" == key)
            self.app.push_screen(
                DetailScreen(
                    f"Event {e.seq}",
                    [
                        Field(label="seq", value=str(e.seq)),
                        Field(label="time", value=e.time),
                        Field(label="step", value=e.step),
                        Field(label="kind", value=e.kind),
                        Field(label="actor", value=e.actor),
                        Field(label="body", value=e.body),
                    ],
                )
            )

    # -- export ----------------------------------------------------------------------------

    def action_export(self) -> None:
        if self.view is None:
            from tui.services.errors import UsageError

            self.app.report_error(  # type: ignore[attr-defined]
                UsageError(
                    "Nothing to export yet",
                    "Verify a bundle first (Ctrl+R).",
                )
            )
            return
        view = self.view

        def done(path: str | None) -> None:
            if path:
                self.export(self.app.services, view, path)  # type: ignore[attr-defined]

        self.app.push_screen(
            TextPrompt("Export the report to", f"{view.bundle.rstrip('/')}.report.json"), done
        )

    @work(thread=True, exit_on_error=False, group="export")
    def export(self, services: Services, view: AuditView, path: str) -> None:
        self.post_message(Exported(str(services.export_report(view, path))))

    def on_exported(self, msg: Exported) -> None:
        self.notify(f"Report written to {msg.path}", timeout=4)
