"""Attacks on grant records with ECDSA P-256 approvals (custody/access/records.py
verify_record), by someone who holds one approver's valid record and can edit it: a
malleated ECDSA signature (r, n-s), the same approval listed again under the other
algorithm, and a P-256 key pinned for one name signing as another. None may make a
second approver. Pure records, signed with ``cryptography`` keys."""

from __future__ import annotations

import copy

import pytest

from custody.access.records import verify_record
from custody.errors import IntegrityError
from tests.custody.access.test_record_algorithms import ED, P256, PAT, PINNED, _record

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 order
ALGS = {PAT.public: P256}


def _only_pat() -> tuple[dict, dict]:
    doc = copy.deepcopy(_record())
    pat = next(a for a in doc["approvals"] if a["approver"] == "pat")
    doc["approvals"] = [pat]
    return doc, pat


def _malleated(sig_hex: str) -> str:
    raw = bytes.fromhex(sig_hex)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    return (r.to_bytes(32, "big") + (N - s).to_bytes(32, "big")).hex()


def test_a_malleated_ecdsa_signature_is_not_a_second_approval():
    doc, pat = _only_pat()
    twin = dict(pat, sig=_malleated(pat["sig"]))
    doc["approvals"].append(twin)
    with pytest.raises(IntegrityError, match="1 of 2"):
        verify_record(doc, PINNED, algs=ALGS)
    # the twin alone: counts as pat at most (never as anyone else)
    doc["approvals"] = [twin]
    try:
        got = verify_record(dict(doc, request=dict(doc["request"], needed=1)), PINNED,
                            algs=ALGS, high_approvers=1)  # fmt: skip
    except IntegrityError:
        return  # high-s refused outright: also fine
    assert got["approvers"] == ["pat"]


def test_the_same_approval_under_two_algorithms_counts_once():
    doc, pat = _only_pat()
    as_ed = {k: v for k, v in pat.items() if k != "alg"}
    doc["approvals"].append(as_ed)
    with pytest.raises(IntegrityError, match="1 of 2"):
        verify_record(doc, PINNED, algs=ALGS)


def test_a_p256_key_pinned_for_one_name_cannot_sign_as_another():
    doc, pat = _only_pat()
    doc["approvals"].append(dict(pat, approver="ed"))
    with pytest.raises(IntegrityError, match="1 of 2"):
        verify_record(doc, PINNED, algs=ALGS)
    # and pinned under both names: one key is still one approver
    with pytest.raises(IntegrityError, match="1 of 2"):
        verify_record(doc, {**PINNED, PAT.public: "pat"}, algs=ALGS)


def test_an_ed25519_key_named_p256_with_a_p256_pin_for_it_does_not_count():
    """The verifier told (wrongly) that ed's key is P-256: an Ed25519 signature still never
    verifies as ECDSA, so it does not count."""
    doc = copy.deepcopy(_record())
    doc["approvals"][0]["alg"] = P256
    with pytest.raises(IntegrityError, match="1 of 2"):
        verify_record(doc, PINNED, algs={**ALGS, ED.public: P256})
