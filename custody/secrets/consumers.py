"""Consumers of a secret and the versions they acknowledge (issue 17, rotation that
services acknowledge).

A principal that reads a secret through the API becomes one of its registered consumers
(:meth:`Consumers.register`). After a rotation each consumer acknowledges the version it now
uses (:meth:`Consumers.ack`, authenticated by the caller's identity at the API). When every
registered consumer has acknowledged the ``current`` version, :meth:`Consumers.settle`
revokes ``previous`` at once instead of at the end of the overlap window; until then
``previous`` stays readable for the window, and :meth:`Consumers.stragglers` names who has
not moved.

Acknowledgements are per version: an ack names the version the consumer uses, and only an
ack of ``current`` counts for the early revocation of ``previous``. After a second rotation
an ack of the version before is stale: that consumer is a straggler again until it acks the
new ``current`` (:meth:`Consumers.on_promote` names the consumers of a version a rotation
drops).

The state is one JSON document per secret in the store's ``meta`` table, **signed** by the
server's token key (the audit signing key, :data:`custody.audit.signers.AUDIT_KEY_LABEL`):
the disk operator can edit the row but cannot re-sign it. An unsigned or edited document
counts no acknowledgement (every consumer in it is a straggler), and from then on early
revocation is off for that rotation (``distrusted``); ``previous`` then lives to the end of
its window, the safe default. An early revocation writes a **signed record** first
(:func:`early_revoke_record`, ``custody secret verify-acks FILE --trust KEY`` checks it
offline against the pinned audit key): who acknowledged which version and when, the version
revoked, and that it was revoked because every registered consumer acknowledged
``current``. Known limit: deleting the whole document, or putting back an older signed
one (a rollback), is not detected, as with the access seal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from custody.audit.signers import Signer, verify_signature
from custody.canonical import canonical_bytes, load_json
from custody.clock import iso, utcnow
from custody.errors import IntegrityError, UsageError
from custody.privatefile import write_private
from custody.secrets.vault import Vault

DOC_TAG = b"custody/secret-consumers/v1"
RECORD_TYPE = "custody/secret-early-revoke/v1"
RECORD_TAG = RECORD_TYPE.encode()


def _key(env: str, path: str) -> str:
    return f"secret-consumers:{env}:{path}"


def _doc_input(env: str, path: str, entries: Mapping[str, Any], distrusted: Any) -> bytes:
    return DOC_TAG + canonical_bytes(
        {"env": env, "path": path, "consumers": dict(entries), "distrusted": distrusted}
    )


class Consumers:
    """Registered consumers and acknowledgements of one vault's secrets.

    Args:
        vault: the vault.
        signer: signs the state document (the server's token audit key); without it the
            state is read-only (register, ack and settle need it).
        trust: the public key the document must verify under (default: the signer's). It
            comes from the token or the auditor's pin, never from the store.
    """

    def __init__(
        self, vault: Vault, signer: Signer | None = None, *, trust: bytes | None = None
    ) -> None:
        self.vault = vault
        self.store = vault.store
        self.signer = signer
        self.trust = trust if trust is not None else (signer.public if signer else None)
        self._seen: dict[str, tuple[str, dict[str, dict[str, Any]], bool, Any]] = {}

    # -- the signed document ---------------------------------------------------------
    def _load(self, env: str, path: str) -> tuple[dict[str, dict[str, Any]], bool, Any]:
        """(entries, verified, distrusted): verified is False for an unsigned or edited
        document (its versions are then not believed)."""
        raw = self.store.get_meta(_key(env, path))
        if not raw:
            return {}, True, None
        hit = self._seen.get(_key(env, path))
        if hit is not None and hit[0] == raw:  # checked already (a read's hot path)
            return {n: dict(d) for n, d in hit[1].items()}, hit[2], hit[3]
        got = self._check(env, path, raw)
        self._seen[_key(env, path)] = (raw, *got)
        return {n: dict(d) for n, d in got[0].items()}, got[1], got[2]

    def _check(self, env: str, path: str, raw: str) -> tuple[dict[str, dict[str, Any]], bool, Any]:
        try:
            doc = json.loads(raw)
        except ValueError:
            return {}, False, None
        if not isinstance(doc, dict):
            return {}, False, None
        entries = doc.get("consumers") if "sig" in doc else doc  # an unsigned (old) document
        if not isinstance(entries, dict):
            return {}, False, None
        clean = {
            str(n): {"version": d.get("version"), "at": d.get("at")}
            for n, d in entries.items()
            if isinstance(d, dict)
        }
        sig, distrusted = doc.get("sig"), doc.get("distrusted")
        raw_sig = bytes.fromhex(sig) if isinstance(sig, str) and _hex(sig) else b""
        ok = (
            self.trust is not None
            and clean == entries
            and verify_signature(
                "ed25519", self.trust, raw_sig, _doc_input(env, path, clean, distrusted)
            )
        )
        return clean, ok, distrusted

    def _save(
        self, env: str, path: str, entries: Mapping[str, Any], distrusted: Any = None
    ) -> None:
        if self.signer is None:
            raise UsageError(
                "Recording consumers needs the token's audit key", "Run it in custody serve."
            )
        sig = self.signer.sign(_doc_input(env, path, entries, distrusted)).hex()
        doc = {"consumers": dict(entries), "distrusted": distrusted, "sig": sig}
        with self.store.transaction():
            self.store.set_meta(_key(env, path), json.dumps(doc, sort_keys=True))

    def _writable(self, env: str, path: str) -> tuple[dict[str, dict[str, Any]], Any]:
        """The entries to update: an unverified document keeps its names but none of its
        versions, and turns early revocation off for the current version."""
        entries, ok, distrusted = self._load(env, path)
        if not ok:
            cur = self.vault.show(env, path)["labels"]["current"]
            entries = {n: {"version": None, "at": None} for n in entries}
            distrusted = cur
        return entries, distrusted

    # -- operations --------------------------------------------------------------------
    def register(self, env: str, path: str, name: str) -> bool:
        """Make *name* a consumer of (env, path). Returns True when it is new."""
        entries, ok, _d = self._load(env, path)
        if ok and name in entries:
            return False
        with self.store.transaction():  # read and write under the write lock: no lost update
            entries, distrusted = self._writable(env, path)
            new = name not in entries
            entries.setdefault(name, {"version": None, "at": None})
            self._save(env, path, entries, distrusted)
        return new

    def ack(self, env: str, path: str, name: str, version: int) -> dict[str, Any]:
        """Record that consumer *name* now uses *version* (registering it if need be)."""
        with self.store.transaction():  # another process's ack is not overwritten
            entries, distrusted = self._writable(env, path)
            entries[name] = {"version": version, "at": iso(utcnow())}
            self._save(env, path, entries, distrusted)
        return self.state(env, path)

    def state(self, env: str, path: str) -> dict[str, Any]:
        """Consumers, the version each acknowledged, and who has not acknowledged current.
        ``verified`` is False when the document is unsigned or was edited outside the
        server: then no acknowledgement counts."""
        meta = self.vault.show(env, path)
        cur = meta["labels"]["current"]
        entries, ok, distrusted = self._load(env, path)
        versions = {n: (d["version"] if ok else None) for n, d in sorted(entries.items())}
        return {
            "current": cur,
            "previous": meta["labels"]["previous"],
            "consumers": versions,
            "acked_at": {n: (d["at"] if ok else None) for n, d in sorted(entries.items())},
            "stragglers": sorted(n for n, v in versions.items() if v != cur),
            "verified": ok,
            "early": ok and distrusted != cur,
        }

    def stragglers(self, env: str, path: str) -> list[str]:
        return list(self.state(env, path)["stragglers"])

    def on_promote(self, env: str, path: str) -> dict[str, Any]:
        """Before a rotation promotes ``pending``: the version it drops (the old
        ``previous``, revoked by :meth:`Vault.promote`) and the consumers that had not
        acknowledged the old ``current``, i.e. may still use the dropped version (named as
        stragglers by the caller). Their acks are per version and do not carry over."""
        st = self.state(env, path)
        dropped = st["previous"]
        if dropped is None:
            return {"dropped": None, "stragglers": []}
        return {"dropped": dropped, "stragglers": list(st["stragglers"])}

    def settle(
        self, env: str, path: str, *, record_dir: Path | None = None, deployment: str = ""
    ) -> int | None:
        """Revoke ``previous`` when every registered consumer acknowledged ``current`` in a
        verified document. With *record_dir*, the signed record
        (:func:`early_revoke_record`) is written there first. Returns the revoked version,
        or None (no previous, no consumers, stragglers, or an unverified document)."""
        st = self.state(env, path)
        if st["previous"] is None or not st["consumers"] or st["stragglers"] or not st["early"]:
            return None
        out: Path | None = None
        if record_dir is not None:
            if self.signer is None:
                raise UsageError("A signed record needs the token's audit key", "")
            rec = early_revoke_record(self.signer, deployment, env, path, st)
            record_dir.mkdir(parents=True, exist_ok=True)
            out = record_dir / record_name(env, path, st["previous"])
            write_private(out, canonical_bytes(rec) + b"\n")
        try:
            return self.vault.revoke_previous(env, path)
        except BaseException:
            if out is not None:
                out.unlink(missing_ok=True)
            raise


def record_name(env: str, path: str, version: int) -> str:
    """The file name of the early-revocation record of (env, path) version *version* (the
    path made flat, and a short digest of both so that two paths never share a name)."""
    tag = hashlib.sha256(f"{env}\0{path}".encode()).hexdigest()[:8]
    return f"early-revoke-{env}-{path.replace('/', '_')}-{tag}-v{version}.json"


def _hex(v: str) -> bool:
    try:
        bytes.fromhex(v)
    except ValueError:
        return False
    return True


def early_revoke_record(
    signer: Signer, deployment: str, env: str, path: str, st: Mapping[str, Any]
) -> dict[str, Any]:
    """The signed record of an early revocation: every registered consumer, the version it
    acknowledged and when, the version revoked and the reason."""
    body = {
        "type": RECORD_TYPE,
        "deployment": deployment,
        "env": env,
        "path": path,
        "current": st["current"],
        "revoked_version": st["previous"],
        "acks": {
            n: {"version": v, "at": st["acked_at"].get(n)} for n, v in st["consumers"].items()
        },
        "reason": "every registered consumer acknowledged current",
        "at": iso(utcnow()),
        "signer": {"name": signer.name, "alg": signer.alg, "public": signer.public.hex()},
    }
    sig = signer.sign(RECORD_TAG + canonical_bytes(body))
    return {**body, "signature": sig.hex()}


def verify_early_revoke(raw: bytes, trust: bytes) -> dict[str, Any]:
    """Check an early-revocation record offline against the pinned public key *trust*.

    It verifies when the signature is the pinned key's over the whole record, and the
    record itself shows the rule was kept: at least one consumer, every consumer's ack
    names ``current``, and the revoked version is an older one.

    Raises:
        IntegrityError: it does not verify or does not show the rule.
    """
    try:
        doc = load_json(raw)
        if not isinstance(doc, dict) or doc.get("type") != RECORD_TYPE:
            raise ValueError("not a record")
        body = {k: v for k, v in doc.items() if k != "signature"}
        sig = bytes.fromhex(str(doc["signature"]))
        acks, cur, old = doc["acks"], doc["current"], doc["revoked_version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError("Not an early-revocation record", "Give the file as written.") from exc
    if not verify_signature("ed25519", trust, sig, RECORD_TAG + canonical_bytes(body)):
        raise IntegrityError(
            "The early-revocation record does not verify under the pinned key",
            "It was altered or signed by another key; pin the audit key obtained out of band.",
        )
    ok_rule = (
        isinstance(acks, dict)
        and bool(acks)
        and all(isinstance(a, dict) and a.get("version") == cur for a in acks.values())
        and isinstance(cur, int)
        and isinstance(old, int)
        and old < cur
    )
    if not ok_rule:
        raise IntegrityError(
            "The record does not show that every consumer acknowledged current", ""
        )
    return {
        "env": doc["env"],
        "path": doc["path"],
        "revoked_version": old,
        "current": cur,
        "acknowledged": sorted(acks),
        "at": doc["at"],
    }
