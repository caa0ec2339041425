"""Tens of thousands of random mutations of mnemonics, envelopes, sealed shares and transport
blobs: each is either refused with a typed error or yields exactly the original value.
Never another exception, never a wrong secret. A fast seeded loop does the bulk; Hypothesis
adds shrinking search on word-level edits."""

from __future__ import annotations

import json
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shamir_mnemonic.wordlist import WORDLIST

from custody.canonical import canonical_bytes
from custody.errors import ShareError
from custody.shares import envelope as ev
from custody.shares import seal, slip39, transport
from custody.signing import public_raw

R = random.Random(2024)
SECRET = bytes(range(100, 132))
SHARES = slip39.split(SECRET, groups=[(3, 5)], iteration_exponent=0, rng=lambda n: R.randbytes(n))[
    0
]
DEALER = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
FAST = seal.Argon2Params(memory_kib=64, iterations=1, lanes=1)
CANARY = "canary-passphrase-913"


def mutate_bytes(data: bytes, r: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(r.choice((1, 1, 1, 2, 3))):
        op, i = r.randrange(6), r.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[i] ^= 1 << r.randrange(8)
        elif op == 1 and b:
            b[i] = r.randrange(256)
        elif op == 2 and b:
            del b[i]
        elif op == 3:
            b.insert(i, r.randrange(256))
        elif op == 4 and b:
            j = r.randrange(len(b))
            b[i], b[j] = b[j], b[i]
        else:
            del b[r.randrange(len(b) + 1) :]
    return bytes(b)


def mutate_words(text: str, r: random.Random) -> str:
    w = text.split()
    op = r.randrange(5)
    i = r.randrange(len(w))
    if op == 0:
        w[i] = r.choice(WORDLIST)
    elif op == 1:
        j = r.randrange(len(w))
        w[i], w[j] = w[j], w[i]
    elif op == 2:
        del w[i]
    elif op == 3:
        w.insert(i, r.choice(WORDLIST))
    else:
        return mutate_bytes(text.encode(), r).decode("latin-1")
    return " ".join(w)


def test_mnemonic_mutations_never_yield_a_wrong_secret():
    r = random.Random(1)
    refused = 0
    for _ in range(12000):
        chosen = r.sample(SHARES, 3)
        k = r.randrange(3)
        chosen[k] = mutate_words(chosen[k], r)
        try:
            got = slip39.combine(chosen)
        except ShareError as exc:
            refused += 1
            assert exc.title and exc.hint
            continue
        assert got == SECRET
    assert refused > 11000


def test_envelope_mutations_are_refused_or_unchanged():
    r = random.Random(2)
    parsed = slip39.parse_share(SHARES[0])
    env = ev.make_envelope(
        parsed,
        ceremony_id="c1",
        policy_digest="ab" * 32,
        epoch=1,
        custodian="cd" * 16,
        kcv="abcdef",
        dealer=DEALER,
    )
    raw, pub = env.to_bytes(), public_raw(DEALER)
    accepted = 0
    for _ in range(10000):
        try:
            got = ev.load_envelope(mutate_bytes(raw, r))
            ev.verify_share(parsed, got, pub, expected_ceremony="c1", expected_epoch=1)
        except ShareError:
            continue
        accepted += 1
        assert got.payload == env.payload and got.signature == env.signature
    assert accepted < 500


def test_sealed_share_mutations_are_refused_or_exact():
    r = random.Random(3)
    sealed = seal.seal_with_passphrase(SHARES[1], CANARY.encode(), params=FAST)
    for _ in range(5000):
        try:
            got = seal.unseal_with_passphrase(mutate_bytes(sealed, r), CANARY.encode())
        except ShareError as exc:
            assert CANARY not in str(exc) and SHARES[1].split()[7] not in str(exc).split()
            continue
        assert got == SHARES[1]
    doc = json.loads(sealed)
    ct = seal._unb64(doc["ciphertext"])
    for _ in range(3000):  # the ciphertext itself: every change must fail the GCM tag
        doc["ciphertext"] = seal._b64(mutate_bytes(ct, r))
        try:
            got = seal.unseal_with_passphrase(canonical_bytes(doc), CANARY.encode())
        except seal.SealError:
            continue
        assert got == SHARES[1]


def test_transport_mutations_are_refused_or_exact():
    r = random.Random(4)
    coord = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
    ok = transport.make_offer(
        ceremony_id="c1", epoch=1, session="s1", coordinator=coord, now=0, ttl=100
    )
    text = ok.offer.to_text()
    blob, sas = transport.seal_to_offer(
        text, SHARES[2], trusted_coordinator=public_raw(coord), now=1, expected_session="s1"
    )
    for _ in range(6000):
        try:
            got = transport.open_blob(
                mutate_bytes(blob.encode(), r).decode("latin-1"), ok, now=2, expected_session="s1"
            )
        except ShareError:
            continue
        assert (got.share, got.sas) == (SHARES[2], sas)
    inner = canonical_bytes(transport._unarmor(blob, transport.BLOB_PREFIX))
    reached = 0
    for _ in range(6000):  # mutate inside the armor, so the crypto checks are exercised
        bad = transport.BLOB_PREFIX + transport._b64(mutate_bytes(inner, r))
        try:
            got = transport.open_blob(bad, ok, now=2, expected_session="s1")
        except transport.TransportError as exc:
            reached += exc.reason in (
                "tampered",
                "wrong-offer",
                "wrong-ceremony",
                "wrong-epoch",
                "wrong-session",
            )
            continue
        assert (got.share, got.sas) == (SHARES[2], sas)
    assert reached > 1000
    for _ in range(4000):
        try:
            bad = mutate_bytes(text.encode(), r).decode("latin-1")
            o = transport.parse_offer(bad)
            transport.verify_offer(o, public_raw(coord), now=1)
        except ShareError:
            continue
        assert o == ok.offer


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 4), st.integers(0, 32), st.sampled_from(WORDLIST))
def test_word_edits_are_diagnosed_at_the_right_place(which, pos, word):
    words = SHARES[which].split()
    if words[pos] == word:
        return
    words[pos] = word
    with pytest.raises(ShareError) as ei:
        slip39.combine([" ".join(words), *[s for i, s in enumerate(SHARES) if i != which][:2]])
    err = ei.value
    assert isinstance(err, slip39.ShareChecksumError) and err.position == pos + 1
    assert err.share == "share 1"
