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

Test hook: ``CUSTODY_TEST_KILL_AT=STEP`` (or ``STEP:done``) makes the process SIGKILL
itself right after recording that step's begin (or after its effect, before its done).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ceremonies.engine import (
    AwaitInput,
    Begin,
    CeremonyState,
    Close,
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
from ceremonies.participants import Roster
from ceremonies.runner.steps.base import SecretLost
from ceremonies.runner.views import ApprovalRequest, HandIn, ShareCheck
from ceremonies.transcript.authority import SECOND_PERSON_ROLES, roster_change_quorum
from ceremonies.transcript.model import Policy, RosterEntry, SignedPolicy, Threshold
from ceremonies.transcript.recorder import Recorder
from ceremonies.transcript.records import Approval
from custody.deployment import Deployment
from custody.errors import CeremonyError, CustodyError, PolicyError, UsageError
from custody.store.rows import CeremonyRow

KILL_ENV = "CUSTODY_TEST_KILL_AT"  # test hook only: SIGKILL after recording a step


class CeremonyExpired(CeremonyError):
    """An unfinished ceremony ran past its ``ceremony_expiry_minutes``; it can only be
    aborted."""


class TokenNeeded(CeremonyError):
    """The ceremony holds objects on the deployment's token (its hold key, root versions it
    created) that only the token can destroy: it is not aborted or closed without it.
    Nothing was recorded or changed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareInput:
    """One share handed in: where it came from, its words, and its envelope bytes."""

    source: str
    text: str = field(repr=False)
    envelope: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Inputs:
    """What people hand in for this run of the ceremony."""

    shares: Sequence[ShareInput] = ()
    approvals: Sequence[Approval] = ()
    sealed: Sequence[tuple[str, str]] = field(default=(), repr=False)
    """Remote hand-ins: (source, ``custody-blob:...`` text) sealed to one of this
    ceremony's transport offers (:meth:`CeremonyRunner.offer`)."""


@dataclass(slots=True, kw_only=True)
class Outcome:
    """Where a run stopped: ``closed``, ``aborted`` or ``awaiting-input``.

    ``handins``: one :class:`HandIn` per share handed in to this runner (accepted, held,
    duplicate or rejected, with the SAS of a remote one); the hand-in lines of
    ``messages`` are derived from them. Drivers read the records, not the lines.
    """

    ceremony_id: str
    kind: str
    status: str
    bundle: str
    awaiting: str | None = None
    step: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    request: dict[str, Any] | None = None
    handins: tuple[HandIn, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.status != "aborted",
            "ceremony_id": self.ceremony_id,
            "kind": self.kind,
            "status": self.status,
            "bundle": self.bundle,
            "awaiting": self.awaiting,
            "step": self.step,
            "facts": self.facts,
            "messages": self.messages,
            "request": self.request,
            "handins": [h.to_json() for h in self.handins],
        }


def _now() -> int:
    return int(time.time())


def roster_entries(roster: Roster, now: int) -> tuple[RosterEntry, ...]:
    """The store roster as transcript roster entries (currently usable members only)."""
    return tuple(
        RosterEntry(
            name=m.name,
            role=m.role,
            public=m.public,
            valid_from=m.valid_from,
            valid_until=m.valid_until,
            revoked_at=m.revoked_at,
        )
        for m in roster.members()
        if m.usable_at(now) is None
    )


def _holders_only(entries: tuple[RosterEntry, ...], holders: set[str]) -> tuple[RosterEntry, ...]:
    """*entries* without the custodians whose key (by fingerprint) holds no share of the
    active set: only share holders may approve a rotate-root, never a custodian enrolled
    later, whatever their name."""
    return tuple(e for e in entries if e.role != "custodian" or e.fingerprint in holders)


