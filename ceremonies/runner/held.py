"""Shares and offer keys held between invocations of a waiting ceremony, sealed at rest.

A waiting ceremony may receive its shares over several invocations (``custody ceremony
resume ID --share F``), in the room or remotely through a transport offer. This module
owns what must survive between those invocations, and its destruction:

* accepted shares, as AES-256-GCM ciphertext made by the deployment's HSM under a
  per-ceremony, non-extractable token key ``hold-<id>/v1`` (additional data: ceremony id,
  step, custodian), kept in the ceremony's ``pending`` row, never in the transcript;
* the private halves of this ceremony's transport offers (:mod:`custody.shares.transport`),
  sealed the same way;
* remote hand-ins that opened and passed the check but whose short authentication string
  (SAS) the coordinator has not yet confirmed: the share and its SAS sealed together (rows
  under ``STEP/sas`` beside the step's held shares). They are not counted until confirmed
  (:func:`confirm_sas`); words that differ reject the share.

The key is destroyed once the shares are combined and, in any case, at close and abort,
which crypto-shreds everything sealed under it. See docs/ceremonies.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

from ceremonies.runner.io import ShareInput, TokenNeeded
from ceremonies.runner.views import HandIn
from custody.errors import CeremonyError, CustodyError, KeyNotFound
from custody.shares import slip39

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner


def _hsm(r: CeremonyRunner) -> Any:
    from ceremonies.runner.steps.base import _hsm as hsm

    return hsm(r)


def _token_has(r: CeremonyRunner, label: str, version: int) -> Any:
    try:
        return _hsm(r).find_key(label, version)
    except KeyNotFound:
        return None


def _secret_lost(r: CeremonyRunner, step: str | None = None) -> Any:
    from ceremonies.runner.steps.base import _secret_lost as lost

    return lost(r, step)


HOLD_VERSION = 1


def _hold_label(r: CeremonyRunner) -> str:
    return "hold-" + hashlib.sha256(r.ceremony_id.encode()).hexdigest()[:16]


def _hold_key(r: CeremonyRunner) -> str:
    label = _hold_label(r)
    if _token_has(r, label, HOLD_VERSION) is None:
        r._save_pending(hold_key=label)  # recorded first, so a rollback finds it
        _hsm(r).generate_aes_key(label, HOLD_VERSION, extractable=False)
    return label


def _aad(r: CeremonyRunner, what: str) -> bytes:
    return f"custody/held/v1\n{r.ceremony_id}\n{what}".encode()


def _seal(r: CeremonyRunner, what: str, data: bytes) -> dict[str, str]:
    sealed = _hsm(r).seal(_hold_key(r), HOLD_VERSION, data, _aad(r, what))
    return {"sealed": sealed.hex()}


def _unseal(r: CeremonyRunner, what: str, doc: dict[str, str]) -> bytes:
    label = r.pending.get("hold_key") or _hold_label(r)
    try:
        # {"nonce", "ct"}: held by a custody from before Hsm.seal (AES-GCM, nonce || ct)
        sealed = doc["sealed"] if "sealed" in doc else doc["nonce"] + doc["ct"]
        return bytes(_hsm(r).unseal(label, HOLD_VERSION, bytes.fromhex(sealed), _aad(r, what)))
    except KeyNotFound:
        raise _secret_lost(r) from None


def _held(r: CeremonyRunner, step: str) -> list[dict[str, Any]]:
    return list(r.pending.get("held", {}).get(step, []))


def _hold(r: CeremonyRunner, step: str, items: list[Any]) -> None:
    """Seal newly accepted shares of *step* for a later invocation."""
    held = dict(r.pending.get("held", {}))
    rows = list(held.get(step, []))
    for name, si in items:
        rows.append(
            {
                "custodian": name,
                "envelope": si.envelope.hex(),
                **_seal(r, f"{step}/{name}", si.text.encode()),
            }
        )
    held[step] = rows
    r._save_pending(held=held)


def _unhold(r: CeremonyRunner, step: str) -> list[Any]:
    return [
        ShareInput(
            source=h["custodian"],
            envelope=bytes.fromhex(h["envelope"]),
            text=_unseal(r, f"{step}/{h['custodian']}", h).decode(),
        )
        for h in _held(r, step)
    ]


def drop_held(r: CeremonyRunner, step: str | None) -> list[str]:
    """Forget the held shares of *step* (all, and every offer key, when None); destroy the
    hold key once nothing is held and no offer is open (always when *step* is None).

    The ciphertexts are deleted from the ceremony's store row first (the store runs with
    ``PRAGMA secure_delete``, and its write-ahead log is truncated after), then the key is
    destroyed on the token: a key that could not be destroyed is named in
    ``r.not_destroyed`` (recorded in the transcript by the runner), never dropped silently.

    Returns:
        What was undone (public text).

    Raises:
        TokenNeeded: a hold key exists and the HSM is not open (nothing was changed).
    """
    undone: list[str] = []
    held = dict(r.pending.get("held", {}))
    label = r.pending.get("hold_key")
    left = {k: v for k, v in held.items() if step is not None and k != step and v}
    destroys = bool(label) and not left and (step is None or not r.pending.get("offers"))
    if destroys and r.dep.hsm is None:
        raise TokenNeeded(
            f"Ceremony {r.ceremony_id} holds its hold key {label} on the token",
            "Only the token can destroy it; give the token PIN (--pin-file) and retry.",
        )
    for k in [step] if step else list(held):
        if held.pop(k, None):
            undone.append(f"deleted the shares held for {k} from the store")
    if step is None and r.pending.pop("offers", None):
        undone.append("deleted the sealed offer keys from the store")
    if held or "held" in r.pending or undone:
        r.pending.pop("held", None)
        r._save_pending(**({"held": held} if held else {}))  # ciphertexts out of the row
        _truncate_wal(r)
    if destroys:
        try:
            _hsm(r).destroy_key(label, HOLD_VERSION)
            undone.append("destroyed the ceremony's hold key (held shares and offer keys)")
        except KeyNotFound:
            pass
        except CustodyError as exc:  # HsmError: the token failed; say so in the transcript
            r.not_destroyed.append(f"the hold key {label}: {exc.title}")
        r.pending.pop("hold_key", None)
        r._save_pending()
    return undone


def _truncate_wal(r: CeremonyRunner) -> None:
    """Checkpoint and truncate the store's write-ahead log, so that the pages which held the
    deleted ciphertexts do not linger in ``custody.db-wal`` (secure_delete zeroes them in
    the database file). Best effort: a reader holding the log open only delays it."""
    # The store port has no such operation yet; the SQLite adapter's raw access does it.
    # TODO(store owner): a port method (e.g. ``shred_deleted()``) instead of this.
    raw = getattr(r.dep.store, "query", None)
    if callable(raw):
        with contextlib.suppress(CustodyError):
            raw("PRAGMA wal_checkpoint(TRUNCATE)")


# --------------------------------------------------------------------- remote hand-in
def _waiting_epoch(r: CeremonyRunner) -> tuple[str, str, int]:
    """(waiting step, generating ceremony of the shares it collects, their epoch)."""
    step = r.state.next_step
    if step == "verify-shares":
        return step, r.ceremony_id, int(r.state.facts["epoch"])
    if step == "collect-shares":
        from ceremonies.runner.steps.base import active_share_set

        sset = active_share_set(r.dep.store)
        if sset is None:
            raise CeremonyError(
                "This deployment has no active share set", "Run the generate ceremony first."
            )
        return step, str(sset["ceremony_id"]), int(sset["epoch"])
    raise CeremonyError(
        f"Ceremony {r.ceremony_id} is not waiting for shares (next step: {step})",
        "Make an offer while the ceremony waits for shares.",
    )


def make_offer(r: CeremonyRunner, *, ttl: int) -> dict[str, Any]:
    from custody.shares import transport

    # The offer names the share set (its generating ceremony and epoch), which is what each
    # custodian's envelope names and what ``custody share send`` checks, and the session:
    # THIS ceremony's id, under the coordinator's signature and in the HKDF info and AAD of
    # every blob sealed to it. Its private half exists only sealed under this ceremony's
    # hold key and its digest is recorded in this transcript. A blob sealed for another
    # ceremony is refused here as ``wrong-session`` even if its offer key were present.
    step, set_ceremony, epoch = _waiting_epoch(r)
    now = r.clock()
    ttl = max(1, min(ttl, r.state.expires_at - now))
    ok = transport.make_offer(
        ceremony_id=set_ceremony,
        epoch=epoch,
        session=r.ceremony_id,
        coordinator=r.signer,
        now=now,
        ttl=ttl,
        rng=_hsm(r).random,
    )
    raw = ok.to_json().encode()
    offers = list(r.pending.get("offers", []))
    n = len(offers) + 1
    offers.append({"n": n, "step": step, **_seal(r, f"offer/{n}", raw)})
    del raw
    r._save_pending(offers=offers)
    o = ok.offer
    r.record(
        "offer.made",
        {
            "offer": n,
            "share_set": set_ceremony,
            "epoch": epoch,
            "session": o.session,
            "x25519": o.public.hex(),
            "expires": o.expires,
            "offer_sha256": o.digest().hex(),
            "coordinator": o.coordinator,
        },
        step=step,
    )
    return {
        "offer": o.to_text(),
        "share_set": set_ceremony,
        "epoch": epoch,
        "session": o.session,
        "expires": o.expires,
        "step": step,
        "coordinator": o.coordinator,
        "offer_sha256": o.digest().hex(),
    }


def _open_sealed(
    r: CeremonyRunner, inputs: Any, step: str
) -> tuple[list[Any], dict[str, str], list[HandIn]]:
    """Open remote hand-ins with this ceremony's offer keys. A blob that opens with none of
    them (another ceremony's, a replay, altered, expired) or that was sealed for another
    session is refused with its reason; the caller records and reports it
    (:func:`ceremonies.runner.steps.handin.publish`), as it does the shares that opened.

    Returns:
        (a ShareInput per blob that opened, sourced ``remote:NAME``; the SAS of each by that
        source; a ``rejected`` :class:`HandIn` per blob that did not open).
    """
    from custody.shares import transport

    out: list[Any] = []
    sas: dict[str, str] = {}
    refused: list[HandIn] = []
    offers = [o for o in r.pending.get("offers", []) if o["step"] == step]
    for source, text in inputs.sealed:
        last: CustodyError = transport.TransportError(
            "No transport offer of this ceremony is open",
            "Make one with 'custody ceremony "
            f"offer {r.ceremony_id}' and ask the custodian to seal to it.",
            reason="wrong-offer",
        )
        hand = None
        for o in reversed(offers):
            key = transport.load_offer_key(_unseal(r, f"offer/{o['n']}", o).decode())
            try:
                hand = transport.open_blob(text, key, now=r.clock(), expected_session=r.ceremony_id)
                break
            except transport.TransportError as exc:
                last = exc
        if hand is None or hand.envelope is None:
            reason = getattr(last, "reason", "no-envelope") if hand is None else "no-envelope"
            title = last.title if hand is None else "The hand-in carries no envelope"
            refused.append(
                HandIn(source=source, status="rejected", reason=reason, detail=title, remote=True)
            )
            continue
        si = ShareInput(source=f"remote:{source}", text=hand.share, envelope=hand.envelope)
        sas[si.source] = hand.sas
        out.append(si)
    return out, sas, refused


# ------------------------------------------------------- remote hand-ins awaiting their SAS
def _sas_key(step: str) -> str:
    return f"{step}/sas"


def sas_waiting(r: CeremonyRunner, step: str) -> list[dict[str, Any]]:
    """The remote hand-ins of *step* held until their SAS is confirmed (public rows:
    ``custodian``, ``source``, ``received``; the share and its SAS are sealed)."""
    return [
        {"custodian": h["custodian"], "source": h["source"], "received": h.get("received", 0)}
        for h in r.pending.get("held", {}).get(_sas_key(step), [])
    ]


def hold_for_sas(r: CeremonyRunner, step: str, name: str, si: ShareInput, sas: str) -> None:
    """Seal a remote share that passed the check, with its SAS, until it is confirmed."""
    held = dict(r.pending.get("held", {}))
    rows = [h for h in held.get(_sas_key(step), []) if h["custodian"] != name]
    doc = json.dumps({"text": si.text, "sas": sas}).encode()
    rows.append(
        {
            "custodian": name,
            "source": si.source.removeprefix("remote:"),
            "received": r.clock(),
            "envelope": si.envelope.hex(),
            **_seal(r, f"{_sas_key(step)}/{name}", doc),
        }
    )
    del doc
    held[_sas_key(step)] = rows
    r._save_pending(held=held)


def take_for_sas(r: CeremonyRunner, step: str, name: str) -> tuple[ShareInput, str]:
    """Unseal and forget the remote share of *name* awaiting its SAS: (share, its SAS)."""
    held = dict(r.pending.get("held", {}))
    rows = list(held.get(_sas_key(step), []))
    row = next(h for h in rows if h["custodian"] == name)
    doc = json.loads(_unseal(r, f"{_sas_key(step)}/{name}", row))
    si = ShareInput(
        source=f"remote:{row['source']}", text=doc["text"], envelope=bytes.fromhex(row["envelope"])
    )
    rest = [h for h in rows if h["custodian"] != name]
    if rest:
        held[_sas_key(step)] = rest
    else:
        held.pop(_sas_key(step), None)
    r.pending.pop("held", None)
    r._save_pending(**({"held": held} if held else {}))
    _truncate_wal(r)
    return si, str(doc["sas"])


def same_sas(typed: str, sas: str) -> bool:
    """Whether the words the coordinator typed are the SAS (unique 4-letter prefixes and
    any case or spacing accepted), compared in constant time."""
    try:
        words = slip39.expand_words(" ".join(typed.split()), label="SAS")
    except slip39.ShareWordError:
        words = typed.lower().split()
    return hmac.compare_digest(" ".join(words).encode(), " ".join(sas.split()).encode())


__all__ = [
    "drop_held",
    "hold_for_sas",
    "make_offer",
    "same_sas",
    "sas_waiting",
    "take_for_sas",
]
