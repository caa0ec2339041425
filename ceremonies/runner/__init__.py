"""The one ceremony runner: carries out engine effects through the HSM, store and transcript.

:class:`CeremonyRunner` owns an open :class:`~custody.deployment.Deployment`, the
coordinator's signer, the transcript :class:`~ceremonies.transcript.recorder.Recorder` and
the engine :class:`~ceremonies.engine.CeremonyState`. For every step it records
``step.begin`` (fsynced) *before* acting and ``step.done`` with the public facts after.
An interrupted ceremony is rebuilt from its transcript (:meth:`CeremonyRunner.resume`):
a begun step is redone (handlers are idempotent). A step that needs the recovery key (or
the shares) that died with the process is refused with :class:`SecretLost` before anything
is recorded, and an unfinished ceremony past its expiry with :class:`CeremonyExpired`;
both can then only be aborted (:meth:`CeremonyRunner.abort`), which rolls back everything
the ceremony created (token keys, the hold key with its sealed shares and offer keys,
pending rows, issued files) and closes the transcript as ``aborted``. A ceremony holding
token objects is never aborted or closed without the token (:class:`TokenNeeded`, nothing
recorded); what the token fails to destroy is recorded in the transcript.

Who must approve is the runner's to decide (:func:`required_thresholds`), not the front
end's: after the bootstrap, an enrolment needs two super-admins (with a single one, a
majority of the custodians); rotate-root counts only holders of the active share set, by
key fingerprint; emergency-rotate waits for a second person (a witness, or another
super-admin). Approvals of participants revoked in the store since the policy was signed
never count.

Drive it step by step (the TUI does)::

    r = CeremonyRunner.start(dep, "generate", signer, params={...})
    out = r.run(Inputs())                   # runs until it needs people, or closes
    out.status == "awaiting-input"; out.awaiting == "shares"
    out = r.run(Inputs(shares=[...]))       # verification round ... closes
    r.close_handles()

Public queries for a driver (they record nothing and need no secret):

* :meth:`CeremonyRunner.pending_request` ``-> ApprovalRequest | None``: the approval
  request of the gated step the ceremony is at (action kind and id, the digest approvers
  sign, the window, the role and count needed, who is eligible, who is already recorded),
  also right after :meth:`CeremonyRunner.resume`, before the step runs again.
  ``ApprovalRequest.to_json()`` is the request file ``custody ceremony approve`` reads.
* :meth:`CeremonyRunner.check_share` ``(ShareInput) -> ShareCheck``: one share checked
  (envelope signature, ceremony, epoch, holder, recorded commitment, duplicate custodian)
  against the share set the waiting step expects: the NEW set in generate/reshare's
  verification round, the active set in recover, drill and reshare's ``collect-shares``.
  It is the very check the step runs when the share is handed in, so its verdict is the
  step's.

Approvals survive a crash: a gated step whose action the transcript already records
(killed after recording it) goes on with the recorded approvers on resume and records
nothing again; approvals handed in again are recognised, never counted twice.

A refused step changes nothing: :meth:`CeremonyRunner.start` runs the checks of the
kind's first steps before it records anything (:func:`ceremonies.runner.steps.preflight`),
and a run that fails while the ceremony has changed nothing (:meth:`CeremonyRunner.untouched`)
closes it as aborted at once (:meth:`CeremonyRunner.stopped`); any other failure leaves it
open and its error names it, what it did and the commands that resume or abort it.

Test hook: ``CUSTODY_TEST_KILL_AT=STEP`` (or ``STEP:done``) makes the process SIGKILL
itself right after recording that step's begin (or after its effect, before its done).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ceremonies.engine import (
    AwaitInput,
    Begin,
    CeremonyState,
    CloseTranscript,
    Done,
    Rollback,
    Waiting,
    fold,
    open_state,
    plan,
    transition,
)
from ceremonies.engine.scripts import INPUT_STEPS, SCRIPTS
from ceremonies.participants import as_member
from ceremonies.runner import closing, held, steps
from ceremonies.runner.io import (
    CeremonyExpired,
    Inputs,
    Outcome,
    ShareInput,
    TokenNeeded,
)
from ceremonies.runner.opening import (
    admit,
    ceremony_policy,
    open_ceremonies,
    required_thresholds,
    roster_entries,
)
from ceremonies.runner.preflight import check_token
from ceremonies.runner.steps.base import SecretLost
from ceremonies.runner.views import ApprovalRequest, HandIn, ShareCheck
from ceremonies.transcript.model import RosterEntry, SignedPolicy, Threshold
from ceremonies.transcript.recorder import Recorder
from custody.config import Home
from custody.deployment import Deployment
from custody.errors import CeremonyError, CustodyError, PolicyError, UsageError
from custody.store.rows import CeremonyRow

KILL_ENV = "CUSTODY_TEST_KILL_AT"  # test hook only: SIGKILL after recording a step
# transcript events of a ceremony that has changed nothing yet (see CeremonyRunner.untouched)
_UNTOUCHED_EVENTS = frozenset(
    {"ceremony.open", "step.begin", "step.done", "share.accepted", "share.rejected"}
)


def _now() -> int:
    return int(time.time())


def _stored_params(home: Home, params: Mapping[str, Any]) -> dict[str, Any]:
    """*params* as the store keeps them: an ``out`` inside the home relative to it
    (:meth:`custody.config.Home.rel`), so that a copied home writes into its own files."""
    out = dict(params)
    if isinstance(out.get("out"), str):
        out["out"] = home.rel(out["out"])
    return out


class CeremonyRunner:
    """Runs one ceremony (see module docstring). Not thread-safe.

    Construct with :meth:`start` or :meth:`resume`.
    """

    def __init__(
        self,
        dep: Deployment,
        signer: Any,
        recorder: Recorder,
        state: CeremonyState,
        params: dict[str, Any],
        *,
        clock: Callable[[], int] = _now,
    ) -> None:
        self.dep, self.signer, self.rec, self.state = dep, signer, recorder, state
        self.params = params
        self.clock = clock
        self.pending: dict[str, Any] = {}
        self.messages: list[str] = []
        self.handins: list[HandIn] = []  # steps.handin.publish appends (with their messages)
        self.request: dict[str, Any] | None = None
        self._secrets: dict[str, Any] = {}  # RK and accepted shares; never persisted
        self._last_step: str | None = None
        self.rolling_back = False  # an abort was recorded; finish the rollback
        self.not_destroyed: list[str] = []  # what a rollback or close could not destroy
        self.fresh = False  # opened by start() in this process, not resumed
        for ev in recorder.events:
            if ev.step in SCRIPTS[state.kind]:
                self._last_step = ev.step

    def __repr__(self) -> str:
        return (
            f"CeremonyRunner(kind={self.state.kind!r}, id={self.state.ceremony_id!r}, "
            f"status={self.state.status!r}, holds_secret={bool(self._secrets)})"
        )

    # ------------------------------------------------------------------ construction
    @property
    def ceremony_id(self) -> str:
        return self.state.ceremony_id

    @property
    def bundle(self) -> Path:
        return self.dep.home.transcripts_dir / self.ceremony_id

    @classmethod
    def start(
        cls,
        dep: Deployment,
        kind: str,
        signer: Any,
        *,
        params: Mapping[str, Any],
        purpose: str = "",
        extra_roster: Sequence[RosterEntry] = (),
        thresholds: Mapping[str, Threshold] | None = None,
        clock: Callable[[], int] = _now,
    ) -> CeremonyRunner:
        """Open a new ceremony: sign its policy, create its bundle, register it.

        Args:
            dep: the open deployment (HSM opened when the ceremony needs it).
            kind: one of :data:`ceremonies.engine.KINDS`.
            signer: the coordinator's Signer (an enrolled super-admin).
            params: public parameters of the ceremony (scheme, out dir, reason...).
            purpose: free text for the policy.
            extra_roster: roster entries not yet in the store (the bootstrap enrolment only).
            thresholds: quorum-gated actions of this ceremony; never below
                :func:`required_thresholds`, which also fills in enrol's and rotate-root's.
            clock: returns Unix seconds.

        Returns:
            The runner, with ``ceremony.open`` recorded.

        Raises:
            CeremonyError: another ceremony is still open; rotate-root without a share set.
            PolicyError: the coordinator is not an enrolled super-admin; extra roster entries
                outside the bootstrap enrolment; a threshold below the required quorum, or
                one nobody can meet; an emergency-rotate with no second person enrolled.
            TranscriptError: the bundle could not be created.
        """
        if kind not in SCRIPTS:
            raise UsageError(f"Unknown ceremony kind {kind!r}", f"Use one of {', '.join(SCRIPTS)}.")
        now = clock()
        store = dep.store
        me, entries, gated = admit(
            dep, kind, signer, extra_roster=extra_roster, thresholds=thresholds, now=now
        )
        steps.preflight(dep, kind, params, now=now)  # refuses before anything is recorded
        signer = as_member(signer, me.name)
        check_token(dep, kind)  # an unsuitable token is refused before anything exists
        policy = ceremony_policy(dep, kind, entries, gated, purpose=purpose, now=now)
        signed = SignedPolicy(policy=policy).signed_by(signer)
        path = dep.home.transcripts_dir / policy.ceremony_id
        dep.home.transcripts_dir.mkdir(parents=True, exist_ok=True)
        expiry = dep.config.ceremony_expiry_minutes * 60
        store.add_ceremony(
            CeremonyRow(
                id=policy.ceremony_id,
                kind=kind,
                state="open",
                coordinator=me.name,
                bundle=dep.home.rel(path),
                created=now,
                expires=now + expiry,
                updated=now,
                pending=json.dumps({"params": _stored_params(dep.home, params)}),
            )
        )
        try:
            rec = Recorder.create(
                path, signed, signer=signer, clock=lambda: float(clock()), now=now
            )
        except BaseException:
            store.delete_ceremony(policy.ceremony_id)
            raise
        state = open_state(kind, policy.ceremony_id, now=now, expiry_seconds=expiry)
        runner = cls(dep, signer, rec, state, dict(params), clock=clock)
        runner.fresh = True
        return runner

    @classmethod
    def resume(
        cls, dep: Deployment, ceremony_id: str, signer: Any, *, clock: Callable[[], int] = _now
    ) -> CeremonyRunner:
        """Rebuild an interrupted ceremony from its transcript.

        Raises:
            CeremonyError: no such open ceremony.
            PolicyError: *signer* is not a super-admin of this ceremony's roster.
            TranscriptError: the bundle cannot be resumed (damaged).
        """
        row = dep.store.ceremony(ceremony_id)
        if row is None:
            raise CeremonyError(
                f"No ceremony {ceremony_id} in this deployment", "See 'custody ceremony list'."
            )
        kind, st, bundle, created, expires, pending = (
            row.kind,
            row.state,
            row.bundle,
            row.created,
            row.expires,
            row.pending,
        )
        if st != "open":
            raise CeremonyError(f"Ceremony {ceremony_id} is already {st}", "Start a new one.")
        # A ceremony's bundle is always HOME/transcripts/ID: the stored path (relative since
        # the copy-safe homes; absolute in older stores) never leads out of this home.
        bundle = str(dep.home.transcripts_dir / ceremony_id)
        doc_policy = json.loads((Path(bundle) / "policy.json").read_bytes())
        policy = SignedPolicy.from_json(doc_policy).policy
        me = next((e for e in policy.roster if e.public == signer.public), None)
        if me is None or me.role != "super-admin":
            raise PolicyError(
                "Only a super-admin on this ceremony's roster can resume it",
                "Use an enrolled super-admin's key (--key).",
            )
        signer = as_member(signer, me.name)
        rec = Recorder.resume(bundle, signer=signer, clock=lambda: float(clock()))
        initial = CeremonyState(
            kind=kind, ceremony_id=ceremony_id, opened_at=created, expires_at=expires
        )
        evs: list[Any] = []
        for ev in rec.events:
            if ev.kind == "step.begin":
                evs.append(Begin(ev.step))
            elif ev.kind == "step.done":
                evs.append(Done(ev.step, dict(ev.body.get("facts", {}))))
            elif ev.kind == "step.waiting":
                evs.append(Waiting(ev.step))
        state = fold(initial, evs, clock())
        doc = json.loads(pending or "{}")
        params = dict(doc.get("params", {}))
        if isinstance(params.get("out"), str):
            params["out"] = str(dep.home.resolve(params["out"]))
        r = cls(dep, signer, rec, state, params, clock=clock)
        r.pending = {k: v for k, v in doc.items() if k != "params"}
        if isinstance(r.pending.get("files"), list):
            r.pending["files"] = [str(dep.home.resolve(f)) for f in r.pending["files"]]
        r.rolling_back = any(ev.kind == "rollback" for ev in rec.events)
        return r

    # ------------------------------------------------------------------ recording
    def _save_pending(self, **kv: Any) -> None:
        self.pending.update(kv)
        doc = {"params": _stored_params(self.dep.home, self.params), **self.pending}
        if isinstance(doc.get("files"), list):
            doc["files"] = [self.dep.home.rel(f) for f in doc["files"]]
        self.dep.store.set_ceremony_pending(self.ceremony_id, json.dumps(doc), now=self.clock())

    def record(
        self,
        kind: str,
        body: Mapping[str, Any],
        *,
        step: str | None = None,
        artifacts: Mapping[str, bytes] | None = None,
    ) -> None:
        """Record one event in the current step (fsynced before returning)."""
        step = step or self._last_step or SCRIPTS[self.state.kind][0]
        self.rec.record(step, kind, self.signer, body, artifacts=artifacts, now=self.clock())
        if step in SCRIPTS[self.state.kind]:
            self._last_step = step

    def _kill_hook(self, point: str) -> None:
        if os.environ.get(KILL_ENV) == point:
            os.kill(os.getpid(), signal.SIGKILL)

    def _apply(self, event: Any) -> None:
        self.state, _ = transition(self.state, event, self.clock())

    # ------------------------------------------------------------------ driving
    def run(self, inputs: Inputs = Inputs()) -> Outcome:
        """Carry out effects until the ceremony needs input, closes, or rolls back.

        Args:
            inputs: shares and approvals handed in for this run (may be empty).

        Returns:
            The :class:`Outcome`.

        Raises:
            CustodyError: a step failed; what it recorded stays in the transcript. A
                ceremony that had changed nothing (:meth:`untouched`) is then closed as
                aborted, and the hint says so; any other can be resumed (or aborted) later,
                and the hint names it, what it did and both commands (:meth:`stopped`).
        """
        try:
            return self._run(inputs)
        except BaseException as exc:
            self.stopped(exc)
            raise

    def _run(self, inputs: Inputs) -> Outcome:
        if self.rolling_back:
            return self._rollback("finishing an interrupted abort")
        while True:
            effects = plan(self.state, self.clock())
            if not effects:
                return self.outcome()
            eff = effects[0]
            if isinstance(eff, Rollback) and eff.expired:
                self.check_live()
            if isinstance(eff, Rollback):
                return self._rollback(eff.reason)
            if isinstance(eff, CloseTranscript):
                return self._close()
            step = eff.step
            if isinstance(eff, AwaitInput):
                have = (
                    [*inputs.shares, *inputs.sealed, *inputs.confirm_sas]
                    if eff.what == "shares"
                    else inputs.approvals
                )
                if not have:
                    return self.outcome(awaiting=eff.what, step=step)
            handler = steps.handler(self.state.kind, step)
            steps.precheck(self, step)  # refuses (SecretLost) before anything is recorded
            begun = self.state.in_flight == step
            if not begun:
                self.record("step.begin", {}, step=step)
                self._apply(Begin(step))
            self._kill_hook(step)
            if INPUT_STEPS.get(step) == "approvals":
                inputs = steps.screen_approvals(self, step, inputs)  # revoked since: not counted
            facts = handler(self, inputs)  # SecretLost propagates: resume refuses, abort undoes
            if facts is steps.WAIT:
                self.record("step.waiting", {"needs": INPUT_STEPS[step]}, step=step)
                self._apply(Waiting(step))
                return self.outcome(awaiting=INPUT_STEPS[step], step=step)
            self._kill_hook(f"{step}:done")
            self.record("step.done", {"facts": facts}, step=step)
            self._apply(Done(step, facts))
            if step in INPUT_STEPS:
                inputs = Inputs()  # inputs are consumed by the step that asked for them

    # ------------------------------------------------------------------ failures
    def untouched(self) -> bool:
        """Whether this ceremony has changed nothing a person would miss: opened by
        :meth:`start` in this process, not committed, nothing in its store row that a
        rollback must undo (no token key, held share, offer key, file, scratch token or
        blob: every effect is recorded there *before* it happens), and nothing in its
        transcript beyond its steps, the shares it checked and a wait for shares (no approval
        request handed out, no approval recorded: approvals are bound to this ceremony).
        Such a ceremony is closed as aborted when it fails (:meth:`stopped`), so that a
        refused step leaves nothing open; shares can be handed in again to the next one."""
        if not self.fresh or self.state.committed or self.state.finished or self.rolling_back:
            return False
        row = self.dep.store.ceremony(self.ceremony_id)
        if row is None or row.state != "open":
            return False
        doc = json.loads(row.pending or "{}")
        if self.pending or any(k != "params" for k in doc):
            return False
        if self.request is not None:  # an approval request went out: approvals are bound to it
            return False
        return all(
            ev.kind in _UNTOUCHED_EVENTS
            or (ev.kind == "step.waiting" and ev.body.get("needs") == "shares")
            for ev in self.rec.events
        )

    def done_so_far(self) -> str:
        """What this ceremony has done, in words (public): its steps done, what it holds."""
        done = [s for s in SCRIPTS[self.state.kind] if s in self.state.done]
        held_now = closing.needs_token(self, rollback=True)
        files = self.pending.get("files", [])
        parts = [f"steps done: {', '.join(done) if done else 'none'}"]
        if self.state.in_flight:
            parts.append(f"step {self.state.in_flight} begun")
        parts += [f"it holds {h}" for h in held_now]
        if files:
            parts.append(f"it wrote {len(files)} file(s) in {Path(files[0]).parent}")
        return "; ".join(parts)

    def next_steps(self) -> str:
        """The commands that go on from here (public)."""
        cid = self.ceremony_id
        if self.state.committed:
            return f"Finish it with 'custody ceremony resume {cid}'."
        return (
            f"Continue with 'custody ceremony resume {cid}' once the cause is fixed, or roll "
            f"it back with 'custody ceremony abort {cid}'."
        )

    def stopped(self, exc: BaseException) -> None:
        """A run failed with *exc*. An :meth:`untouched` ceremony is closed as aborted at
        once (the transcript records why) and the error says that nothing was changed;
        any other one stays open, and the error names it, what it did and the commands
        that resume or abort it. Never raises: a failing rollback leaves it open."""
        try:
            self._stopped(exc)
        except Exception:  # noqa: BLE001 - the store or token failed too: keep the first error
            return

    def _stopped(self, exc: BaseException) -> None:
        if self.state.finished:
            return
        if isinstance(exc, CustodyError):
            reason = exc.title
        elif isinstance(exc, KeyboardInterrupt):
            reason = "interrupted (Ctrl-C)"
        else:
            reason = type(exc).__name__
        if self.untouched():
            closing.rollback(self, f"stopped before it changed anything: {reason}")
            if isinstance(exc, CustodyError):
                exc.hint = (f"{exc.hint} " if exc.hint else "") + (
                    f"Nothing was changed: ceremony {self.ceremony_id} "
                    f"({self.state.kind}) was closed as aborted, and a new one can start."
                )
            return
        if isinstance(exc, CustodyError) and self.ceremony_id not in exc.title + exc.hint:
            exc.hint = (f"{exc.hint} " if exc.hint else "") + (
                f"Ceremony {self.ceremony_id} ({self.state.kind}) is still open "
                f"({self.done_so_far()}). {self.next_steps()}"
            )

    def outcome(self, *, awaiting: str | None = None, step: str | None = None) -> Outcome:
        status = {"closed": "closed", "aborted": "aborted"}.get(
            self.state.status, "awaiting-input" if awaiting else self.state.status
        )
        if awaiting == "approvals" and self.request is None:  # resumed while waiting
            req = self.pending_request()
            self.request = req.to_json() if req is not None else None
        return Outcome(
            ceremony_id=self.ceremony_id,
            kind=self.state.kind,
            status=status,
            bundle=str(self.bundle),
            awaiting=awaiting,
            step=step,
            facts=dict(self.state.facts),
            messages=list(self.messages),
            request=self.request,
            handins=tuple(self.handins),
        )

    # ------------------------------------------------------------------ queries
    def pending_request(self) -> ApprovalRequest | None:
        """The approval request of the gated step this ceremony is at, or None.

        Reads the state and the transcript only (records nothing, needs no HSM), so it is
        available right after :meth:`resume`, before the step runs again. ``recorded``
        names the approvers the transcript already holds for this action (an interrupted
        run); when they meet ``needed`` (``.met``), resuming goes on without approvals.

        Returns:
            The :class:`ApprovalRequest` (public), or None when the ceremony is finished or
            not at a step that collects approvals.
        """
        return steps.pending_request(self)

    def check_share(self, share: ShareInput) -> ShareCheck:
        """Check one share as the waiting step will when it is handed in, without handing
        it in: envelope signature, ceremony and epoch, holder and the commitment recorded
        by the generating ceremony, against the share set the step expects (the NEW set in
        a generate/reshare verification round; the active set in recover, drill and
        reshare's ``collect-shares``); a custodian whose share is already held for the step
        is ``duplicate-custodian``. Records nothing and keeps nothing.

        Returns:
            :class:`ShareCheck` ``(custodian, ok, reason, detail, group, member, epoch)``.

        Raises:
            CeremonyError: the ceremony is not at a share step (nothing to check against).
        """
        return steps.check_share(self, share)

    def sas_waiting(self) -> list[dict[str, Any]]:
        """The remote hand-ins of the waiting share step that are held, not counted, until
        the coordinator confirms their short authentication string (``Inputs.confirm_sas``):
        ``{custodian, source, received}`` each (public; the shares and SAS stay sealed)."""
        step = self.state.next_step
        return held.sas_waiting(self, step) if step and not self.state.finished else []

    def _finish_row(self, state: str) -> None:
        self.dep.store.set_ceremony_state(self.ceremony_id, state, now=self.clock())

    def check_live(self) -> None:
        """Refuse to continue an unfinished ceremony that ran past its expiry.

        Raises:
            CeremonyExpired: not committed and ``now >= expires_at``.
        """
        now = self.clock()
        if not self.state.committed and now >= self.state.expires_at:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.state.expires_at))
            raise CeremonyExpired(
                f"Ceremony {self.ceremony_id} ({self.state.kind}) expired at {when} before it "
                "was finalised",
                f"It cannot be resumed. Roll it back with 'custody ceremony "
                f"abort {self.ceremony_id}', then start a new one.",
            )

    def offer(self, *, ttl: int = 900) -> dict[str, Any]:
        """Make a signed transport offer for a remote share hand-in (see
        :mod:`custody.shares.transport`), bound to this ceremony and the epoch of the share
        set its waiting step collects. Its private half is sealed at rest under the
        ceremony's hold key on the HSM and is destroyed when the ceremony closes or aborts.

        Returns:
            ``{"offer": text, "epoch", "expires", "step", "coordinator"}`` (all public).

        Raises:
            CeremonyError: the ceremony is not waiting for shares.
            CeremonyExpired: the ceremony expired.
            UsageError: the HSM is not open (no PIN).
        """
        self.check_live()
        return held.make_offer(self, ttl=ttl)

    def needs_token(self, *, rollback: bool) -> list[str]:
        """What this ceremony holds on the deployment's token that a close (or, with
        *rollback*, an abort) must destroy: public descriptions, empty when nothing."""
        return closing.needs_token(self, rollback=rollback)

    def _close(self) -> Outcome:
        return closing.close(self)

    def abort(self, reason: str) -> Outcome:
        """Roll back and close as aborted (refused after the commit step).

        Raises:
            CeremonyError: the ceremony is past its commit point.
            TokenNeeded: it holds token objects and the HSM is not open (nothing recorded).
        """
        if self.state.committed:
            raise CeremonyError(
                "The ceremony is past its commit point and cannot be aborted",
                f"Finish it with 'custody ceremony resume {self.ceremony_id}'.",
            )
        return closing.rollback(self, reason)

    def _rollback(self, reason: str) -> Outcome:
        return closing.rollback(self, reason)

    def close_handles(self) -> None:
        """Forget secrets (the deployment is closed by its owner)."""
        self._secrets.clear()


__all__ = [
    "KILL_ENV",
    "ApprovalRequest",
    "CeremonyExpired",
    "CeremonyRunner",
    "CustodyError",
    "HandIn",
    "Inputs",
    "Outcome",
    "SecretLost",
    "ShareCheck",
    "ShareInput",
    "TokenNeeded",
    "open_ceremonies",
    "required_thresholds",
    "roster_entries",
]
