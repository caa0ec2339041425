"""Attacks on secret exports signed by ECDSA P-256 keys (custody/secrets/transfer.py,
open_export), by whoever can edit the export file in transit: the header's sender swapped
to another pinned key of the other algorithm, the algorithm name moved between two pinned
senders, a malleated ECDSA signature (r, n-s), and a verifier whose pins name one key
under both algorithms. Each is refused, or (the malleated signature) opens exactly the
items the sender sealed, never others."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from custody.canonical import canonical_bytes
from custody.errors import IntegrityError
from custody.secrets.transfer import ExportItem, open_export, seal_export
from tests.custody.access.test_attack_record_algorithms import N
from tests.custody.access.test_record_algorithms import ED, P256, PAT

RCPT = X25519PrivateKey.generate()
ITEMS = [ExportItem(env="prod", path="a/b", category="api-key", owner="o", value="V-1!x")]


def _raw(k):
    from cryptography.hazmat.primitives import serialization

    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _export(signer, alg):
    return json.loads(
        seal_export(
            ITEMS,
            _raw(RCPT),
            sender_public=signer.public,
            sign=signer.sign,
            now=1_800_000_000,
            sender_alg=alg,
        )
    )


def _open(doc, algs):
    return open_export(canonical_bytes(doc), RCPT, trusted_senders=[ED.public, PAT.public],
                       sender_algs=algs)  # fmt: skip


def test_the_sender_swapped_to_the_other_pinned_key_is_refused():
    doc = _export(PAT, P256)
    doc["header"]["sender"] = ED.public.hex()
    del doc["header"]["sender_alg"]
    with pytest.raises(IntegrityError):
        _open(doc, {PAT.public: P256})
    doc = _export(ED, "ed25519")
    doc["header"]["sender"] = PAT.public.hex()
    doc["header"]["sender_alg"] = P256
    with pytest.raises(IntegrityError):
        _open(doc, {PAT.public: P256})


def test_a_malleated_ecdsa_signature_opens_only_what_was_sealed():
    doc = _export(PAT, P256)
    raw = bytes.fromhex(doc["signature"])
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    doc["signature"] = (r.to_bytes(32, "big") + (N - s).to_bytes(32, "big")).hex()
    try:
        header, items = _open(doc, {PAT.public: P256})
    except IntegrityError:
        return  # refused outright: also fine
    assert items == ITEMS and header["sender"] == PAT.public.hex()


@pytest.mark.parametrize("pinned_as", ["ed25519", "rsa", None])
def test_a_p256_export_under_any_other_pin_is_refused(pinned_as):
    doc = _export(PAT, P256)
    with pytest.raises(IntegrityError):
        _open(doc, {} if pinned_as is None else {PAT.public: pinned_as})


def test_an_ed25519_export_claiming_p256_is_refused_even_when_pinned_so():
    doc = _export(ED, "ed25519")
    doc["header"]["sender_alg"] = P256
    with pytest.raises(IntegrityError):
        _open(doc, {ED.public: P256, PAT.public: P256})
