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
revocation is off for every version the secret has then (``distrusted``, see the anchor
below); ``previous`` then lives to the end of its window, the safe default. An early
revocation writes a **signed record** first (:func:`early_revoke_record`, ``custody secret
verify-acks FILE --trust KEY`` checks it offline against the pinned audit key): who
acknowledged which version and when, the version revoked, and that it was revoked because
every registered consumer acknowledged ``current``.

Anchor: signatures do not show that a row is the newest (the disk operator could delete a
secret's row, so that the next consumer to read starts a set of one, or put back an older
signed one). So each write also signs an index (meta ``secret-consumers-index``) of every
row's generation, one generation higher, and the newest generation is kept on the token as
a monotonic counter (:func:`counter_label`, :mod:`custody.hsm.pkcs11.counters`; the same
guard as the access seal's, :mod:`custody.access.seal`): the store commits first, the
token is advanced right after, and an index one generation ahead of the token (a process
that stopped between the two) is accepted and the token brought forward. A row counts only
when its signature verifies for this deployment and secret, the index names its
generation and the index is not older than the token. Otherwise the next write re-signs it
with its names, no versions, and ``distrusted`` set to the highest version the secret has:
early revocation stays off for every version up to it (a consumer lost with the row can
only use one of those), and a ``consumers-distrusted`` alert names the reason. A lost or
rolled-back index makes every secret without a row in the new index count as lost (the
index's ``floor``). What remains: the state just before a process stopped between commit
and advance can be put back until the next check advances the token; its lost write, if a
registration, answered no read (:meth:`Consumers.register` returns only after the token).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from custody.audit.signers import ALGORITHMS, ED25519, Signer, verify_signature
from custody.canonical import canonical_bytes, load_json
from custody.clock import iso, utcnow
from custody.errors import IntegrityError, UsageError
from custody.privatefile import write_private
from custody.secrets.vault import Vault

DOC_TAG_V1 = b"custody/secret-consumers/v1"
DOC_TAG = b"custody/secret-consumers/v2"
INDEX_TAG = b"custody/secret-consumers-index/v1"
INDEX_KEY = "secret-consumers-index"
RECORD_TYPE = "custody/secret-early-revoke/v1"
RECORD_TAG = RECORD_TYPE.encode()
ALERT_KIND = "consumers-distrusted"


class CounterToken(Protocol):
    """The part of the :class:`custody.hsm.Hsm` port the anchor uses."""

    def counter(self, label: str) -> int | None: ...

    def advance_counter(self, label: str, value: int) -> int: ...

    def counter_labels(self) -> list[str]: ...


COUNTER_PREFIX = "secret-consumers-"


def counter_label(deployment: str) -> str:
    """The token counter that holds the newest generation of *deployment*'s consumers'
    state."""
    return f"{COUNTER_PREFIX}{deployment}/generation"


def _key(env: str, path: str) -> str:
    return f"secret-consumers:{env}:{path}"


def _doc_input_v1(env: str, path: str, entries: Mapping[str, Any], distrusted: Any) -> bytes:
    return DOC_TAG_V1 + canonical_bytes(
        {"env": env, "path": path, "consumers": dict(entries), "distrusted": distrusted}
    )


def _doc_input(
    deployment: str, env: str, path: str, entries: Mapping[str, Any], distrusted: Any, gen: Any
) -> bytes:
    return DOC_TAG + canonical_bytes(
        {
            "deployment": deployment,
            "env": env,
            "path": path,
            "consumers": dict(entries),
            "distrusted": distrusted,
            "gen": gen,
        }
    )


def _index_input(deployment: str, gen: Any, floor: Any, secrets: Mapping[str, Any]) -> bytes:
    return INDEX_TAG + canonical_bytes(
        {"deployment": deployment, "gen": gen, "floor": floor, "secrets": dict(secrets)}
    )


@dataclass(frozen=True)
class _Doc:
    """One secret's row as parsed: its entries, whether its signature verifies, and the
    generation it was written at (None: a v1 row, made before the anchor)."""

    entries: dict[str, dict[str, Any]]
    signed: bool
    distrusted: Any
    gen: int | None


@dataclass(frozen=True)
class _Anchor:
    """The signed index checked against the token's counter.

    ``secrets`` maps each secret's key to the generation of its row (None: the index is not
    trusted, *reason* says why); ``floor`` is the generation of the last reset (a secret
    without an entry then counts as lost); ``gen`` the highest generation seen (store or
    token); ``bare``: no index and no counter yet (v1 rows count by their signature)."""

    secrets: dict[str, int] | None
    gen: int
    floor: int
    reason: str | None
    bare: bool
    on_token: int


@dataclass(frozen=True)
class _View:
    entries: dict[str, dict[str, Any]]
    ok: bool
    distrusted: Any
    reason: str | None
    loud: bool  # evidence of tampering (alerted when the row is re-signed)


class Consumers:
    """Registered consumers and acknowledgements of one vault's secrets.

    Args:
        vault: the vault.
        signer: signs the state (the server's token audit key); without it the state is
            read-only (register, ack and settle need it).
        trust: the public key the state must verify under (default: the signer's). It
            comes from the token or the auditor's pin, never from the store.
        trust_alg: *trust*'s algorithm (:data:`custody.audit.signers.ALGORITHMS`; default:
            the signer's, else ``ed25519``). A signature is checked under this algorithm
            only: the token's audit key is ECDSA P-256 on a token without CKM_EDDSA (NSS
            softokn), and a key is never read as another algorithm.
        token: the logged-in token that keeps the generation counter (the anchor off the
            disk); without it no state is verified and nothing is written.
        deployment: the deployment id (names the counter and is signed into the state).
        exclusive: the token serves this deployment alone (a home's own token): no state
            and no counter of this id while the token holds another deployment's counter
            is not a fresh start but a lost state (the id comes from ``custody.toml``, on
            the disk: changed, with the state deleted, it would otherwise pass as new).
    """

    def __init__(
        self,
        vault: Vault,
        signer: Signer | None = None,
        *,
        trust: bytes | None = None,
        trust_alg: str | None = None,
        token: CounterToken | None = None,
        deployment: str = "",
        exclusive: bool = False,
    ) -> None:
        alg = trust_alg or (signer.alg if signer is not None else ED25519)
        if alg not in ALGORITHMS:
            raise ValueError(f"trust_alg must be one of {ALGORITHMS}")
        if signer is not None and signer.alg != alg:
            raise ValueError("the signer's algorithm differs from trust_alg")
        self.alg = alg
        self.vault = vault
        self.exclusive = exclusive
        self.store = vault.store
        self.signer = signer
        self.trust = trust if trust is not None else (signer.public if signer else None)
        self.token = token
        self.deployment = deployment
        self.label = counter_label(deployment)
        self._seen: dict[str, tuple[str, _Doc]] = {}
        self._index_seen: tuple[str, Any] | None = None
        self._pending: int | None = None

    def __repr__(self) -> str:
        return f"Consumers(label={self.label!r})"

    # -- one secret's signed row -----------------------------------------------------
    def _doc(self, env: str, path: str) -> _Doc | None:
        """The row of (env, path) as parsed (None: there is none)."""
        key = _key(env, path)
        raw = self.store.get_meta(key)
        if not raw:
            return None
        hit = self._seen.get(key)
        if hit is not None and hit[0] == raw:  # checked already (a read's hot path)
            return hit[1]
        got = self._check(env, path, raw)
        self._seen[key] = (raw, got)
        return got

    def _check(self, env: str, path: str, raw: str) -> _Doc:
        try:
            doc = json.loads(raw)
        except ValueError:
            return _Doc({}, False, None, None)
        if not isinstance(doc, dict):
            return _Doc({}, False, None, None)
        entries = doc.get("consumers") if "sig" in doc else doc  # an unsigned (old) document
        if not isinstance(entries, dict):
            return _Doc({}, False, None, None)
        clean = {
            str(n): {"version": d.get("version"), "at": d.get("at")}
            for n, d in entries.items()
            if isinstance(d, dict)
        }
        sig, distrusted, gen = doc.get("sig"), doc.get("distrusted"), doc.get("gen")
        raw_sig = bytes.fromhex(sig) if isinstance(sig, str) and _hex(sig) else b""
        if "gen" in doc:
            data = _doc_input(self.deployment, env, path, clean, distrusted, gen)
        else:
            data = _doc_input_v1(env, path, clean, distrusted)
        ok = (
            self.trust is not None
            and clean == entries
            and (gen is None or type(gen) is int)
            and verify_signature(self.alg, self.trust, raw_sig, data)
        )
        return _Doc(clean, ok, distrusted, gen if type(gen) is int else None)

    # -- the anchor: a signed index of every row's generation, the newest on the token --
    def _untrusted(self, reason: str, gen: int, on_token: int) -> _Anchor:
        return _Anchor(None, gen, 0, reason, False, on_token)

    def _anchor(self) -> _Anchor:
        """The index, checked against the token's counter (read first: a writer commits
        the store before it advances the token)."""
        if self.token is None or self.trust is None:
            return self._untrusted("the token is not open", 0, 0)
        first = self.token.counter(self.label)
        raw = self.store.get_meta(INDEX_KEY)
        t = first or 0
        if raw is None:
            if first is None and not (self.exclusive and self._other_counters()):
                return _Anchor({}, 0, 0, None, True, 0)
            if first is None:
                return self._untrusted(
                    "the consumers' index is missing and the token holds the counter of "
                    "another deployment id (was the id in custody.toml changed?)",
                    0,
                    0,
                )
            return self._untrusted(
                f"the consumers' index is missing (the token is at generation {t})", 0, t
            )
        doc = self._index(raw)
        if doc is None:
            return self._untrusted("the consumers' index was edited or is not ours", 0, t)
        gen, floor, secrets = doc
        if gen > t + 1:  # a writer may have committed twice since: read the token again
            t = self.token.counter(self.label) or 0
        if gen < t:
            return self._untrusted(
                f"the consumers' state was rolled back: its index is generation {gen}, "
                f"the token's {t}",
                gen,
                t,
            )
        if gen > t + 1:
            return self._untrusted(
                f"the consumers' index (generation {gen}) is ahead of the token's {t}", gen, t
            )
        if gen == t + 1:  # committed by a process that stopped before the token
            t = self.token.advance_counter(self.label, gen)
        return _Anchor(dict(secrets), gen, floor, None, False, t)

    def _other_counters(self) -> list[str]:
        if self.token is None:  # pragma: no cover - _anchor returns before, without one
            return []
        return [
            c
            for c in self.token.counter_labels()
            if c.startswith(COUNTER_PREFIX) and c != self.label
        ]

    def _index(self, raw: str) -> tuple[int, int, dict[str, int]] | None:
        if self._index_seen is not None and self._index_seen[0] == raw:
            return self._index_seen[1]  # type: ignore[no-any-return]
        got: tuple[int, int, dict[str, int]] | None = None
        try:
            doc = json.loads(raw)
            gen, floor, secrets, sig = doc["gen"], doc["floor"], doc["secrets"], doc["sig"]
            good = (
                type(gen) is int
                and type(floor) is int
                and isinstance(secrets, dict)
                and all(type(v) is int for v in secrets.values())
                and isinstance(sig, str)
                and _hex(sig)
                and self.trust is not None
                and verify_signature(
                    self.alg,
                    self.trust,
                    bytes.fromhex(sig),
                    _index_input(self.deployment, gen, floor, secrets),
                )
            )
            if good:
                got = (gen, floor, {str(k): v for k, v in secrets.items()})
        except (ValueError, KeyError, TypeError):
            got = None
        self._index_seen = (raw, got)
        return got

    def _view(self, env: str, path: str, anchor: _Anchor) -> _View:
        """(env, path)'s state, believed only when its row is the one the anchor names."""
        doc = self._doc(env, path)
        key = _key(env, path)
        if doc is None:
            if anchor.secrets is None:
                return _View({}, False, None, anchor.reason, True)
            if key in anchor.secrets:
                return _View({}, False, None, "its consumers' row was deleted", True)
            if anchor.floor:  # lost or new: no entry since the reset
                return _View({}, False, None, "no row since the consumers' state was reset", False)
            return _View({}, True, None, None, False)
        if not doc.signed:
            why = "its consumers' row is unsigned, edited, or signed for another secret"
            return _View(doc.entries, False, doc.distrusted, why, True)
        if anchor.secrets is None:
            return _View(doc.entries, False, doc.distrusted, anchor.reason, True)
        want = anchor.secrets.get(key)
        if doc.gen is None:
            if anchor.bare:
                return _View(doc.entries, True, doc.distrusted, None, False)
            return _View(doc.entries, False, doc.distrusted, "a row from before the anchor", True)
        if doc.gen != want:
            why = (
                f"an older consumers' row was put back (generation {doc.gen}, the index "
                f"names {want})"
            )
            return _View(doc.entries, False, doc.distrusted, why, True)
        return _View(doc.entries, True, doc.distrusted, None, False)

    def _top_version(self, env: str, path: str) -> int:
        meta = self.vault.show(env, path)
        labels = [v for v in meta["labels"].values() if isinstance(v, int)]
        versions = [v["version"] for v in meta.get("versions", ())]
        return int(max([0, *labels, *versions]))

    # -- writes -------------------------------------------------------------------------
    def _write(
        self, env: str, path: str, change: Callable[[dict[str, dict[str, Any]]], bool]
    ) -> bool:
        """Read, change and re-sign (env, path)'s row and the index at the next generation,
        under the store's write lock; the token's counter is advanced after the commit.
        An unbelieved row keeps its names but none of its versions, and early revocation
        is then off for every version the secret has now (``distrusted``), with an alert
        naming the reason. *change* returns whether anything changed."""
        if self.signer is None or self.token is None:
            raise UsageError(
                "Recording consumers needs the token and its audit key", "Run it in custody serve."
            )
        alarm: str | None = None
        with self.store.transaction():  # read and write under the write lock: no lost update
            anchor = self._anchor()
            view = self._view(env, path, anchor)
            entries, distrusted = view.entries, view.distrusted
            if not view.ok:
                top = self._top_version(env, path)
                old = distrusted if type(distrusted) is int else 0
                entries = {n: {"version": None, "at": None} for n in entries}
                distrusted = max(top, old)
                alarm = view.reason if view.loud else None
            changed = change(entries)
            if view.ok and not changed:
                return False
            secrets = dict(anchor.secrets) if anchor.secrets is not None else {}
            base = max(anchor.gen, anchor.on_token)
            if anchor.on_token < base:  # the token must hold base before base + 1 commits
                self.token.advance_counter(self.label, base)
            gen = base + 1
            floor = anchor.floor if anchor.secrets is not None else gen
            key = _key(env, path)
            secrets[key] = gen
            sig = self.signer.sign(
                _doc_input(self.deployment, env, path, entries, distrusted, gen)
            ).hex()
            row = {"consumers": entries, "distrusted": distrusted, "gen": gen, "sig": sig}
            isig = self.signer.sign(_index_input(self.deployment, gen, floor, secrets)).hex()
            index = {"gen": gen, "floor": floor, "secrets": secrets, "sig": isig}
            self.store.set_meta(key, json.dumps(row, sort_keys=True))
            self.store.set_meta(INDEX_KEY, json.dumps(index, sort_keys=True))
            self._pending = gen
        self._advance()
        if alarm is not None:
            self.vault.alert(
                ALERT_KIND, self.vault._row(env, path), reason=alarm, distrusted=distrusted
            )
        return changed

    def _advance(self) -> None:
        gen, self._pending = self._pending, None
        if gen is not None and self.token is not None:
            self.token.advance_counter(self.label, gen)

    # -- operations --------------------------------------------------------------------
    def register(self, env: str, path: str, name: str) -> bool:
        """Make *name* a consumer of (env, path). Returns True when it is new. When this
        returns, the registration is on the token's generation: a caller serves the value
        only after it (a crash before means no value was served)."""
        doc = self._doc(env, path)
        if doc is not None and doc.signed and name in doc.entries:
            return False  # the hot path: the anchor is checked where acks count (settle)

        def add(entries: dict[str, dict[str, Any]]) -> bool:
            new = name not in entries
            entries.setdefault(name, {"version": None, "at": None})
            return new

        return self._write(env, path, add)

    def ack(self, env: str, path: str, name: str, version: int) -> dict[str, Any]:
        """Record that consumer *name* now uses *version* (registering it if need be)."""

        def put(entries: dict[str, dict[str, Any]]) -> bool:
            entries[name] = {"version": version, "at": iso(utcnow())}
            return True

        self._write(env, path, put)
        return self.state(env, path)

    def state(self, env: str, path: str) -> dict[str, Any]:
        """Consumers, the version each acknowledged, and who has not acknowledged current.
        ``verified`` is False when the row is unsigned, edited, deleted, older than the
        index, or the index is older than the token's counter: then no acknowledgement
        counts (``reason`` says why). ``early``: whether the last ack may revoke
        ``previous`` (off for every version up to ``distrusted``)."""
        meta = self.vault.show(env, path)
        cur, prev = meta["labels"]["current"], meta["labels"]["previous"]
        view = self._view(env, path, self._anchor())
        ok, entries, distrusted = view.ok, view.entries, view.distrusted
        versions = {n: (d["version"] if ok else None) for n, d in sorted(entries.items())}
        if distrusted is None:
            early = ok
        else:
            early = ok and type(distrusted) is int and prev is not None and prev > distrusted
        return {
            "current": cur,
            "previous": prev,
            "consumers": versions,
            "acked_at": {n: (d["at"] if ok else None) for n, d in sorted(entries.items())},
            "stragglers": sorted(n for n, v in versions.items() if v != cur),
            "verified": ok,
            "reason": view.reason,
            "distrusted": distrusted,
            "early": early,
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
        verified state whose early revocation is on. With *record_dir*, the signed record
        (:func:`early_revoke_record`) is written there first. Returns the revoked version,
        or None (no previous, no consumers, stragglers, an unverified or distrusted
        state)."""
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


def verify_early_revoke(raw: bytes, trust: bytes, *, alg: str) -> dict[str, Any]:
    """Check an early-revocation record offline against the pinned public key *trust* of
    algorithm *alg* (``ed25519``, or ``ecdsa-p256`` for a token without CKM_EDDSA).

    It verifies when the record names *alg* as its signer's algorithm, the signature is the
    pinned key's under *alg* over the whole record, and the record itself shows the rule
    was kept: at least one consumer, every consumer's ack names ``current``, and the
    revoked version is an older one. The signature is never checked under another
    algorithm than the pin's (no algorithm confusion).

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
        signed_alg = doc["signer"]["alg"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError("Not an early-revocation record", "Give the file as written.") from exc
    if alg not in ALGORITHMS:
        raise IntegrityError(f"Unsupported pinned key algorithm {alg!r}", "Pin the audit key.")
    if signed_alg != alg:
        raise IntegrityError(
            "The early-revocation record's signing algorithm is not the pinned key's",
            f"It names {str(signed_alg)[:20]!r}, the pinned key is {alg}; pin the token's "
            "audit key obtained out of band ('custody audit checkpoint --trust-out').",
        )
    if not verify_signature(alg, trust, sig, RECORD_TAG + canonical_bytes(body)):
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
