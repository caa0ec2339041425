"""Grant records with approvers of two algorithms (Ed25519, ECDSA P-256 raw r||s over
SHA-256): an approval counts only under a pinned key of the algorithm it names, verified
under that algorithm alone; a name of an unknown algorithm never counts. Pure records,
signed here with ``cryptography`` keys (the token path:
tests/cli/test_access_p256_approver.py)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from custody.access.records import (
    approval_input,
    body_digest,
    build_record,
    request_body,
    verify_record,
)
from custody.audit.signers import Ed25519Signer
from custody.errors import IntegrityError
from custody.store.rows import AccessApprovalRow, AccessRequestRow

P256 = "ecdsa-p256"


class _P256:
    def __init__(self, name: str) -> None:
        self.name = name
        self._key = ec.derive_private_key(int.from_bytes(name.encode().ljust(16, b"#"), "big"),
                                          ec.SECP256R1())  # fmt: skip
        self.public = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


ED = Ed25519Signer.from_seed("ed", b"e" * 32)
PAT = _P256("pat")


def _record() -> dict:
    r = AccessRequestRow(id="req-1", kind="grant", requester="svc", env="prod", path="a/b",
                         actions=("read",), not_before=100, not_after=200, nonce="00" * 16,
                         reason="t", security_class="high", needed=2, digest="",
                         state="granted", created=100, updated=100)  # fmt: skip
    r = replace(r, digest=body_digest(request_body(r, "dep")))
    approvals = [
        AccessApprovalRow(request_id=r.id, approver=k.name, public=k.public,
                          sig=k.sign(approval_input(r.digest, k.name, 150)), approved_at=150)
        for k in (ED, PAT)
    ]  # fmt: skip
    return build_record(r, "dep", approvals, grant_id="g1", algs={PAT.public: P256})


PINNED = {ED.public: "ed", PAT.public: "pat"}


def test_both_algorithms_count_under_their_own_pins():
    doc = _record()
    assert [a.get("alg") for a in doc["approvals"]] == [None, P256]
    got = verify_record(doc, PINNED, algs={PAT.public: P256})
    assert got["approvers"] == ["ed", "pat"]


@pytest.mark.parametrize(
    ("why", "algs", "edit"),
    [
        ("the P-256 key pinned without its algorithm", {}, None),
        ("pinned as Ed25519 explicitly", {PAT.public: "ed25519"}, None),
        ("the record's alg removed", {PAT.public: P256}, lambda a: a.pop("alg")),
        ("the record says ed25519", {PAT.public: P256}, lambda a: a.update(alg="ed25519")),
        ("an unknown algorithm pinned and named", {PAT.public: "rsa"},
         lambda a: a.update(alg="rsa")),
        ("a flipped signature byte", {PAT.public: P256},
         lambda a: a.update(sig=a["sig"][:-2] + f"{int(a['sig'][-2:], 16) ^ 1:02x}")),
    ],
)  # fmt: skip
def test_a_p256_approval_counts_only_under_a_p256_pin(why, algs, edit):
    doc = copy.deepcopy(_record())
    if edit is not None:
        edit(doc["approvals"][1])
    with pytest.raises(IntegrityError, match="1 of 2"):
        verify_record(doc, PINNED, algs=algs)


def test_an_ed25519_approval_named_p256_does_not_count():
    doc = copy.deepcopy(_record())
    doc["approvals"][0]["alg"] = P256
    with pytest.raises(IntegrityError, match="1 of 2"):
        verify_record(doc, PINNED, algs={PAT.public: P256})
