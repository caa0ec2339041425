"""What a ceremony session reads for its driver (public, or the card's owner's only).

* :func:`share_set_for`: the typed :class:`~ceremonies.sharecheck.ShareSet` a waiting
  step checks shares against (the new set in a verification round; else the active set,
  with the retired ones so that an old epoch's share is named as such);
* :func:`sealed_result`: the live check and the SAS of one remote hand-in, from the
  runner's :class:`~ceremonies.runner.HandIn` records (never from its message lines); a
  hand-in held until its SAS is confirmed is ``incomplete`` (not counted);
* :func:`issued_card`: the share card the ceremony issued to a custodian.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ceremonies.runner import CeremonyRunner, HandIn
from ceremonies.runner.steps import active_share_set
from ceremonies.sharecheck import LiveCheck, RetiredSet, ShareSet
from custody.errors import ConfigError, ShareError
from custody.shares.card import Card, CardFacts
from custody.shares.envelope import load_envelope


def share_set_for(r: CeremonyRunner, step: str | None) -> ShareSet | None:
    """The share set *r*'s waiting *step* checks against (None: no active set)."""
    if step == "verify-shares":
        f = r.state.facts
        return ShareSet.of(
            {
                "epoch": f["epoch"],
                "ceremony_id": r.ceremony_id,
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
    s = active_share_set(r.dep.store)
    if s is None:
        return None
    retired = [
        RetiredSet(
            epoch=old.epoch,
            ceremony_id=old.ceremony_id,
            commitments={(h.group_index, h.member_index): h.commitment for h in old.holders},
        )
        for old in r.dep.store.retired_share_sets()
    ]
    return ShareSet.of(s, retired)


def sealed_result(source: str, handins: Iterable[HandIn]) -> tuple[LiveCheck, str]:
    """The check and the SAS ("" when it did not open) of one remote hand-in, from the
    runner's records of the run that opened it (*handins*: that run's new records; the one
    for *source* is the remote one of that name)."""
    tag = f"remote:{source}"
    h = next((x for x in handins if x.remote and x.source == source), None)
    if h is None:
        return LiveCheck(source=tag, status="rejected", reason="the runner did not report it"), ""
    sas = h.sas or ""
    if h.status == "unconfirmed":  # SAS before use: not counted until it is confirmed
        return LiveCheck(
            source=tag,
            status="incomplete",
            custodian=h.custodian or "",
            reason="held until its short authentication string is confirmed",
        ), sas
    if not h.counted:
        return LiveCheck(
            source=tag, status="rejected", custodian=h.custodian or "", reason=h.detail
        ), sas
    return LiveCheck(
        source=tag, status="ok", custodian=h.custodian or "", group=h.group, member=h.member
    ), sas


def issued_card(r: CeremonyRunner, name: str) -> Card:
    """The share card *r* issued to *name*: its words and envelope, from the ceremony's
    output directory.

    Raises:
        ConfigError: no such card (before the issue-shares step, or not a custodian).
        ShareError: its envelope is unreadable.
    """
    out = Path(r.params.get("out", ""))
    try:
        words = tuple((out / f"{name}.share.txt").read_text().split())
        env = load_envelope((out / f"{name}.envelope.json").read_bytes())
    except OSError as exc:
        raise ConfigError(
            f"No share card for {name} in this ceremony",
            "Cards exist after the issue-shares step.",
        ) from exc
    except ShareError:
        raise
    return Card(
        name=name,
        words=words,
        envelope=env,
        facts=CardFacts(
            deployment=r.dep.config.deployment_id,
            kind=r.state.kind,
            group_size=dict(enumerate(r.params.get("groups") or [])).get(
                env.payload.group_index, (0, 0)
            )[1],
        ),
    )
