"""SLIP-0039: official vectors, compatibility both ways with the reference, diagnostics,
and Hypothesis properties of thresholds and group arrangements."""

from __future__ import annotations

import itertools
import json
import random

import pytest
import shamir_mnemonic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shamir_mnemonic.wordlist import WORDLIST

from custody.errors import ShareError
from custody.shares import slip39
from tests.conftest import VECTORS


def _vectors():
    data = json.loads((VECTORS / "slip39-vectors.json").read_text())
    return [pytest.param(ms, secret, id=desc) for desc, ms, secret, _xprv in data]


@pytest.mark.parametrize(("mnemonics", "secret"), _vectors())
def test_official_vector(mnemonics, secret):
    if secret:
        assert slip39.combine(mnemonics, b"TREZOR").hex() == secret
    else:  # an empty master secret means the set must be rejected
        with pytest.raises(ShareError) as ei:
            slip39.combine(mnemonics, b"TREZOR")
        assert ei.value.title and ei.value.hint
        for m in mnemonics:  # no run of share words in the error
            assert_no_words(m, ei.value.title + " " + ei.value.hint)


def test_vectors_file_is_complete():
    data = json.loads((VECTORS / "slip39-vectors.json").read_text())
    assert len(data) == 45
    assert sum(1 for d in data if not d[2]) >= 20


def assert_no_words(mnemonic: str, text: str) -> None:
    """No two consecutive words of *mnemonic* appear in *text* (single words such as
    'group' are ordinary English)."""
    w = mnemonic.split()
    for a, b in itertools.pairwise(w):
        assert f"{a} {b}" not in text.lower()


def rng_from(seed: int):
    r = random.Random(seed)
    return lambda n: r.randbytes(n)  # InsecureSeededRng: tests only


@pytest.mark.parametrize("ext", [True, False])
@pytest.mark.parametrize("size", [16, 32])
def test_reference_combines_ours_and_we_combine_theirs(ext, size):
    secret = bytes(range(size))
    ours = slip39.split(
        secret,
        groups=[(2, 3), (3, 5)],
        group_threshold=2,
        passphrase=b"pw",
        extendable=ext,
        iteration_exponent=0,
        rng=rng_from(size),
    )
    picked = [ours[0][2], ours[0][0], ours[1][4], ours[1][1], ours[1][3]]
    assert shamir_mnemonic.combine_mnemonics(picked, b"pw") == secret
    theirs = shamir_mnemonic.generate_mnemonics(
        2, [(2, 3), (3, 5)], secret, b"pw", extendable=ext, iteration_exponent=0
    )
    assert (
        slip39.combine(
            [theirs[1][0], theirs[1][2], theirs[1][4], theirs[0][1], theirs[0][2]], b"pw"
        )
        == secret
    )


def test_seeded_split_is_deterministic_and_reference_decodes_params():
    a = slip39.split(b"\x11" * 16, groups=[(3, 5)], rng=rng_from(7), iteration_exponent=0)
    b = slip39.split(b"\x11" * 16, groups=[(3, 5)], rng=rng_from(7), iteration_exponent=0)
    assert a == b
    s = shamir_mnemonic.Share.from_mnemonic(a[0][3])
    assert (s.index, s.member_threshold, s.group_count, s.extendable) == (3, 3, 1, True)


SHARES = slip39.split(bytes(range(32)), groups=[(3, 5)], rng=rng_from(1), iteration_exponent=0)[0]


@pytest.mark.parametrize("pos", range(1, 34))
def test_checksum_failure_locates_single_wrong_word(pos):
    words = SHARES[0].split()
    words[pos - 1] = WORDLIST[(WORDLIST.index(words[pos - 1]) + 517) % 1024]
    with pytest.raises(slip39.ShareChecksumError) as ei:
        slip39.parse_share(" ".join(words), label="alice.txt:4")
    assert ei.value.position == pos
    assert ei.value.title == f"alice.txt:4: checksum failure; word {pos} looks wrong"


def test_two_wrong_words_are_not_located():
    words = SHARES[0].split()
    words[4], words[9] = WORDLIST[3], WORDLIST[5]
    with pytest.raises(slip39.ShareChecksumError) as ei:
        slip39.parse_share(" ".join(words))
    assert ei.value.position is None and "more than one word" in ei.value.title


def test_unknown_and_short_words_name_the_position_not_the_word():
    words = SHARES[0].split()
    words[6] = "qqzzyx"
    with pytest.raises(slip39.ShareWordError) as ei:
        slip39.combine([" ".join(words)])
    assert (ei.value.position, ei.value.share) == (7, "share 1")
    assert "qqzzyx" not in str(ei.value)
    words[6] = "ab"
    with pytest.raises(slip39.ShareWordError, match="too short"):
        slip39.parse_share(" ".join(words))


