"""The audit log viewer: follow ``HOME/audit.db`` live, filter it, show an entry, and
produce and check an inclusion proof for the selected entry.

Following polls :meth:`tui.services.home.Services.audit_tail` on a timer, in a thread worker
(each call opens its own SQLite connection), and appends only the new entries. The filter
takes ``op=``, ``actor=``, ``outcome=`` and ``target=`` terms and free text. A proof needs
a signed checkpoint covering the entry (``custody audit checkpoint``); it is checked
(RFC 9162 inclusion, checkpoint signature) against trust keys the user pinned, never
against the key embedded in the proof. Log strings arrive escaped from the services and are
shown as plain :class:`Text`, never parsed as markup.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual.worker import Worker, WorkerState

from tui.screens.base import ItemTable, Payload, ServiceScreen
from tui.screens.modals import DetailScreen, TextPrompt
from tui.services.errors import CustodyError, UsageError
from tui.services.home import AuditEntryRow, AuditTail, Field, ProofView, Services, entry_matches
from tui.services.text import printable

POLL_SECONDS = 1.0
OUTCOME_STYLE = {"ok": "green", "intent": "cyan", "denied": "yellow", "failed": "bold red"}


class TailLoaded(Payload[AuditTail]):
    pass


class PollFailed(Payload[CustodyError]):
    pass


class ProofReady(Payload[ProofView]):
    pass


class ProofExported(Payload[str]):
    pass


class AuditLogScreen(ServiceScreen):
    """The operational audit log, live."""

    BINDINGS = [
        Binding("f", "toggle_follow", "Follow"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("p", "proof", "Proof"),
        Binding("ctrl+t", "pin_trust", "Pin key"),
        Binding("ctrl+s", "export", "Export"),
        Binding("escape", "leave_field", "Leave field", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[AuditEntryRow] = []
        self.log_size = 0
        self.covered = 0
        self.checkpoints = 0
        self.following = True
        self.trust_keys: list[str] = []
        self.proof: ProofView | None = None
        self._timer: Timer | None = None
        self._polling = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Vertical(id="auditlog"):
            yield Static("loading ...", id="log-status")
            yield Input(
                id="log-filter", placeholder="filter: op=kek actor=NAME outcome=failed or text"
            )
            yield ItemTable(id="log-entries", title="Audit log")
            yield Static("proof: select an entry and press p", id="log-proof")
        yield Footer()

    def on_mount(self) -> None:
        t = self.query_one("#log-entries", DataTable)
        t.add_columns("seq", "time (UTC)", "outcome", "actor", "op", "target")
        t.focus()
        self.action_refresh()
        self._timer = self.set_interval(POLL_SECONDS, self._tick)

    def _report(self, err: BaseException) -> None:
        self.app.report_error(err)  # type: ignore[attr-defined]

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()

    def on_screen_resume(self) -> None:
        if self._timer is not None and self.following:
            self._timer.resume()

    # -- following -----------------------------------------------------------------------

    def _tick(self) -> None:
        if self.following and not self._polling:
            self.action_refresh()

    def action_refresh(self) -> None:
        self._polling = True
        self.poll(self.app.services, self.log_size)  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, exclusive=True, group="audit-poll")
    def poll(self, services: Services, start: int) -> None:
        try:
            self.post_message(TailLoaded(services.audit_tail(start)))
        except CustodyError as err:
            self.post_message(PollFailed(err))

    def on_poll_failed(self, msg: PollFailed) -> None:
        self._polling = False
        self.following = False  # report once, not every second
        self._show_status()
        self._report(msg.value)

    def on_tail_loaded(self, msg: TailLoaded) -> None:
        self._polling = False
        tail = msg.value
        self.covered, self.checkpoints = tail.covered, tail.checkpoints
        if tail.size < self.log_size or tail.start > self.log_size:  # a different or truncated log
            self.entries = []
        new = (
            [e for e in tail.entries if e.seq >= self.log_size]
            if self.entries
            else list(tail.entries)
        )
        self.log_size = tail.size
        if new:
            self.entries.extend(new)
            self._add_rows(new)
        self._show_status()

    def _show_status(self) -> None:
        shown = self.query_one("#log-entries", DataTable).row_count
        cp = f"checkpoint 0..{self.covered - 1}" if self.covered else "no checkpoint"
        self.query_one("#log-status", Static).update(
            Text.assemble(
                (
                    "● following" if self.following else "○ paused",
                    "green" if self.following else "yellow",
                ),
                ("  entries ", "dim"),
                str(self.log_size),
                ("  shown ", "dim"),
                str(shown),
                ("  ", ""),
                (cp, "dim"),
                ("  keys ", "dim"),
                ", ".join(p.rsplit("/", 1)[-1] for p in self.trust_keys) or "none",
            )
        )

    def action_toggle_follow(self) -> None:
        self.following = not self.following
        if self._timer is not None:
            (self._timer.resume if self.following else self._timer.pause)()
        if self.following:
            self.action_refresh()
        self._show_status()

    # -- filtering -----------------------------------------------------------------------

    def _filter(self) -> str:
        return self.query_one("#log-filter", Input).value.strip()

    def _add_rows(self, rows: list[AuditEntryRow]) -> None:
        t = self.query_one("#log-entries", DataTable)
        flt = self._filter()
        at_end = t.cursor_row >= t.row_count - 1
        for e in rows:
            if entry_matches(e, flt):
                t.add_row(
                    str(e.seq),
                    e.when,
                    Text(e.outcome, style=OUTCOME_STYLE.get(e.outcome, "")),
                    Text(e.actor),
                    Text(e.op),
                    Text(e.target),
                    key=f"e-{e.seq}",
                )
        if self.following and at_end and t.row_count:
            t.move_cursor(row=t.row_count - 1)
        t.border_title = f"Audit log ({t.row_count}/{len(self.entries)})"

    def _refill(self) -> None:
        t = self.query_one("#log-entries", DataTable)
        t.clear()
        self._add_rows(self.entries)
        self._show_status()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "log-filter":
            self._refill()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#log-entries", DataTable).focus()

    def action_filter(self) -> None:
        self.query_one("#log-filter", Input).focus()

    def action_leave_field(self) -> None:
        self.query_one("#log-entries", DataTable).focus()

    # -- detail ----------------------------------------------------------------------------

    def selected(self) -> AuditEntryRow | None:
        t = self.query_one("#log-entries", DataTable)
        if not t.row_count:
            return None
        key = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value or ""
        seq = int(key.removeprefix("e-"))
        return next((e for e in self.entries if e.seq == seq), None)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        e = self.selected()
        if e is not None:
            self.app.push_screen(DetailScreen(f"Audit entry {e.seq}", e.fields()))

    # -- proofs ----------------------------------------------------------------------------

    def pin_trust_key(self, path: str) -> None:
        """Pin the audit signing key's public file (your own copy, e.g. from --trust-out)."""
        path = path.strip()
        if path and path not in self.trust_keys:
            self.trust_keys.append(path)
        self._show_status()

    def action_pin_trust(self) -> None:
        def done(path: str | None) -> None:
            if path:
                self.pin_trust_key(path)

        self.app.push_screen(TextPrompt("Pin the audit trust key file (from --trust-out)"), done)

    def action_proof(self) -> None:
        e = self.selected()
        if e is None:
            self._report(
                UsageError(
                    "No entry selected",
                    "Move to an entry of the log first.",
                )
            )
            return
        if not self.trust_keys:

            def done(path: str | None) -> None:
                if path:
                    self.pin_trust_key(path)
                self._make_proof(e.seq)

            self.app.push_screen(
                TextPrompt(
                    "Pin the audit trust key to check the proof (Escape: produce it unchecked)"
                ),
                done,
            )
            return
        self._make_proof(e.seq)

    def _make_proof(self, seq: int) -> None:
        self.query_one("#log-proof", Static).update(f"proof of entry {seq}: working ...")
        self.make_proof(self.app.services, seq, tuple(self.trust_keys))  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, exclusive=True, group="audit-proof")
    def make_proof(self, services: Services, seq: int, trust: tuple[str, ...]) -> None:
        self.post_message(ProofReady(services.audit_proof(seq, trust)))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Textual also calls ServiceScreen's handler (every class in the MRO), which shows
        # the error modal; here only the proof line is updated.
        if event.worker.group == "audit-proof" and event.state is WorkerState.ERROR:
            self.proof = None
            self.query_one("#log-proof", Static).update(
                Text("proof: none (see the message)", style="bold red")
            )

    def on_proof_ready(self, msg: ProofReady) -> None:
        p = self.proof = msg.value
        if p.ok:
            line = Text.assemble(("VALID ", "bold green"), p.summary)
        else:
            line = Text.assemble(
                (f"proof of entry {p.seq} at tree size {p.tree_size}: ", ""),
                ("not checked (no trust key pinned)", "yellow"),
            )
        self.query_one("#log-proof", Static).update(line)
        entry = p.doc.get("entry", {})
        what = (
            printable(
                f"{entry.get('op', '?')} {entry.get('target', '')} by {entry.get('actor', '?')}"
            )
            if entry
            else ""
        )
        signed = p.summary.rpartition("signed by ")[2] if p.ok else "-"
        self.app.push_screen(
            DetailScreen(
                f"Inclusion proof of entry {p.seq}",
                [
                    Field(
                        label="result",
                        value="VALID (RFC 9162 inclusion)"
                        if p.ok
                        else "not checked: no trust key pinned (Ctrl+T)",
                    ),
                    Field(label="entry", value=f"{p.seq} {what}".strip()),
                    Field(label="tree size", value=str(p.tree_size)),
                    Field(label="root", value=p.root[:32]),
                    Field(label="", value=p.root[32:]),
                    Field(label="path", value=f"{len(p.doc.get('inclusion', []))} hashes"),
                    Field(label="signed by", value=signed),
                    Field(label="pinned", value=", ".join(p.trust_keys) or "none"),
                    Field(label="export", value="Ctrl+S writes the proof JSON"),
                ],
            )
        )

    def action_export(self) -> None:
        if self.proof is None:
            self._report(
                UsageError(
                    "No proof to export yet",
                    "Select an entry and press p first.",
                )
            )
            return
        proof = self.proof

        def done(path: str | None) -> None:
            if path:
                self.export(self.app.services, proof, path)  # type: ignore[attr-defined]

        self.app.push_screen(
            TextPrompt("Export the proof JSON to", f"audit-proof-{proof.seq}.json"), done
        )

    @work(thread=True, exit_on_error=False, group="audit-export")
    def export(self, services: Services, proof: ProofView, path: str) -> None:
        self.post_message(ProofExported(str(services.export_proof(proof, path))))

    def on_proof_exported(self, msg: ProofExported) -> None:
        self.notify(f"Proof written to {msg.value}", timeout=4)
