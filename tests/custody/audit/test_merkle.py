"""RFC 9162 Merkle proofs against an independent, naive recomputation (every size <= 300)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custody.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from custody.errors import IntegrityError

MAX = 300


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def naive_mth(data: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, written straight from the definition over the raw entries."""
    n = len(data)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + data[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + naive_mth(data[:k]) + naive_mth(data[k:]))


def naive_path(m: int, data: list[bytes]) -> list[bytes]:
    n = len(data)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, data[:k]), naive_mth(data[k:])]
    return [*naive_path(m - k, data[k:]), naive_mth(data[:k])]


def naive_subproof(m: int, data: list[bytes], b: bool) -> list[bytes]:
    n = len(data)
    if m == n:
        return [] if b else [naive_mth(data)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, data[:k], b), naive_mth(data[k:])]
    return [*naive_subproof(m - k, data[k:], False), naive_mth(data[:k])]


DATA = [f"entry-{i}".encode() for i in range(MAX + 1)]
LEAVES = [leaf_hash(d) for d in DATA]
TREE = MerkleTree(LEAVES)
NAIVE_ROOTS = [naive_mth(DATA[:n]) for n in range(MAX + 1)]


def test_empty_root() -> None:
    assert MerkleTree([]).root() == EMPTY_ROOT == Frontier().root()


def test_roots_every_size() -> None:
    f = Frontier()
    assert f.root() == NAIVE_ROOTS[0]
    for n in range(1, MAX + 1):
        f.append_hash(LEAVES[n - 1])
        assert f.root() == NAIVE_ROOTS[n] == TREE.root(n)


def test_inclusion_every_leaf_sampled_sizes() -> None:
    for n in range(1, MAX + 1):
        root = NAIVE_ROOTS[n]
        indices = range(n) if n <= 70 or n % 17 == 0 or n == MAX else (0, n // 3, n - 1)
        for m in indices:
            proof = TREE.inclusion_proof(m, n)
            if n <= 40 or m in (0, n - 1):
                assert proof == naive_path(m, DATA[:n])
            verify_inclusion(LEAVES[m], m, n, proof, root)


def test_consistency_every_pair_sampled() -> None:
    for n in range(1, MAX + 1):
        firsts = range(n + 1) if n <= 64 or n == MAX else (1, 2, n // 2, n - 1, n)
        for m in firsts:
            proof = TREE.consistency_proof(m, n)
            if 0 < m < n and (n <= 40 or m == n // 2):
                assert proof == naive_subproof(m, DATA[:n], True)
            verify_consistency(m, n, NAIVE_ROOTS[m], NAIVE_ROOTS[n], proof)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, MAX), st.data())
def test_inclusion_rejects_tampering(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(0, n - 1))
    proof = TREE.inclusion_proof(m, n)
    root = NAIVE_ROOTS[n]
    verify_inclusion(LEAVES[m], m, n, proof, root)
    with pytest.raises(IntegrityError):
        verify_inclusion(LEAVES[m + 1], m, n, proof, root)  # wrong leaf
    with pytest.raises(IntegrityError):
        verify_inclusion(LEAVES[m], m, n, proof, NAIVE_ROOTS[n - 1] if n > 1 else b"x" * 32)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        with pytest.raises(IntegrityError):
            verify_inclusion(LEAVES[m], m, n, bad, root)
        with pytest.raises(IntegrityError):
            verify_inclusion(LEAVES[m], m, n, proof[:-1], root)
    with pytest.raises(IntegrityError):
        verify_inclusion(LEAVES[m], m, n, [*proof, root], root)
    other = data.draw(st.integers(0, n - 1))
    if other != m:
        with pytest.raises(IntegrityError):
            verify_inclusion(LEAVES[m], other, n, proof, root)


@settings(max_examples=300, deadline=None)
@given(st.integers(2, MAX), st.data())
def test_consistency_rejects_tampering(n: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(1, n - 1))
    proof = TREE.consistency_proof(m, n)
    verify_consistency(m, n, NAIVE_ROOTS[m], NAIVE_ROOTS[n], proof)
    # a first tree that is not a prefix of the second
    forged = naive_mth([*DATA[: m - 1], b"forged"])
    with pytest.raises(IntegrityError):
        verify_consistency(m, n, forged, NAIVE_ROOTS[n], proof)
    with pytest.raises(IntegrityError):
        verify_consistency(m, n, NAIVE_ROOTS[m], NAIVE_ROOTS[n - 1], proof)
    i = data.draw(st.integers(0, len(proof) - 1))
    bad = list(proof)
    bad[i] = bytes([bad[i][0] ^ 0x80]) + bad[i][1:]
    with pytest.raises(IntegrityError):
        verify_consistency(m, n, NAIVE_ROOTS[m], NAIVE_ROOTS[n], bad)
    with pytest.raises(IntegrityError):
        verify_consistency(m, n, NAIVE_ROOTS[m], NAIVE_ROOTS[n], [])


def test_bad_ranges() -> None:
    with pytest.raises(ValueError):
        TREE.inclusion_proof(5, 5)
    with pytest.raises(ValueError):
        TREE.consistency_proof(6, 5)
    with pytest.raises(IntegrityError):
        verify_inclusion(LEAVES[0], 3, 3, [], NAIVE_ROOTS[3])
    with pytest.raises(IntegrityError):
        verify_consistency(3, 3, NAIVE_ROOTS[3], NAIVE_ROOTS[3], [NAIVE_ROOTS[3]])
    with pytest.raises(IntegrityError):
        verify_consistency(4, 3, NAIVE_ROOTS[4], NAIVE_ROOTS[3], [])
