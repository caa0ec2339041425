"""A new recovery key and share set: generate, and the new-set half of reshare.

Owns ``generate-rk`` (RK from the HSM's RNG, kept only in memory), ``wrap-blob`` (the root
wrapped under RK, RFC 5649), ``split`` (SLIP-0039 shares and signed envelopes, recorded as
``share.issued`` with their commitments and how each was delivered), ``issue-shares``
(each share sealed to its custodian's endorsed X25519 key, beside its envelope; only with
``--plain-shares``, share, envelope and card files in plain text; written atomically),
``verify-shares`` (the verification round: a quorum re-enters its shares and the rebuilt
RK must match the KCV), ``finalise`` (the commit point: one store transaction activates the
root version and the new share set and retires the old one) and reshare's
``retire-epoch``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ceremonies.participants import endorsement_digest
from ceremonies.roster import Roster
from ceremonies.runner import rkseal
from ceremonies.runner.steps.base import WAIT, _hsm, _rk, _secret_lost, on
from ceremonies.runner.steps.handin import _collect, new_share_set
from custody.audit.signers import verify_signature
from custody.clock import iso, utcnow
from custody.errors import IntegrityError, ShareError, StorageError, UsageError
from custody.hsm import kcv_of_bytes
from custody.keys.hierarchy import ROOT_LABEL, KeyHierarchy
from custody.model import KeyState
from custody.privatefile import (
    PUBLIC,
    check_output_dir,
    check_target,
    private_dir,
    write_private,
)
from custody.shares import slip39
from custody.shares.envelope import load_envelope, make_envelope
from custody.shares.seal import seal_to_recipient
from custody.signing import fingerprint
from custody.store.rows import NewRoot, ShareHolderRow, ShareSetRow

if TYPE_CHECKING:
    from ceremonies.runner import CeremonyRunner, Inputs
    from custody.deployment import Deployment


def check_new_set(dep: Deployment, params: Mapping[str, Any], *, now: int) -> None:
    """Refuse, before anything is made, a new share set that ``split`` or ``issue-shares``
    would refuse later: a scheme SLIP-0039 cannot make, a share count that is not the
    number of custodians, a custodian named twice or not an enrolled, usable custodian,
    and an ``--out`` directory that cannot take the files (a file already at one of their
    names, a link, a directory others can write to). Reads only.

    Raises:
        UsageError: the scheme or the custodians. StorageError: the ``--out`` directory.
    """
    names = list(params.get("custodians", []))
    groups = [tuple(g) for g in params.get("groups", [])]
    try:
        slip39.check_scheme(groups, int(params.get("group_threshold", 1)))
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"This share scheme cannot be made: {exc}",
            "For example --threshold 3 with 5 custodians (2 <= T <= N), or --group T/N "
            "groups with --group-threshold G.",
        ) from None
    n = sum(int(m) for _t, m in groups)
    if n != len(names):
        raise UsageError(
            f"The scheme makes {n} shares for {len(names)} custodians",
            "Give one --custodian per share.",
        )
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise UsageError(f"{', '.join(twice)} named more than once", "Give each custodian once.")
    roster = Roster(dep.store)
    for name in names:
        m = roster.get(name)
        if m is None or m.role != "custodian" or m.usable_at(now):
            raise UsageError(f"{name} is not an enrolled custodian", "Enrol them first.")
    out = Path(params["out"])
    probe = out
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if probe == out:
        check_output_dir(out)
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise StorageError(
            f"{out} cannot take the share files: {probe} is not a directory you can write to",
            "Choose another --out directory.",
        )
    for name in names:
        for suffix in _suffixes_of(params):
            target = out / f"{name}{suffix}"
            check_target(target)
            if target.exists():
                raise UsageError(
                    f"{target} already exists",
                    "Choose an empty --out directory; custody never replaces a share file.",
                )


@on("generate reshare", "generate-rk")
def generate_rk(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    rk = _hsm(r).random(32)
    r._secrets["rk"] = rk
    return {"new_rk_kcv": kcv_of_bytes(rk), "new_rk_public": rkseal.rk_public(rk).hex()}


@on("generate reshare", "wrap-blob")
def wrap_blob(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    if "rk" not in r._secrets:
        raise _secret_lost(r, "wrap-blob")
    v = r.state.facts["root_version"]
    blob = _hsm(r).export_wrapped(ROOT_LABEL, v, _rk(r))
    # Before lock-root: the blob must open under RK, in a session object, to this root.
    kcv = _hsm(r).check_wrapped(_rk(r), blob)
    if kcv != r.state.facts["root_kcv"]:
        raise IntegrityError(
            f"The blob of root/v{v} opens to KCV {kcv}, not the root's {r.state.facts['root_kcv']}",
            "Nothing is locked yet: abort the ceremony ('custody ceremony abort ID').",
        )
    r._save_pending(blob=blob.hex())
    return {"blob_digest": hashlib.sha256(blob).hexdigest(), "blob_kcv": kcv}


@on("generate reshare", "split")
def split(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    if "rk" not in r._secrets:
        raise _secret_lost(r, "split")
    p = r.params
    groups = [tuple(g) for g in p["groups"]]
    words = slip39.split(
        _rk(r), groups=groups, group_threshold=p["group_threshold"], iteration_exponent=0
    )
    flat = [m for g in words for m in g]
    names = p["custodians"]
    if len(flat) != len(names):
        raise UsageError(
            f"The scheme makes {len(flat)} shares for {len(names)} custodians",
            "Give one custodian per share.",
        )
    roster = Roster(r.dep.store)
    pol_digest = r.rec.policy.digest().hex()
    epoch, kcv = r.state.facts["epoch"], r.state.facts["new_rk_kcv"]
    issued, envs = [], {}
    for name, mnemonic in zip(names, flat, strict=True):
        m = roster.get(name)
        if m is None or m.role != "custodian" or m.usable_at(r.clock()):
            raise UsageError(f"{name} is not an enrolled custodian", "Enrol them first.")
        parsed = slip39.parse_share(mnemonic, label=name)
        env = make_envelope(
            parsed,
            ceremony_id=r.ceremony_id,
            policy_digest=pol_digest,
            epoch=epoch,
            custodian=m.fingerprint,
            kcv=kcv,
            dealer=r.signer,
        )
        envs[name] = (mnemonic, env)
        x25519 = sealed_to(r, name, m.alg, m.public)
        rec = {
            "custodian": name,
            "custodian_fingerprint": m.fingerprint,
            "delivery": "plain" if x25519 is None else "sealed-x25519",
            "sealed_to_fingerprint": None if x25519 is None else fingerprint(x25519),
            "group": parsed.group_index + 1,
            "member": parsed.member_index + 1,
            "commitment": env.payload.commitment,
        }
        r.record("share.issued", rec, step="split")
        issued.append(rec)
    r._secrets["issued"] = envs
    out = {
        "holders": issued,
        "scheme": {"groups": [list(g) for g in groups], "group_threshold": p["group_threshold"]},
        "dealer_public": r.signer.public.hex(),
    }
    if r.signer.alg != "ed25519":  # the verification round checks envelopes under it
        out["dealer_alg"] = r.signer.alg
    return out


CARD_FORMATS = ("svg", "pdf")  # default: SVG to view and check, PDF to print
SEALED_SUFFIX = ".share.sealed"


def plain_shares(r: CeremonyRunner) -> bool:
    """Whether this ceremony writes shares in plain text (only with ``--plain-shares``)."""
    return bool(r.params.get("plain_shares")) or "seal_to" not in r.params


def sealed_to(r: CeremonyRunner, name: str, alg: str, signing_public: bytes) -> bytes | None:
    """The X25519 key *name*'s share is sealed to, checked against their enrolled signing
    key here as well as at the door: a key the custodian did not endorse is never used.
    *alg* is the enrolled key's recorded algorithm (the endorsement is checked under it).

    Raises:
        UsageError: sealed issue, but no key for *name*.
        IntegrityError: the endorsement does not verify under the enrolled key.
    """
    if plain_shares(r):
        return None
    entry = r.params["seal_to"].get(name)
    if entry is None:
        raise UsageError(
            f"No encryption key for {name}",
            "Give their NAME.pub.json in --seal-to, or issue with --plain-shares.",
        )
    x25519 = bytes.fromhex(entry["x25519"])
    if not verify_signature(
        alg,
        signing_public,
        bytes.fromhex(entry["endorsement"]),
        endorsement_digest(signing_public, x25519),
    ):
        raise IntegrityError(
            f"{name}'s encryption key is not endorsed by their enrolled signing key",
            "Ask the custodian for their NAME.pub.json again, out of band; abort this ceremony.",
        )
    return x25519


def _suffixes(r: CeremonyRunner) -> tuple[str, ...]:
    return _suffixes_of(r.params)


def _suffixes_of(params: Mapping[str, Any]) -> tuple[str, ...]:
    if not (bool(params.get("plain_shares")) or "seal_to" not in params):
        return (SEALED_SUFFIX, ".envelope.json")  # sealed at issue: no words, no card here
    fmts = params.get("card_formats") or list(CARD_FORMATS)
    return (".share.txt", ".envelope.json", *(f".card.{f}" for f in fmts))


def _issued_complete(r: CeremonyRunner) -> bool:
    """Whether every custodian's files were written (a crash after the writes, before
    ``step.done``): each envelope must carry the commitment recorded by ``split``."""
    holders = r.state.facts.get("holders")
    if not holders:
        return False
    out = Path(r.params["out"])
    try:
        for h in holders:
            if not all((out / f"{h['custodian']}{s}").is_file() for s in _suffixes(r)):
                return False
            env = load_envelope((out / f"{h['custodian']}.envelope.json").read_bytes())
            if (
                env.payload.commitment != h["commitment"]
                or env.payload.ceremony_id != r.ceremony_id
            ):
                return False
    except (OSError, ShareError):
        return False
    return True


@on("generate reshare", "issue-shares")
def issue_shares(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    from datetime import UTC, datetime

    from custody.shares.card import DEFAULT_SIZE, Card, CardFacts, render

    envs = r._secrets.get("issued")
    out = Path(r.params["out"])
    if envs is None:
        if _issued_complete(r):  # written before a crash; RK already left memory
            r._secrets.pop("rk", None)
            return {
                "issued_to": [h["custodian"] for h in r.state.facts["holders"]],
                "out": r.dep.home.rel(out),
                "cards": [s[6:] for s in _suffixes(r)[2:]],
            }
        raise _secret_lost(r, "issue-shares")
    private_dir(out)
    files = []
    sufs = _suffixes(r)
    for n in envs:  # a planted link refuses the step before any share is written
        for suf in sufs:
            check_target(out / f"{n}{suf}")
    r._save_pending(files=[str(out / f"{n}{s}") for n in envs for s in sufs])
    roster = Roster(r.dep.store)
    for name, (mnemonic, env) in envs.items():
        if not plain_shares(r):
            m = roster.get(name)
            x25519 = sealed_to(r, name, m.alg, m.public) if m is not None else None
            if x25519 is None:
                raise UsageError(f"{name} is not an enrolled custodian", "Abort the ceremony.")
            env_bytes = env.to_bytes()
            blob = seal_to_recipient(
                mnemonic, x25519, custodian=name, ceremony_id=r.ceremony_id, envelope=env_bytes
            )
            write_private(out / f"{name}{SEALED_SUFFIX}", blob)
            write_private(out / f"{name}.envelope.json", env_bytes, mode=PUBLIC)
            files.append(name)
            continue
        write_private(out / f"{name}.share.txt", (mnemonic + "\n").encode())
        write_private(out / f"{name}.envelope.json", env.to_bytes(), mode=PUBLIC)
        card = Card(
            name=name,
            words=tuple(mnemonic.split()),
            envelope=env,
            facts=CardFacts(
                deployment=r.dep.config.deployment_id,
                kind=r.state.kind,
                group_size=r.params["groups"][env.payload.group_index][1],
                printed=datetime.fromtimestamp(r.clock(), UTC).date(),
            ),
        )
        size = r.params.get("card_size") or DEFAULT_SIZE
        for suf in sufs[2:]:
            write_private(out / f"{name}{suf}", render(card, suf[6:], size=size))
        files.append(name)
    r._secrets.pop("issued", None)
    r._secrets.pop("rk", None)  # RK leaves memory: the verification round must rebuild it
    return {
        "issued_to": files,
        "out": r.dep.home.rel(out),
        "cards": [s[6:] for s in sufs[2:]],
        "delivery": "plain" if plain_shares(r) else "sealed-x25519",
    }


@on("generate reshare", "verify-shares")
def verify_shares(r: CeremonyRunner, inputs: Inputs) -> Any:
    sset = new_share_set(r)
    res = _collect(r, inputs, sset, "verify-shares")
    if res is WAIT:
        return WAIT
    rk = slip39.combine_parsed(r._secrets.pop("shares"))
    if kcv_of_bytes(rk) != sset["rk_kcv"]:
        raise IntegrityError(
            "The verification round rebuilt a recovery key with the wrong KCV",
            "Do not finalise; abort the ceremony.",
        )
    del rk
    return {"verified_by": res["verify-shares.accepted"], "verified_rk_kcv": sset["rk_kcv"]}


@on("generate reshare", "finalise")
def finalise_new_set(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    f = r.state.facts
    v, epoch, now = f["root_version"], f["epoch"], r.clock()
    t = iso(utcnow())
    blob = bytes.fromhex(r.pending["blob"])
    store = r.dep.store
    with store.transaction():
        if store.root_state(v) is not None:
            return {"root_version": v, "epoch": epoch, "active": True}
        store.add_root(
            NewRoot(version=v, kcv=f["root_kcv"], epoch=epoch, blob=blob), activate=True, now=t
        )
        store.replace_share_set(
            ShareSetRow(
                epoch=epoch,
                ceremony_id=r.ceremony_id,
                policy_digest=r.rec.policy.digest().hex(),
                dealer_public=bytes.fromhex(f["dealer_public"]),
                rk_kcv=f["new_rk_kcv"],
                rk_public=bytes.fromhex(f["new_rk_public"]),
                scheme=json.dumps(f["scheme"]),
                state="active",
                created=now,
                holders=tuple(
                    ShareHolderRow(
                        custodian=h["custodian"],
                        fingerprint=h["custodian_fingerprint"],
                        group_index=h["group"] - 1,
                        member_index=h["member"] - 1,
                        commitment=h["commitment"],
                    )
                    for h in f["holders"]
                ),
            ),
            now=now,
        )
    return {"root_version": v, "epoch": epoch, "active": True}


@on("reshare", "retire-epoch")
def retire_epoch(r: CeremonyRunner, inputs: Inputs) -> dict[str, Any]:
    h = KeyHierarchy(r.dep.store, _hsm(r))
    retired = []
    for x in h.roots():
        old = x.epoch is not None and x.epoch < r.state.facts["epoch"]
        if x.state is KeyState.DECRYPT_ONLY and old:
            h.set_root_state(x.version, KeyState.DISABLED)
            retired.append(x.version)
    return {"retired_epoch": r.state.facts.get("old_epoch"), "disabled_roots": retired}
