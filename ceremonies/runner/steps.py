"""Step handlers of every ceremony kind, and the rollback of unfinished ones.

A handler ``(runner, inputs) -> facts | WAIT`` carries out one script step after the
runner recorded its ``step.begin``. Handlers are idempotent (a step begun before a crash
is redone on resume): they check the token and the store before acting. Facts are public
(versions, KCVs, digests, names); secrets live only in ``runner._secrets``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ceremonies.engine.quorum import count_approvals, require_quorum
from ceremonies.participants import Identity, Roster
from ceremonies.runner import rkseal
from ceremonies.runner.held import _held, _hold, _open_sealed, _unhold, drop_held
from ceremonies.transcript.records import Approval
from custody.errors import (
    CeremonyError,
    ConfigError,
    CustodyError,
    HsmError,
    IntegrityError,
    KeyNotFound,
    ShareError,
    UsageError,
)
from custody.hierarchy import ROOT_LABEL, KeyHierarchy
from custody.hsm import kcv_of_bytes
from custody.model import KeyState
from custody.shares import slip39
from custody.shares.envelope import EnvelopeError, load_envelope, make_envelope, verify_share

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


def _hsm(r: Any) -> Any:
    if r.dep.hsm is None:
        raise UsageError("This ceremony needs the HSM", "Provide the token PIN (--pin-file).")
    return r.dep.hsm


def _token_has(r: Any, label: str, version: int) -> Any:
    try:
        return _hsm(r).find_key(label, version)
    except KeyNotFound:
        return None


def _rk(r: Any) -> bytes:
    rk = r._secrets.get("rk")
    if rk is None:
        raise CeremonyError("The recovery key is no longer in memory (the process was "
                            "interrupted)", "The ceremony is rolled back; start it again.")
    return rk


def _secret_lost(r: Any = None, step: str | None = None) -> Any:
    from ceremonies.runner import SecretLost

    cid = r.ceremony_id if r is not None else "ID"
    where = f" (step {step})" if step else ""
    return SecretLost(f"Ceremony {cid} cannot continue{where}: the recovery key or the shares "
                      "it needs were only in the memory of the process that stopped",
                      f"Nothing was changed. Roll it back with 'custody ceremony abort {cid}' "
                      "(it removes every key, file and row this ceremony created), then start "
                      "the ceremony again.")


def precheck(r: Any, step: str) -> None:
    """Refuse, before anything is recorded, a step whose in-memory secret is gone.

    Raises:
        SecretLost: the step needs RK or the shares, and they died with an earlier process.
    """
    need = {"wrap-blob": "rk", "split": "rk", "scratch-token": "rk"}.get(step)
    if need and need not in r._secrets:
        raise _secret_lost(r, step)
    if step == "issue-shares" and "issued" not in r._secrets and not _issued_complete(r):
        raise _secret_lost(r, step)
    if (step == "rebuild-rk" and "shares" not in r._secrets
            and not _held(r, "collect-shares")):
        raise _secret_lost(r, step)


def active_share_set(store: Any) -> dict[str, Any] | None:
    rows = store.query("SELECT epoch, ceremony_id, policy_digest, dealer_public, rk_kcv, "
                       "rk_public, scheme FROM share_sets WHERE state='active' ORDER BY epoch DESC")
    if not rows:
        return None
    e = rows[0]
    holders = store.query("SELECT custodian, fingerprint, group_index, member_index, commitment "
                          "FROM share_holders WHERE epoch=?", (e[0],))
    return {"epoch": e[0], "ceremony_id": e[1], "policy_digest": e[2], "dealer": bytes(e[3]),
            "rk_kcv": e[4], "rk_public": bytes(e[5]), "scheme": json.loads(e[6]),
            "holders": {(h[2], h[3]): {"name": h[0], "fingerprint": h[1], "commitment": h[4]}
                        for h in holders}}


def quorum_size(scheme: dict[str, Any]) -> int:
    """The fewest shares that rebuild RK under *scheme*."""
    ts = sorted(t for t, _n in scheme["groups"])
    return sum(ts[: scheme["group_threshold"]])


# ------------------------------------------------------------------------ share hand-in
def _check_shares(r: Any, shares: Any, sset: dict[str, Any], step: str, *,
                  names: set[str] | None = None, record: bool = True) -> list[Any]:
    """Verify each share against its envelope and the recorded commitment, BEFORE
    combining; record share.accepted / share.rejected naming the custodian.

    Returns:
        (custodian name, parsed share, ShareInput) of each accepted share.
    """
    roster = {m.fingerprint: m.name for m in Roster(r.dep.store).members()}
    accepted: list[Any] = []
    names = set() if names is None else names
    for si in shares:
        who = si.source
        try:
            env = load_envelope(si.envelope)
            who = roster.get(env.payload.custodian, who)
            parsed = slip39.parse_share(si.text, label=who)
            verify_share(parsed, env, sset["dealer"], expected_ceremony=sset["ceremony_id"],
                         expected_epoch=sset["epoch"])
            h = sset["holders"].get((parsed.group_index, parsed.member_index))
            if h is None or h["fingerprint"] != env.payload.custodian:
                raise EnvelopeError("The share was not issued to this custodian",
                                    "Use your own share.", reason="wrong-custodian")
            if h["commitment"] != env.payload.commitment:
                raise EnvelopeError("The envelope's commitment differs from the generation "
                                    "transcript", "Do not use this share.",
                                    reason="commitment-mismatch")
            who = h["name"]
            if who in names:
                raise EnvelopeError(f"{who} already handed in a share", "One share per "
                                    "custodian is counted.", reason="duplicate-custodian")
        except ShareError as exc:
            if not record:
                raise
            reason = getattr(exc, "reason", None) or type(exc).__name__
            r.record("share.rejected", {"custodian": who, "reason": reason,
                                        "detail": exc.title}, step=step)
            r.messages.append(f"share of {who} rejected: {exc.title}")
            continue
        names.add(who)
        accepted.append((who, parsed, si))
        if not record:
            continue
        r.record("share.accepted", {"custodian": who, "custodian_fingerprint":
                                    env.payload.custodian, "commitment": env.payload.commitment,
                                    "group": parsed.group_index + 1,
                                    "member": parsed.member_index + 1}, step=step)
    return accepted


def _enough(parsed: list[Any]) -> bool:
    if not parsed:
        return False
    groups: dict[int, set[int]] = {}
    for p in parsed:
        groups.setdefault(p.group_index, set()).add(p.member_index)
    gt, mt = parsed[0].group_threshold, {p.group_index: p.member_threshold for p in parsed}
    return sum(1 for g, m in groups.items() if len(m) >= mt[g]) >= gt


def _collect(r: Any, inputs: Any, sset: dict[str, Any] | None, step: str) -> Any:
    """Collect shares for *step*: from this invocation (files and remote hand-ins) and
    those held, sealed, from earlier invocations. Each is verified on arrival. With a
    quorum, the shares go to memory for combining; short of one, the new ones are sealed
    under the hold key and the step waits (exit 10)."""
    if sset is None:
        raise CeremonyError("This deployment has no active share set",
                            "Run the generate ceremony first.")
    held = _unhold(r, step) if _held(r, step) else []
    fresh = [*inputs.shares, *(_open_sealed(r, inputs, step) if inputs.sealed else [])]
    if not fresh and not inputs.sealed and not held:
        return WAIT
    names: set[str] = set()
    old = _check_shares(r, held, sset, step, names=names, record=False)
    new = _check_shares(r, fresh, sset, step, names=names)
    parsed = [p for _n, p, _si in old + new]
    if not _enough(parsed):
        need = quorum_size(sset["scheme"])
        have = sorted({n for n, _p, _si in old + new})
        rejected = "; ".join(m for m in r.messages if "rejected" in m)
        if r.dep.hsm is None:  # nowhere to seal shares at rest: all must come at once
            raise ShareError(f"Not enough valid shares: {len(parsed)} accepted, {need} needed"
                             + (f" ({rejected})" if rejected else ""),
                             "Hand in shares from more custodians in one run, or give "
                             "--pin-file so that shares can be held between runs.")
        if new:
            _hold(r, step, [(n, si) for n, _p, si in new])
        r.messages.append(f"{len(have)} share(s) accepted so far ({', '.join(have) or 'none'}); "
                          f"at least {max(1, need - len(have))} more needed")
        return WAIT
    r._secrets["shares"] = parsed
    if step == "collect-shares" and new and r.dep.hsm is not None:
        _hold(r, step, [(n, si) for n, _p, si in new])  # a crash before rebuild-rk resumes
    if step == "verify-shares":
        drop_held(r, step)  # combined right away by the step itself
    return {f"{step}.accepted": sorted({_holder(sset, p) for p in parsed}),
            f"{step}.epoch": sset["epoch"]}


def _holder(sset: dict[str, Any], p: Any) -> str:
    return sset["holders"][(p.group_index, p.member_index)]["name"]


def _rebuild(r: Any, sset: dict[str, Any]) -> dict[str, Any]:
    parsed = r._secrets.get("shares")
    if parsed is None and _held(r, "collect-shares"):  # resumed after a crash: still sealed
        got = _check_shares(r, _unhold(r, "collect-shares"), sset, "collect-shares",
                            record=False)
        parsed = [p for _n, p, _si in got]
    if parsed is None:
        raise _secret_lost(r, "rebuild-rk")
    rk = slip39.combine_parsed(parsed)
    r._secrets.pop("shares", None)
    drop_held(r, "collect-shares")
    if kcv_of_bytes(rk) != sset["rk_kcv"]:
        raise IntegrityError("The rebuilt recovery key has the wrong KCV",
                             "The shares do not belong to this deployment's share set.")
    r._secrets["rk"] = rk
    return {"rk_kcv": sset["rk_kcv"], "epoch": sset["epoch"]}


# ----------------------------------------------------------------------------- generate
@on("generate reshare", "hsm-check")
@on("rotate-root emergency-rotate", "hsm-check")
def hsm_check(r: Any, inputs: Any) -> dict[str, Any]:
    hsm = _hsm(r)
    info = hsm.info()
    h = KeyHierarchy(r.dep.store, hsm)
    sset = active_share_set(r.dep.store)
    kind = r.state.kind
    if kind == "generate":
        if sset is not None:
            raise CeremonyError("This deployment already has a share set",
                                "Use 'custody ceremony reshare' to change custodians.")
        if any(x.state is KeyState.ACTIVE for x in h.roots()):
            raise CeremonyError("This deployment already has an active root key",
                                "Use rotate-root or reshare instead of generate.")
    elif sset is None:
        raise CeremonyError("This deployment has no share set", "Run the generate ceremony.")
    facts: dict[str, Any] = {"token": info.label, "token_serial": info.serial,
                             "root_version": h.next_root_version(),
                             "epoch": (sset["epoch"] + 1) if sset and kind == "reshare"
                             else (sset["epoch"] if sset else 0)}
    if kind != "generate":
        cur = h.current_root()
        facts["old_root"] = cur.version
        if _token_has(r, ROOT_LABEL, cur.version) is None:
            raise HsmError(f"root/v{cur.version} is not on the token",
                           "Recover the root key first ('custody ceremony recover').")
    if kind in ("generate", "reshare"):
        out = Path(r.params["out"])
        for name in r.params["custodians"]:
            for suffix in (".share.txt", ".envelope.json"):
                if (out / f"{name}{suffix}").exists():
                    raise UsageError(f"{out / (name + suffix)} already exists",
                                     "Choose an empty --out directory.")
    return facts


@on("generate reshare rotate-root emergency-rotate", "generate-root")
def generate_root(r: Any, inputs: Any) -> dict[str, Any]:
    v = r.state.facts["root_version"]
    ref = _token_has(r, ROOT_LABEL, v)
    if ref is None:
        ref = _hsm(r).generate_aes_key(ROOT_LABEL, v, extractable=True)
    r._save_pending(created_keys=[v])
    return {"root_kcv": ref.kcv}


@on("generate reshare", "generate-rk")
def generate_rk(r: Any, inputs: Any) -> dict[str, Any]:
    rk = _hsm(r).random(32)
    r._secrets["rk"] = rk
    return {"new_rk_kcv": kcv_of_bytes(rk), "new_rk_public": rkseal.rk_public(rk).hex()}


@on("generate reshare", "wrap-blob")
def wrap_blob(r: Any, inputs: Any) -> dict[str, Any]:
    if "rk" not in r._secrets:
        raise _secret_lost(r, "wrap-blob")
    blob = _hsm(r).export_wrapped(ROOT_LABEL, r.state.facts["root_version"], _rk(r))
    r._save_pending(blob=blob.hex())
    return {"blob_digest": hashlib.sha256(blob).hexdigest()}


@on("generate reshare rotate-root emergency-rotate", "lock-root")
def lock_root(r: Any, inputs: Any) -> dict[str, Any]:
    v = r.state.facts["root_version"]
    ref = _token_has(r, ROOT_LABEL, v)
    if ref is None:
        raise HsmError(f"root/v{v} vanished from the token", "Abort the ceremony.")
    if ref.extractable:
        _hsm(r).set_non_extractable(ROOT_LABEL, v)
    return {"root_extractable": False}


@on("generate reshare", "split")
def split(r: Any, inputs: Any) -> dict[str, Any]:
    if "rk" not in r._secrets:
        raise _secret_lost(r, "split")
    p = r.params
    groups = [tuple(g) for g in p["groups"]]
    words = slip39.split(_rk(r), groups=groups, group_threshold=p["group_threshold"],
                         iteration_exponent=0)
    flat = [m for g in words for m in g]
    names = p["custodians"]
    if len(flat) != len(names):
        raise UsageError(f"The scheme makes {len(flat)} shares for {len(names)} custodians",
                         "Give one custodian per share.")
    roster = Roster(r.dep.store)
    pol_digest = r.rec.policy.digest().hex()
    epoch, kcv = r.state.facts["epoch"], r.state.facts["new_rk_kcv"]
    issued, envs = [], {}
    for name, mnemonic in zip(names, flat, strict=True):
        m = roster.get(name)
        if m is None or m.role != "custodian" or m.usable_at(r.clock()):
            raise UsageError(f"{name} is not an enrolled custodian", "Enrol them first.")
        parsed = slip39.parse_share(mnemonic, label=name)
        env = make_envelope(parsed, ceremony_id=r.ceremony_id, policy_digest=pol_digest,
                            epoch=epoch, custodian=m.fingerprint, kcv=kcv, dealer=r.signer.key)
        envs[name] = (mnemonic, env)
        rec = {"custodian": name, "custodian_fingerprint": m.fingerprint,
               "group": parsed.group_index + 1, "member": parsed.member_index + 1,
               "commitment": env.payload.commitment}
        r.record("share.issued", rec, step="split")
        issued.append(rec)
    r._secrets["issued"] = envs
    return {"holders": issued, "scheme": {"groups": [list(g) for g in groups],
                                          "group_threshold": p["group_threshold"]},
            "dealer_public": r.signer.public.hex()}


CARD_FORMATS = ("svg", "pdf")  # default: SVG to view and check, PDF to print


def _suffixes(r: Any) -> tuple[str, ...]:
    fmts = r.params.get("card_formats") or list(CARD_FORMATS)
    return (".share.txt", ".envelope.json", *(f".card.{f}" for f in fmts))


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write via a temporary file, fsync and rename: a crash leaves the old file or none,
    never half a share."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _issued_complete(r: Any) -> bool:
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
            if env.payload.commitment != h["commitment"] or env.payload.ceremony_id != r.ceremony_id:
                return False
    except (OSError, ShareError):
        return False
    return True


@on("generate reshare", "issue-shares")
def issue_shares(r: Any, inputs: Any) -> dict[str, Any]:
    from custody.shares.card import Card, render

    envs = r._secrets.get("issued")
    out = Path(r.params["out"])
    if envs is None:
        if _issued_complete(r):  # written before a crash; RK already left memory
            r._secrets.pop("rk", None)
            return {"issued_to": [h["custodian"] for h in r.state.facts["holders"]],
                    "out": str(out), "cards": [s[6:] for s in _suffixes(r)[2:]]}
        raise _secret_lost(r, "issue-shares")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    sufs = _suffixes(r)
    r._save_pending(files=[str(out / f"{n}{s}") for n in envs for s in sufs])
    for name, (mnemonic, env) in envs.items():
        _write_atomic(out / f"{name}.share.txt", (mnemonic + "\n").encode(), 0o600)
        _write_atomic(out / f"{name}.envelope.json", env.to_bytes())
        card = Card(name=name, label=f"custody {r.state.kind} {r.ceremony_id[:8]}",
                    words=tuple(mnemonic.split()), envelope=env)
        for suf in sufs[2:]:
            _write_atomic(out / f"{name}{suf}", render(card, suf[6:]), 0o600)
        files.append(name)
    r._secrets.pop("issued", None)
    r._secrets.pop("rk", None)  # RK leaves memory: the verification round must rebuild it
    return {"issued_to": files, "out": str(out), "cards": [s[6:] for s in sufs[2:]]}


def _new_set(r: Any) -> dict[str, Any]:
    f = r.state.facts
    return {"epoch": f["epoch"], "ceremony_id": r.ceremony_id, "dealer":
            bytes.fromhex(f["dealer_public"]), "rk_kcv": f["new_rk_kcv"],
            "scheme": f["scheme"],
            "holders": {(h["group"] - 1, h["member"] - 1): {"name": h["custodian"], "fingerprint":
                        h["custodian_fingerprint"], "commitment": h["commitment"]}
                        for h in f["holders"]}}


@on("generate reshare", "verify-shares")
def verify_shares(r: Any, inputs: Any) -> Any:
    sset = _new_set(r)
    res = _collect(r, inputs, sset, "verify-shares")
    if res is WAIT:
        return WAIT
    rk = slip39.combine_parsed(r._secrets.pop("shares"))
    if kcv_of_bytes(rk) != sset["rk_kcv"]:
        raise IntegrityError("The verification round rebuilt a recovery key with the wrong "
                             "KCV", "Do not finalise; abort the ceremony.")
    del rk
    return {"verified_by": res["verify-shares.accepted"], "verified_rk_kcv": sset["rk_kcv"]}


@on("generate reshare", "finalise")
def finalise_new_set(r: Any, inputs: Any) -> dict[str, Any]:
    f = r.state.facts
    v, epoch, now = f["root_version"], f["epoch"], r.clock()
    from custody.hierarchy import iso, utcnow

    t = iso(utcnow())
    blob = bytes.fromhex(r.pending["blob"])
    with r.dep.store.tx() as c:
        if c.execute("SELECT 1 FROM root_versions WHERE version=?", (v,)).fetchone():
            return {"root_version": v, "epoch": epoch, "active": True}
        c.execute("UPDATE root_versions SET state=?, state_changed=? WHERE state=?",
                  (KeyState.DECRYPT_ONLY, t, KeyState.ACTIVE))
        c.execute("INSERT INTO root_versions(version, state, kcv, epoch, blob, created, "
                  "state_changed) VALUES(?,?,?,?,?,?,?)",
                  (v, KeyState.ACTIVE, f["root_kcv"], epoch, blob, t, t))
        c.execute("UPDATE share_sets SET state='retired', retired_at=? WHERE state='active'",
                  (now,))
        c.execute("INSERT INTO share_sets(epoch, ceremony_id, policy_digest, dealer_public, "
                  "rk_kcv, rk_public, scheme, state, created) VALUES(?,?,?,?,?,?,?,?,?)",
                  (epoch, r.ceremony_id, r.rec.policy.digest().hex(),
                   bytes.fromhex(f["dealer_public"]), f["new_rk_kcv"],
                   bytes.fromhex(f["new_rk_public"]), json.dumps(f["scheme"]), "active", now))
        c.executemany("INSERT INTO share_holders(epoch, custodian, fingerprint, group_index, "
                      "member_index, commitment) VALUES(?,?,?,?,?,?)",
                      [(epoch, h["custodian"], h["custodian_fingerprint"], h["group"] - 1,
                        h["member"] - 1, h["commitment"]) for h in f["holders"]])
    return {"root_version": v, "epoch": epoch, "active": True}


# ------------------------------------------------------------------ recover / reshare in
@on("recover reshare drill", "collect-shares")
def collect_shares(r: Any, inputs: Any) -> Any:
    return _collect(r, inputs, active_share_set(r.dep.store), "collect-shares")


@on("recover reshare drill", "rebuild-rk")
def rebuild_rk(r: Any, inputs: Any) -> dict[str, Any]:
    sset = active_share_set(r.dep.store)
    if sset is None:
        raise CeremonyError("No active share set", "Run generate first.")
    facts = _rebuild(r, sset)
    if r.state.kind == "reshare":
        r._secrets["old_rk"] = r._secrets.pop("rk")
        return {"old_rk_kcv": facts["rk_kcv"], "old_epoch": facts["epoch"]}
    return facts


@on("recover", "hsm-check")
def recover_check(r: Any, inputs: Any) -> dict[str, Any]:
    hsm = _hsm(r)
    info = hsm.info()
    h = KeyHierarchy(r.dep.store, hsm)
    sset = active_share_set(r.dep.store)
    if sset is None:
        raise CeremonyError("No share set to recover from", "Nothing to recover.")
    wanted = {h.current_root().version} | {k.root_version for k in h.keks()
                                           if k.state is not KeyState.DESTROYED}
    roots = {x.version: x for x in h.roots()}
    present = [v for v in sorted(wanted) if _token_has(r, ROOT_LABEL, v) is not None]
    if present:
        raise CeremonyError(f"The token already holds root/v{present[0]}",
                            "Recover into a new or emptied token; this one needs no recovery.")
    for v in wanted:
        if not roots[v].has_blob or roots[v].epoch != sset["epoch"]:
            raise CeremonyError(f"root/v{v} has no blob for the current share set",
                                "It cannot be recovered with these shares.")
    return {"token": info.label, "token_serial": info.serial, "restore": sorted(wanted),
            "epoch": sset["epoch"]}


@on("recover", "import-root")
def import_root(r: Any, inputs: Any) -> dict[str, Any]:
    h = KeyHierarchy(r.dep.store, _hsm(r))
    roots = {x.version: x for x in h.roots()}
    rk = r._secrets.get("rk")
    imported = []
    for v in r.state.facts["restore"]:
        ref = _token_has(r, ROOT_LABEL, v)
        if ref is None:
            if rk is None:
                raise _secret_lost(r, "import-root")
            key, blob = rkseal.open_blob(h.root_blob(v), rk, root_version=v)
            ref = _hsm(r).import_wrapped(ROOT_LABEL, v, key, blob)
            imported.append(v)
            r._save_pending(created_keys=sorted(set(r.pending.get("created_keys", [])) | {v}))
        if ref.kcv != roots[v].kcv:
            raise IntegrityError(f"root/v{v} was restored with KCV {ref.kcv}, expected "
                                 f"{roots[v].kcv}", "The blob or shares are wrong; abort.")
    r._secrets.pop("rk", None)
    return {"imported": r.state.facts["restore"],
            "root_kcvs": {str(v): roots[v].kcv for v in r.state.facts["restore"]}}


def _verify_keks(r: Any, sample: int | None = 200) -> dict[str, Any]:
    h = KeyHierarchy(r.dep.store, _hsm(r))
    live = [k for k in h.keks() if k.state in (KeyState.ACTIVE, KeyState.DECRYPT_ONLY)]
    for k in live:
        h.kek_plaintext(k.branch, k.version)
    rep = h.verify_objects(sample=sample)
    h.forget_keys()
    if not rep.ok:
        raise IntegrityError(f"{len(rep.failed)} of {rep.checked} objects failed to decrypt",
                             "Do not finalise; investigate.")
    return {"keks_usable": len(live), "objects_checked": rep.checked}


@on("recover", "verify-keks")
def verify_keks(r: Any, inputs: Any) -> dict[str, Any]:
    return _verify_keks(r)


@on("recover", "finalise")
def recover_finalise(r: Any, inputs: Any) -> dict[str, Any]:
    r.dep.store.set_meta("last_recovery", r.ceremony_id)
    return {"recovered": True}


@on("reshare rotate-root emergency-rotate", "rewrap")
def rewrap(r: Any, inputs: Any) -> dict[str, Any]:
    v = r.state.facts["root_version"]
    h = KeyHierarchy(r.dep.store, _hsm(r))
    n = h.rewrap_keks(v)
    facts = _verify_keks(r, sample=100)
    return {"rewrapped": n, **facts}


@on("reshare", "retire-epoch")
def retire_epoch(r: Any, inputs: Any) -> dict[str, Any]:
    h = KeyHierarchy(r.dep.store, _hsm(r))
    retired = []
    for x in h.roots():
        if x.state is KeyState.DECRYPT_ONLY and x.epoch is not None and x.epoch < r.state.facts["epoch"]:
            h.set_root_state(x.version, KeyState.DISABLED)
            retired.append(x.version)
    return {"retired_epoch": r.state.facts.get("old_epoch"), "disabled_roots": retired}


# ----------------------------------------------------------------------- rotate-root
def rotate_action(r: Any) -> tuple[str, dict[str, Any]]:
    f = r.state.facts
    return (f"rotate-root/v{f['root_version']}",
            {"deployment": r.dep.config.deployment_id, "from_root": f["old_root"],
             "to_root": f["root_version"]})


@on("rotate-root", "approve")
def approve(r: Any, inputs: Any) -> Any:
    action_id, params = rotate_action(r)
    digest = r.rec.action_digest("rotate-root", action_id, params)
    t = r.rec.policy.thresholds["rotate-root"]
    r.request = {"type": "custody-approval-request", "ceremony_id": r.ceremony_id,
                 "action": "rotate-root", "action_id": action_id, "params": params,
                 "action_digest": digest, "role": t.role, "needed": t.count,
                 "window": r.rec.policy.approval_window}
    if not inputs.approvals:
        return WAIT
    members = {e.name: (e.role, e.public, e.valid_at(r.clock())) for e in r.rec.policy.roster}
    res = count_approvals(inputs.approvals, members=members, role=t.role, needed=t.count,
                          ceremony_id=r.ceremony_id, action="rotate-root", action_id=action_id,
                          digest=digest, now=r.clock(), window=r.rec.policy.approval_window)
    require_quorum(res, action="rotate-root")
    good = [a for a in inputs.approvals if a.approver in res.counted]
    seen: set[str] = set()
    good = [a for a in good if not (a.approver in seen or seen.add(a.approver))]
    r.rec.record_action("approve", "rotate-root", r.signer, action_id=action_id, params=params,
                        approvals=good, now=r.clock())
    return {"approved_by": list(res.counted)}


@on("rotate-root emergency-rotate", "seal-blob")
def seal_blob(r: Any, inputs: Any) -> dict[str, Any]:
    v = r.state.facts["root_version"]
    sset = active_share_set(r.dep.store)
    if "blob" in r.pending:
        blob = bytes.fromhex(r.pending["blob"])
    else:
        e_key = _hsm(r).random(32)
        wrapped = _hsm(r).export_wrapped(ROOT_LABEL, v, e_key)
        blob = rkseal.seal_wrapping_key(e_key, sset["rk_public"], root_version=v, wrapped=wrapped)
        del e_key
        r._save_pending(blob=blob.hex())
    return {"blob_digest": hashlib.sha256(blob).hexdigest(), "sealed_to_epoch": sset["epoch"]}


@on("rotate-root emergency-rotate", "finalise")
def rotate_finalise(r: Any, inputs: Any) -> dict[str, Any]:
    f = r.state.facts
    h = KeyHierarchy(r.dep.store, _hsm(r))
    if not any(x.version == f["root_version"] for x in h.roots()):
        h.record_root(f["root_version"], f["root_kcv"], blob=bytes.fromhex(r.pending["blob"]),
                      epoch=f["epoch"], activate=True)
    return {"active_root": f["root_version"], "old_root_state": "decrypt-only"}


# ------------------------------------------------------------------ emergency-rotate
@on("emergency-rotate", "incident")
def incident(r: Any, inputs: Any) -> dict[str, Any]:
    h = KeyHierarchy(r.dep.store, _hsm(r))
    compromised = sorted({x.version for x in h.roots() if x.state in
                          (KeyState.ACTIVE, KeyState.DECRYPT_ONLY)})
    keks = [{"kek": f"{k.branch}/v{k.version}", "state": k.state.value, "root":
             k.root_version, "objects": k.objects} for k in h.keks() if k.root_version in compromised]
    secrets = r.dep.store.query("SELECT COUNT(*) FROM objects WHERE branch='secrets'")[0][0]
    notify = [{"name": m.name, "role": m.role} for m in Roster(r.dep.store).active(now=r.clock())]
    report = {"ceremony_id": r.ceremony_id, "reason": r.params["reason"],
              "compromised_roots": compromised, "keks": keks,
              "wrapped_objects": sum(k["objects"] for k in keks), "secrets": secrets,
              "notify": notify}
    r._save_pending(report=report)
    r.record("incident.opened", {"reason": r.params["reason"], "compromised_roots": compromised,
                                 "notify": [n["name"] for n in notify]}, step="incident",
             artifacts={"impact-report.json": json.dumps(report, sort_keys=True).encode()})
    return {"compromised_roots": compromised, "kek_count": len(keks),
            "wrapped_objects": report["wrapped_objects"], "secrets": secrets}


@on("emergency-rotate", "disable-old")
def disable_old(r: Any, inputs: Any) -> dict[str, Any]:
    h = KeyHierarchy(r.dep.store, _hsm(r))
    out = []
    for v in r.state.facts["compromised_roots"]:
        x = next(x for x in h.roots() if x.version == v)
        if x.state is KeyState.DECRYPT_ONLY:
            h.set_root_state(v, KeyState.DISABLED)
        out.append(v)
    return {"disabled_roots": out}


@on("emergency-rotate", "revoke")
def revoke(r: Any, inputs: Any) -> dict[str, Any]:
    revoked = {}
    tables = {row[0] for row in r.dep.store.query("SELECT name FROM sqlite_master WHERE type='table'")}
    for t in ("grants", "sessions"):
        if t in tables:
            cols = {row[1] for row in r.dep.store.query(f"PRAGMA table_info({t})")}
            if "revoked_at" in cols:
                with r.dep.store.tx() as c:
                    revoked[t] = c.execute(f"UPDATE {t} SET revoked_at=? WHERE revoked_at IS "
                                           "NULL", (r.clock(),)).rowcount
    return {"revoked": revoked}


@on("emergency-rotate", "report")
def report(r: Any, inputs: Any) -> dict[str, Any]:
    rep = dict(r.pending.get("report", {}))
    rep["new_root"] = r.state.facts["root_version"]
    rep["revoked"] = r.state.facts.get("revoked", {})
    out = r.dep.home.root / "incidents"
    out.mkdir(exist_ok=True)
    path = out / f"{r.ceremony_id}.json"
    path.write_text(json.dumps(rep, indent=2, sort_keys=True) + "\n")
    with r.dep.store.tx() as c:
        c.execute("INSERT OR REPLACE INTO incidents(id, ceremony_id, reason, created, report) "
                  "VALUES(?,?,?,?,?)", (r.ceremony_id, r.ceremony_id, r.params["reason"],
                                        r.clock(), json.dumps(rep, sort_keys=True)))
    return {"report": str(path)}


# ----------------------------------------------------------------------------- drill
SCRATCH_PREFIX = "drill-"


@on("drill", "scratch-token")
def scratch_token(r: Any, inputs: Any) -> dict[str, Any]:
    from custody.config import HsmConfig
    from custody.deployment import open_hsm
    from custody.hsm import softhsm

    rk = r._secrets.get("rk")
    if rk is None:
        raise _secret_lost(r, "scratch-token")
    cfg = r.dep.config
    h = KeyHierarchy(r.dep.store, None)
    cur = h.current_root()
    if not cfg.hsm.embedded:
        return {"scratch": None, "note": "no embedded SoftHSM; RK KCV compared only"}
    label = SCRATCH_PREFIX + r.ceremony_id[:8]
    conf = r.dep.home.root / cfg.hsm.softhsm_conf
    pin = os.urandom(12).hex()
    r._save_pending(scratch=label)
    softhsm.init_token(conf, label, os.urandom(12).hex(), pin)
    scratch = open_hsm(r.dep.home, type(cfg)(deployment_id=cfg.deployment_id,
                                              created=cfg.created,
                                              hsm=HsmConfig(module=cfg.hsm.module,
                                                            token_label=label,
                                                            softhsm_conf=cfg.hsm.softhsm_conf)),
                       pin)
    try:
        key, blob = rkseal.open_blob(h.root_blob(cur.version), rk, root_version=cur.version)
        ref = scratch.import_wrapped(ROOT_LABEL, cur.version, key, blob)
    finally:
        scratch.close()
    r._secrets.pop("rk", None)
    return {"scratch": label, "scratch_root_kcv": ref.kcv, "root_version": cur.version}


@on("drill", "compare-kcv")
def compare_kcv(r: Any, inputs: Any) -> dict[str, Any]:
    f = r.state.facts
    if f.get("scratch") is None:
        return {"kcv_match": True}
    h = KeyHierarchy(r.dep.store, None)
    want = next(x.kcv for x in h.roots() if x.version == f["root_version"])
    if want != f["scratch_root_kcv"]:
        raise IntegrityError(f"The drill rebuilt root/v{f['root_version']} with KCV "
                             f"{f['scratch_root_kcv']}, expected {want}",
                             "The blob or the shares are damaged; investigate now.")
    return {"kcv_match": True, "root_kcv": want}


def _delete_scratch(r: Any) -> bool:
    from custody.hsm import softhsm

    label = r.pending.get("scratch")
    if not label or not r.dep.config.hsm.embedded:
        return False
    try:
        softhsm.delete_token(r.dep.home.root / r.dep.config.hsm.softhsm_conf, label)
    except HsmError:
        return False
    return True


@on("drill", "destroy-scratch")
def destroy_scratch(r: Any, inputs: Any) -> dict[str, Any]:
    _delete_scratch(r)
    return {"scratch_destroyed": True}


def drill_status(store: Any, *, now: int, period_days: int) -> dict[str, Any]:
    """Who passed a drill of the active epoch within the period, and whether that is T+1."""
    sset = active_share_set(store)
    if sset is None:
        return {"ok": False, "passed": [], "needed": 0, "warning": "no share set"}
    since = now - period_days * 86400
    rows = store.query("SELECT DISTINCT custodian FROM drills WHERE epoch=? AND passed_at>=?",
                       (sset["epoch"], since))
    passed = sorted(r[0] for r in rows)
    needed = quorum_size(sset["scheme"]) + 1
    warn = None
    if len(passed) < needed:
        warn = (f"only {len(passed)} custodian(s) passed a drill in the last {period_days} days; "
                f"policy wants at least {needed} (T+1)")
    return {"ok": warn is None, "passed": passed, "needed": needed, "warning": warn}


@on("drill", "record")
def drill_record(r: Any, inputs: Any) -> dict[str, Any]:
    f = r.state.facts
    names = f.get("collect-shares.accepted", [])
    with r.dep.store.tx() as c:
        if not c.execute("SELECT 1 FROM drills WHERE ceremony_id=?", (r.ceremony_id,)).fetchone():
            c.executemany("INSERT INTO drills(ceremony_id, custodian, epoch, passed_at) "
                          "VALUES(?,?,?,?)", [(r.ceremony_id, n, f["epoch"], r.clock())
                                              for n in names])
    st = drill_status(r.dep.store, now=r.clock(), period_days=r.dep.config.drill_period_days)
    if st["warning"]:
        r.messages.append("warning: " + st["warning"])
    return {"passed": names, "drill_status": {k: st[k] for k in ("passed", "needed", "ok")},
            "warning": st["warning"] or ""}


# ----------------------------------------------------------------------------- enrol
@on("enrol", "review")
def enrol_review(r: Any, inputs: Any) -> dict[str, Any]:
    roster = Roster(r.dep.store)
    adds = r.params.get("add", [])
    for a in adds:
        if roster.get(a["name"]) is not None:
            raise UsageError(f"{a['name']} is already enrolled", "Revoke first, or rename.")
    for n in r.params.get("revoke", []):
        if roster.get(n) is None:
            raise UsageError(f"{n} is not enrolled", "See 'custody participant list'.")
    return {"add": [{k: a[k] for k in ("name", "role", "fingerprint")} for a in adds],
            "revoke": list(r.params.get("revoke", []))}


def enrol_action(r: Any) -> tuple[str, dict[str, Any]]:
    return (f"enrol/{r.ceremony_id[:8]}",
            {"add": [{k: a[k] for k in ("name", "role", "fingerprint")} for a in
                     r.params.get("add", [])], "revoke": list(r.params.get("revoke", []))})


@on("enrol", "enrol")
def enrol_apply(r: Any, inputs: Any) -> Any:
    action_id, params = enrol_action(r)
    digest = r.rec.action_digest("enrol", action_id, params)
    t = r.rec.policy.thresholds["enrol"]
    now = r.clock()
    mine = Approval.create(r.signer, ceremony_id=r.ceremony_id, action="enrol",
                           action_id=action_id, digest=digest, now=now,
                           window=r.rec.policy.approval_window)
    approvals = [mine, *inputs.approvals]
    members = {e.name: (e.role, e.public, e.valid_at(now)) for e in r.rec.policy.roster}
    res = count_approvals(approvals, members=members, role=t.role, needed=t.count,
                          ceremony_id=r.ceremony_id, action="enrol", action_id=action_id,
                          digest=digest, now=now, window=r.rec.policy.approval_window)
    r.request = {"type": "custody-approval-request", "ceremony_id": r.ceremony_id,
                 "action": "enrol", "action_id": action_id, "params": params,
                 "action_digest": digest, "role": t.role, "needed": t.count,
                 "window": r.rec.policy.approval_window}
    if not res.met and not inputs.approvals:
        return WAIT
    require_quorum(res, action="enrol")
    seen: set[str] = set()
    good = [a for a in approvals if a.approver in res.counted
            and not (a.approver in seen or seen.add(a.approver))]
    r.rec.record_action("enrol", "enrol", r.signer, action_id=action_id, params=params,
                        approvals=good, now=now)
    roster = Roster(r.dep.store)
    for a in r.params.get("add", []):
        if roster.get(a["name"]) is None:
            roster.add(Identity(name=a["name"], role=a["role"], public=bytes.fromhex(a["public"])),
                       now=now, enrolled_by=r.signer.name, ceremony_id=r.ceremony_id)
    for n in r.params.get("revoke", []):
        m = roster.get(n)
        if m is not None and m.revoked_at is None:
            roster.revoke(n, now=now)
    return {"enrolled": [a["name"] for a in r.params.get("add", [])],
            "revoked": list(r.params.get("revoke", [])), "approved_by": list(res.counted)}


# ----------------------------------------------------------------------------- rollback
def rollback(r: Any) -> list[str]:
    """Undo what an unfinished ceremony created. Returns what was undone (public)."""
    undone: list[str] = []
    if r.state.committed:
        return undone
    hsm = r.dep.hsm
    recorded = {row[0] for row in r.dep.store.query("SELECT version FROM root_versions")}
    for v in r.pending.get("created_keys", []):
        if hsm is None:
            continue
        if r.state.kind == "recover" or v not in recorded:
            try:
                hsm.destroy_key(ROOT_LABEL, v)
                undone.append(f"destroyed root/v{v} on the token")
            except KeyNotFound:
                pass
            except HsmError:
                undone.append(f"could not destroy root/v{v} (token unavailable)")
    for f in r.pending.get("files", []):
        for p in (Path(f), Path(f + ".tmp")):
            if p.exists():
                p.unlink()
                undone.append(f"removed {p.name}")
    if hsm is not None:
        try:
            undone += drop_held(r, None)
        except HsmError:
            undone.append("could not destroy the hold key (token unavailable)")
    if _delete_scratch(r):
        undone.append("destroyed the scratch token")
    return undone


__all__ = [
    "WAIT",
    "ConfigError",
    "CustodyError",
    "active_share_set",
    "drill_status",
    "enrol_action",
    "handler",
    "quorum_size",
    "rollback",
    "rotate_action",
]
