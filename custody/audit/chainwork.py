"""The block verifier of ``audit verify``, run in this process and on a second core.

:class:`custody.audit.verify.LogVerifier` cuts the log into blocks of :data:`BLOCK` entries
aligned on multiples of :data:`BLOCK` (so a full block is one perfect RFC 9162 subtree) and
verifies each with :func:`check_block`, either itself or in a worker process that runs this
module from its own source (``python -I -c``); it sends the worker blocks while the
worker keeps up and verifies the others itself, then joins the blocks' results in order.

A block is independent of the others: a line's chain hash depends on that line alone (the
link is the ``prev`` field inside the next line), so a block needs only the chain hash of
the line before it (``head_in``). :func:`check_block` runs the log's entry expression once
over the block's lines joined by newlines (``findall`` with ``^...$`` per line: exactly
*n* matches over *n* lines with *n* - 1 newlines means every line matched in full), hashes
every line for the chain and the Merkle leaves, compares every ``prev`` with the chain hash
before it as one hex string, and every ``seq`` as one string. When all of that holds,
every line passed the same fast check the one-line path applies. When any of it fails,
each line is checked on its own, and the lines that fail the fast check are returned, with
the chain hash before each, for the full check (``json`` and the RFC 8785 encoder), which
runs in the calling process. The block's Merkle subtree is built level by level, and its
decomposition into perfect subtrees returned (with the one at each tree size asked about).

Only the standard library is imported, so the process starts in tens of milliseconds.

Worker protocol (stdin, then stdout), frames of a 4-byte big-endian length and a payload:
  * first frame: JSON ``{"pattern": hex}`` (the source of the log's block expression);
  * then each block in two frames: :data:`HEADER` (first seq, count, Merkle wanted,
    ``head_in``, number of wanted offsets), the wanted offsets and the line lengths (4
    bytes each); then the lines joined by newlines. Each block is answered, in order, by
    one JSON frame (:func:`encode_result`);
  * an empty frame ends the input.
"""

from __future__ import annotations

import binascii
import gc
import hashlib
import itertools
import json
import operator
import re
import struct
import sys
from array import array
from collections.abc import Sequence
from typing import IO, Any

TAG_CHAIN = b"custody/audit/chain/v1"  # custody.audit.records.TAG_CHAIN
BLOCK = 1024  # entries per block: a power of two
HEADER = struct.Struct(">QIB32sH")  # first seq, count, merkle, head_in, wanted offsets
KEYS = 6  # details keys captured by the entry expression (groups 1..KEYS)
PREV, SEQ = KEYS, KEYS + 1  # indexes of the prev and seq groups in a match's groups


def read_frame(f: IO[bytes]) -> bytes | None:
    head = f.read(4)
    if len(head) < 4:
        return None
    n = int.from_bytes(head, "big")
    data = f.read(n)
    if len(data) < n:
        return None
    return data


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


class _Prefixes(dict[int, bytes]):
    """The chain hash's prefix for each line length (``custody.canonical.domain_hash``)."""

    def __missing__(self, n: int) -> bytes:
        v = len(TAG_CHAIN).to_bytes(2, "big") + TAG_CHAIN + n.to_bytes(8, "big")
        if len(self) < 4096:
            self[n] = v
        return v


_PREFIX = _Prefixes()


def chain_of(line: bytes) -> bytes:
    """The chain hash of *line* (``custody.audit.records.chain_hash``)."""
    return hashlib.sha256(_PREFIX[len(line)] + line).digest()


def keys_sorted(keys: Sequence[bytes | None]) -> bool:
    """Whether the captured details keys (each with its opening quote; absent ones None or
    empty, and only trailing) strictly increase, as RFC 8785 orders them (bytewise equals
    UTF-16 order for ASCII; the common leading quote changes no comparison)."""
    ks = [k for k in keys if k]
    return all(a < b for a, b in itertools.pairwise(ks))


Stack = list[tuple[int, bytes]]  # perfect subtrees (height, hash), heights decreasing
# a block's result: head, subtrees, (offset, head, subtrees) asked about, (offset, line,
# chain hash before it) failing the fast check
Result = tuple[bytes, Stack, list[tuple[int, bytes, Stack]], list[tuple[int, bytes, bytes]]]


def _decompose(levels: list[list[bytes]], k: int) -> Stack:
    """The perfect subtrees of the first *k* leaves of a block, from its levels."""
    out: Stack = []
    off = 0
    for h in range(len(levels) - 1, -1, -1):
        if k >> h & 1:
            out.append((h, levels[h][off >> h]))
            off += 1 << h
    return out


_COL = [operator.itemgetter(j) for j in range(SEQ + 1)]


def _block_keys_sorted(found: list[tuple[bytes, ...]]) -> bool:
    """:func:`keys_sorted` for every match of a block: column by column while every line
    has the next key or none has it, else once per distinct tuple of keys."""
    prev = list(map(_COL[0], found))
    for j in range(1, KEYS):
        nxt = list(map(_COL[j], found))
        if not any(nxt):  # no line has key j, nor any after it
            return True
        if not all(nxt):
            return all(map(keys_sorted, {t[:KEYS] for t in found}))
        if not all(map(operator.lt, prev, nxt)):
            return False
        prev = nxt
    return True


def _split(blob: bytes, lens: Sequence[int]) -> list[bytes]:
    out, off = [], 0
    for n in lens:
        out.append(blob[off : off + n])
        off += n + 1
    return out


