"""Opening a ceremony: who may take part, who must approve, and the policy it is signed under.

The runner, not a front end, decides the quorums (:func:`required_thresholds`): after the
bootstrap, an enrolment needs two super-admins (with a single one, a majority of the
custodians); rotate-root counts only holders of the active share set, by key fingerprint;
emergency-rotate needs a second person enrolled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ceremonies.engine.scripts import SCRIPTS
from ceremonies.roster import Roster
from ceremonies.runner.steps.base import active_share_set, quorum_size
from ceremonies.transcript.authority import SECOND_PERSON_ROLES, roster_change_quorum
from ceremonies.transcript.model import Policy, RosterEntry, Threshold
from custody.access.local import check_sealed_rows
from custody.deployment import Deployment
from custody.errors import CeremonyError, IntegrityError, PolicyError
from custody.textsafe import printable


def roster_entries(roster: Roster, now: int) -> tuple[RosterEntry, ...]:
    """The store roster as transcript roster entries (currently usable members only).

    Raises:
        IntegrityError: a member's stored key is not a key of its stored algorithm (an
            Ed25519 entry holding a P-256 point, say): the participants table was changed
            outside custody. Raised before any ceremony records anything.
    """
    out: list[RosterEntry] = []
    for m in roster.members():
        if m.usable_at(now) is not None:
            continue
        try:
            out.append(
                RosterEntry(
                    name=m.name,
                    role=m.role,
                    public=m.public,
                    valid_from=m.valid_from,
                    valid_until=m.valid_until,
                    revoked_at=m.revoked_at,
                    alg=m.alg,
                )
            )
        except ValueError as exc:
            raise IntegrityError(
                f"The roster entry for {printable(m.name)} in the store does not hold an "
                f"{printable(m.alg)} key",
                "The participants table was changed outside custody; nothing was recorded. "
                "Compare 'custody participant list' with the enrolment transcripts and "
                "restore the store from a verified snapshot ('custody store restore').",
            ) from exc
    return tuple(out)


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


def admit(
    dep: Deployment,
    kind: str,
    signer: Any,
    *,
    extra_roster: Sequence[RosterEntry],
    thresholds: Mapping[str, Threshold] | None,
    now: int,
) -> tuple[RosterEntry, tuple[RosterEntry, ...], dict[str, Threshold]]:
    """Check that a *kind* ceremony may open now, coordinated by *signer*.

    Returns:
        (the coordinator's roster entry, the ceremony's roster, its gated thresholds).

    Raises:
        CeremonyError: another ceremony is still open; rotate-root without a share set.
        PolicyError: the coordinator is not an enrolled super-admin; extra roster entries
            outside the bootstrap enrolment; a threshold below the required quorum, or one
            nobody can meet; an emergency-rotate with no second person enrolled.
        IntegrityError: with the token open, the roster (or another access-control row)
            fails its access seal.
    """
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
    # with the token open: the roster rows the access seal covers must be as sealed (a
    # custodian's key swapped on disk would otherwise approve as them). Not for recover:
    # its token is a replacement, the seal's key went with the lost one (the runbook
    # re-seals after review), and its authority is the shares
    if kind != "recover":
        check_sealed_rows(dep)
    entries = roster_entries(Roster(store), now) + tuple(extra_roster)
    me = next((e for e in entries if e.public == signer.public and e.alg == signer.alg), None)
    if me is None or me.role != "super-admin":
        raise PolicyError(
            "The coordinator must be an enrolled super-admin",
            "Use the key of an enrolled super-admin (--key).",
        )
    if kind == "rotate-root":
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
    return me, entries, gated


def ceremony_policy(
    dep: Deployment,
    kind: str,
    entries: tuple[RosterEntry, ...],
    gated: Mapping[str, Threshold],
    *,
    purpose: str,
    now: int,
) -> Policy:
    """The policy a new *kind* ceremony is signed under, chained to the last checkpoint."""
    prev = dep.store.get_meta("last_checkpoint")
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
    return policy


def open_ceremonies(dep: Deployment, *, now: int | None = None) -> list[dict[str, Any]]:
    """All ceremonies of the deployment, newest first (for list views).

    Each row: ``id``, ``kind``, ``state``, ``coordinator``, ``bundle``, ``created``,
    ``expires``, ``updated`` (Unix seconds), ``age`` (seconds since it was opened) and, for
    an open ceremony, ``expires_in`` (seconds; negative once it expired) and ``expired``
    (None for a finished one).
    """
    t = int(time.time()) if now is None else now
    return [  # newest first; ties: newest row
        dict(
            id=r.id,
            kind=r.kind,
            state=r.state,
            coordinator=r.coordinator,
            bundle=str(dep.home.transcripts_dir / r.id),  # the store keeps it home-relative
            created=r.created,
            expires=r.expires,
            updated=r.updated,
            age=t - r.created,
            expires_in=(r.expires - t) if r.state == "open" else None,
            expired=(r.expires <= t) if r.state == "open" else None,
        )
        for r in dep.store.ceremonies()
    ]
