"""Shares handed in: checked one by one against envelope and commitment, then combined.

Owns the ``collect-shares`` and ``rebuild-rk`` steps (recover, reshare, drill) and the
share collection the generate/reshare verification round reuses. Every share is verified
against its signed envelope and the commitment recorded by the generating ceremony
**before** combining, so a bad share is rejected by custodian name (``share.rejected``)
and the ceremony continues with the others. Short of a quorum, accepted shares are held
sealed on the HSM (:mod:`ceremonies.runner.held`) until a later invocation.

:func:`check_share` (``CeremonyRunner.check_share``) runs the same per-share check
(:func:`_check_one`: :func:`ceremonies.sharecheck.verify`, the one share checker) against
the set the waiting step expects (:func:`expected_share_set`) without recording anything.

Each share's fate in a run is decided here once, as a :class:`~ceremonies.runner.views.HandIn`
(accepted, held, duplicate or rejected; a remote hand-in with its SAS), and
:func:`publish` reports it: ``Outcome.handins`` and the message lines derived from it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ceremonies.roster import Roster
from ceremonies.runner.held import (
    _held,
    _hold,
    _open_sealed,
    _unhold,
    drop_held,
    hold_for_sas,
    same_sas,
    sas_waiting,
    take_for_sas,
)
from ceremonies.runner.steps.base import WAIT, _secret_lost, active_share_set, on, quorum_size
from ceremonies.runner.views import HandIn, ShareCheck
from ceremonies.sharecheck import Rejected as _Rejected
from ceremonies.sharecheck import ShareSet, verify
from custody.errors import CeremonyError, IntegrityError, ShareError, UsageError
from custody.hsm import kcv_of_bytes
from custody.shares import slip39

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner, Inputs


# ------------------------------------------------------------------------ share hand-in
def _roster_names(r: CeremonyRunner) -> dict[str, str]:
    return {m.fingerprint: m.name for m in Roster(r.dep.store).members()}


def _check_one(
    si: Any, sset: dict[str, Any], roster: dict[str, str], names: set[str]
) -> tuple[str, slip39.ParsedShare, Any]:
    """Verify one share with the one share checker (:func:`ceremonies.sharecheck.verify`):
    envelope, ceremony, epoch, holder and the recorded commitment, before any combining.
    *names* are the custodians already counted (a second share is ``duplicate-custodian``).

    Returns:
        (custodian name, parsed share, envelope).

    Raises:
        _Rejected: wrapping the ShareError, with the custodian named as far as known.
    """
    v = verify(si.source, si.text, si.envelope, ShareSet.of(sset), roster, names)
    return v.custodian, v.parsed, v.envelope


def _hand_in(si: Any, sas: dict[str, str], **verdict: Any) -> HandIn:
    """The :class:`HandIn` of share *si* (a remote one when *sas* knows its source)."""
    remote = si.source in sas
    return HandIn(
        source=si.source.removeprefix("remote:") if remote else si.source,
        remote=remote,
        sas=sas.get(si.source),
        **verdict,
    )


def _check_shares(
    r: CeremonyRunner,
    shares: Any,
    sset: dict[str, Any],
    step: str,
    *,
    names: set[str] | None = None,
    record: bool = True,
    sas: dict[str, str] | None = None,
) -> tuple[list[Any], list[HandIn]]:
    """Verify each share (:func:`_check_one`) BEFORE combining; with *record*, record
    share.accepted / share.rejected naming the custodian and decide each share's
    :class:`HandIn` (``accepted``, ``duplicate`` or ``rejected``); without, a share that
    fails raises (shares held from an earlier run were checked then).

    Returns:
        (custodian name, parsed share, ShareInput) of each accepted share; the HandIn of
        each share when recording (else empty).

    Raises:
        ShareError: without *record*, the first share that fails.
    """
    roster = _roster_names(r)
    sas = sas or {}
    accepted: list[Any] = []
    verdicts: list[HandIn] = []
    names = set() if names is None else names
    for si in shares:
        try:
            who, parsed, env = _check_one(si, sset, roster, names)
        except _Rejected as rej:
            if not record:
                raise rej.error from None
            h = _hand_in(
                si,
                sas,
                custodian=rej.custodian,
                status="duplicate" if rej.reason == "duplicate-custodian" else "rejected",
                reason=rej.reason,
                detail=rej.error.title,
            )
            record_rejected(r, h, step)
            verdicts.append(h)
            continue
        names.add(who)
        accepted.append((who, parsed, si))
        if not record:
            continue
        group, member = parsed.group_index + 1, parsed.member_index + 1
        r.record(
            "share.accepted",
            {
                "custodian": who,
                "custodian_fingerprint": env.payload.custodian,
                "commitment": env.payload.commitment,
                "group": group,
                "member": member,
            },
            step=step,
        )
        verdicts.append(
            _hand_in(si, sas, custodian=who, status="accepted", group=group, member=member)
        )
    return accepted, verdicts


def record_rejected(r: CeremonyRunner, h: HandIn, step: str) -> None:
    """Record ``share.rejected`` for a refused hand-in (the custodian as far as known)."""
    r.record(
        "share.rejected",
        {"custodian": h.custodian or h.label, "reason": h.reason, "detail": h.detail},
        step=step,
    )


def publish(r: CeremonyRunner, handins: list[HandIn]) -> None:
    """Report this run's hand-ins: the records (``Outcome.handins``) and the human lines
    derived from them (``Outcome.messages``). The one place either is written."""
    r.handins.extend(handins)
    r.messages.extend(m for h in handins for m in h.messages())


def new_share_set(r: CeremonyRunner) -> dict[str, Any]:
    """The share set this generate/reshare issued (from its ``split`` facts): what its
    verification round checks shares against."""
    f = r.state.facts
    return {
        "epoch": f["epoch"],
        "ceremony_id": r.ceremony_id,
        "dealer": bytes.fromhex(f["dealer_public"]),
        "dealer_alg": f.get("dealer_alg", "ed25519"),
        "rk_kcv": f["new_rk_kcv"],
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


SHARE_STEPS = ("collect-shares", "verify-shares")


def expected_share_set(r: CeremonyRunner) -> tuple[str, dict[str, Any]]:
    """(the share step the ceremony is at, the share set it checks shares against): the NEW
    set in a verification round (``verify-shares``), else the deployment's active set.

    Raises:
        CeremonyError: the ceremony is not at a share step, or there is no active set.
    """
    step = r.state.next_step
    if r.state.finished or step not in SHARE_STEPS:
        raise CeremonyError(
            f"Ceremony {r.ceremony_id} is not collecting shares (next step: {step or 'none'})",
            "Check shares while the ceremony waits for them (collect-shares or verify-shares).",
        )
    if step == "verify-shares":
        return step, new_share_set(r)
    sset = active_share_set(r.dep.store)
    if sset is None:
        raise CeremonyError(
            "This deployment has no active share set", "Run the generate ceremony first."
        )
    return step, sset


def check_share(r: CeremonyRunner, share: Any) -> ShareCheck:
    """Check one share exactly as the waiting step will when it is handed in (the same
    :func:`_check_one`), without recording or keeping anything. Custodians whose shares
    are already held for the step count as handed in (``duplicate-custodian``).

    Raises:
        CeremonyError: the ceremony is not at a share step.
    """
    step, sset = expected_share_set(r)
    names = {str(h["custodian"]) for h in _held(r, step)}
    try:
        who, parsed, _env = _check_one(share, sset, _roster_names(r), names)
    except _Rejected as rej:
        return ShareCheck(
            custodian=rej.who,
            ok=False,
            reason=rej.reason,
            detail=rej.error.title,
            epoch=int(sset["epoch"]),
        )
    return ShareCheck(
        custodian=who,
        ok=True,
        group=parsed.group_index + 1,
        member=parsed.member_index + 1,
        epoch=int(sset["epoch"]),
    )


def _enough(parsed: list[slip39.ParsedShare]) -> bool:
    if not parsed:
        return False
    groups: dict[int, set[int]] = {}
    for p in parsed:
        groups.setdefault(p.group_index, set()).add(p.member_index)
    gt, mt = parsed[0].group_threshold, {p.group_index: p.member_threshold for p in parsed}
    return sum(1 for g, m in groups.items() if len(m) >= mt[g]) >= gt


def _resolve_confirms(r: CeremonyRunner, inputs: Any, pool: list[str]) -> list[tuple[str, str]]:
    """(custodian, typed words) of each SAS confirmation; "" names the one waiting.

    Raises:
        UsageError: a confirmation names no remote hand-in waiting for its SAS, or names
            none while several wait (nothing was recorded).
    """
    picks: list[tuple[str, str]] = []
    for who, words in inputs.confirm_sas:
        if not who:
            if len(pool) != 1:
                raise UsageError(
                    "No remote hand-in is waiting for its short authentication string"
                    if not pool
                    else f"Several remote hand-ins wait for their SAS ({', '.join(pool)})",
                    "Give --confirm-sas after a remote hand-in (--sealed-share), naming the "
                    "custodian when several wait: --confirm-sas 'NAME=WORDS'.",
                )
            who = pool[0]
        if who not in pool:
            raise UsageError(
                f"No remote hand-in of {who} is waiting for its short authentication string",
                "See 'custody ceremony status "
                f"{r.ceremony_id}' for the remote hand-ins that wait ("
                + (", ".join(pool) or "none")
                + ").",
            )
        picks.append((who, words))
    return picks


SAS_MISMATCH = (
    "The short authentication string differs from the words the custodian read out: "
    "the hand-in may have been replaced in transit"
)


def _remote(
    r: CeremonyRunner,
    inputs: Any,
    sset: dict[str, Any],
    step: str,
    names: set[str],
) -> tuple[list[Any], dict[str, str], list[HandIn]]:
    """SAS before use. Open this run's remote hand-ins and check each (nothing combined);
    a share that passes is counted only once the coordinator confirms its SAS (in this run
    or a later one, ``Inputs.confirm_sas``), else it is sealed until then. Words that
    differ reject the share (``sas-mismatch``, recorded).

    Returns:
        (the confirmed remote ShareInputs, the SAS of each by source, the HandIns of the
        remote hand-ins not counted in this run: refused, rejected, mismatched, waiting).
    """
    opened, sas, refused = _open_sealed(r, inputs, step) if inputs.sealed else ([], {}, [])
    roster = _roster_names(r)
    waiting = {h["custodian"] for h in sas_waiting(r, step)}
    fresh: dict[str, tuple[Any, str]] = {}
    early: list[HandIn] = list(refused)
    for si in opened:
        try:
            who, _p, _e = _check_one(si, sset, roster, names | waiting | set(fresh))
        except _Rejected as rej:
            dup = rej.reason == "duplicate-custodian"
            early.append(
                _hand_in(
                    si,
                    sas,
                    custodian=rej.custodian,
                    status="duplicate" if dup else "rejected",
                    reason=rej.reason,
                    detail=rej.error.title,
                )
            )
            continue
        fresh[who] = (si, sas[si.source])
    picks = _resolve_confirms(r, inputs, sorted(waiting | set(fresh)))
    for h in early:
        record_rejected(r, h, step)
    confirmed: list[Any] = []
    for who, words in picks:
        si, want = fresh.pop(who) if who in fresh else take_for_sas(r, step, who)
        src = si.source.removeprefix("remote:")
        if same_sas(words, want):
            r.record("sas.confirmed", {"custodian": who, "source": src}, step=step)
            sas[si.source] = want
            confirmed.append(si)
            continue
        h = HandIn(
            source=src,
            custodian=who,
            status="rejected",
            reason="sas-mismatch",
            detail=SAS_MISMATCH,
            remote=True,
        )
        record_rejected(r, h, step)
        early.append(h)
    for who, (si, want) in fresh.items():
        hold_for_sas(r, step, who, si, want)
        src = si.source.removeprefix("remote:")
        r.record("share.unconfirmed", {"custodian": who, "source": src}, step=step)
        early.append(
            HandIn(
                source=src,
                custodian=who,
                status="unconfirmed",
                reason="sas-unconfirmed",
                remote=True,
            )
        )
    return confirmed, sas, early


def _collect(r: CeremonyRunner, inputs: Any, sset: dict[str, Any] | None, step: str) -> Any:
    """Collect shares for *step*: from this invocation (files and remote hand-ins whose SAS
    is confirmed) and those held, sealed, from earlier invocations. Each is verified on
    arrival. With a quorum, the shares go to memory for combining; short of one, the new
    ones are sealed under the hold key and the step waits (exit 10)."""
    if sset is None:
        raise CeremonyError(
            "This deployment has no active share set", "Run the generate ceremony first."
        )
    held = _unhold(r, step) if _held(r, step) else []
    if not inputs.shares and not inputs.sealed and not inputs.confirm_sas and not held:
        return WAIT
    names: set[str] = set()
    old, _ = _check_shares(r, held, sset, step, names=names, record=False)
    confirmed, sas, early = _remote(r, inputs, sset, step, names)
    fresh = [*inputs.shares, *confirmed]
    new, verdicts = _check_shares(r, fresh, sset, step, names=names, sas=sas)
    parsed = [p for _n, p, _si in old + new]
    short = not _enough(parsed)
    if short and r.dep.hsm is not None:  # sealed below until a later run brings the rest
        verdicts = [replace(h, status="held") if h.status == "accepted" else h for h in verdicts]
    handins = [*early, *verdicts]
    publish(r, handins)
    if short:
        need = quorum_size(sset["scheme"])
        have = sorted({n for n, _p, _si in old + new})
        rejected = "; ".join(h.refusal for h in handins if h.refusal)
        if r.dep.hsm is None:  # nowhere to seal shares at rest: all must come at once
            raise ShareError(
                f"Not enough valid shares: {len(parsed)} accepted, {need} needed"
                + (f" ({rejected})" if rejected else ""),
                "Hand in shares from more custodians in one run, or give "
                "--pin-file so that shares can be held between runs.",
            )
        if new:
            _hold(r, step, [(n, si) for n, _p, si in new])
        wait = [h["custodian"] for h in sas_waiting(r, step)]
        r.messages.append(
            f"{len(have)} share(s) accepted so far ({', '.join(have) or 'none'}); "
            f"at least {max(1, need - len(have))} more needed"
            + (f"; waiting for the SAS of {', '.join(wait)}" if wait else "")
        )
        return WAIT
    r._secrets["shares"] = parsed
    if step == "collect-shares" and new and r.dep.hsm is not None:
        _hold(r, step, [(n, si) for n, _p, si in new])  # a crash before rebuild-rk resumes
    if step == "verify-shares":
        drop_held(r, step)  # combined right away by the step itself
    return {
        f"{step}.accepted": sorted({_holder(sset, p) for p in parsed}),
        f"{step}.epoch": sset["epoch"],
    }


def _holder(sset: dict[str, Any], p: slip39.ParsedShare) -> str:
    return str(sset["holders"][(p.group_index, p.member_index)]["name"])


def _rebuild(r: CeremonyRunner, sset: dict[str, Any]) -> dict[str, Any]:
    parsed = r._secrets.get("shares")
    if parsed is None and _held(r, "collect-shares"):  # resumed after a crash: still sealed
        got, _ = _check_shares(
            r, _unhold(r, "collect-shares"), sset, "collect-shares", record=False
        )
        parsed = [p for _n, p, _si in got]
    if parsed is None:
        raise _secret_lost(r, "rebuild-rk")
    rk = slip39.combine_parsed(parsed)
    r._secrets.pop("shares", None)
    drop_held(r, "collect-shares")
    if kcv_of_bytes(rk) != sset["rk_kcv"]:
        raise IntegrityError(
            "The rebuilt recovery key has the wrong KCV",
            "The shares do not belong to this deployment's share set.",
        )
    r._secrets["rk"] = rk
    return {"rk_kcv": sset["rk_kcv"], "epoch": sset["epoch"]}


@on("recover reshare drill", "collect-shares")
def collect_shares(r: CeremonyRunner, inputs: Inputs) -> Any:
    return _collect(r, inputs, active_share_set(r.dep.store), "collect-shares")


@on("recover reshare drill", "rebuild-rk")
def rebuild_rk(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    sset = active_share_set(r.dep.store)
    if sset is None:
        raise CeremonyError("No active share set", "Run generate first.")
    facts = _rebuild(r, sset)
    if r.state.kind == "reshare":
        r._secrets["old_rk"] = r._secrets.pop("rk")
        return {"old_rk_kcv": facts["rk_kcv"], "old_epoch": facts["epoch"]}
    return facts
