"""Where a ceremony's hand-in stands, read without its coordinator's key or the token.

:func:`handin_status` answers ``custody ceremony status ID``: the step the ceremony waits
at, who has handed in a share (held sealed for the step), which remote hand-ins wait for
their short authentication string, who is still missing (per group, with the progress
"group 1: 2 of 3; group 2: 0 of 2"), the shares rejected in this step, and the expiry.
It reads the store row and the transcript only: nothing is unsealed, recorded or changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ceremonies.engine import Begin, CeremonyState, Done, Waiting, fold
from ceremonies.engine.scripts import INPUT_STEPS
from ceremonies.runner.steps.base import active_share_set
from ceremonies.sharecheck import LiveCheck, ShareSet, quorum_of
from custody.deployment import Deployment
from custody.errors import CeremonyError, TranscriptError

SHARE_STEPS = ("collect-shares", "verify-shares")


def _events(bundle: str) -> list[dict[str, Any]]:
    try:
        raw = (Path(bundle) / "events.jsonl").read_text()
        return [json.loads(line) for line in raw.splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise TranscriptError(
            f"Cannot read the transcript of this ceremony at {bundle}",
            "Verify it with 'custody transcript verify'; abort the ceremony if it is damaged.",
        ) from exc


def _state(row: Any, events: list[dict[str, Any]], now: int) -> CeremonyState:
    evs: list[Any] = []
    for ev in events:
        kind, step = ev.get("kind"), str(ev.get("step"))
        if kind == "step.begin":
            evs.append(Begin(step))
        elif kind == "step.done":
            evs.append(Done(step, dict(ev.get("body", {}).get("facts", {}))))
        elif kind == "step.waiting":
            evs.append(Waiting(step))
    initial = CeremonyState(
        kind=row.kind, ceremony_id=row.id, opened_at=row.created, expires_at=row.expires
    )
    return fold(initial, evs, now)


def _share_set(dep: Deployment, st: CeremonyState, step: str) -> ShareSet | None:
    if step == "verify-shares":
        f = st.facts
        return ShareSet.of(
            {
                "epoch": f["epoch"],
                "ceremony_id": st.ceremony_id,
                "dealer": bytes.fromhex(f["dealer_public"]),
                "dealer_alg": f.get("dealer_alg", "ed25519"),
                "scheme": f["scheme"],
                "holders": {
                    (h["group"] - 1, h["member"] - 1): {
                        "name": h["custodian"],
                        "fingerprint": h["custodian_fingerprint"],
                        "commitment": h["commitment"],
                    }
                    for h in f["holders"]
                },
            }
        )
    s = active_share_set(dep.store)
    return ShareSet.of(s) if s is not None else None


def handin_status(dep: Deployment, ceremony_id: str, *, now: int) -> dict[str, Any]:
    """The hand-in status of *ceremony_id* (public; see the module docstring).

    Returns:
        ``ceremony_id, kind, state, step, awaiting, expires_at, expired`` and, at a share
        step, ``handed_in`` / ``missing`` (``{custodian, group, member}``),
        ``waiting_sas`` (``{custodian, source, received}``), ``rejected``
        (``{custodian, reason}``), ``groups`` (``{group, have, need}``),
        ``group_threshold``, ``progress`` and ``quorum_met``.

    Raises:
        CeremonyError: no such ceremony. TranscriptError: its transcript is unreadable.
    """
    row = dep.store.ceremony(ceremony_id)
    if row is None:
        raise CeremonyError(
            f"No ceremony {ceremony_id} in this deployment", "See 'custody ceremony list'."
        )
    out: dict[str, Any] = {
        "ceremony_id": row.id,
        "kind": row.kind,
        "state": row.state,
        "coordinator": row.coordinator,
        "expires_at": row.expires,
        "expired": row.state == "open" and now >= row.expires,
        "step": None,
        "awaiting": None,
    }
    if row.state != "open":
        return out
    events = _events(str(dep.home.transcripts_dir / row.id))  # always HOME/transcripts/ID
    st = _state(row, events, now)
    step = st.next_step
    out["step"] = step
    out["awaiting"] = INPUT_STEPS.get(step or "")
    if step not in SHARE_STEPS:
        return out
    sset = _share_set(dep, st, step)
    if sset is None:
        return out
    pending = json.loads(row.pending or "{}").get("held", {})
    by_name = {h.name: (g + 1, m + 1) for (g, m), h in sset.holders.items()}
    handed = [str(h["custodian"]) for h in pending.get(step, [])]
    waiting = [
        {
            "custodian": str(h["custodian"]),
            "source": str(h.get("source", "")),
            "received": int(h.get("received", 0)),
        }
        for h in pending.get(f"{step}/sas", [])
    ]
    checks = [
        LiveCheck(source=n, status="ok", custodian=n, group=by_name[n][0], member=by_name[n][1])
        for n in handed
        if n in by_name
    ]
    q = quorum_of(sset, checks)
    waits = {w["custodian"] for w in waiting}
    since = next(
        (
            i
            for i, e in enumerate(events)
            if e.get("kind") == "step.begin" and e.get("step") == step
        ),
        0,
    )
    out.update(
        handed_in=[
            {"custodian": n, "group": by_name[n][0], "member": by_name[n][1]}
            for n in handed
            if n in by_name
        ],
        waiting_sas=waiting,
        missing=[
            {"custodian": h.name, "group": g + 1, "member": m + 1}
            for (g, m), h in sorted(sset.holders.items())
            if h.name not in handed and h.name not in waits
        ],
        rejected=[
            {
                "custodian": str(e.get("body", {}).get("custodian", "")),
                "reason": str(e.get("body", {}).get("reason", "")),
            }
            for e in events[since:]
            if e.get("kind") == "share.rejected" and e.get("step") == step
        ],
        groups=[
            {"group": i, "have": g.have, "need": g.need} for i, g in enumerate(q.groups, start=1)
        ],
        group_threshold=q.group_threshold,
        progress=q.progress(),
        quorum_met=q.met,
    )
    return out


__all__ = ["SHARE_STEPS", "handin_status"]
