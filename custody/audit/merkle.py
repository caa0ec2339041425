"""RFC 9162 Merkle trees: leaf and node hashing, roots, inclusion and consistency proofs.

Ceremony transcripts (:mod:`ceremonies.transcript`) and the operational audit log
(:mod:`custody.audit`) both commit to their entries with the Certificate Transparency v2
tree of RFC 9162 §2.1, so that one checkpoint (tree size + root hash) proves both that an
entry is in the log (inclusion, §2.1.3) and that a later log only appended to an earlier
one (consistency, §2.1.4). Verification follows the RFC's §2.1.3.2 and §2.1.4.2
algorithms literally. Everything here is pure and works on 32-byte SHA-256 hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from custody.errors import IntegrityError

HASH_LEN = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({}) = HASH()


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 §2.1.1: ``HASH(0x00 || d)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: ``HASH(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than *n* (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """An append-only accumulator of the perfect subtrees of a growing tree.

    ``root()`` is the RFC 9162 root of everything appended so far, in O(log n), so a
    verifier can take the root at every checkpoint in one pass over the leaves.
    """

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (height, hash), heights strictly decreasing
        self.size = 0

    def append_hash(self, lh: bytes) -> None:
        """Append a leaf given its leaf hash."""
        h, height = lh, 0
        while self._stack and self._stack[-1][0] == height:
            _, left = self._stack.pop()
            h = node_hash(left, h)
            height += 1
        self._stack.append((height, h))
        self.size += 1

    def append_subtree(self, height: int, h: bytes) -> None:
        """Append the perfect subtree of ``2**height`` leaves whose hash is *h*; the size so
        far must be a multiple of ``2**height`` (the subtree is aligned in the tree).

        Raises:
            ValueError: the subtree would not be aligned.
        """
        if self.size % (1 << height):
            raise ValueError("an unaligned subtree")
        self.size += 1 << height
        while self._stack and self._stack[-1][0] == height:
            _, left = self._stack.pop()
            h = node_hash(left, h)
            height += 1
        self._stack.append((height, h))

    def root(self, extra: Sequence[tuple[int, bytes]] = ()) -> bytes:
        """The root over all leaves so far (``EMPTY_ROOT`` when empty), or over them and
        the perfect subtrees *extra* ``(height, hash)`` appended after them, heights
        decreasing and each smaller than the frontier's smallest (the frontier unchanged)."""
        stack = [*self._stack, *extra] if extra else self._stack
        if not stack:
            return EMPTY_ROOT
        r = stack[-1][1]
        for _, h in reversed(stack[:-1]):
            r = node_hash(h, r)
        return r


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """RFC 9162 root (MTH) of a sequence of leaf hashes."""
    f = Frontier()
    for lh in leaf_hashes:
        f.append_hash(lh)
    return f.root()


class MerkleTree:
    """A growing tree of leaf hashes with cached levels, for producing proofs.

    Each level ``k`` holds the hashes of the complete, aligned subtrees of ``2**k`` leaves,
    so any RFC 9162 subtree hash is assembled in O(log n) and every proof in O(log² n).
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self.size = 0
        self._levels: list[list[bytes]] = [[]]
        for lh in leaf_hashes:
            self.append(lh)

    def append(self, lh: bytes) -> None:
        """Append one leaf hash, completing any aligned subtrees it closes (amortised O(1))."""
        self._levels[0].append(lh)
        self.size += 1
        k = 0
        while len(self._levels[k]) % 2 == 0:
            lvl = self._levels[k]
            if k + 1 == len(self._levels):
                self._levels.append([])
            self._levels[k + 1].append(node_hash(lvl[-2], lvl[-1]))
            k += 1

    def leaf(self, index: int) -> bytes:
        """The leaf hash at *index*."""
        return self._levels[0][index]

    def _mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            k = n.bit_length() - 1
            return self._levels[k][lo >> k]
        k = _split(n)
        return node_hash(self._mth(lo, lo + k), self._mth(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        """Root of the first *size* leaves (default: all)."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError("size out of range")
        return self._mth(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH(index, D[0:size]).

        Raises:
            ValueError: ``index`` is not below ``size`` or ``size`` exceeds the tree.
        """
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ValueError("leaf index or tree size out of range")
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._mth(lo, lo + k))
                lo = lo + k
        path.reverse()
        return path

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF(first, D[0:second]); empty when first is 0 or equal.

        Raises:
            ValueError: ``first > second`` or ``second`` exceeds the tree.
        """
        second = self.size if second is None else second
        if not 0 <= first <= second <= self.size:
            raise ValueError("tree sizes out of range")
        if first == 0 or first == second:
            return []
        return self._subproof(first, 0, second, True)

    def _subproof(self, m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if whole else [self._mth(lo, hi)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, whole), self._mth(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, False), self._mth(lo, lo + k)]


def _fail(what: str) -> IntegrityError:
    return IntegrityError(
        f"Merkle {what} proof does not verify",
        "The entry, the proof or the checkpoint was altered or mismatched.",
    )


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify an inclusion proof per RFC 9162 §2.1.3.2. *leaf* is the leaf hash.

    Raises:
        IntegrityError: the proof does not show *leaf* at *index* in the tree of *root*.
    """
    if index >= size or index < 0:
        raise _fail("inclusion")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise _fail("inclusion")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise _fail("inclusion")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Verify a consistency proof per RFC 9162 §2.1.4.2.

    Sizes 0 and equal sizes take an empty proof (equal sizes need equal roots).

    Raises:
        IntegrityError: the second tree is not an append-only extension of the first.
    """
    if first < 0 or first > second:
        raise _fail("consistency")
    if first == second:
        if proof or first_root != second_root:
            raise _fail("consistency")
        return
    if first == 0:
        if proof:
            raise _fail("consistency")
        return
    if not proof:
        raise _fail("consistency")
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: prepend first_hash
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise _fail("consistency")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if fr != first_root or sr != second_root or sn != 0:
        raise _fail("consistency")
