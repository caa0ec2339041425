"""The hashing half of ``audit verify``, run on a second core (``python -m`` this module).

:class:`custody.audit.verify.LogVerifier` with ``parallel=True`` checks every line's
canonical form, ``seq`` and ``log`` itself, and sends the lines, with the ``prev`` field it
read from each, to this process in batches. This process recomputes the chain (one SHA-256
per line), compares each ``prev`` with the chain hash of the line before it, and keeps the
RFC 9162 Merkle frontier (a leaf hash and about one node hash per line), recording the root
and the chain head at every tree size it was asked about. Split this way, the two halves
cost about the same, so on two free cores the verifier runs at nearly twice the speed of
one process doing all of it.

Only the standard library is imported, so the process starts in tens of milliseconds.

Protocol (stdin, then stdout), frames of a 4-byte big-endian length and a payload:
  * first frame: JSON ``{"genesis": hex, "sizes": [int, ...], "start": int}``;
  * then batches: ``count`` (4 bytes), ``count`` line lengths (4 bytes each, big-endian),
    ``count`` prev fields of 64 bytes (``SKIP`` where the caller already reported the
    line), then the lines back to back;
  * an empty frame ends the input. The answer is one JSON object: ``entries``, ``head``,
    ``roots`` and ``heads`` (size -> hex), ``problems`` (``[index, text]``, at most
    ``limit``) and ``more`` (problems beyond the limit).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import sys
from array import array
from typing import IO, Any

TAG_CHAIN = b"custody/audit/chain/v1"  # custody.audit.records.TAG_CHAIN
SKIP = b"*" * 64  # the caller reported this line already; no chain-link check
LIMIT = 50


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


def pack_batch(lines: list[bytes], prevs: list[bytes]) -> bytes:
    """One batch frame's payload (see the module doc)."""
    lens = array("I", map(len, lines))
    if sys.byteorder == "little":
        lens.byteswap()
    return len(lines).to_bytes(4, "big") + lens.tobytes() + b"".join(prevs) + b"".join(lines)


class ChainWork:
    """The chain and the Merkle frontier over batches of lines (see the module doc)."""

    def __init__(self, genesis: bytes, sizes: list[int], start: int = 0) -> None:
        self.i = start
        self.head = genesis
        self.stack: list[tuple[int, bytes]] = []
        self.want = sorted({s for s in sizes if s > start}, reverse=True)
        self.roots: dict[int, bytes] = {}
        self.heads: dict[int, bytes] = {}
        self.problems: list[tuple[int, str]] = []
        self.more = 0

    def problem(self, i: int, text: str) -> None:
        if len(self.problems) < LIMIT:
            self.problems.append((i, text))
        else:
            self.more += 1

    def root(self) -> bytes:
        if not self.stack:
            return hashlib.sha256(b"").digest()
        r = self.stack[-1][1]
        for _, h in reversed(self.stack[:-1]):
            r = hashlib.sha256(b"\x01" + h + r).digest()
        return r

    def batch(self, data: bytes) -> None:
        count = int.from_bytes(data[:4], "big")
        lens = array("I")
        lens.frombytes(data[4 : 4 + 4 * count])
        if sys.byteorder == "little":
            lens.byteswap()
        p0 = 4 + 4 * count
        prevs = data[p0 : p0 + 64 * count]
        off = p0 + 64 * count
        sha = hashlib.sha256
        prefix = len(TAG_CHAIN).to_bytes(2, "big") + TAG_CHAIN
        lb: dict[int, bytes] = {}
        i, head, stack, want = self.i, self.head, self.stack, self.want
        nxt = want[-1] if want else -1
        heads = [head]
        for n in lens:
            line = data[off : off + n]
            off += n
            ln = lb.get(n)
            if ln is None:
                ln = lb[n] = prefix + n.to_bytes(8, "big")
            head = sha(ln + line).digest()
            heads.append(head)
            i += 1
            if nxt >= 0:
                h, height = sha(b"\x00" + line).digest(), 0
                while stack and stack[-1][0] == height:
                    h = sha(b"\x01" + stack.pop()[1] + h).digest()
                    height += 1
                stack.append((height, h))
                if i == nxt:
                    self.roots[i] = self.root()
                    self.heads[i] = head
                    want.pop()
                    nxt = want[-1] if want else -1
        heads.pop()  # the chain hash each line's prev must name: the one before it
        if binascii.hexlify(b"".join(heads)) != prevs:
            self._links(prevs, heads)
        self.i, self.head = i, head

    def _links(self, prevs: bytes, heads: list[bytes]) -> None:
        base = self.i
        for k, h in enumerate(heads):
            p = prevs[64 * k : 64 * k + 64]
            if p != SKIP and p != binascii.hexlify(h):
                self.problem(base + k, f"entry {base + k} breaks the chain (seq {base + k})")

    def result(self) -> dict[str, Any]:
        return {
            "entries": self.i,
            "head": self.head.hex(),
            "roots": {str(k): v.hex() for k, v in self.roots.items()},
            "heads": {str(k): v.hex() for k, v in self.heads.items()},
            "problems": self.problems,
            "more": self.more,
        }


def main() -> int:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    first = read_frame(inp)
    if first is None:
        return 2
    cfg = json.loads(first)
    work = ChainWork(bytes.fromhex(cfg["genesis"]), list(cfg["sizes"]), int(cfg["start"]))
    while True:
        data = read_frame(inp)
        if data is None:
            return 2  # the caller went away mid-stream: no answer
        if not data:
            break
        work.batch(data)
    out.write(frame(json.dumps(work.result()).encode()))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
