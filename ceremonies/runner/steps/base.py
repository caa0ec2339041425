"""Shared ground of the step handlers: the handler registry, HSM access, SecretLost.

Every step module registers its handlers with :func:`on`; the runner looks them up with
:func:`handler`. A handler ``(runner, inputs) -> facts | WAIT`` carries out one script step
after the runner recorded its ``step.begin``; it is idempotent (a step begun before a crash
is redone on resume) and returns public facts only. This module also owns the small
queries several ceremony kinds share: the active share set and its quorum size.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from custody.errors import CeremonyError, KeyNotFound, UsageError

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner


class SecretLost(CeremonyError):
    """A step needs the recovery key, but it died with an earlier process.

    The runner refuses to continue (nothing is recorded or changed); ``custody ceremony
    abort ID`` then removes everything the ceremony created.
    """


WAIT = object()
Handler = Callable[[Any, Any], Any]
_H: dict[tuple[str, str], Handler] = {}


def on(kinds: str, step: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for k in kinds.split():
            _H[(k, step)] = fn
        return fn

    return deco


def handler(kind: str, step: str) -> Handler:
    try:
        return _H[(kind, step)]
    except KeyError:
        raise CeremonyError(f"No handler for {kind}/{step}", "This is a bug.") from None


def _hsm(r: CeremonyRunner) -> Any:
    if r.dep.hsm is None:
        raise UsageError("This ceremony needs the HSM", "Provide the token PIN (--pin-file).")
    return r.dep.hsm


def _token_has(r: CeremonyRunner, label: str, version: int) -> Any:
    try:
        return _hsm(r).find_key(label, version)
    except KeyNotFound:
        return None


def _rk(r: CeremonyRunner) -> bytes:
    rk: bytes | None = r._secrets.get("rk")
    if rk is None:
        raise CeremonyError(
            "The recovery key is no longer in memory (the process was interrupted)",
            "The ceremony is rolled back; start it again.",
        )
    return rk


def _secret_lost(r: CeremonyRunner | None = None, step: str | None = None) -> Any:
    cid = r.ceremony_id if r is not None else "ID"
    where = f" (step {step})" if step else ""
    return SecretLost(
        f"Ceremony {cid} cannot continue{where}: the recovery key or the shares "
        "it needs were only in the memory of the process that stopped",
        f"Nothing was changed. Roll it back with 'custody ceremony abort {cid}' "
        "(it removes every key, file and row this ceremony created), then start "
        "the ceremony again.",
    )


def dealer_alg(store: Any, public: bytes) -> str:
    """The algorithm the roster records for the key that dealt a share set (revoked
    members included): its envelopes verify under that algorithm only. A key the roster
    does not hold is read as Ed25519, the only dealer key before token-held coordinators
    dealt, and so fails closed for any other key."""
    m = next((p for p in store.participants() if p.public == public), None)
    return str(m.alg) if m is not None else "ed25519"


def active_share_set(store: Any) -> dict[str, Any] | None:
    e = store.active_share_set()
    if e is None:
        return None
    return {
        "epoch": e.epoch,
        "ceremony_id": e.ceremony_id,
        "policy_digest": e.policy_digest,
        "dealer": e.dealer_public,
        "dealer_alg": dealer_alg(store, e.dealer_public),
        "rk_kcv": e.rk_kcv,
        "rk_public": e.rk_public,
        "scheme": json.loads(e.scheme),
        "holders": {
            (h.group_index, h.member_index): {
                "name": h.custodian,
                "fingerprint": h.fingerprint,
                "commitment": h.commitment,
            }
            for h in e.holders
        },
    }


def quorum_size(scheme: dict[str, Any]) -> int:
    """The fewest shares that rebuild RK under *scheme*."""
    ts = sorted(t for t, _n in scheme["groups"])
    return sum(ts[: scheme["group_threshold"]])
