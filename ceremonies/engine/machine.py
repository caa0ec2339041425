"""The ceremony state machine: ``transition(state, event, now) -> (new_state, effects)``.

The state is a frozen record of where a ceremony is in its script and the public facts
its finished steps produced (versions, KCVs, commitments: never secrets). Events are what
the runner observed and recorded in the transcript; effects are what the runner must do
next. Because the transcript holds exactly these events, :func:`fold` rebuilds the state of
an interrupted ceremony from its transcript, and :func:`plan` says how to continue:

* a step that was begun but not done is redone (step handlers are idempotent), unless it
  needs the in-memory recovery key, in which case the runner rolls back;
* before the commit step is done, expiry or an abort rolls the ceremony back;
* after it, the ceremony can only roll forward.

This is the shape of python-shamir-mnemonic's ``RecoveryState``: pure, replayable, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ceremonies.engine.scripts import COMMIT_STEP, INPUT_STEPS, SCRIPTS
from custody.errors import CeremonyError

RUNNING, AWAITING, COMMITTED, CLOSED, ABORTED = (
    "running",
    "awaiting-input",
    "committed",
    "closed",
    "aborted",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CeremonyState:
    """Where a ceremony is. ``facts`` are public results of finished steps."""

    kind: str
    ceremony_id: str
    opened_at: int
    expires_at: int
    done: tuple[str, ...] = ()
    in_flight: str | None = None
    status: str = RUNNING
    facts: Mapping[str, Any] = field(default_factory=dict)
    outcome: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCRIPTS:
            raise ValueError(f"unknown ceremony kind {self.kind!r}")
        if self.expires_at <= self.opened_at:
            raise ValueError("expires_at must be after opened_at")

    @property
    def script(self) -> tuple[str, ...]:
        return SCRIPTS[self.kind]

    @property
    def next_step(self) -> str | None:
        """The step to run now (the in-flight one first), or None when the script is done."""
        if self.in_flight is not None:
            return self.in_flight
        n = len(self.done)
        return self.script[n] if n < len(self.script) else None

    @property
    def committed(self) -> bool:
        return COMMIT_STEP[self.kind] in self.done

    @property
    def finished(self) -> bool:
        return self.status in (CLOSED, ABORTED)


# ----------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class Begin:
    """The runner recorded that it is about to carry out *step*."""

    step: str


@dataclass(frozen=True, slots=True)
class Done:
    """*step* took effect; *facts* are its public results."""

    step: str
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Waiting:
    """An input step is waiting for people (shares or approvals)."""

    step: str


@dataclass(frozen=True, slots=True)
class Abort:
    """Someone aborted, or the runner must roll back (lost secret, expiry)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Close:
    """The transcript was closed with *outcome* (``completed`` or ``aborted``)."""

    outcome: str


Event = Begin | Done | Waiting | Abort | Close


# ---------------------------------------------------------------------------- effects
@dataclass(frozen=True, slots=True)
class RunStep:
    """Carry out *step* (record ``step.begin`` first)."""

    step: str


@dataclass(frozen=True, slots=True)
class AwaitInput:
    """Stop and ask for input (``shares`` or ``approvals``) for *step*."""

    step: str
    what: str


@dataclass(frozen=True, slots=True)
class Rollback:
    """Undo everything this ceremony left behind, then close it as aborted.

    ``expired`` marks the rollback that :func:`plan` asks for when an unfinished ceremony
    ran past ``expires_at``: the runner then refuses to continue and only an explicit abort
    carries the rollback out (an expired ceremony is never silently resumed).
    """

    reason: str
    expired: bool = False


@dataclass(frozen=True, slots=True)
class CloseTranscript:
    """Close the transcript as completed."""


Effect = RunStep | AwaitInput | Rollback | CloseTranscript


def open_state(kind: str, ceremony_id: str, *, now: int, expiry_seconds: int) -> CeremonyState:
    """The state of a freshly opened ceremony.

    Raises:
        ValueError: unknown kind or non-positive expiry (a caller's bug).
    """
    return CeremonyState(
        kind=kind, ceremony_id=ceremony_id, opened_at=now, expires_at=now + expiry_seconds
    )


def plan(state: CeremonyState, now: int) -> tuple[Effect, ...]:
    """What to do next from *state* at *now*. Pure.

    Returns:
        One effect (or none when the ceremony is finished).
    """
    if state.finished:
        return ()
    if not state.committed and now >= state.expires_at:
        return (Rollback("the ceremony expired before it was finalised", expired=True),)
    step = state.next_step
    if step is None:
        return (CloseTranscript(),)
    if state.status == AWAITING and step in INPUT_STEPS:
        return (AwaitInput(step, INPUT_STEPS[step]),)
    return (RunStep(step),)


def transition(
    state: CeremonyState, event: Event, now: int
) -> tuple[CeremonyState, tuple[Effect, ...]]:
    """Apply one observed *event* and return the new state and the next effects.

    Raises:
        CeremonyError: the event does not fit the state (a step out of order, an abort
            after the commit point, anything after the close).
    """
    if state.finished:
        raise CeremonyError(f"The ceremony is already {state.status}", "Start a new ceremony.")
    if isinstance(event, Begin):
        if event.step != state.next_step:
            raise CeremonyError(
                f"Step {event.step} is out of order (expected {state.next_step})",
                "Resume the ceremony from its transcript.",
            )
        state = replace(state, in_flight=event.step, status=RUNNING)
    elif isinstance(event, Waiting):
        if event.step != state.next_step or event.step not in INPUT_STEPS:
            raise CeremonyError(f"Step {event.step} cannot wait for input now", "Resume.")
        state = replace(state, in_flight=None, status=AWAITING)
    elif isinstance(event, Done):
        if event.step != state.next_step:
            raise CeremonyError(f"Step {event.step} finished out of order", "Resume.")
        facts = {**state.facts, **dict(event.facts)}
        state = replace(
            state, done=(*state.done, event.step), in_flight=None, facts=facts, status=RUNNING
        )
        if state.committed:
            state = replace(state, status=COMMITTED)
    elif isinstance(event, Abort):
        if state.committed:
            raise CeremonyError(
                "The ceremony has passed its commit point and cannot be aborted",
                "Resume it to finish.",
            )
        return replace(state, status=RUNNING), (Rollback(event.reason),)
    elif isinstance(event, Close):
        status = CLOSED if event.outcome == "completed" else ABORTED
        return replace(state, status=status, outcome=event.outcome, in_flight=None), ()
    return state, plan(state, now)


def fold(initial: CeremonyState, events: Iterable[Event], now: int) -> CeremonyState:
    """Replay recorded events onto *initial* (used to resume from a transcript).

    Raises:
        CeremonyError: the events are inconsistent with the script.
    """
    state = initial
    for ev in events:
        if isinstance(ev, Abort):
            continue  # a recorded abort is followed by rollback events and a close
        state, _ = transition(state, ev, now)
    return state
