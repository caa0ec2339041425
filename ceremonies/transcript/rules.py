"""Per-event authority rules, shared by the recorder (before writing) and the verifier.

One :class:`Rules` object walks a ceremony's events in order and reports, for each event,
problems under the verifier's check ids: ``signatures``, ``enrolment``, ``role``,
``key-validity``, ``times``, ``quorum``, ``script-order``, ``completeness`` (the close
event's outcome) and ``no-secrets``. The recorder runs the very same code on an event
before it is written (and refuses it on any problem), so what the recorder accepts is
exactly what the verifier passes.

The verifier also gives the auditor's :class:`~ceremonies.transcript.pins.Pins`: then an
approver or co-signer counts toward a quorum only when pinned under their roster name and
key with the quorum's role; everyone else is listed as ignored, with the reason. The
recorder has no pins (it trusts the roster its signed policy carries).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from custody.audit.signers import verify_signature

from .authority import Authority
from .guard import secret_findings
from .model import (
    KIND_CLOSE,
    KIND_EXCEPTION,
    KIND_OPEN,
    META_KINDS,
    OUTCOMES,
    FormatError,
    Policy,
    RosterEntry,
    Sig,
)
from .pins import Pins
from .records import Event, binding_problems, gated_approvals

Finding = tuple[str, str]  # (check id, message)


def plural(role: str, n: int) -> str:
    return role if n == 1 else f"{role}s"


@dataclass(slots=True)
class _State:
    cursor: int = -1
    allow_jump: str | None = None
    nonces: dict[str, int] = field(default_factory=dict)
    authority: Any = None  # AuthorityState of the trust-model checks (.authority)


class Rules:
    """Stateful walk over events (see module docstring)."""

    def __init__(self, policy: Policy, pins: Pins | None = None) -> None:
        self.policy = policy
        self.pins = pins
        self.state = _State()
        self.info: list[Finding] = []
        self.authority = Authority(policy, self.info)

    def counts(self, m: RosterEntry, role: str) -> str | None:
        """None when roster member *m* counts toward a quorum of *role*, else why not."""
        if m.role != role:
            return f"a {m.role}, not a {role}"
        return self.pins.standing(m, role) if self.pins is not None else None

    def snapshot(self) -> _State:
        s = self.state
        return _State(
            cursor=s.cursor,
            allow_jump=s.allow_jump,
            nonces=dict(s.nonces),
            authority=self.authority.snapshot(),
        )

    def restore(self, s: _State) -> None:
        self.state = s
        if s.authority is not None:
            self.authority.restore(s.authority)

    # -- signatures -------------------------------------------------------------------
    def check_sigs(self, where: str, sigs: Iterable[Sig], data: bytes, t: int) -> list[Finding]:
        """Enrolment, signature and key validity of a list of record signatures."""
        out: list[Finding] = []
        seen: set[str] = set()
        for s in sigs:
            m = self.policy.member(s.signer)
            if s.signer in seen:
                out.append(("signatures", f"{where}: {s.signer} signed twice"))
            seen.add(s.signer)
            if m is None:
                out.append(("enrolment", f"{where}: signer {s.signer} is not enrolled"))
                continue
            if not verify_signature(m.alg, m.public, s.sig, data):
                out.append(("signatures", f"{where}: bad signature by {s.signer}"))
            why = m.valid_at(t)
            if why:
                out.append(("key-validity", f"{where}: {why} (used at {t})"))
        return out

    def feed(self, ev: Event) -> list[Finding]:
        """Check one event in sequence; updates the walk state."""
        p, where = self.policy, f"event {ev.seq} ({ev.step})"
        out = self.check_sigs(where, ev.signatures, ev.signing_input(p.ceremony_id), ev.time)
        signers = {s.signer for s in ev.signatures}
        if not ev.signatures:
            out.append(("signatures", f"{where}: unsigned"))
        actor = p.member(ev.actor)
        if actor is None:
            out.append(("enrolment", f"{where}: actor {ev.actor} is not enrolled"))
        else:
            if ev.actor not in signers:
                out.append(("signatures", f"{where}: actor {ev.actor} did not sign"))
            if not p.may_record(actor.role, ev.kind):
                out.append(("role", f"{where}: {ev.actor} ({actor.role}) may not record {ev.kind}"))
        if ev.time < p.created_at:
            out.append(("times", f"{where}: dated {ev.time}, before the policy ({p.created_at})"))
        for f in secret_findings(ev.kind, ev.body):
            out.append(("no-secrets", f"{where}: {f}"))
        if ev.kind == KIND_CLOSE:
            out += self._close(ev, where)
        if ev.kind in p.thresholds:
            out += self._quorum(ev, where)
        out += self.authority.feed(ev, where, self.state.nonces)  # floors, gates (issue 11)
        out += self._script(ev, where, signers)
        return out

    def _close(self, ev: Event, where: str) -> list[Finding]:
        out: list[Finding] = []
        outcome = ev.body.get("outcome")
        if not isinstance(outcome, str) or outcome not in OUTCOMES:
            out.append(
                ("completeness", f"{where}: outcome {outcome!r} is neither completed nor aborted")
            )
        if ev.body.get("events") != ev.seq + 1:
            out.append(
                (
                    "completeness",
                    f"{where}: the close counts {ev.body.get('events')!r} events, "
                    f"it is event {ev.seq + 1}",
                )
            )
        return out

    # -- quorum -----------------------------------------------------------------------
    def _quorum(self, ev: Event, where: str) -> list[Finding]:
        p, t = self.policy, self.policy.thresholds[ev.kind]
        b = ev.body
        try:
            aid, digest, approvals = gated_approvals(ev, p.ceremony_id, "gated action")
        except (FormatError, ValueError, TypeError) as exc:
            return [("quorum", f"{where}: {ev.kind}: {exc}")]
        out: list[Finding] = []
        if b.get("action_digest") != digest:
            out.append(("quorum", f"{where}: {ev.kind} {aid}: action digest does not match params"))
        good: list[str] = []
        ignored: list[str] = []
        for a in approvals:
            who = f"{ev.kind} {aid}: {a.approver}'s approval"
            m = p.member(a.approver)
            bad = []
            if m is None:
                out.append(("enrolment", f"{where}: approver {a.approver} is not enrolled"))
                continue
            if not verify_signature(m.alg, m.public, a.sig, a.signing_input()):
                bad.append("has a bad signature")
            if m.role != t.role:
                bad.append(f"is from a {m.role}, not a {t.role}")
            if a.issued_at < p.created_at:
                bad.append(f"was issued before the policy ({a.issued_at} < {p.created_at})")
            bad += binding_problems(
                a,
                ev,
                aid,
                digest,
                ceremony_id=p.ceremony_id,
                window=p.approval_window,
                nonces=self.state.nonces,
            )
            for at in (a.issued_at, ev.time):
                why = m.valid_at(at)
                if why:
                    out.append(("key-validity", f"{where}: {who}: {why}"))
                    bad.append("was signed with an invalid key")
                    break
            if bad:
                out += [("quorum", f"{where}: {who} {x}") for x in bad]
            elif (why := self.counts(m, t.role)) is not None:
                ignored.append(f"{a.approver} ({why})")
            elif a.approver not in good:
                good.append(a.approver)
        line = (
            f"{ev.kind} {aid}: {len(good)}/{t.count} {plural(t.role, t.count)}"
            f" ({', '.join(good) or 'none'})"
        )
        if ignored:
            line += f"; ignored: {', '.join(ignored)}"
        if len(good) < t.count:
            out.append(("quorum", f"{line}: below threshold"))
        else:
            self.info.append(("quorum", line))
        return out

    # -- script order -----------------------------------------------------------------
    def _script(self, ev: Event, where: str, signers: set[str]) -> list[Finding]:
        p, s = self.policy, self.state
        if not p.script:
            return []
        if ev.kind == KIND_EXCEPTION:
            q = p.exception_quorum
            ok, ignored = [], []
            for n in sorted(signers):
                m = p.member(n)
                why = "not enrolled" if m is None else self.counts(m, q.role)
                if why is None:
                    ok.append(n)
                elif m is not None and m.role == q.role:
                    ignored.append(f"{n} ({why})")
            target = ev.body.get("resume_at")
            if len(ok) < q.count:
                msg = (
                    f"{where}: exception co-signed by {len(ok)}/{q.count} "
                    f"{plural(q.role, q.count)} ({', '.join(ok) or 'none'})"
                    + (f"; ignored: {', '.join(ignored)}" if ignored else "")
                )
                return [("script-order", msg)]
            if target not in p.script:
                return [("script-order", f"{where}: exception resumes at unknown step {target!r}")]
            s.allow_jump = target
            msg = (
                f"exception at event {ev.seq}: resume at {target} "
                f"({ev.body.get('reason', '')}) by {', '.join(ok)}"
            )
            self.info.append(("script-order", msg))
            return []
        if ev.kind == KIND_CLOSE:
            if ev.body.get("outcome") == "completed" and s.cursor != len(p.script) - 1:
                at = p.script[s.cursor] if s.cursor >= 0 else "start"
                msg = f"{where}: closed as completed at step {at}, before the end of the script"
                return [("script-order", msg)]
            return []
        if ev.kind in META_KINDS:  # ceremony.open
            return []
        if ev.step not in p.script:
            return [("script-order", f"{where}: step {ev.step!r} is not in the script")]
        idx = p.script.index(ev.step)
        prev, s.cursor = s.cursor, idx
        if idx in (prev, prev + 1):
            return []
        if s.allow_jump == ev.step:
            s.allow_jump = None
            return []
        after = p.script[prev] if prev >= 0 else "start"
        msg = f"{where}: step {ev.step} out of order after {after} without a co-signed exception"
        return [("script-order", msg)]


def open_body(policy: Policy) -> dict[str, Any]:
    """The body of the ``ceremony.open`` event (binds the chain to the policy digest)."""
    return {"policy_digest": policy.digest().hex(), "purpose": policy.purpose}


__all__ = ["KIND_OPEN", "Finding", "Rules", "open_body", "plural"]
