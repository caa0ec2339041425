"""Offline copies for disaster recovery: the root export and signed store snapshots.

**The root export** (``custody root export --out DIR``) is what ``docs/keys.md`` means by
"kept on offline media": everything needed to rebuild the deployment's roots into a fresh
home and a new token with a quorum of custodian shares, and nothing that opens without
them. ``DIR/root-export.json`` holds the live root versions with their root-key blobs
(wrapped under RK, which only the shares rebuild), the live KEK versions (sealed under a
root, inside the HSM), the active share set's public facts (epoch, scheme, dealer and RK
public keys, each holder's commitment), the roster (public keys only) and the transcript
chain's last checkpoint. ``DIR/root-export.sig.json`` signs it.

**A store snapshot** (``custody store snapshot --out FILE``) is the whole store, copied with
SQLite's online backup API; ``FILE.manifest.json`` records its SHA-256 and size and is
signed the same way.

**Who signs.** Both are signed with the key of the super-admin who runs the command (the
ceremony coordinator's participant key, ``--key``), not with the audit key: the audit key
lives on the token, which is one of the things these copies must survive losing. Checking
(``custody root verify-export``, ``root import``, ``store restore``) needs that signer's
public key pinned out of band (``--trust NAME.pub.json``, as for ``transcript verify``),
or, for a home that still has its roster, an enrolled super-admin of that roster; and the
signer must be an unrevoked super-admin of the roster inside the export (or snapshot).
Anything altered, missing or signed by anyone else is an :class:`IntegrityError`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custody.audit.signers import Signer, TrustKey, verify_signature
from custody.canonical import canonical_bytes, domain_hash, load_json
from custody.clock import iso, utcnow
from custody.errors import CeremonyError, IntegrityError, UsageError
from custody.model import CAN_DECRYPT, KeyState
from custody.privatefile import PUBLIC, private_dir, write_private
from custody.store.port import Store
from custody.store.rows import NewKek, NewRoot, ParticipantRow, ShareHolderRow, ShareSetRow

EXPORT_TYPE = "custody.root-export/v1"
EXPORT_NAME = "root-export.json"
EXPORT_SIG = "root-export.sig.json"
SNAPSHOT_TYPE = "custody.store-snapshot/v1"
MANIFEST_SUFFIX = ".manifest.json"
SUPER_ADMIN = "super-admin"


# --------------------------------------------------------------------------- signing
def _sign(domain: str, body: bytes, signer: Signer) -> dict[str, str]:
    return {
        "signer": signer.name,
        "alg": signer.alg,
        "public": signer.public.hex(),
        "signature": signer.sign(domain_hash(domain, body)).hex(),
    }


def _bad(what: str, detail: str) -> IntegrityError:
    return IntegrityError(
        f"The {what} failed verification: {detail}",
        "Do not use it. Take the copy from another medium, or ask the super-admin who made it.",
    )


def _check_signature(
    what: str,
    domain: str,
    body: bytes,
    sig: Any,
    roster: Sequence[ParticipantRow],
    trust: Sequence[TrustKey],
) -> str:
    """The signer's name, once the signature over *body* is good, the signer is pinned in
    *trust* and is an unrevoked super-admin of *roster*.

    Raises:
        IntegrityError: any of these fails.
    """
    try:
        alg, public = str(sig["alg"]), bytes.fromhex(sig["public"])
        signature = bytes.fromhex(sig["signature"])
        if set(sig) != {"signer", "alg", "public", "signature"}:
            raise ValueError("fields")
        if sig["public"] != public.hex() or sig["signature"] != signature.hex():
            raise ValueError("not lower-case hex")
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(what, "the signature file is malformed") from exc
    if not verify_signature(alg, public, signature, domain_hash(domain, body)):
        raise _bad(what, "the signature does not match the contents")
    # the algorithm the file names must be the pinned key's and the roster's: a key is
    # never checked under an algorithm that only the signature file claims
    if not any(t.public == public and t.alg == alg for t in trust):
        raise _bad(what, "it is not signed by a pinned key (--trust)")
    member = next((p for p in roster if p.public == public), None)
    if member is None or member.role != SUPER_ADMIN or member.revoked_at is not None:
        raise _bad(what, "its signer is not an enrolled super-admin of its roster")
    if member.alg != alg:
        raise _bad(what, f"its roster records an {member.alg} key, the signature says {alg}")
    if sig["signer"] != member.name:
        raise _bad(what, "the signer's name does not match the roster")
    return member.name


def roster_trust(store: Store) -> list[TrustKey]:
    """The unrevoked super-admins of a home's roster, as trust keys (a home that still has
    its store may check a copy against it instead of ``--trust`` files)."""
    return [
        TrustKey(name=p.name, alg=p.alg, public=p.public, role=SUPER_ADMIN)
        for p in store.participants()
        if p.role == SUPER_ADMIN and p.revoked_at is None
    ]


# ----------------------------------------------------------------------- JSON shapes
def _participant(p: ParticipantRow) -> dict[str, Any]:
    return {
        "name": p.name,
        "role": p.role,
        "alg": p.alg,
        "public": p.public.hex(),
        "fingerprint": p.fingerprint,
        "valid_from": p.valid_from,
        "valid_until": p.valid_until,
        "revoked_at": p.revoked_at,
        "enrolled_by": p.enrolled_by,
        "enrolled_in": p.enrolled_in,
    }


def _participant_of(d: dict[str, Any]) -> ParticipantRow:
    return ParticipantRow(
        name=str(d["name"]),
        role=str(d["role"]),
        alg=str(d["alg"]),
        public=bytes.fromhex(d["public"]),
        fingerprint=str(d["fingerprint"]),
        valid_from=int(d["valid_from"]),
        valid_until=int(d["valid_until"]),
        revoked_at=None if d["revoked_at"] is None else int(d["revoked_at"]),
        enrolled_by=str(d["enrolled_by"]),
        enrolled_in=None if d["enrolled_in"] is None else str(d["enrolled_in"]),
    )


def _share_set(s: ShareSetRow) -> dict[str, Any]:
    return {
        "epoch": s.epoch,
        "ceremony_id": s.ceremony_id,
        "policy_digest": s.policy_digest,
        "dealer_public": s.dealer_public.hex(),
        "rk_kcv": s.rk_kcv,
        "rk_public": s.rk_public.hex(),
        "scheme": s.scheme,
        "created": s.created,
        "holders": [
            {
                "custodian": h.custodian,
                "fingerprint": h.fingerprint,
                "group_index": h.group_index,
                "member_index": h.member_index,
                "commitment": h.commitment,
            }
            for h in sorted(s.holders, key=lambda h: (h.group_index, h.member_index))
        ],
    }


def _share_set_of(d: dict[str, Any]) -> ShareSetRow:
    return ShareSetRow(
        epoch=int(d["epoch"]),
        ceremony_id=str(d["ceremony_id"]),
        policy_digest=str(d["policy_digest"]),
        dealer_public=bytes.fromhex(d["dealer_public"]),
        rk_kcv=str(d["rk_kcv"]),
        rk_public=bytes.fromhex(d["rk_public"]),
        scheme=str(d["scheme"]),
        state="active",
        created=int(d["created"]),
        holders=tuple(
            ShareHolderRow(
                custodian=str(h["custodian"]),
                fingerprint=str(h["fingerprint"]),
                group_index=int(h["group_index"]),
                member_index=int(h["member_index"]),
                commitment=str(h["commitment"]),
            )
            for h in d["holders"]
        ),
    )


# ----------------------------------------------------------------------- root export
@dataclass(frozen=True, slots=True)
class RootExport:
    """A verified root export: its document, and who signed it."""

    doc: dict[str, Any]
    signer: str
    digest: str  # SHA-256 of root-export.json

    @property
    def roots(self) -> list[str]:
        return [f"root/v{r['version']}" for r in self.doc["roots"]]


def export_document(store: Store, deployment_id: str) -> dict[str, Any]:
    """The export's document for the deployment in *store* (public facts and wrapped blobs
    only).

    Raises:
        CeremonyError: no share set, or a live root without a blob (a development root).
    """
    sset = store.active_share_set()
    if sset is None:
        raise CeremonyError(
            "There is no share set to export",
            "Run the generate ceremony first; a development root has no recovery shares.",
        )
    roots = []
    for r in store.roots():
        if r.state not in CAN_DECRYPT:
            continue
        blob = store.root_blob(r.version)
        if blob is None:
            raise CeremonyError(
                f"root/v{r.version} has no root-key blob",
                "A development root cannot be recovered; rotate to a generated root first.",
            )
        roots.append(
            {
                "version": r.version,
                "state": r.state.value,
                "kcv": r.kcv,
                "epoch": r.epoch,
                "created": r.created,
                "blob": blob.hex(),
            }
        )
    keks = []
    for k in store.keks():
        if k.state not in CAN_DECRYPT:
            continue
        sealed = store.sealed_kek(k.branch, k.version)
        assert sealed is not None  # noqa: S101 (listed a moment ago, in the same store)
        keks.append(
            {
                "branch": k.branch,
                "version": k.version,
                "state": k.state.value,
                "kcv": k.kcv,
                "root_version": k.root_version,
                "created": k.created,
                "wrapped": sealed.wrapped.hex(),
            }
        )
    return {
        "type": EXPORT_TYPE,
        "deployment_id": deployment_id,
        "exported_at": iso(utcnow()),
        "roots": roots,
        "keks": keks,
        "share_set": _share_set(sset),
        "participants": [_participant(p) for p in store.participants()],
        "last_checkpoint": store.get_meta("last_checkpoint"),
    }


def export_marker(doc: dict[str, Any]) -> dict[str, Any]:
    """What the store remembers of its last export (``meta.root_export``), so that
    ``custody status`` can say when the offline copy is out of date."""
    return {
        "at": doc["exported_at"],
        "keys": sorted(
            [f"root/v{r['version']}" for r in doc["roots"]]
            + [f"{k['branch']}/v{k['version']}" for k in doc["keks"]]
        ),
        "epoch": doc["share_set"]["epoch"],
    }


def write_export(out: Path, doc: dict[str, Any], signer: Signer) -> list[Path]:
    """Write *doc* and its signature into the new or empty directory *out*.

    Raises:
        UsageError: *out* holds files already. StorageError: a write failed.
    """
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty", "Give a new or empty --out directory.")
    private_dir(out)
    body = canonical_bytes(doc)
    sig = _sign(EXPORT_TYPE, body, signer)
    write_private(out / EXPORT_NAME, body + b"\n", mode=PUBLIC)
    write_private(out / EXPORT_SIG, canonical_bytes(sig) + b"\n", mode=PUBLIC)
    return [out / EXPORT_NAME, out / EXPORT_SIG]


def read_export(src: Path, trust: Sequence[TrustKey]) -> RootExport:
    """Read and verify the export in *src*.

    Raises:
        IntegrityError: a file is missing or altered, the signer is not pinned in *trust*,
            or is not a super-admin of the exported roster.
    """
    try:
        raw = (src / EXPORT_NAME).read_bytes()
        sig_raw = (src / EXPORT_SIG).read_bytes()
    except OSError as exc:
        raise _bad("root export", f"{EXPORT_NAME} or {EXPORT_SIG} is missing") from exc
    try:
        sig = load_json(sig_raw)
        if canonical_bytes(sig) + b"\n" != sig_raw:
            raise ValueError("not canonical")
    except ValueError as exc:
        raise _bad("root export", f"{EXPORT_SIG} is malformed") from exc
    if not raw.endswith(b"\n"):
        raise _bad("root export", f"{EXPORT_NAME} is truncated")
    body = raw[:-1]
    try:
        doc = load_json(body)
        if not isinstance(doc, dict) or doc.get("type") != EXPORT_TYPE:
            raise ValueError("type")
        if canonical_bytes(doc) != body:
            raise ValueError("not canonical")
        roster = [_participant_of(p) for p in doc["participants"]]
        _share_set_of(doc["share_set"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _bad("root export", f"{EXPORT_NAME} is not a custody root export") from exc
    name = _check_signature("root export", EXPORT_TYPE, body, sig, roster, trust)
    return RootExport(doc=doc, signer=name, digest=hashlib.sha256(raw).hexdigest())


def import_export(store: Store, exp: RootExport) -> None:
    """Write a verified export into the empty store of a fresh home, in one transaction.

    Raises:
        CeremonyError: the store already holds roots, KEKs, a roster or a share set.
    """
    if store.roots() or store.keks() or store.participants() or store.active_share_set():
        raise CeremonyError(
            "This home's store is not empty",
            "Import into a fresh home ('custody init --home NEW'), or restore a snapshot.",
        )
    d = exp.doc
    try:
        with store.transaction():
            for p in d["participants"]:
                store.add_participant(_participant_of(p))
            sset = _share_set_of(d["share_set"])
            store.replace_share_set(sset, now=sset.created)
            for r in sorted(d["roots"], key=lambda r: (r["state"] == "active", r["version"])):
                store.add_root(
                    NewRoot(
                        version=int(r["version"]),
                        kcv=str(r["kcv"]),
                        epoch=None if r["epoch"] is None else int(r["epoch"]),
                        blob=bytes.fromhex(r["blob"]),
                    ),
                    activate=r["state"] == KeyState.ACTIVE.value,
                    now=str(r["created"]),
                )
            for k in sorted(d["keks"], key=lambda k: (k["branch"], k["version"])):
                store.add_kek(
                    NewKek(
                        branch=str(k["branch"]),
                        version=int(k["version"]),
                        kcv=str(k["kcv"]),
                        root_version=int(k["root_version"]),
                        wrapped=bytes.fromhex(k["wrapped"]),
                    ),
                    now=str(k["created"]),
                )
            store.set_meta("deployment_id", str(d["deployment_id"]))
            if d.get("last_checkpoint"):
                store.set_meta("last_checkpoint", str(d["last_checkpoint"]))
            store.set_meta("root_import", exp.digest)
            store.set_meta("root_export", json.dumps(export_marker(d), sort_keys=True))
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad("root export", "a record is malformed") from exc


# -------------------------------------------------------------------- store snapshots
def manifest_path(snapshot: Path) -> Path:
    return snapshot.with_name(snapshot.name + MANIFEST_SUFFIX)


def _file_digest(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def write_manifest(snapshot: Path, deployment_id: str, signer: Signer) -> Path:
    """Sign *snapshot*: its SHA-256 and size, the deployment, the time."""
    digest, size = _file_digest(snapshot)
    doc = {
        "type": SNAPSHOT_TYPE,
        "deployment_id": deployment_id,
        "file": snapshot.name,
        "sha256": digest,
        "size": size,
        "created": iso(utcnow()),
    }
    body = canonical_bytes(doc)
    out = manifest_path(snapshot)
    write_private(
        out,
        canonical_bytes({"manifest": doc, "signature": _sign(SNAPSHOT_TYPE, body, signer)}) + b"\n",
        mode=PUBLIC,
    )
    return out


def check_manifest(snapshot: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest and its signature block, once the snapshot's digest matches it (the
    signer is checked by :func:`check_snapshot_signer` against the snapshot's roster).

    Raises:
        IntegrityError: no manifest, or the snapshot does not match it.
    """
    try:
        outer = load_json(manifest_path(snapshot).read_bytes())
        doc, sig = outer["manifest"], outer["signature"]
        if doc.get("type") != SNAPSHOT_TYPE:
            raise ValueError("type")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _bad("store snapshot", f"no readable {manifest_path(snapshot).name}") from exc
    try:
        digest, size = _file_digest(snapshot)
    except OSError as exc:
        raise _bad("store snapshot", f"cannot read {snapshot.name}") from exc
    if digest != doc.get("sha256") or size != doc.get("size"):
        raise _bad("store snapshot", "its SHA-256 does not match the signed manifest")
    return doc, sig


def check_snapshot_signer(
    doc: dict[str, Any],
    sig: dict[str, Any],
    roster: Sequence[ParticipantRow],
    trust: Sequence[TrustKey],
) -> str:
    """The snapshot's signer, pinned in *trust* and a super-admin of the snapshot's roster.

    Raises:
        IntegrityError: the manifest's signature or signer does not check out.
    """
    return _check_signature(
        "store snapshot", SNAPSHOT_TYPE, canonical_bytes(doc), sig, roster, trust
    )