def required_thresholds(
    dep: Deployment,
    kind: str,
    entries: Sequence[RosterEntry],
    *,
    bootstrap: bool,
    given: Mapping[str, Threshold] | None,
) -> dict[str, Threshold]:
    """The quorum-gated actions of a new *kind* ceremony: the caller's, but never below
    what the trust model requires (see docs/ceremonies.md, "Who must approve").

    * enrol: the coordinator alone only for the bootstrap enrolment (an empty roster);
      after it, two super-admins, or with a single super-admin a majority of the
      custodians (:func:`ceremonies.transcript.authority.roster_change_quorum`);
    * rotate-root: the active share set's quorum of its holders.

    Raises:
        PolicyError: a caller's threshold is weaker than required, or nobody can approve.
        CeremonyError: rotate-root without an active share set.
    """
    from ceremonies.runner.steps.base import active_share_set, quorum_size

    out = dict(given or {})
    need: dict[str, Threshold] = {}
    if kind == "enrol":
        if bootstrap:
            need["enrol"] = Threshold(role="super-admin", count=1)
        else:
            q = roster_change_quorum(entries)
            if q is None:
                raise PolicyError(
                    "Nobody can approve this enrolment: the deployment has a single "
                    "super-admin and no custodian",
                    "Only the bootstrap enrolment is done by one super-admin alone; enrol "
                    "every participant in it, or start a new deployment.",
                )
            need["enrol"] = q
    elif kind == "rotate-root":
        sset = active_share_set(dep.store)
        if sset is None:
            raise CeremonyError("No share set", "Run the generate ceremony first.")
        need["rotate-root"] = Threshold(role="custodian", count=quorum_size(sset["scheme"]))
    for action, t in need.items():
        g = out.get(action)
        if g is not None and (g.role != t.role or g.count < t.count):
            raise PolicyError(
                f"The {action} quorum cannot be lowered to {g.count} {g.role}(s)",
                f"It needs at least {t.count} {t.role}(s); leave the threshold to the runner.",
            )
        out[action] = g or t
        have = sum(1 for e in entries if e.role == out[action].role)
        if have < out[action].count:
            raise PolicyError(
                f"The {action} quorum needs {out[action].count} {out[action].role}(s) but "
                f"only {have} can take part",
                "Enrol (or, for rotate-root, issue shares to) enough participants first.",
            )
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
        for o in store.ceremonies(state="open"):
            raise CeremonyError(
                f"Ceremony {o.id} ({o.kind}) is still open"
                + (" (expired)" if o.expires <= now else ""),
                f"Finish it with 'custody ceremony resume {o.id}' or roll it back with "
                f"'custody ceremony abort {o.id}'.",
            )
        bootstrap = kind == "enrol" and not Roster(store).members()
        if extra_roster and not bootstrap:
            raise PolicyError(
                "Only the bootstrap enrolment may name participants who are not enrolled",
                "Enrol them with 'custody ceremony enrol' (a quorum approves it).",
            )
        entries = roster_entries(Roster(store), now) + tuple(extra_roster)
        me = next((e for e in entries if e.public == signer.public), None)
        if me is None or me.role != "super-admin":
            raise PolicyError(
                "The coordinator must be an enrolled super-admin",
                "Use the key of an enrolled super-admin (--key).",
            )
        if kind == "rotate-root":
            from ceremonies.runner.steps.base import active_share_set

            sset = active_share_set(store)
            holders = {h["fingerprint"] for h in (sset or {"holders": {}})["holders"].values()}
            entries = _holders_only(entries, holders)
        gated = required_thresholds(dep, kind, entries, bootstrap=bootstrap, given=thresholds)
        if kind == "emergency-rotate" and not any(
            e.role in SECOND_PERSON_ROLES and e.name != me.name for e in entries
        ):
            raise PolicyError(
                "emergency-rotate needs a second person, and none is enrolled",
                "Enrol a witness or a second super-admin first ('custody ceremony enrol').",
            )
        signer = type(signer)(me.name, signer.key) if hasattr(signer, "key") else signer
        prev = store.get_meta("last_checkpoint")
        policy = Policy.new(
            purpose=purpose or f"custody {kind} ceremony",
            kind=kind,
            created_at=now,
            roster=entries,
            permissions={"super-admin": ("*",), "custodian": (), "auditor": (), "witness": ()},
            thresholds=gated,
            script=SCRIPTS[kind],
            close_quorum={"super-admin": 1},
            exception_quorum=Threshold(role="super-admin", count=1),
            approval_window=dep.config.approval_window_seconds,
            deployment=dep.config.deployment_id,
            prev_checkpoint=json.loads(prev) if prev else None,
        )
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
                bundle=str(path),
                created=now,
                expires=now + expiry,
                updated=now,
                pending=json.dumps({"params": dict(params)}),
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
        return cls(dep, signer, rec, state, dict(params), clock=clock)

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
        doc_policy = json.loads((Path(bundle) / "policy.json").read_bytes())
        policy = SignedPolicy.from_json(doc_policy).policy
        me = next((e for e in policy.roster if e.public == signer.public), None)
        if me is None or me.role != "super-admin":
            raise PolicyError(
                "Only a super-admin on this ceremony's roster can resume it",
                "Use an enrolled super-admin's key (--key).",
            )
        signer = type(signer)(me.name, signer.key) if hasattr(signer, "key") else signer
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
        r = cls(dep, signer, rec, state, dict(doc.get("params", {})), clock=clock)
        r.pending = {k: v for k, v in doc.items() if k != "params"}
        r.rolling_back = any(ev.kind == "rollback" for ev in rec.events)
        return r

    # ------------------------------------------------------------------ recording
    def _save_pending(self, **kv: Any) -> None:
        self.pending.update(kv)
        self.dep.store.set_ceremony_pending(
            self.ceremony_id, json.dumps({"params": self.params, **self.pending}), now=self.clock()
        )

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
            CustodyError: a step failed; what it recorded stays in the transcript, and the
                ceremony can be resumed (or aborted) later.
        """
        from ceremonies.runner import steps

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
                    [*inputs.shares, *inputs.sealed] if eff.what == "shares" else inputs.approvals
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
        from ceremonies.runner import steps

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
        from ceremonies.runner import steps

        return steps.check_share(self, share)

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
        from ceremonies.runner import held

        self.check_live()
        return held.make_offer(self, ttl=ttl)

    def needs_token(self, *, rollback: bool) -> list[str]:
        """What this ceremony holds on the deployment's token that a close (or, with
        *rollback*, an abort) must destroy: public descriptions, empty when nothing."""
        held = self.pending.get("held", {})
        out = []
        if self.pending.get("hold_key"):
            n = sum(len(v) for v in held.values())
            m = len(self.pending.get("offers", []))
            out.append(
                f"its hold key {self.pending['hold_key']} ({n} held share(s), {m} offer key(s))"
            )
        if rollback and not self.state.committed:
            from ceremonies.runner.steps.rollback import keys_to_destroy

            out += [f"root/v{v}, which it created" for v in keys_to_destroy(self)]
        return out

    def _require_token(self, *, rollback: bool) -> None:
        """Refuse to abort (or close) without the token what only the token can destroy.

        Raises:
            TokenNeeded: the HSM is not open and the ceremony holds token objects.
        """
        need = self.needs_token(rollback=rollback)
        if need and self.dep.hsm is None:
            what = "aborted" if rollback else "closed"
            raise TokenNeeded(
                f"Ceremony {self.ceremony_id} cannot be {what} without the token: it holds "
                + "; ".join(need),
                "Only the token can destroy them, so nothing was recorded or changed. Give "
                "the token PIN (--pin-file or $CUSTODY_PIN) and run the command again.",
            )

    def _close(self) -> Outcome:
        from ceremonies.runner import held

        self._require_token(rollback=False)
        undone = held.drop_held(self, None)
        if undone or self.not_destroyed:
            self.record("cleanup", {"undone": undone, "not_destroyed": list(self.not_destroyed)})
        cp = self.rec.close(self.signer, [self.signer], outcome="completed", now=self.clock())
        self._apply(Close("completed"))
        self._finish_row("closed")
        self.dep.store.set_meta(
            "last_checkpoint",
            json.dumps(
                {"ceremony": self.ceremony_id, "tree_size": cp.tree_size, "root": cp.root.hex()}
            ),
        )
        self._secrets.clear()
        return self.outcome()

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
        return self._rollback(reason)

    def _rollback(self, reason: str) -> Outcome:
        from ceremonies.runner import steps

        self._require_token(rollback=True)  # before anything is recorded
        self._secrets.clear()
        if not self.rolling_back:
            self.record("rollback", {"reason": reason})
            self.rolling_back = True
        undone = steps.rollback(self)
        self.record("rollback.done", {"undone": undone, "not_destroyed": list(self.not_destroyed)})
        self.rec.close(
            self.signer,
            [self.signer],
            outcome="aborted",
            summary={"reason": reason},
            now=self.clock(),
        )
        self._apply(Close("aborted"))
        self._finish_row("aborted")
        self.messages.append(f"rolled back: {reason}")
        return self.outcome()

    def close_handles(self) -> None:
        """Forget secrets (the deployment is closed by its owner)."""
        self._secrets.clear()


def open_ceremonies(dep: Deployment) -> list[dict[str, Any]]:
    """All ceremonies of the deployment, newest first (for list views)."""
    return [  # newest first; ties: newest row
        dict(
            id=r.id,
            kind=r.kind,
            state=r.state,
            coordinator=r.coordinator,
            bundle=r.bundle,
            created=r.created,
            expires=r.expires,
        )
        for r in dep.store.ceremonies()
    ]


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
