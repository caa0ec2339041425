"""The re-key screen: jobs with live progress, KEK versions and their retirement stage,
and the policy's due dates.

Starting a job first asks :meth:`Services.rekey_plan` (no PIN) and shows the plan in a
``ConfirmModal`` (a ``ModalScreen[bool]``): what moves from which version, the measured
rate and the estimate. Only a "yes" runs :meth:`Services.rekey_run` in a thread worker,
which opens its own deployment (SQLite connections are per thread); its per-batch
``progress(n)`` callback posts messages that drive the ProgressBar, objects/s and ETA.
A job run by another process (cron, ``custody rekey run``) shows too: the jobs table is
polled every second and its rate is taken from the job row's own timestamps.
The PIN comes from the services' PIN box (``--pin-file``, ``CUSTODY_PIN``, or the PIN
prompt shown here when none is known); it is never kept by this screen.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, ProgressBar, Static

from tui.screens.base import ItemTable, Payload, ServiceScreen
from tui.screens.dashboard import rotation_fields, styled
from tui.screens.modals import ConfirmModal, DetailScreen, PinPrompt
from tui.services.errors import CustodyError, UsageError
from tui.services.home import Field, JobView, PlanView, RekeyView, RunView, Services

POLL_SECONDS = 1.0
DEFAULT_BATCH = 10_000  # custody.rekey.jobs.DEFAULT_BATCH


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def job_rate(j: JobView) -> float | None:
    """Objects/s of a job from its own row (started -> updated); None when unknown."""
    try:
        dt = (datetime.fromisoformat(j.updated) - datetime.fromisoformat(j.started)).total_seconds()
    except ValueError:
        return None
    return j.done / dt if dt > 0 and j.done else None


def plan_text(p: PlanView) -> str:
    lines = [f"rotate first: {', '.join(p.rotate)}"] if p.rotate else []
    for b, frm, to, n in p.items:
        lines.append(f"{b}: {n:,} objects  v{frm} -> {'v' + str(to) if to else 'new version'}")
    if not p.items:
        lines.append("nothing to move")
    sched = [name for name, what in p.retire if what == "destroy scheduled"]
    if sched:
        lines.append(
            f"schedules for destruction after {p.destroy_delay_days} days: {', '.join(sched)}"
            " (x on a destroy-scheduled row cancels it)"
        )
    for name, what in p.retire:
        if what != "destroy scheduled":
            lines.append(f"{name}: {what}")
    if not p.retire:
        lines.append("no version changes retirement stage")
    lines.append(f"total {p.total:,} objects at ~{p.rate:,.0f}/s: about {fmt_eta(p.eta_seconds)}")
    lines.append("Needs the token PIN; the KEK is unwrapped once, for the job's life.")
    return "\n".join(lines)


class RekeyLoaded(Payload[RekeyView]):
    pass


class JobsPolled(Payload[tuple[JobView, ...]]):
    pass


class PlanReady(Message):
    def __init__(self, plan: PlanView, has_pin: bool, due: bool) -> None:
        super().__init__()
        self.plan, self.has_pin, self.due = plan, has_pin, due


class Progressed(Payload[int]):
    pass


class JobFinished(Payload[RunView]):
    pass


class Cancelled(Payload[str]):
    pass


class RekeyScreen(ServiceScreen):
    """Re-key jobs, staged retirement and rotation due dates."""

    BINDINGS = [
        Binding("s", "start(False)", "Start job"),
        Binding("u", "start(True)", "Run due"),
        Binding("x", "cancel_destroy", "Cancel destroy"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.view: RekeyView | None = None
        self.jobs: tuple[JobView, ...] = ()
        self.batch_size = DEFAULT_BATCH  # objects per transaction (not Widget.batch)
        self.running = False  # a job started from this screen is running
        self.last_run: RunView | None = None
        self._moved = 0
        self._total = 0
        self._t0 = 0.0
        self._timer: Timer | None = None
        self._details: dict[str, tuple[str, list[Field]]] = {}

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with VerticalScroll(id="rekey"):
            yield Static("loading ...", id="rk-summary")
            with Horizontal(id="rk-live"):
                yield Static("no job running", id="rk-job")
                yield ProgressBar(id="rk-bar", show_eta=False, total=100)
            yield Static("", id="rk-rate")
            yield ItemTable(id="rk-jobs", title="Jobs")
            yield ItemTable(id="rk-versions", title="KEK versions")
            yield ItemTable(id="rk-policy", title="Policy due dates")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#rk-jobs", DataTable).add_columns(
            "job", "branch", "to", "state", "done", "%"
        )
        self.query_one("#rk-versions", DataTable).add_columns(
            "version", "stage", "objects", "destroy after"
        )
        self.query_one("#rk-policy", DataTable).add_columns("key", "class", "due", "days", "status")
        self.query_one("#rk-versions", DataTable).focus()
        self.action_refresh()
        self._timer = self.set_interval(POLL_SECONDS, self._tick)

    def _report(self, err: BaseException) -> None:
        self.app.report_error(err)  # type: ignore[attr-defined]

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()

    def on_screen_resume(self) -> None:
        if self._timer is not None:
            self._timer.resume()

    # -- loading and polling -------------------------------------------------------------

    def action_refresh(self) -> None:
        self.load(self.app.services)  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, exclusive=True, group="rekey-load")
    def load(self, services: Services) -> None:
        self.post_message(RekeyLoaded(services.rekey_view()))

    def _tick(self) -> None:
        if not self.running:
            self.poll(self.app.services)  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, exclusive=True, group="rekey-poll")
    def poll(self, services: Services) -> None:
        try:
            self.post_message(JobsPolled(services.rekey_jobs()))
        except CustodyError:  # a transient read error must not raise a modal every second
            return

    def on_jobs_polled(self, msg: JobsPolled) -> None:
        if msg.value != self.jobs:
            was_running = any(j.state == "running" for j in self.jobs)
            self._show_jobs(msg.value)
            if was_running and not any(j.state == "running" for j in msg.value):
                self.action_refresh()  # another process finished: stages changed

    def _row(
        self, table: DataTable[Any], key: str, title: str, fields: list[Field], *cells: object
    ) -> None:
        self._details[key] = (title, fields)
        table.add_row(*cells, key=key)

    def on_rekey_loaded(self, msg: RekeyLoaded) -> None:
        v = self.view = msg.value
        pend = ", ".join(f"{b}/v{ver} {n:,}" for b, ver, n in v.pending) or "nothing"
        self.query_one("#rk-summary", Static).update(
            Text.assemble(("to move: ", "dim"), pend, ("  lease: ", "dim"), v.lease or "free")
        )
        t = self.query_one("#rk-versions", DataTable)
        t.clear()
        for k in v.versions:
            fields = [
                Field(label="version", value=k.name),
                Field(label="stage", value=k.state),
                Field(label="objects wrapped", value=str(k.objects)),
                Field(label="created", value=k.created),
                Field(label="destroy after", value=k.destroy_after or "-"),
                Field(label="hold", value="yes (destruction cancelled)" if k.hold else "no"),
            ]
            stage = styled(k.state)
            if k.hold:
                stage.append(" (held)", style="dim")
            self._row(
                t,
                f"v-{k.name}",
                f"Root {k.name}" if k.branch == "root" else f"KEK {k.name}",
                fields,
                k.name,
                stage,
                f"{k.objects:,}",
                k.destroy_after[:10] or "-",
            )
        t = self.query_one("#rk-policy", DataTable)
        t.clear()
        for r in v.policy:
            self._row(
                t,
                f"p-{r.key}",
                f"Rotation {r.key}",
                rotation_fields(r),
                r.key,
                r.key_class,
                r.due,
                str(r.days_left),
                styled(r.status),
            )
        self._show_jobs(v.jobs)

    def _show_jobs(self, jobs: tuple[JobView, ...]) -> None:
        self.jobs = jobs
        t = self.query_one("#rk-jobs", DataTable)
        t.clear()
        for j in jobs:
            self._row(
                t,
                f"j-{j.id}",
                f"Job {j.id}",
                [
                    Field(label="job", value=str(j.id)),
                    Field(label="branch", value=j.branch),
                    Field(label="to version", value=f"v{j.to_version}"),
                    Field(label="state", value=j.state),
                    Field(label="progress", value=f"{j.done:,}/{j.total:,}"),
                    Field(label="started", value=j.started),
                    Field(label="updated", value=j.updated),
                    Field(label="finished", value=j.finished or "-"),
                    Field(
                        label="verified", value=str(j.verified) if j.verified is not None else "-"
                    ),
                ],
                str(j.id),
                j.branch,
                f"v{j.to_version}",
                styled(j.state),
                f"{j.done:,}/{j.total:,}",
                f"{j.fraction:.0%}",
            )
        if not jobs:
            self._row(
                t,
                "j-none",
                "Jobs",
                [Field(label="jobs", value="none yet")],
                "-",
                "none yet",
                "",
                "",
                "",
                "",
            )
        if not self.running:
            live = next((j for j in jobs if j.state == "running"), None)
            if live is not None:
                rate = job_rate(live)
                eta = (live.total - live.done) / rate if rate else None
                self._show_progress(
                    f"job {live.id} {live.branch} -> v{live.to_version} (other process)",
                    live.done,
                    live.total,
                    rate,
                    eta,
                )
            elif jobs:
                last = jobs[0]
                self._show_progress(
                    f"last job {last.id} {last.branch} -> v{last.to_version}: {last.state}",
                    last.done,
                    last.total,
                    job_rate(last),
                    None,
                )

    def _show_progress(
        self, label: str, done: int, total: int, rate: float | None, eta: float | None
    ) -> None:
        self.query_one("#rk-job", Static).update(label)
        bar = self.query_one("#rk-bar", ProgressBar)
        bar.update(total=max(total, 1), progress=min(done, max(total, 1)))
        self.query_one("#rk-rate", Static).update(
            Text.assemble(
                (f"{done:,}/{total:,} objects", ""),
                ("  rate ", "dim"),
                f"{rate:,.0f}/s" if rate else "-",
                ("  ETA ", "dim"),
                fmt_eta(eta),
            )
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = str(event.row_key.value)
        if key in self._details:
            self.app.push_screen(DetailScreen(*self._details[key]))

    # -- starting a job ------------------------------------------------------------------

    def action_start(self, due: bool) -> None:
        if self.running:
            self.notify("A job is already running", severity="warning")
            return
        self.query_one("#rk-job", Static).update("planning ...")
        self.make_plan(self.app.services, due)  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, exclusive=True, group="rekey-plan")
    def make_plan(self, services: Services, due: bool) -> None:
        plan = services.rekey_plan(None, due)
        self.post_message(PlanReady(plan, services.has_pin(), due))

    def on_plan_ready(self, msg: PlanReady) -> None:
        plan = msg.plan
        self.query_one("#rk-job", Static).update("waiting for confirmation")
        title = "Rotate due KEKs and re-key?" if msg.due else "Start the re-key job?"

        def confirmed(yes: bool | None) -> None:
            if not yes:
                self.query_one("#rk-job", Static).update("not started")
                return
            if msg.has_pin:
                self._run(plan, msg.due, None)
                return

            def got_pin(pin: str | None) -> None:
                if pin:
                    self._run(plan, msg.due, pin)
                else:
                    self.query_one("#rk-job", Static).update("not started (no PIN)")

            self.app.push_screen(PinPrompt(), got_pin)

        self.app.push_screen(ConfirmModal(title, plan_text(plan)), confirmed)

    def _run(self, plan: PlanView, due: bool, pin: str | None) -> None:
        self.running = True
        self._moved, self._total, self._t0 = 0, plan.total, time.monotonic()
        self._show_progress(f"re-keying {plan.total:,} objects", 0, plan.total, None, None)
        self.run_job(self.app.services, due, self.batch_size, pin)  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, exclusive=True, group="rekey-run")
    def run_job(self, services: Services, due: bool, batch: int, pin: str | None) -> None:
        try:
            if pin is not None:
                services.login(pin)  # kept by the services' PIN box only if the token accepts it
            del pin

            def progress(n: int) -> None:
                self.post_message(Progressed(n))

            report = services.rekey_run(None, due, batch, progress)
        except BaseException:
            self.post_message(JobFinished(RunView(status="failed", moved=self._moved, lines=())))
            raise
        self.post_message(JobFinished(report))

    def on_progressed(self, msg: Progressed) -> None:
        self._moved += msg.value
        dt = time.monotonic() - self._t0
        rate = self._moved / dt if dt > 0 else None
        eta = (self._total - self._moved) / rate if rate else None
        self._show_progress(
            f"re-keying {self._total:,} objects", self._moved, self._total, rate, eta
        )

    def on_job_finished(self, msg: JobFinished) -> None:
        self.running = False
        self.last_run = r = msg.value
        if r.status == "failed":
            self.query_one("#rk-job", Static).update(
                Text("job failed (see the message)", style="bold red")
            )
        else:
            done = (
                "nothing to do"
                if r.status == "nothing-to-do"
                else (
                    "busy: another job holds the lease"
                    if r.status == "busy"
                    else f"done: moved {r.moved:,}"
                )
            )
            self.notify("\n".join(r.lines) or done, title="Re-key", timeout=6)
            self.action_refresh()
            self.query_one("#rk-job", Static).update(done)

    # -- cancelling a scheduled destruction ----------------------------------------------

    def action_cancel_destroy(self) -> None:
        t = self.query_one("#rk-versions", DataTable)
        k = None
        if self.view is not None and t.row_count:
            key = str(t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value)
            k = next((v for v in self.view.versions if f"v-{v.name}" == key), None)
        if k is None or k.state != "destroy-scheduled":
            self._report(
                UsageError(
                    "Select a destroy-scheduled version",
                    "Move to a KEK or root version in stage destroy-scheduled (versions table).",
                )
            )
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.cancel(self.app.services, k.branch, k.version)  # type: ignore[attr-defined]

        self.app.push_screen(
            ConfirmModal(
                f"Cancel the destruction of {k.name}?",
                f"It goes back to disabled, with a hold so no run schedules it again "
                f"(was due after {k.destroy_after[:10]}).",
            ),
            confirmed,
        )

    @work(thread=True, exit_on_error=False, group="rekey-cancel")
    def cancel(self, services: Services, branch: str, version: int) -> None:
        self.post_message(Cancelled(services.cancel_destroy(branch, version)))

    def on_cancelled(self, msg: Cancelled) -> None:
        self.notify(msg.value, timeout=4)
        self.action_refresh()
