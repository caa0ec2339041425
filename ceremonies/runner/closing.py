"""Closing a ceremony, completed or rolled back.

A ceremony that holds objects on the deployment's token (its hold key, root versions it
created) is never closed or aborted without the token (:class:`TokenNeeded`, nothing
recorded); what the token fails to destroy is recorded in the transcript.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ceremonies.engine import Close
from ceremonies.runner import held, steps
from ceremonies.runner.io import Outcome, TokenNeeded
from ceremonies.runner.steps.rollback import keys_to_destroy

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner


def needs_token(r: CeremonyRunner, *, rollback: bool) -> list[str]:
    """What *r* holds on the token that a close (or, with *rollback*, an abort) must
    destroy: public descriptions, empty when nothing."""
    kept = r.pending.get("held", {})
    out = []
    if r.pending.get("hold_key"):
        n = sum(len(v) for v in kept.values())
        m = len(r.pending.get("offers", []))
        out.append(f"its hold key {r.pending['hold_key']} ({n} held share(s), {m} offer key(s))")
    if rollback and not r.state.committed:
        out += [f"root/v{v}, which it created" for v in keys_to_destroy(r)]
    return out


def require_token(r: CeremonyRunner, *, rollback: bool) -> None:
    """Refuse to abort (or close) without the token what only the token can destroy.

    Raises:
        TokenNeeded: the HSM is not open and the ceremony holds token objects.
    """
    need = needs_token(r, rollback=rollback)
    if need and r.dep.hsm is None:
        what = "aborted" if rollback else "closed"
        raise TokenNeeded(
            f"Ceremony {r.ceremony_id} cannot be {what} without the token: it holds "
            + "; ".join(need),
            "Only the token can destroy them, so nothing was recorded or changed. Give "
            "the token PIN (--pin-file or $CUSTODY_PIN) and run the command again.",
        )


def close(r: CeremonyRunner) -> Outcome:
    """Close *r* as completed: drop what it holds, record it, checkpoint the chain."""
    require_token(r, rollback=False)
    undone = held.drop_held(r, None)
    if undone or r.not_destroyed:
        r.record("cleanup", {"undone": undone, "not_destroyed": list(r.not_destroyed)})
    cp = r.rec.close(r.signer, [r.signer], outcome="completed", now=r.clock())
    r._apply(Close("completed"))
    r._finish_row("closed")
    r.dep.store.set_meta(
        "last_checkpoint",
        json.dumps({"ceremony": r.ceremony_id, "tree_size": cp.tree_size, "root": cp.root.hex()}),
    )
    r._secrets.clear()
    return r.outcome()


def rollback(r: CeremonyRunner, reason: str) -> Outcome:
    """Roll *r* back (what it created is destroyed) and close it as aborted.

    Raises:
        TokenNeeded: it holds token objects and the HSM is not open (nothing recorded).
    """
    require_token(r, rollback=True)  # before anything is recorded
    r._secrets.clear()
    if not r.rolling_back:
        r.record("rollback", {"reason": reason})
        r.rolling_back = True
    undone = steps.rollback(r)
    r.record("rollback.done", {"undone": undone, "not_destroyed": list(r.not_destroyed)})
    r.rec.close(r.signer, [r.signer], outcome="aborted", summary={"reason": reason}, now=r.clock())
    r._apply(Close("aborted"))
    r._finish_row("aborted")
    r.messages.append(f"rolled back: {reason}")
    return r.outcome()
