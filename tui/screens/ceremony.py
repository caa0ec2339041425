"""The ceremony screen: run generate, recover, reshare, rotate-root, emergency-rotate, drill.

Driven by the same :class:`ceremonies.runner.CeremonyRunner` as ``custody ceremony``,
through :mod:`tui.services.ceremony` in thread workers. It shows the step list (where the
ceremony is, who acts next, what each step records), the quorum per group with every
rejected share named and why, the approvals with the countdown of their window, and the
share entry: an envelope (pasted QR text or a path) and the words, typed with completion
from a unique 4-letter prefix and checked live (unknown word, checksum, wrong set or
epoch), errors shown at the word position (:mod:`tui.screens.ceremony_entry`). A remote
custodian's sealed hand-in is pasted too: ``Ctrl+R`` shows the ceremony's transport offer
(:mod:`tui.screens.ceremony_offer`), the blob goes to the runner, and the SAS is shown for
voice comparison. ``o`` picks the ceremony to resume from the open ones
(:mod:`tui.screens.ceremony_resume`). Passphrases go through the non-echoing prompt
straight to a worker; they are never kept on the screen.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Input, Static

from tui.screens.base import ServiceScreen
from tui.screens.ceremony_entry import (
    CHECK_STYLE,
    STEP_STYLE,
    CeremonyUpdated,
    OpenCeremonies,
    ShareChecked,
    WordSuggester,
    word_grid,
)
from tui.screens.modals import ConfirmModal, PinPrompt, TextPrompt
from tui.services.ceremony import CeremonyView, ShareCheck, ceremony_services, check_words


class CeremonyScreen(ServiceScreen):
    """One ceremony at a time; ``n`` starts one, ``o`` resumes one."""

    BINDINGS = [
        Binding("n", "new", "New"),
        Binding("o", "resume", "Resume"),
        Binding("ctrl+s", "submit", "Hand in", priority=True),
        Binding("ctrl+a", "sign_approval", "Approve", priority=True),
        Binding("ctrl+l", "load_approval", "Approval file", show=False, priority=True),
        Binding("ctrl+o", "card", "Card", priority=True),
        Binding("ctrl+r", "offer", "Offer", priority=True),
        Binding("ctrl+x", "abort", "Abort", priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.view: CeremonyView | None = None
        self.last_check: ShareCheck | None = None
        self._countdown: Any = None
        self._offer_wanted = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("No ceremony open. n: start one, o: resume one.", id="cer-status")
        with Horizontal(id="cer-body"):
            steps: DataTable[Any] = DataTable(id="cer-steps", cursor_type="row")
            steps.border_title = "Steps"
            yield steps
            with VerticalScroll(id="cer-side"):
                yield Static("", id="cer-quorum")
                shares: DataTable[Any] = DataTable(id="cer-shares", cursor_type="row")
                shares.border_title = "Shares handed in"
                yield shares
                appr: DataTable[Any] = DataTable(id="cer-approvals", cursor_type="row")
                appr.border_title = "Approvals"
                yield appr
                yield Static("", id="cer-offer")
                yield Static("", id="cer-facts")
        with Vertical(id="cer-entry"):
            yield Input(
                id="share-envelope",
                compact=True,
                placeholder="envelope: paste the QR text, or the path of NAME.envelope.json",
            )
            yield Input(
                id="share-words",
                suggester=WordSuggester(),
                compact=True,
                placeholder="share words (4 letters each are enough); Enter hands in",
            )
            yield Input(
                id="sealed-blob",
                compact=True,
                placeholder="remote: paste a sealed custody-blob:... (Ctrl+R makes the offer)",
            )
            yield Static("", id="share-check")
        yield Footer()

    def on_mount(self) -> None:
        self.app.ceremony_screen = self  # type: ignore[attr-defined]  # asked by action_quit
        t = self.query_one("#cer-steps", DataTable)
        t.add_columns("#", "step", "state", "who acts", "records")
        self.query_one("#cer-shares", DataTable).add_columns("custodian", "check", "reason")
        self.query_one("#cer-approvals", DataTable).add_columns("approver", "window")
        self._countdown = self.set_interval(1.0, self._tick)
        self.render_view()
        self.load_current()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Only the keys that do something now are live (and shown in the footer)."""
        v = self.view
        live = v is not None and v.status not in ("closed", "aborted")
        if action in ("submit", "offer"):
            return live and v is not None and v.awaiting in ("shares", "approvals")
        if action in ("sign_approval", "load_approval"):
            return live and v is not None and v.awaiting == "approvals"
        if action == "card":
            return v is not None and bool(v.cards)
        if action == "abort":
            return live
        return True

    def quit_warning(self) -> str | None:
        """What quitting now would drop, or None when no ceremony is open here."""
        v = self.view
        if v is None or v.status in ("closed", "aborted"):
            return None
        held = [c.custodian or c.source for c in v.shares if c.status == "ok"]
        typed = bool(self.query_one("#share-words", Input).value.strip())
        out = f"{v.kind} {v.ceremony_id} is still open"
        out += f" (waiting for {v.awaiting})." if v.awaiting else "."
        if v.awaiting == "shares" and held:
            out += (
                f" The {len(held)} share(s) handed in this session ({', '.join(held)}) are "
                "not combined yet and are dropped: they must be handed in again."
            )
        if typed:
            out += " The share words typed in the field are dropped."
        return out + " Resume the ceremony later with o, or abort it with Ctrl+X."

    def on_worker_state_changed(self, event: Any) -> None:
        # (Textual also runs ServiceScreen's handler, which reports the error: not again)
        from textual.worker import WorkerState

        if event.state is WorkerState.ERROR and event.worker.name == "do":
            # a failed resume may leave the ceremony open in the session (SecretLost,
            # a failing step): show it, so that it can be aborted with Ctrl+X
            self.load_current()

    def on_unmount(self) -> None:
        if getattr(self.app, "ceremony_screen", None) is self:
            self.app.ceremony_screen = None
        svc = getattr(self.app, "ceremony_services", None)
        if svc is not None:
            svc.close()  # closes the token session and the store (the app is leaving)

    def _services(self) -> Any:
        return ceremony_services(self.app)

    def _now(self) -> int:
        return int(self.app.settings.clock().timestamp())  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ workers
    @work(thread=True, exit_on_error=False, group="ceremony")
    def load_current(self) -> None:
        self.post_message(CeremonyUpdated(self._services().view()))

    @work(thread=True, exit_on_error=False, group="ceremony", exclusive=False)
    def do(self, what: str, *args: Any) -> None:
        view = getattr(self._services(), what)(*args)
        self.post_message(CeremonyUpdated(view))

    @work(thread=True, exit_on_error=False, group="check", exclusive=True)
    def live_check(self, text: str, envelope: str) -> None:
        self.post_message(ShareChecked(self._services().check("share", text, envelope)))

    # ------------------------------------------------------------------ rendering
    def on_ceremony_updated(self, msg: CeremonyUpdated) -> None:
        self.view = msg.view
        self.render_view()
        if self._offer_wanted and self.view is not None and self.view.offer is not None:
            self._offer_wanted = False
            self._show_offer()

    def render_view(self) -> None:
        v = self.view
        status = self.query_one("#cer-status", Static)
        steps = self.query_one("#cer-steps", DataTable)
        shares = self.query_one("#cer-shares", DataTable)
        steps.clear()
        shares.clear()
        if v is None:
            status.update("No ceremony open. n: start one, o: resume one.")
            self.query_one("#cer-approvals", DataTable).clear()
            self._leave_entry()
            for w in ("#cer-entry", "#cer-shares", "#cer-approvals"):
                self.query_one(w).display = False
            self.refresh_bindings()
            return
        line = Text(f"{v.kind} {v.ceremony_id}  ", style="bold")
        if v.awaiting:
            line.append(f"waiting for {v.awaiting} at {v.step}", style="yellow")
        else:
            line.append(
                v.status,
                style="green" if v.status == "closed" else "red" if v.status == "aborted" else "",
            )
        line.append(f"  next: {v.next_actor}", style="dim")
        status.update(line)
        for s in v.steps:
            steps.add_row(
                str(s.number),
                s.name,
                Text(s.status, style=STEP_STYLE.get(s.status, "")),
                s.actor,
                Text(s.records, style="dim"),
                key=s.name,
            )
        cur = next(
            (i for i, s in enumerate(v.steps) if s.status in ("waiting", "running", "next")), None
        )
        if cur is not None:
            steps.move_cursor(row=cur)
        for c in v.shares:
            shares.add_row(
                c.custodian or c.source,
                Text(c.status, style=CHECK_STYLE.get(c.status, "")),
                c.reason,
            )
        q = Text()
        if cur is not None:
            s = v.steps[cur]
            q.append(f"Step {s.number} {s.name}", style="bold")
            q.append(f" ({s.actor}) records: {s.records}\n", style="dim")
        if v.quorum is not None:
            q.append("Quorum: ", style="bold")
            q.append(v.quorum.describe(), style="green" if v.quorum.met else "yellow")
        if v.approvals_needed:
            if q:
                q.append("\n")
            valid = len({a.approver for a in v.approvals if a.status == "valid"})
            q.append("Approvals: ", style="bold")
            q.append(
                f"{valid}/{v.approvals_needed} custodians",
                style="green" if valid >= v.approvals_needed else "yellow",
            )
            if v.request:
                q.append(
                    f"  {v.request.get('action_id', '')}  digest "
                    f"{str(v.request.get('action_digest', ''))[:12]}...  window "
                    f"{v.request.get('window', '')}s",
                    style="dim",
                )
        self.query_one("#cer-quorum", Static).update(q)
        self._render_approvals()
        facts = Text()
        for m in v.messages:
            alert = m in v.alerts or (v.status == "aborted" and m.startswith("rolled back"))
            facts.append(m + "\n", style="red" if alert else "")
        for k, val in v.facts:
            facts.append(f"{k}: ", style="bold")
            facts.append(val + "\n")
        if v.cards:
            facts.append(f"cards: {', '.join(v.cards)} (Ctrl+O shows one)\n", style="cyan")
        if v.status in ("closed", "aborted"):
            facts.append(f"transcript: {v.bundle}\n", style="dim")
        self.query_one("#cer-facts", Static).update(facts)
        self._render_offer()
        if v.awaiting != "shares":
            self._leave_entry()
        self.query_one("#cer-entry").display = v.awaiting == "shares"
        if v.awaiting == "shares" and not isinstance(self.focused, Input):
            self.query_one("#share-envelope", Input).focus()
        self.query_one("#cer-shares").display = bool(v.shares) or v.awaiting == "shares"
        self.query_one("#cer-approvals").display = bool(v.approvals) or bool(v.approvals_needed)
        self.refresh_bindings()

    def _leave_entry(self) -> None:
        """No share is wanted: the hidden entry fields give up the focus (else n, o, d, q
        and ? would type into them), and the words typed there are cleared."""
        entry = self.query_one("#cer-entry")
        for inp in entry.query(Input):
            inp.value = ""
        if self.focused is not None and entry in self.focused.ancestors_with_self:
            self.query_one("#cer-steps", DataTable).focus()

    def _render_approvals(self) -> None:
        v = self.view
        t = self.query_one("#cer-approvals", DataTable)
        t.clear()
        if v is None:
            return
        now = self._now()
        for a in v.approvals:
            left = a.seconds_left(now)
            style = "red" if left == 0 else ("yellow" if left < 120 else "green")
            t.add_row(
                a.approver,
                Text("expired" if left == 0 else f"{left // 60}:{left % 60:02d} left", style=style),
            )

    def _tick(self) -> None:
        if self.view is not None and self.view.approvals:
            self._render_approvals()
        if self.view is not None and self.view.offer is not None:
            self._render_offer()

    def _render_offer(self) -> None:
        """The offer's expiry countdown and the SAS of each remote hand-in opened, for the
        coordinator to compare by voice with the custodian (the QR: Ctrl+R)."""
        from tui.screens.ceremony_offer import offer_header

        v, out = self.view, Text()
        if v is not None:
            for who, sas in v.sas:
                out.append(f"SAS {who}: ", style="bold")
                out.append(sas, style="bold cyan")
                out.append(
                    "  (read it aloud with the custodian; stop if theirs differs)\n", style="dim"
                )
            if v.offer is not None:
                out.append_text(offer_header(v.offer, self._now()))
                out.append("  Ctrl+R shows it with its QR", style="dim")
        panel = self.query_one("#cer-offer", Static)
        panel.update(out)
        panel.display = bool(out)

    # ------------------------------------------------------------------ share entry
    @on(Input.Changed, "#share-words")
    @on(Input.Changed, "#share-envelope")
    def _changed(self, event: Input.Changed) -> None:
        text = self.query_one("#share-words", Input).value
        env = self.query_one("#share-envelope", Input).value
        ws = check_words(text)
        self.last_check = None
        self._show_check(text, None)
        if len(ws) >= 20 and not any(w.error for w in ws) and self.view is not None:
            self.live_check(text, env)

    def on_share_checked(self, msg: ShareChecked) -> None:
        self.last_check = msg.check
        self._show_check(self.query_one("#share-words", Input).value, msg.check)

    def _show_check(self, text: str, check: ShareCheck | None) -> None:
        out = word_grid(text, check)
        if check is not None:
            out.append("\n")
            out.append(check.line(), style=CHECK_STYLE.get(check.status, ""))
        self.query_one("#share-check", Static).update(out)

    @on(Input.Submitted, "#share-envelope")
    def _envelope_given(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#share-words", Input).focus()

    @on(Input.Submitted, "#sealed-blob")
    def _sealed_given(self, event: Input.Submitted) -> None:
        event.stop()
        blob = event.input.value
        event.input.value = ""
        if blob.strip():
            self.do("hand_in_sealed", blob)

    @on(Input.Submitted, "#share-words")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def action_submit(self) -> None:
        v = self.view
        if v is None:
            return
        words = self.query_one("#share-words", Input)
        env = self.query_one("#share-envelope", Input)
        if v.awaiting == "shares" and words.value.strip():
            text, envelope = words.value, env.value
            words.value = ""
            env.value = ""
            self.last_check = None
            self.do("hand_in", "share", text, envelope)
            env.focus()
        else:
            self.do("submit")

    # ------------------------------------------------------------------ actions
    def action_new(self) -> None:
        from tui.screens.ceremony_start import StartModal

        def started(form: dict[str, Any] | None) -> None:
            if form:
                self._with_passphrase(
                    "coordinator key passphrase",
                    lambda pw: self.do("start", form["kind"], form["key"], pw, form["params"]),
                )

        self.app.push_screen(StartModal(), started)

    def action_resume(self) -> None:
        self.load_open()

    @work(thread=True, exit_on_error=False, group="ceremony-list", exclusive=True)
    def load_open(self) -> None:
        self.post_message(OpenCeremonies(self._services().open_ceremonies()))

    def on_open_ceremonies(self, msg: OpenCeremonies) -> None:
        from tui.screens.ceremony_resume import ResumeModal

        def picked(cid: str | None) -> None:
            if cid:
                self._resume_with_key(cid)
            elif cid == "":
                self.app.push_screen(TextPrompt("Ceremony id to resume"), typed)

        def typed(cid: str | None) -> None:
            if cid:
                self._resume_with_key(cid)

        self.app.push_screen(ResumeModal(msg.rows, self._now()), picked)

    def _resume_with_key(self, cid: str) -> None:
        def got_key(key: str | None) -> None:
            if key:
                self._with_passphrase(
                    "coordinator key passphrase", lambda pw: self.do("resume", cid, key, pw)
                )

        self.app.push_screen(TextPrompt(f"Coordinator key file to resume {cid}"), got_key)

    def _with_passphrase(self, what: str, then: Any) -> None:
        def got(pw: str | None) -> None:
            if pw is not None:
                then(pw)

        self.app.push_screen(PinPrompt(what), got)

    def action_sign_approval(self) -> None:
        if self.view is None or self.view.awaiting != "approvals":
            self.notify("The ceremony is not waiting for approvals.", severity="warning")
            return

        def got_key(key: str | None) -> None:
            if key:
                self._with_passphrase(
                    "approver's key passphrase", lambda pw: self.do("sign_approval", key, pw)
                )

        self.app.push_screen(TextPrompt("Approver's key file (NAME.key.pem)"), got_key)

    def action_load_approval(self) -> None:
        def got(path: str | None) -> None:
            if path:
                self.do("add_approval_file", path)

        self.app.push_screen(TextPrompt("Approval file (from custody ceremony approve)"), got)

    def action_offer(self) -> None:
        if self.view is None or self.view.awaiting != "shares":
            self.notify("The ceremony is not waiting for shares.", severity="warning")
            return
        if self.view.offer is not None and self.view.offer.seconds_left(self._now()) > 60:
            self._show_offer()
            return
        self._offer_wanted = True
        self.do("offer")

    def _show_offer(self) -> None:
        from tui.screens.ceremony_offer import OfferScreen

        if self.view is not None and self.view.offer is not None:
            self.app.push_screen(OfferScreen(self.view.offer, self._now))

    def action_abort(self) -> None:
        if self.view is None or self.view.status in ("closed", "aborted"):
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.do("abort", "aborted by the coordinator in the TUI")

        self.app.push_screen(
            ConfirmModal(
                f"Abort {self.view.kind} {self.view.ceremony_id}?",
                "Everything it created is rolled back.",
            ),
            answer,
        )

    def action_card(self) -> None:
        from tui.screens.ceremony_card import CardScreen

        if self.view is None or not self.view.cards:
            self.notify("No share cards in this ceremony yet.", severity="warning")
            return

        def got(name: str | None) -> None:
            if name:
                self.app.push_screen(CardScreen(name))

        self.app.push_screen(
            TextPrompt(f"Show the card of ({', '.join(self.view.cards)})", self.view.cards[0]), got
        )
