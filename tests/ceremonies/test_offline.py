"""ceremonies.offline: the root export and the snapshot manifest refuse every alteration
with an IntegrityError (never another exception, never a silent pass), and accept only a
pinned super-admin of the copy's own roster."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ceremonies.offline import (
    EXPORT_NAME,
    EXPORT_SIG,
    check_manifest,
    check_snapshot_signer,
    export_document,
    import_export,
    manifest_path,
    read_export,
    write_export,
    write_manifest,
)
from custody.audit.signers import Ed25519Signer, TrustKey
from custody.errors import CeremonyError, IntegrityError
from custody.signing import fingerprint
from custody.store import open_store
from custody.store.rows import NewRoot, ParticipantRow, ShareHolderRow, ShareSetRow

ADMIN = Ed25519Signer.from_seed("admin", b"\x01" * 32)
CUSTODIAN = Ed25519Signer.from_seed("alice", b"\x02" * 32)


def _member(s: Ed25519Signer, role: str) -> ParticipantRow:
    return ParticipantRow(
        name=s.name,
        role=role,
        public=s.public,
        fingerprint=fingerprint(s.public),
        valid_from=0,
        valid_until=2**31,
        revoked_at=None,
        enrolled_by="bootstrap",
    )


def _store(path: Path):
    st = open_store(path, create=True)
    st.add_participant(_member(ADMIN, "super-admin"))
    st.add_participant(_member(CUSTODIAN, "custodian"))
    st.replace_share_set(
        ShareSetRow(
            epoch=1,
            ceremony_id="c" * 32,
            policy_digest="d" * 64,
            dealer_public=b"\x03" * 32,
            rk_kcv="abcdef",
            rk_public=b"\x04" * 65,
            scheme="slip39",
            state="active",
            created=1,
            holders=(
                ShareHolderRow(
                    custodian="alice",
                    fingerprint=fingerprint(CUSTODIAN.public),
                    group_index=0,
                    member_index=0,
                    commitment="e" * 64,
                ),
            ),
        ),
        now=1,
    )
    st.add_root(
        NewRoot(version=1, kcv="123456", epoch=1, blob=b"\x05" * 40),
        activate=True,
        now="2026-01-01T00:00:00+00:00",
    )
    return st


def _trust(*signers: Ed25519Signer) -> list[TrustKey]:
    return [TrustKey.of(s) for s in signers]


def test_round_trip_and_import_into_an_empty_store_only(tmp_path: Path):
    st = _store(tmp_path / "a.db")
    doc = export_document(st, "dep1")
    write_export(tmp_path / "x", doc, ADMIN)
    exp = read_export(tmp_path / "x", _trust(ADMIN))
    assert exp.signer == "admin" and exp.roots == ["root/v1"]
    with pytest.raises(CeremonyError):
        import_export(st, exp)  # not empty
    st.close()
    fresh = open_store(tmp_path / "b.db", create=True)
    import_export(fresh, exp)
    assert [r.version for r in fresh.roots()] == [1] and fresh.root_blob(1) == b"\x05" * 40
    assert fresh.get_meta("deployment_id") == "dep1"
    fresh.close()


def test_only_a_pinned_super_admin_of_the_exported_roster_counts(tmp_path: Path):
    st = _store(tmp_path / "a.db")
    doc = export_document(st, "dep1")
    st.close()
    write_export(tmp_path / "by-admin", doc, ADMIN)
    with pytest.raises(IntegrityError, match="pinned"):
        read_export(tmp_path / "by-admin", _trust(CUSTODIAN))
    # a custodian's signature, even pinned, is not a super-admin's
    write_export(tmp_path / "by-alice", doc, CUSTODIAN)
    with pytest.raises(IntegrityError, match="super-admin"):
        read_export(tmp_path / "by-alice", _trust(CUSTODIAN))
    # an attacker's own roster and key: refused unless the auditor pinned that key
    evil = Ed25519Signer.from_seed("admin", b"\x09" * 32)
    forged = dict(doc, participants=[{**doc["participants"][0], "public": evil.public.hex()}])
    write_export(tmp_path / "forged", forged, evil)
    with pytest.raises(IntegrityError, match="pinned"):
        read_export(tmp_path / "forged", _trust(ADMIN))


@pytest.mark.parametrize("name", [EXPORT_NAME, EXPORT_SIG])
def test_every_mutation_of_an_export_is_an_integrity_error(tmp_path: Path, name: str):
    st = _store(tmp_path / "a.db")
    write_export(tmp_path / "x", export_document(st, "dep1"), ADMIN)
    st.close()
    target = tmp_path / "x" / name
    good = target.read_bytes()
    rng = random.Random(7)
    for _ in range(400):
        raw = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            i = rng.randrange(len(raw))
            if op < 0.5:
                raw[i] = rng.randrange(256)
            elif op < 0.75:
                del raw[i]
            else:
                raw.insert(i, rng.randrange(256))
        if bytes(raw).rstrip(b"\n") == good.rstrip(b"\n"):
            continue
        target.write_bytes(bytes(raw))
        with pytest.raises(IntegrityError):
            read_export(tmp_path / "x", _trust(ADMIN))
    target.write_bytes(good)
    assert read_export(tmp_path / "x", _trust(ADMIN)).signer == "admin"


def test_a_snapshot_must_match_its_signed_manifest(tmp_path: Path):
    st = _store(tmp_path / "a.db")
    roster = st.participants()
    st.close()
    snap = tmp_path / "snap.db"
    snap.write_bytes(b"SQLite format 3\x00" + bytes(2000))
    write_manifest(snap, "dep1", ADMIN)
    doc, sig = check_manifest(snap)
    assert check_snapshot_signer(doc, sig, roster, _trust(ADMIN)) == "admin"
    with pytest.raises(IntegrityError):
        check_snapshot_signer(doc, sig, roster, _trust(CUSTODIAN))
    with pytest.raises(IntegrityError):
        check_snapshot_signer({**doc, "sha256": "0" * 64}, sig, roster, _trust(ADMIN))
    snap.write_bytes(snap.read_bytes() + b"x")
    with pytest.raises(IntegrityError, match="SHA-256"):
        check_manifest(snap)
    manifest_path(snap).write_text("[]")
    with pytest.raises(IntegrityError):
        check_manifest(snap)


def test_a_p256_super_admin_signs_an_export_checked_under_the_pinned_algorithm(tmp_path: Path):
    """A super-admin whose token has no EdDSA signs with ECDSA P-256: the export verifies
    under their pinned P-256 key; the algorithm the signature file names must be the pin's
    and the roster's (issue 13)."""
    import dataclasses
    import json

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ec.generate_private_key(ec.SECP256R1())

    class P256:
        name, alg = "tess", "ecdsa-p256"
        public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

        def sign(self, data: bytes) -> bytes:
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    tess = P256()
    st = _store(tmp_path / "a.db")
    row = dataclasses.replace(_member(ADMIN, "super-admin"), name="tess", public=tess.public)
    st.add_participant(
        dataclasses.replace(row, alg="ecdsa-p256", fingerprint=fingerprint(tess.public))
    )
    doc = export_document(st, "dep1")
    st.close()
    write_export(tmp_path / "x", doc, tess)
    pinned = TrustKey(name="tess", alg="ecdsa-p256", public=tess.public, role="super-admin")
    assert read_export(tmp_path / "x", [pinned]).signer == "tess"
    sig = json.loads((tmp_path / "x" / EXPORT_SIG).read_text())
    assert sig["alg"] == "ecdsa-p256" and len(sig["signature"]) == 128
    with pytest.raises(IntegrityError, match="pinned"):  # the same bytes pinned as Ed25519
        read_export(tmp_path / "x", [dataclasses.replace(pinned, alg="ed25519")])
    # the exported roster relabels her key as Ed25519 (and is re-signed by her): refused
    relabelled = dict(
        doc,
        participants=[
            dict(p, alg="ed25519") if p["name"] == "tess" else p for p in doc["participants"]
        ],
    )
    write_export(tmp_path / "y", relabelled, tess)
    with pytest.raises(IntegrityError, match="roster records an ed25519 key"):
        read_export(tmp_path / "y", [pinned])
