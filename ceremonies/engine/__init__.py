"""The pure ceremony engine: scripts, the state machine, and quorum rules.

Nothing in this package does I/O. :mod:`ceremonies.engine.machine` is a state machine
``transition(state, event, now) -> (new_state, effects)`` over the ordered step script of a
ceremony kind (:mod:`ceremonies.engine.scripts`); :mod:`ceremonies.engine.quorum` counts
signed approvals. The runner (:mod:`ceremonies.runner`) carries out the effects through
the HSM, the store and the transcript recorder, and feeds the results back in as events.
"""

from ceremonies.engine.machine import (
    Abort,
    AwaitInput,
    Begin,
    CeremonyState,
    Close,
    CloseTranscript,
    Done,
    Effect,
    Event,
    Rollback,
    RunStep,
    Waiting,
    fold,
    open_state,
    plan,
    transition,
)
from ceremonies.engine.quorum import QuorumResult, count_approvals, require_quorum
from ceremonies.engine.scripts import COMMIT_STEP, INPUT_STEPS, KINDS, SCRIPTS, SECRET_STEPS

__all__ = [
    "COMMIT_STEP",
    "INPUT_STEPS",
    "KINDS",
    "SCRIPTS",
    "SECRET_STEPS",
    "Abort",
    "AwaitInput",
    "Begin",
    "CeremonyState",
    "Close",
    "CloseTranscript",
    "Done",
    "Effect",
    "Event",
    "QuorumResult",
    "Rollback",
    "RunStep",
    "Waiting",
    "count_approvals",
    "fold",
    "open_state",
    "plan",
    "require_quorum",
    "transition",
]