def test_four_letter_prefixes_and_case_are_accepted():
    typed = [" ".join(w[:4].upper() for w in s.split()) for s in SHARES[1:4]]
    assert slip39.combine(typed) == bytes(range(32))
    assert slip39.parse_share(typed[0]).mnemonic == SHARES[1]


def test_diagnostics_name_the_share():
    other = slip39.split(bytes(32), groups=[(3, 5)], rng=rng_from(2), iteration_exponent=0)[0]
    with pytest.raises(slip39.ShareSetMismatch) as ei:
        slip39.combine([SHARES[0], SHARES[1], other[2]])
    assert ei.value.share == "share 3"
    with pytest.raises(slip39.DuplicateShareIndex, match="share 3 is the same share as share 1"):
        slip39.combine([SHARES[0], SHARES[1], SHARES[0]])
    with pytest.raises(slip39.InsufficientShares, match="1 more share required"):
        slip39.combine(SHARES[:2])
    with pytest.raises(slip39.ShareLengthError, match="19 words"):
        slip39.combine([" ".join(SHARES[0].split()[:19])])


def test_surplus_share_that_disagrees_is_named():
    other = slip39.split(
        bytes(range(32)), groups=[(3, 5)], rng=rng_from(1), iteration_exponent=0, passphrase=b"x"
    )[0]
    # same identifier (same seed) but another polynomial: checksum-valid, wrong value
    assert other[4] != SHARES[4]
    with pytest.raises(slip39.ShareDigestError) as ei:
        slip39.combine([SHARES[0], SHARES[1], SHARES[2], other[4]])
    assert ei.value.share == "share 4"


def test_group_diagnostics_say_how_many_more_per_group():
    g = slip39.split(
        bytes(16),
        groups=[(2, 3), (3, 5), (1, 1)],
        group_threshold=3,
        rng=rng_from(3),
        iteration_exponent=0,
    )
    with pytest.raises(slip39.InsufficientShares) as ei:
        slip39.combine([g[0][0], g[1][0], g[1][1], g[2][0]])
    t = ei.value.title
    assert "group 1 needs 1 more (1 of 2)" in t and "group 2 needs 1 more (2 of 3)" in t
    assert "group 3 complete" in t


def test_split_rejects_bad_parameters():
    for kw in (
        {"groups": [(3, 2)]},
        {"groups": [(1, 3)]},
        {"groups": [(2, 3)], "group_threshold": 2},
        {"groups": [(2, 17)]},
    ):
        with pytest.raises(ValueError):
            slip39.split(bytes(16), **kw)
    for bad in (bytes(15), bytes(17), bytes(34)):
        with pytest.raises(ValueError):
            slip39.split(bad, groups=[(2, 3)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_t_of_n_in_any_order_recovers(data):
    n = data.draw(st.integers(1, 16))
    t = data.draw(st.integers(2, n)) if n > 1 else 1
    secret = data.draw(st.binary(min_size=8, max_size=16)) * 2
    shares = slip39.split(
        secret, groups=[(t, n)], rng=rng_from(data.draw(st.integers())), iteration_exponent=0
    )[0]
    k = data.draw(st.integers(t, n))
    chosen = data.draw(st.permutations(shares))[:k]
    assert slip39.combine(chosen) == secret
    if t > 1:
        fewer = chosen[: data.draw(st.integers(1, t - 1))]
        with pytest.raises(slip39.InsufficientShares):
            slip39.combine(fewer)


@st.composite
def arrangements(draw):
    groups = []
    for _ in range(draw(st.integers(1, 5))):
        n = draw(st.integers(1, 5))
        groups.append((draw(st.integers(2, n)) if n > 1 else 1, n))
    return draw(st.integers(1, len(groups))), groups


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrangements(), st.data())
def test_any_group_arrangement_recovers_and_short_sets_fail(arr, data):
    gt, groups = arr
    secret = data.draw(st.binary(min_size=16, max_size=16))
    out = slip39.split(
        secret,
        groups=groups,
        group_threshold=gt,
        iteration_exponent=0,
        rng=rng_from(data.draw(st.integers())),
    )
    order = data.draw(st.permutations(range(len(groups))))
    chosen = []
    for gi in order[:gt]:
        t = groups[gi][0]
        chosen += data.draw(st.permutations(out[gi]))[: data.draw(st.integers(t, groups[gi][1]))]
    assert slip39.combine(data.draw(st.permutations(chosen))) == secret
    # drop one group entirely (or one share of a group): never enough
    short = [m for m in chosen if not m.startswith(" ".join(out[order[0]][0].split()[:3]))]
    if gt > 0 and short != chosen:
        with pytest.raises(ShareError):
            slip39.combine(short)
