"""Step handlers of every ceremony kind, and the rollback of unfinished ones.

A handler ``(runner, inputs) -> facts | WAIT`` carries out one script step after the
runner recorded its ``step.begin``. Handlers are idempotent (a step begun before a crash
is redone on resume): they check the token and the store before acting. Facts are public
(versions, KCVs, digests, names); secrets live only in ``runner._secrets``.

The handlers live in one module per concern, each registering itself with
:func:`~ceremonies.runner.steps.base.on`:

* :mod:`.base`: the registry, HSM access, ``SecretLost``, the active share set;
* :mod:`.approvals`: approvals of gated steps, idempotent across interruptions;
* :mod:`.handin`: shares handed in, checked before combining; ``collect-shares``,
  ``rebuild-rk``;
* :mod:`.rootkey`: ``hsm-check``, ``generate-root``, ``lock-root``, ``rewrap``;
* :mod:`.issue`: a new RK and share set (generate, reshare) up to ``finalise``;
* :mod:`.recover`: the root back into a new token;
* :mod:`.rotation`: rotate-root and emergency-rotate;
* :mod:`.cosign`: emergency-rotate's ``second-person`` (a witness or a second super-admin);
* :mod:`.drill`, :mod:`.enrol`, :mod:`.rollback`.

This package is what the runner calls (:func:`handler`, :func:`precheck`,
:func:`rollback`, :data:`WAIT`, :func:`pending_request`, :func:`check_share`) and
re-exports the queries the CLI and the TUI use (:func:`active_share_set`,
:func:`quorum_size`, :func:`drill_status`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ceremonies.runner.held import _held
from ceremonies.runner.steps import (
    cosign,
    drill,
    enrol,
    handin,
    issue,
    recover,
    rootkey,
    rotation,
)
from ceremonies.runner.steps.approvals import request_for, screen_approvals
from ceremonies.runner.steps.base import WAIT, _secret_lost, active_share_set, handler, quorum_size
from ceremonies.runner.steps.cosign import second_person_action
from ceremonies.runner.steps.drill import drill_status
from ceremonies.runner.steps.enrol import check_roster_change, enrol_action
from ceremonies.runner.steps.handin import check_share, expected_share_set
from ceremonies.runner.steps.issue import _issued_complete, check_new_set
from ceremonies.runner.steps.recover import recover_state
from ceremonies.runner.steps.rollback import rollback
from ceremonies.runner.steps.rootkey import token_state
from ceremonies.runner.steps.rotation import rotate_action
from custody.errors import CeremonyError, ConfigError, CustodyError

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner
    from ceremonies.runner.views import ApprovalRequest
    from custody.deployment import Deployment

_MODULES = (cosign, drill, enrol, handin, issue, recover, rootkey, rotation)  # register handlers


APPROVAL_STEPS: dict[tuple[str, str], tuple[str, Callable[[Any], tuple[str, dict[str, Any]]]]] = {
    ("rotate-root", "approve"): ("rotate-root", rotate_action),
    ("enrol", "enrol"): ("enrol", enrol_action),
    ("emergency-rotate", "second-person"): ("emergency-rotate", second_person_action),
}
"""(ceremony kind, step) -> (gated action, its ``(action_id, params)``) of every step that
collects approvals."""


def pending_request(r: CeremonyRunner) -> ApprovalRequest | None:
    """The approval request of the step the ceremony is at (None when it is not at a
    gated step). Pure reading: works right after ``resume``, before the step runs again."""
    step = r.state.next_step
    if r.state.finished or step is None or (r.state.kind, step) not in APPROVAL_STEPS:
        return None
    action, make = APPROVAL_STEPS[(r.state.kind, step)]
    action_id, params = make(r)
    return request_for(r, step, action, action_id, params)


def preflight(dep: Deployment, kind: str, params: Mapping[str, Any], *, now: int) -> None:
    """Refuse, before the ceremony is recorded, what its steps would refuse later from what
    is known at the start: the parameters (share scheme, custodians, ``--out``, roster
    changes) and the state of the token and the store that the kind starts from. The
    steps run the very same checks again (``review``, ``hsm-check``), so the two never
    disagree. Reads only: a ceremony refused here leaves nothing behind, no row, no
    transcript, no token object, no file.

    Raises:
        UsageError, StorageError, CeremonyError, HsmError: what the first steps would raise.
    """
    if kind == "enrol":
        check_roster_change(dep, params)
    elif kind == "recover":
        recover_state(dep)
    elif kind == "drill":
        if active_share_set(dep.store) is None:
            raise CeremonyError(
                "This deployment has no active share set", "Run the generate ceremony first."
            )
    else:
        token_state(dep, kind)
        if kind in ("generate", "reshare"):
            check_new_set(dep, params, now=now)


ROOT_STEPS = ("generate-rk", "wrap-blob", "lock-root")  # need generate-root's volatile root


def precheck(r: CeremonyRunner, step: str) -> None:
    """Refuse, before anything is recorded, a step whose in-memory secret is gone.

    Raises:
        SecretLost: the step needs RK or the shares, and they died with an earlier process.
    """
    need = {"wrap-blob": "rk", "split": "rk", "scratch-token": "rk"}.get(step)
    if need and need not in r._secrets:
        raise _secret_lost(r, step)
    if step in ROOT_STEPS and r.state.kind in ("generate", "reshare") and "root" not in r._secrets:
        raise _secret_lost(r, step)  # the volatile new root died with the process (rootkey)
    if step == "issue-shares" and "issued" not in r._secrets and not _issued_complete(r):
        raise _secret_lost(r, step)
    if step == "rebuild-rk" and "shares" not in r._secrets and not _held(r, "collect-shares"):
        raise _secret_lost(r, step)


__all__ = [
    "APPROVAL_STEPS",
    "WAIT",
    "ConfigError",
    "CustodyError",
    "active_share_set",
    "check_share",
    "drill_status",
    "enrol_action",
    "expected_share_set",
    "handler",
    "pending_request",
    "preflight",
    "quorum_size",
    "rollback",
    "rotate_action",
    "screen_approvals",
    "second_person_action",
]