def check_block(
    pat: re.Pattern[bytes],
    blob: bytes,
    i0: int,
    head_in: bytes,
    *,
    lines: list[bytes] | None = None,
    lens: Sequence[int] = (),
    merkle: bool = True,
    wants: Sequence[int] = (),
) -> Result:
    """Verify one block (see the module doc): the lines joined by ``\\n`` (*blob*), as a
    list (*lines*) or by their lengths (*lens*), the first being entry *i0*, after chain
    hash *head_in*. *wants* are offsets 1..n whose tree and chain head are asked about.

    Returns ``(head, tree, at, bad)``: the chain hash of the last line; the block's perfect
    subtrees (none without *merkle*, and then none in *at* either); for each
    wanted offset ``(k, chain head after k lines, subtrees of the first k leaves)``; and
    ``(offset, line, chain hash before it)`` for each line that fails the fast check.
    """
    n = len(lines) if lines is not None else len(lens)
    found = pat.findall(blob)
    clean = len(found) == n and blob.count(b"\n") == n - 1
    if lines is None:
        lines = blob.split(b"\n") if clean else _split(blob, lens)
    sha, pre = hashlib.sha256, _PREFIX
    heads = [sha(pre[len(ln)] + ln).digest() for ln in lines]
    if clean:
        last = heads.pop()
        links = binascii.hexlify(head_in + b"".join(heads))
        heads.append(last)
        clean = (
            b"".join(map(_COL[PREV], found)) == links
            and b",".join(map(_COL[SEQ], found)) == (b"%d," * n % tuple(range(i0, i0 + n)))[:-1]
            and _block_keys_sorted(found)
        )
    bad: list[tuple[int, bytes, bytes]] = []
    if not clean:
        fm = pat.fullmatch
        h = head_in
        for k, ln in enumerate(lines):
            m = fm(ln)
            if (
                m is None
                or m[PREV + 1] != binascii.hexlify(h)
                or m[SEQ + 1] != b"%d" % (i0 + k)
                or not keys_sorted(m.groups()[:KEYS])
            ):
                bad.append((k, ln, h))
            h = heads[k]
    head = heads[-1] if heads else head_in
    if not merkle:
        return head, [], [(k, heads[k - 1], []) for k in wants], bad
    lvl = [sha(b"\x00" + ln).digest() for ln in lines]
    levels = [lvl]
    while len(lvl) > 1:
        it = iter(lvl)
        lvl = [sha(b"\x01" + a + b).digest() for a, b in zip(it, it, strict=False)]
        levels.append(lvl)
    at = [(k, heads[k - 1], _decompose(levels, k)) for k in wants]
    return head, _decompose(levels, n), at, bad


def pack_block(
    i0: int, head_in: bytes, lens: array[int], blob: bytes, merkle: bool, wants: Sequence[int]
) -> list[bytes]:
    """A block's two frames (see the module doc), in pieces: the header with the wanted
    offsets and the line lengths (*lens*, native order), then the lines joined by newlines."""
    ws = array("I", wants)
    if sys.byteorder == "little":
        lens = array("I", lens)
        lens.byteswap()
        ws.byteswap()
    hdr = HEADER.pack(i0, len(lens), merkle, head_in, len(wants))
    meta = hdr + ws.tobytes() + lens.tobytes()
    return [len(meta).to_bytes(4, "big"), meta, len(blob).to_bytes(4, "big"), blob]


def _unpack_block(data: bytes) -> tuple[int, bool, bytes, list[int], array[int]]:
    i0, n, merkle, head_in, nw = HEADER.unpack_from(data)
    off = HEADER.size
    ws, lens = array("I"), array("I")
    ws.frombytes(data[off : off + 4 * nw])
    off += 4 * nw
    lens.frombytes(data[off : off + 4 * n])
    if sys.byteorder == "little":
        ws.byteswap()
        lens.byteswap()
    return i0, bool(merkle), head_in, list(ws), lens


def encode_result(r: Result) -> bytes:
    head, tree, at, bad = r
    return json.dumps(
        {
            "head": head.hex(),
            "tree": [[h, x.hex()] for h, x in tree],
            "at": [[k, hk.hex(), [[h, x.hex()] for h, x in st]] for k, hk, st in at],
            "bad": [[k, ln.hex(), h.hex()] for k, ln, h in bad],
        }
    ).encode()


def decode_result(data: bytes) -> Result:
    d = json.loads(data)
    hx = bytes.fromhex

    def st(v: list[list[Any]]) -> Stack:
        return [(int(h), hx(x)) for h, x in v]

    return (
        hx(d["head"]),
        st(d["tree"]),
        [(int(k), hx(hk), st(s)) for k, hk, s in d["at"]],
        [(int(k), hx(ln), hx(h)) for k, ln, h in d["bad"]],
    )


def main() -> int:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    first = read_frame(inp)
    if first is None:
        return 2
    cfg = json.loads(first)
    pat = re.compile(bytes.fromhex(cfg["pattern"]))
    gc.disable()  # a block's findall keeps thousands of tuples alive; nothing makes cycles
    while True:
        data = read_frame(inp)
        if data is None:
            return 2  # the caller went away mid-stream: no answer
        if not data:
            return 0
        i0, merkle, head_in, wants, lens = _unpack_block(data)
        blob = read_frame(inp)
        if blob is None:
            return 2
        r = check_block(pat, blob, i0, head_in, lens=lens, merkle=merkle, wants=wants)
        del blob
        out.write(frame(encode_result(r)))
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
