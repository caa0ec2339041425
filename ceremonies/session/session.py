"""A headless ceremony session: one open ceremony driven through the runner, from code.

:class:`CeremonySession` is what a front end drives a ceremony with (the TUI's ceremony
screen, the CLI's interactive hand-in, a script or a test). It opens the home through the
one door (:func:`custody.deployment.open_deployment`, with the token when the kind needs
it), drives :class:`ceremonies.runner.CeremonyRunner` through its public API only
(``start``, ``resume``, ``run``, ``offer``, ``abort``), and adds what a person at a screen
needs between runs:

* shares handed in one by one, each checked live *before* it is counted
  (:func:`ceremonies.sharecheck.check_typed`, the one share checker). When the shares that
  passed reach the quorum, all hand-ins of the round, the rejected ones included, go to the
  runner in one run, so the transcript names every rejection by custodian;
* approvals collected one by one (files, or signed here) and handed in at the quorum;
* the transport offer and sealed remote hand-ins, with their SAS;
* the share cards the ceremony issued.

Every call returns a :class:`~ceremonies.session.state.SessionState` (public).

Not thread-safe: the store connection and the token session belong to the thread that
opened them, so a front end calls one session from one thread (the TUI pins it to one).

Audit: with ``via`` set (the TUI: ``via="tui"``), starting, resuming, running and aborting
are recorded in the home's audit log first (intent, then ok, denied or failed; an
unwritable log refuses the action). The CLI audits its commands itself and leaves it unset.

Secrets: share words live only in :class:`~ceremonies.runner.ShareInput` (``repr=False``)
until the runner takes them; passphrases and PINs are never attributes. The coordinator's
signer is kept only to be closed with the session (a token-held key's session).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from ceremonies.runner import CeremonyRunner, Inputs, Outcome, ShareInput, open_ceremonies
from ceremonies.session.reads import issued_card, sealed_result, share_set_for
from ceremonies.session.state import SessionState
from ceremonies.sharecheck import (
    LiveCheck,
    ShareSet,
    check_typed,
    full_text,
    quorum_of,
)
from ceremonies.transcript.model import Threshold
from ceremonies.transcript.records import Approval
from custody.audit.log import AuditLog
from custody.audit.scope import actor_name
from custody.config import Home
from custody.deployment import Deployment, open_deployment
from custody.errors import CeremonyError, CustodyError, UsageError
from custody.shares.card import Card

DUPLICATE = "this custodian already handed in a share"
NO_PIN_HINT = "Give the token PIN (--pin-file or CUSTODY_PIN)."
NO_CEREMONY = ("No ceremony is open in this session", "Start one, or resume one.")
TOKENLESS_KINDS = ("drill",)  # kinds a session runs without the deployment token


def _now() -> int:
    return int(time.time())


def _close(signer: Any) -> None:
    close = getattr(signer, "close", None)
    if callable(close):
        close()  # a TokenSigner holds the participant's token session


class CeremonySession:
    """One ceremony at a time on one home, driven through the runner.

    Args:
        home: the custody home.
        pin: the token PIN source, asked when a ceremony that needs the token is opened
            (None: no PIN is known). It is passed to the door and never kept.
        clock: Unix seconds (tests pin it).
        via: record starts, resumes, runs and aborts in the audit log as ``via: VIA``.
        pin_hint: the hint of the error when the token PIN is needed but unknown.
        no_ceremony: (title, hint) of the error when no ceremony is open.
    """

    def __init__(
        self,
        home: Home | Path,
        pin: Callable[[], str | None] | None = None,
        *,
        clock: Callable[[], int] = _now,
        via: str | None = None,
        pin_hint: str = NO_PIN_HINT,
        no_ceremony: tuple[str, str] = NO_CEREMONY,
    ) -> None:
        self.home = home if isinstance(home, Home) else Home(Path(home))
        self.clock = clock
        self._pin = pin
        self._via = via
        self._pin_hint = pin_hint
        self._no_ceremony = no_ceremony
        self._dep: Deployment | None = None
        self._owns_dep = True
        self._runner: CeremonyRunner | None = None
        self._signer: Any = None
        self._outcome: Outcome | None = None
        self._reset()

    @classmethod
    def adopt(cls, runner: CeremonyRunner, *, clock: Callable[[], int] = _now) -> CeremonySession:
        """A session over a runner its caller started on its own deployment (the CLI, which
        starts enrolment with extras the session does not take). Closing the session
        releases the runner's handles but leaves that deployment to its owner."""
        s = cls(runner.dep.home, clock=clock)
        s._dep, s._owns_dep, s._runner = runner.dep, False, runner
        return s

    def _reset(self) -> None:
        self._handins: list[tuple[ShareInput | None, LiveCheck]] = []
        self._approvals: list[Approval] = []
        self._round: str | None = None
        self._offer: dict[str, Any] | None = None
        self._sas: list[tuple[str, str]] = []  # (custodian or source, SAS) of remote hand-ins
        self._sealed_n = 0

    def __repr__(self) -> str:
        return f"CeremonySession(home={str(self.home.root)!r}, open={self.is_open})"

    # -- opening ----------------------------------------------------------------------
    def _open(self, need_hsm: bool) -> Deployment:
        self.close()
        pin = self._pin() if need_hsm and self._pin is not None else None
        if need_hsm and pin is None:
            raise UsageError("The token PIN is needed for this ceremony", self._pin_hint)
        self._dep, self._owns_dep = open_deployment(self.home, pin), True
        return self._dep

    def _open_for(self, signer: Any, *, need_hsm: bool) -> Deployment:
        """Close what was open, open the home, and keep *signer* to close it with us (it is
        closed at once when the home cannot be opened)."""
        try:
            dep = self._open(need_hsm)
        except BaseException:
            _close(signer)
            raise
        self._signer = signer
        return dep

    def open_ceremonies(self) -> list[dict[str, Any]]:
        """The home's open ceremonies (``custody ceremony list``)."""
        with open_deployment(self.home) as dep:
            return open_ceremonies(dep)

    def start(
        self,
        kind: str,
        signer: Any,
        params: Mapping[str, Any],
        *,
        thresholds: Mapping[str, Threshold] | None = None,
    ) -> SessionState:
        """Open a new ceremony of *kind* with the coordinator's *signer* (the session closes
        it) and run it until it needs people. The runner sets each gate's quorum, never below
        what the trust model requires (:func:`ceremonies.runner.required_thresholds`).

        Raises:
            UsageError: no PIN. PolicyError: the key is not a super-admin's.
            CeremonyError: another ceremony is open, or no share set. Anything the runner
            raises.
        """
        dep = self._open_for(signer, need_hsm=kind not in TOKENLESS_KINDS)
        with self._audit(f"ceremony {kind}", kind):
            self._runner = CeremonyRunner.start(
                dep,
                kind,
                signer,
                params=dict(params),
                thresholds=dict(thresholds) if thresholds is not None else None,
                clock=self.clock,
            )
            return self._run_unaudited()

    def resume(self, ceremony_id: str, signer: Any) -> SessionState:
        """Resume the open ceremony *ceremony_id* (the session closes *signer*) and run it
        until it needs people.

        Raises:
            UsageError: no PIN. CeremonyError, CeremonyExpired, SecretLost: from the runner.
        """
        dep = self._open_for(signer, need_hsm=True)
        with self._audit("ceremony resume", ceremony_id):
            self._runner = CeremonyRunner.resume(dep, ceremony_id, signer, clock=self.clock)
            return self._run_unaudited()

    # -- running ----------------------------------------------------------------------
    def _audit(self, op: str, target: str) -> Any:
        return self._audited(op, target) if self._via else nullcontext()

    @contextmanager
    def _audited(self, op: str, target: str) -> Iterator[None]:
        """Intent first; an unwritable log refuses the action (like the CLI)."""
        with (
            AuditLog.for_home(self.home) as log,
            log.guard(op, target, actor_name(), details={"via": self._via}),
        ):
            yield

    def run(self, inputs: Inputs | None = None) -> SessionState:
        """Run the open ceremony with *inputs* (files, approvals, sealed blobs) until it
        needs people again or closes."""
        r = self._need()
        with self._audit("ceremony resume", r.ceremony_id):
            return self._run_unaudited(inputs)

    def _run_unaudited(self, inputs: Inputs | None = None) -> SessionState:
        r = self._need()
        try:
            self._outcome = r.run(inputs if inputs is not None else Inputs())
        except BaseException:
            if r.state.finished:  # refused before it changed anything: closed as aborted
                self._outcome = r.outcome()
            raise
        return self.state_now()

    def _need(self) -> CeremonyRunner:
        if self._runner is None:
            raise UsageError(*self._no_ceremony)
        return self._runner

    def require(self, what: str) -> Outcome:
        """The last outcome, when the ceremony waits for *what* (``shares``/``approvals``).

        Raises:
            UsageError: it does not.
        """
        o = self._outcome
        if o is None or o.status != "awaiting-input" or o.awaiting != what:
            raise UsageError(
                f"The ceremony is not waiting for {what}",
                "See the step list for what it needs now.",
            )
        return o

    @property
    def is_open(self) -> bool:
        """Whether a ceremony is open in this session (reads nothing)."""
        return self._runner is not None

    @property
    def runner(self) -> CeremonyRunner | None:
        """The open ceremony's runner (for its public queries, e.g. ``check_share``)."""
        return self._runner

    @property
    def outcome(self) -> Outcome | None:
        """The runner's last outcome (None before the first run)."""
        return self._outcome

    # -- shares -------------------------------------------------------------------------
    def share_set(self) -> ShareSet | None:
        """The share set the waiting step checks against: the new set in a verification
        round, else the active set with the retired ones (to name an old epoch's share)."""
        step = self._outcome.step if self._outcome is not None else None
        return share_set_for(self._need(), step)

    def check(self, source: str, text: str, envelope: bytes | None) -> LiveCheck:
        """Check a share as typed, without handing it in."""
        return check_typed(source, text, envelope, self.share_set())

    def hand_in(self, source: str, text: str, envelope: bytes | None) -> SessionState:
        """Hand in one share: check it, list it, and run the step once the shares that
        passed reach the quorum (rejected ones go along, so the transcript names them).

        Raises:
            UsageError: the ceremony is not waiting for shares, or the share is incomplete.
        """
        self.require("shares")
        sset = self.share_set()
        c = check_typed(source, text, envelope, sset)
        if c.status == "incomplete":
            raise UsageError(
                f"The share of {c.custodian or source} is incomplete: {c.reason}",
                "Type all its words and give its envelope.",
            )
        if c.status == "ok" and any(
            x.custodian == c.custodian and x.status == "ok" for _, x in self._handins
        ):
            c = replace(c, status="rejected", reason=DUPLICATE)
        si = (
            ShareInput(source=c.custodian or source, text=full_text(text), envelope=envelope)
            if envelope is not None and c.reason != DUPLICATE
            else None
        )
        self._handins.append((si, c))
        if sset is not None and quorum_of(sset, [x for _, x in self._handins]).met:
            return self._submit_shares()
        return self.state_now()

    def _submit_shares(self) -> SessionState:
        shares = [si for si, _ in self._handins if si is not None]
        state = self.run(Inputs(shares=shares))
        self._handins = [(None, c) for _, c in self._handins]  # words forgotten
        return state

    def hand_in_sealed(self, blob: str) -> SessionState:
        """Hand one sealed remote blob (``custody-blob:...``) to the runner now. The runner
        opens, checks and records it (held sealed on the HSM until the quorum); its check
        and its SAS come back in the state. Shares typed in stay listed until the quorum
        and go in with the last one.

        Raises:
            UsageError: not waiting for shares.
        """
        o = self.require("shares")
        self._sealed_n += 1
        source = f"sealed-{self._sealed_n}"
        before = len(o.handins)
        counted = {c.custodian for _, c in self._handins if c.status == "ok"}
        sset = self.share_set()
        state = self.run(Inputs(sealed=[(source, blob)]))
        check, sas = sealed_result(source, self._outcome.handins[before:] if self._outcome else ())
        if check.status == "ok" and check.custodian in counted:  # typed here, not yet in
            check = replace(check, status="rejected", reason=DUPLICATE)
        if sas:
            self._sas.append((check.custodian or source, sas))
        self._handins.append((None, check))
        if state.awaiting == "shares" and sset is not None:
            pending = [si for si, _ in self._handins if si is not None]
            if pending and quorum_of(sset, [c for _, c in self._handins]).met:
                return self._submit_shares()
        return self.state_now()

    def sas_waiting(self) -> list[dict[str, Any]]:
        """The remote hand-ins held until their SAS is confirmed (``{custodian, source,
        received}``; :meth:`ceremonies.runner.CeremonyRunner.sas_waiting`)."""
        return self._need().sas_waiting()

    def confirm_sas(self, custodian: str, words: str) -> SessionState:
        """Confirm the short authentication string of *custodian*'s remote hand-in with the
        *words* the custodian read out (SAS before use). Matching words count the share
        (and, at the quorum, the step runs); words that differ reject it, and the runner
        records the rejection (``share.rejected``, ``sas-mismatch``).

        Raises:
            UsageError: not waiting for shares, or no remote hand-in of *custodian* waits.
        """
        o = self.require("shares")
        waiting = [w["custodian"] for w in self.sas_waiting()]
        if not custodian and len(waiting) == 1:
            custodian = waiting[0]
        before = len(o.handins)
        counted = {c.custodian for _, c in self._handins if c.status == "ok"}
        sset = self.share_set()
        state = self.run(Inputs(confirm_sas=[(custodian, words)]))
        new = self._outcome.handins[before:] if self._outcome else ()
        h = next((x for x in new if x.remote and x.custodian == custodian), None)
        if h is not None:
            check, sas = sealed_result(h.source, [h])
            if check.status == "ok" and check.custodian in counted:
                check = replace(check, status="rejected", reason=DUPLICATE)
            if sas and check.status == "ok":
                self._sas.append((custodian, sas))
            tag = f"remote:{h.source}"
            self._handins = [(si, c) for si, c in self._handins if c.source != tag]
            self._handins.append((None, check))
        if state.awaiting == "shares" and sset is not None:
            pending = [si for si, _ in self._handins if si is not None]
            if pending and quorum_of(sset, [c for _, c in self._handins]).met:
                return self._submit_shares()
        return self.state_now()

    def offer(self, ttl: int = 900) -> SessionState:
        """Make a transport offer for the waiting share step (the runner seals its private
        half on the HSM); it is in the state's ``offer`` while the step waits.

        Raises:
            UsageError: not waiting for shares, or no token open. CeremonyError,
            CeremonyExpired: from :meth:`ceremonies.runner.CeremonyRunner.offer`.
        """
        self.require("shares")
        self._offer = self._need().offer(ttl=ttl)
        return self.state_now()

    # -- approvals ----------------------------------------------------------------------
    def add_approval(self, a: Approval) -> SessionState:
        """Collect one approval (one per approver, the latest wins); at the quorum of valid
        ones they go to the runner.

        Raises:
            UsageError: the ceremony is not waiting for approvals.
        """
        o = self.require("approvals")
        self._approvals = [x for x in self._approvals if x.approver != a.approver] + [a]
        req = o.request or {}
        now = self.clock()
        valid = {x.approver for x in self._approvals if x.expires_at >= now}
        if req and len(valid) >= int(req.get("needed", 1 << 30)):
            return self.submit()
        return self.state_now()

    def sign_approval(self, signer: Any) -> SessionState:
        """A participant signs the current approval request with their own *signer* here
        (closed right after: a one-shot signature).

        Raises:
            UsageError: not waiting for approvals. CeremonyError: no request to sign.
        """
        try:
            o = self.require("approvals")
            req = o.request
            if not req:
                raise CeremonyError(
                    "There is no approval request to sign",
                    "Resume the ceremony so that it states its request.",
                )
            a = Approval.create(
                signer,
                ceremony_id=req["ceremony_id"],
                action=req["action"],
                action_id=req["action_id"],
                digest=req["action_digest"],
                now=self.clock(),
                window=int(req.get("window", 600)),
            )
        finally:
            _close(signer)  # release a token-held key's session
        return self.add_approval(a)

    def submit(self) -> SessionState:
        """Hand what was collected to the runner now (shares or approvals)."""
        o = self._outcome
        if o is not None and o.awaiting == "approvals":
            try:
                return self.run(Inputs(approvals=list(self._approvals)))
            finally:
                if self._outcome is None or self._outcome.awaiting != "approvals":
                    self._approvals = []
        if o is not None and o.awaiting == "shares":
            return self._submit_shares()
        return self.run()

    def abort(self, reason: str) -> SessionState:
        """Abort the open ceremony (the runner rolls back what it created)."""
        r = self._need()
        with self._audit("ceremony abort", r.ceremony_id):
            self._outcome = r.abort(reason)
        return self.state_now()

    # -- cards --------------------------------------------------------------------------
    def card(self, name: str) -> Card:
        """The share card this ceremony issued to *name* (its words: for their eyes only).

        Raises:
            ConfigError: no such card. ShareError: its envelope is unreadable.
        """
        return issued_card(self._need(), name)

    # -- state --------------------------------------------------------------------------
    def state(self) -> SessionState | None:
        """The open ceremony's state, or None when none is open."""
        return self.state_now() if self._runner is not None else None

    def state_now(self) -> SessionState:
        """The open ceremony's state. A new waiting step starts a new round of hand-ins.

        Raises:
            UsageError: no ceremony is open.
        """
        r, o = self._need(), self._outcome
        st = r.state
        status = o.status if o is not None else st.status
        awaiting = o.awaiting if o is not None and o.status == "awaiting-input" else None
        step = (o.step if o is not None and awaiting else None) or st.in_flight
        if awaiting and self._round not in (None, step):
            self._handins, self._approvals = [], []
        if awaiting:
            self._round = step
        sset = None
        try:
            if awaiting == "shares" or (self._handins and status != "aborted"):
                sset = self.share_set()
        except CustodyError:
            sset = None
        checks = tuple(c for _, c in self._handins)
        cards: tuple[str, ...] = ()
        sealed = st.facts.get("delivery") == "sealed-x25519"  # no words here: no cards
        if "issue-shares" in st.done and status != "aborted" and not sealed:
            cards = tuple(st.facts.get("issued_to", ()))
        return SessionState(
            ceremony_id=r.ceremony_id,
            kind=st.kind,
            status=status,
            awaiting=awaiting,
            step=step,
            done=tuple(st.done),
            facts=dict(st.facts),
            request=o.request if o is not None else None,
            messages=tuple(o.messages) if o is not None else (),
            refusals=tuple(h.refusal for h in (o.handins if o else ()) if h.refusal),
            bundle=str(r.bundle),
            checks=checks,
            approvals=tuple(self._approvals),
            now=self.clock(),
            share_set=sset,
            quorum=quorum_of(sset, checks) if sset is not None else None,
            offer=self._offer if awaiting == "shares" else None,
            sas=tuple(self._sas),
            cards=cards,
            expires_at=st.expires_at,
        )

    def close(self) -> None:
        """Close the ceremony's signer, the runner's handles and (when the session opened
        it) the deployment. Safe to call twice."""
        signer, self._signer = self._signer, None
        _close(signer)
        if self._runner is not None:
            self._runner.close_handles()
        if self._dep is not None and self._owns_dep:
            self._dep.close()
        self._dep = self._runner = self._outcome = None
        self._reset()
