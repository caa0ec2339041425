"""Streaming verification of the audit log: one pass, flat memory, each line parsed once.

:class:`LogVerifier` takes the entries as an iterator (``feed``), keeps only the chain head
and an RFC 9162 :class:`~custody.audit.merkle.Frontier` (O(log n) hashes), and records the
Merkle root at every tree size it was asked about (the stored checkpoints, a witness
directory's checkpoints, the auditor's known checkpoint). ``finish`` then checks every
checkpoint against the roots of the entries themselves: a checkpoint whose root is the root
of the first *size* entries proves the log an append-only extension of it, which is what an
RFC 9162 consistency proof shows without the entries.

Canonical form is checked without re-encoding. Nearly every entry is *plain* (its strings
printable ASCII without quote or backslash, a flat ``details`` object of up to six such
members, small integers, booleans and nulls), and one compiled regular expression per log
accepts exactly the plain lines of the entry shape, with this log's id: each piece is then
canonical by construction (no whitespace, fixed key order, strings that need no escape,
integers without leading zeros and below 2**53), and the details' keys, captured by the
same match, get a strictly-increasing test (cached per key tuple). Any line the fast path
does not accept (escapes, non-ASCII, nested or larger details, floats) goes through the
full check: ``json.loads`` and the RFC 8785 encoder. The fast path never accepts a line the
full check would reject (tests/custody/audit/test_verify_stream.py). orjson was measured as
the alternative (its loads plus a sorted dumps, 0.96 us a line against 1.0 us for the
expression, before the type and range checks orjson would still need) and not adopted.

The entries are verified in blocks of :data:`custody.audit.chainwork.BLOCK`
(:func:`custody.audit.chainwork.check_block`: one ``findall`` of the entry expression over
the block's lines, the chain and Merkle hashes through list comprehensions, every ``prev``
and ``seq`` compared as one string), which report the same problems, in the same order, as
checking each line on its own. With ``parallel=True`` a worker process verifies blocks too:
this process reads the lines, sends the worker a block while it has fewer than
:data:`IN_FLIGHT` unanswered, verifies the others itself, and joins the blocks' chain ends
and Merkle subtrees in order.
"""

from __future__ import annotations

import fcntl
import functools
import gc
import hmac
import itertools
import json
import queue
import re
import subprocess
import sys
import threading
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

from custody.audit import chainwork
from custody.audit.merkle import EMPTY_ROOT, Frontier, leaf_hash
from custody.audit.records import (
    CHECKPOINT_TYPE,
    ENTRY_FIELDS,
    OUTCOMES,
    AuditReport,
    checkpoint_signers,
    genesis,
    seal_input,
)
from custody.audit.signers import Sealer, TrustKey
from custody.canonical import is_canonical

MAX_PROBLEMS = 50  # problems listed one by one; beyond that only counted (flat memory)

_INT = rb"(?:0|-?[1-9][0-9]{0,14})"  # |n| < 10**15 < 2**53: JCS prints it as Python does
_CH = rb"[ !#-\[\]-~]*+"  # printable ASCII but '"' and '\': canonical as it stands
_STR = rb'"' + _CH + rb'"'
_VALUE = rb"(?:" + _STR + rb"|" + _INT + rb"|true|false|null)"
_MAX_KEYS = 6  # details with more keys (rare) take the full check
_SORTED_FIELDS = tuple(sorted(ENTRY_FIELDS))


def _details_re() -> bytes:
    """A flat details object of up to ``_MAX_KEYS`` plain members, each key captured with
    its opening quote (so a present key, even ``""``, is never empty)."""
    inner = b""
    for _ in range(_MAX_KEYS - 1):
        inner = rb'(?:,("' + _CH + rb')":' + _VALUE + inner + rb")?"
    return rb'\{(?:("' + _CH + rb')":' + _VALUE + inner + rb")?\}"


def _entry_source(log_id: str) -> bytes:
    """The plain entry shape of log *log_id*, one whole line (``^...$`` under
    ``re.MULTILINE``, for :func:`chainwork.check_block`'s ``findall`` over joined lines):
    groups 1.._MAX_KEYS (details keys, None when absent), then prev and seq."""
    return (
        rb'(?m)^\{"actor":'
        + _STR
        + rb',"details":'
        + _details_re()
        + rb',"log":"'
        + re.escape(log_id.encode("utf-8", "replace"))
        + rb'","op":'
        + _STR
        # any 64 characters for prev (faster to match than [0-9a-f]{64}): a line passes only
        # when they equal the lowercase hex of the chain hash before it
        + rb',"outcome":"(?:intent|ok|denied|failed)","prev":"(.{64})",'
        rb'"seq":(0|[1-9][0-9]{0,14}),"target":' + _STR + rb',"time":' + _INT + rb"\}$"
    )


@functools.lru_cache(maxsize=8)
def _entry_re(log_id: str) -> re.Pattern[bytes]:
    return re.compile(_entry_source(log_id))


IN_FLIGHT = 8  # blocks sent to the worker and not yet answered, at most
_QUEUED = 16  # blocks verified and waiting for an earlier one, at most
_SEND_AT_MOST = 1 << 26  # bytes of a block sent to the worker (a frame's length)


def _check(line: bytes, i: int, log_id: str) -> tuple[str | None, dict[str, Any] | None]:
    """The full check of *line* as entry *i*, but for its ``prev`` link: (problem, entry)."""
    try:
        e = json.loads(line)
        if not isinstance(e, dict) or tuple(sorted(e)) != _SORTED_FIELDS:
            return f"entry {i} is not a canonical audit entry", None
        if not is_canonical(line):
            return f"entry {i} is not a canonical audit entry", None
        if e["seq"] != i or e["log"] != log_id:
            return f"entry {i} breaks the chain (seq {e['seq']})", None
        if e["outcome"] not in OUTCOMES:
            return f"entry {i} has unknown outcome {e['outcome']!r}", None
    except (ValueError, TypeError, KeyError, RecursionError):
        return f"entry {i} is unreadable", None
    return None, e


def entry_problem(
    line: bytes, i: int, log_id: str, prev_hex: str, _cache: dict[str, Any] | None = None
) -> str | None:
    """The problem with *line* as entry *i* after chain head *prev_hex*, or None (full check)."""
    p, e = _check(line, i, log_id)
    if p is None and e is not None and e["prev"] != prev_hex:
        return f"entry {i} breaks the chain (seq {e['seq']})"
    return p


@functools.cache
def _worker_source() -> str:
    return Path(chainwork.__file__).read_text(encoding="utf-8")


def _widen(f: IO[bytes]) -> None:
    """A pipe of 1 MiB (Linux; best effort), so a block is written in one go."""
    with suppress(OSError, AttributeError, ValueError):
        fcntl.fcntl(f.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)


class _BlockWorker:
    """:func:`custody.audit.chainwork.check_block` in a second process. A writer thread
    feeds it blocks (the pipe write waits without the GIL) and a reader thread collects its
    answers, so this process keeps verifying blocks of its own meanwhile. Fails closed: a
    fault of the process or of either pipe is raised by :meth:`result` as OSError."""

    def __init__(self, pattern: bytes) -> None:
        # Isolated (-I): no current directory, PYTHONPATH or user site on its path, so a
        # module planted where the auditor runs the command cannot stand in for the worker;
        # it needs the standard library only, and runs from its own source.
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _worker_source()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        if proc.stdin is None or proc.stdout is None:  # pragma: no cover - PIPE gives both
            raise OSError("no pipe to the block worker")
        self.proc, self._in, self._out = proc, proc.stdin, proc.stdout
        _widen(self._in)
        self._jobs: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[bytes | OSError] = queue.SimpleQueue()
        self.waiting = 0  # blocks sent and not yet answered
        self._jobs.put([chainwork.frame(json.dumps({"pattern": pattern.hex()}).encode())])
        self._threads = [
            threading.Thread(target=self._write, name="audit-verify-send", daemon=True),
            threading.Thread(target=self._read, name="audit-verify-recv", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _write(self) -> None:
        w = self._in
        try:
            while (pieces := self._jobs.get()) is not None:  # frames, in pieces
                for p in pieces:
                    w.write(p)
                w.flush()
            w.write(chainwork.frame(b""))
            w.close()
        except (OSError, ValueError) as exc:
            self._done.put(OSError(f"cannot write to it: {exc}"))

    def _read(self) -> None:
        try:
            while (data := chainwork.read_frame(self._out)) is not None:
                self._done.put(data)
        except (OSError, ValueError) as exc:
            self._done.put(OSError(f"cannot read from it: {exc}"))
        self._done.put(OSError(f"it exited ({self.proc.wait()})"))

    def send(self, pieces: list[bytes]) -> None:
        self._jobs.put(pieces)
        self.waiting += 1

    def result(self, wait: bool) -> chainwork.Result | None:
        """The answer to the oldest unanswered block (None if not there and not *wait*).

        Raises:
            OSError: the worker failed or answered nonsense.
        """
        try:
            r = self._done.get(block=wait)
        except queue.Empty:
            return None
        if isinstance(r, OSError):
            raise r
        try:
            out = chainwork.decode_result(r)
        except (ValueError, KeyError, TypeError) as exc:
            raise OSError(f"it answered nonsense ({type(exc).__name__})") from exc
        self.waiting -= 1
        return out

    def close(self) -> None:
        """End the input and wait for the process (it has answered every block)."""
        self._jobs.put(None)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        for t in self._threads:
            t.join(timeout=5)

    def kill(self) -> None:
        with suppress(OSError):
            self.proc.kill()
        self._jobs.put(None)
        self.proc.wait()
        with suppress(OSError, ValueError):
            self._out.close()


class LineChunks:
    """Entry lines handed over in lists (a store's fetches, ``iter_chunks``), which the
    verifier cuts into blocks without a step per line; iterating it gives the lines."""

    def __init__(self, chunks: Iterable[list[bytes]]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return itertools.chain.from_iterable(self.chunks)


@dataclass(slots=True)
class _Slot:
    """One block between reading it and joining it. It holds its lines until verified
    here, or its joined lines and their lengths while the worker has it (to verify it here
    should the worker fail); then only its result."""

    i0: int
    n: int
    head_in: bytes
    merkle: bool
    wants: list[int]
    lines: list[bytes] | None = None
    blob: bytes | None = None
    lens: array[int] | None = None
    remote: bool = False
    result: chainwork.Result | None = None
    leaves: list[bytes] | None = None  # an unaligned block's leaf hashes
    heads: list[bytes] | None = None  # and its chain heads at the wanted offsets


@dataclass(frozen=True, slots=True)
class Anchor:
    """A checkpoint to hold the log to: stored, witnessed, or the auditor's known one."""

    source: str  # "database", "witness FILE", "known checkpoint"
    raw: Mapping[str, Any]


class LogVerifier:
    """One pass over an audit log (see the module doc).

    Args:
        log_id: the log's id (from its ``meta``).
        sizes: tree sizes whose roots are needed (every checkpoint's).
        progress: called with the number of entries verified so far, every *every*.
        parallel: verify blocks on a second process too (:mod:`custody.audit.chainwork`);
            call :meth:`join` after the last :meth:`feed`. Falls back to one process when
            the worker cannot start.
        block: entries per block, a power of two (smaller ones only in tests).
        heads_at: sizes at which only the chain head is needed (a seal's), no root.
    """

    def __init__(
        self,
        log_id: str,
        sizes: Iterable[int] = (),
        *,
        progress: Callable[[int], None] | None = None,
        every: int = 50_000,
        parallel: bool = False,
        block: int = chainwork.BLOCK,
        heads_at: Iterable[int] = (),
    ) -> None:
        if block < 1 or block & (block - 1):
            raise ValueError("the block size must be a power of two")
        self.log_id = log_id
        self.entries = 0
        self.problems: list[str] = []
        self.more_problems = 0
        self.roots: dict[int, bytes] = {}
        self.heads: dict[int, bytes] = {}  # chain head after the first *size* entries
        self._roots_at = {s for s in sizes if s >= 0}
        self._want = sorted(self._roots_at | {s for s in heads_at if s >= 0})
        self._head = genesis(log_id)
        self._frontier = Frontier()
        self._progress = progress
        self._every = max(1, every)
        self._block = block
        self._worker: _BlockWorker | None = None
        self._slots: deque[_Slot] = deque()
        self.blocks_sent = 0  # blocks the worker verified (or was sent)
        if 0 in self._roots_at:
            self.roots[0] = EMPTY_ROOT
        if parallel:
            try:
                self._worker = _BlockWorker(_entry_source(log_id))
            except OSError:
                self._worker = None

    @property
    def parallel(self) -> bool:
        return self._worker is not None

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.more_problems += 1

    def _blocks(self, lines: Iterable[bytes]) -> Iterator[_Slot]:
        """The lines cut at multiples of the block size, with what each block needs."""
        i, b, head = self.entries, self._block, self._head
        top = max(self._roots_at, default=-1)  # past it no Merkle leaf is needed
        if isinstance(lines, LineChunks):
            src: Iterable[list[bytes]] = lines.chunks
        else:
            it = iter(lines)
            src = iter(lambda: list(islice(it, b)), [])
        buf: list[bytes] = []
        for c in itertools.chain(src, [[]]):
            buf = buf + c if buf else list(c)
            while buf and (len(buf) >= b - i % b or not c):  # a whole block, or the rest
                need = b - i % b
                chunk, buf = buf[:need], buf[need:]
                n = len(chunk)
                wants = [s - i for s in self._want if i < s <= i + n]
                yield _Slot(i, n, head, i < top, wants, lines=chunk)
                head = chainwork.chain_of(chunk[-1])
                i += n

    def feed(self, lines: Iterable[bytes]) -> None:
        """Verify the next entries, in order. After it, ``entries``, ``roots``, ``heads``,
        :meth:`head` and the problems are complete for everything fed."""
        pat = _entry_re(self.log_id)
        b = self._block
        slots = self._slots
        # A block's findall keeps a thousand tuples alive, which would set off the cyclic
        # collector over and over (about 10% of the time); nothing here makes cycles.
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for s in self._blocks(lines):
                w = self._worker
                if w is not None and s.i0 % b == 0 and w.waiting < IN_FLIGHT and s.lines:
                    s.blob = b"\n".join(s.lines)
                if w is not None and s.blob is not None and len(s.blob) <= _SEND_AT_MOST:
                    s.remote = True
                    self.blocks_sent += 1
                    s.lens = array("I", map(len, s.lines or ()))
                    s.lines = None
                    w.send(chainwork.pack_block(s.i0, s.head_in, s.lens, s.blob, s.merkle, s.wants))
                else:
                    self._local(pat, s)
                slots.append(s)
                self._collect(wait=len(slots) > _QUEUED)
            while slots:
                self._collect(wait=True)
        finally:
            if gc_was:
                gc.enable()

    def _local(self, pat: re.Pattern[bytes], s: _Slot) -> None:
        """Verify block *s* in this process."""
        aligned = s.i0 % self._block == 0
        lines, blob = s.lines, s.blob
        if blob is None:
            blob = b"\n".join(lines or ())
        s.result = chainwork.check_block(
            pat,
            blob,
            s.i0,
            s.head_in,
            lines=lines,
            lens=s.lens if s.lens is not None else (),
            merkle=s.merkle and aligned,
            wants=s.wants if aligned else (),
        )
        if not aligned and lines is not None:  # a feed begun mid-block: leaf by leaf
            s.heads = [chainwork.chain_of(lines[k - 1]) for k in s.wants]
            if s.merkle:
                s.leaves = [leaf_hash(ln) for ln in lines]
        s.lines = s.blob = s.lens = None

    def _collect(self, *, wait: bool) -> None:
        """Take the worker's answers that are in (waiting for one if *wait* and the oldest
        block is still out), then join every verified block at the front, in order."""
        slots = self._slots
        w = self._worker
        if w is not None:
            pending = (s for s in slots if s.remote and s.result is None)
            try:
                for s in pending:
                    r = w.result(wait=wait and s is slots[0])
                    if r is None:
                        break
                    s.result = r
            except OSError as exc:
                self._fail_worker(exc)
        while slots and slots[0].result is not None:
            self._join_block(slots.popleft())

    def _join_block(self, s: _Slot) -> None:
        head, tree, at, bad = s.result or (s.head_in, [], [], [])
        i0 = s.i0
        for k, line, h in bad:
            p = entry_problem(line, i0 + k, self.log_id, h.hex())
            if p is not None:
                self.problem(p)
        fr, roots_at = self._frontier, self._roots_at
        if s.heads is not None:  # unaligned
            wants = dict(zip(s.wants, s.heads, strict=True))
            self.heads.update((i0 + k, hk) for k, hk in wants.items())
            for k, lh in enumerate(s.leaves or (), 1):
                fr.append_hash(lh)
                if k in wants and i0 + k in roots_at:
                    self.roots[i0 + k] = fr.root()
        else:
            for k, hk, st in at:
                self.heads[i0 + k] = hk
                if s.merkle and i0 + k in roots_at:
                    self.roots[i0 + k] = fr.root(st)
            for ht, x in tree:
                fr.append_subtree(ht, x)
        old, n = self.entries, s.n
        self.entries, self._head = i0 + n, head
        if self._progress is not None:
            e = self._every
            for m in range((old // e + 1) * e, i0 + n + 1, e):
                self._progress(m)

    def _fail_worker(self, exc: BaseException) -> None:
        """The worker failed: the run fails, and its unanswered blocks are verified here
        (so that the rest of the report stays exact)."""
        w, self._worker = self._worker, None
        if w is not None:
            w.kill()
        self.problem(f"the chain could not be checked: the hashing process failed ({exc})")
        pat = _entry_re(self.log_id)
        for s in self._slots:
            if s.result is None:
                self._local(pat, s)

    def join(self) -> None:
        """End the worker (no-op in one process)."""
        bw, self._worker = self._worker, None
        if bw is None:
            return
        if self._slots:  # feed did not finish (it raised): nothing more is wanted
            bw.kill()
        else:
            bw.close()

    def head(self) -> bytes:
        """The chain hash of the last entry fed (the genesis when none)."""
        return self._head

    def check_anchor(self, a: Anchor, trust: Sequence[TrustKey] | None) -> list[str]:
        """Hold the log to one checkpoint; returns the names of its valid signers."""
        cp = a.raw
        try:
            size, root = int(cp["tree_size"]), bytes.fromhex(str(cp["root"]))
            if cp["type"] != CHECKPOINT_TYPE or cp["log"] != self.log_id:
                raise ValueError("foreign checkpoint")
        except (ValueError, KeyError, TypeError) as exc:
            self.problem(f"unreadable checkpoint in the {a.source} ({exc})")
            return []
        if size > self.entries:
            self.problem(
                f"{a.source}: checkpoint at size {size} is beyond the log's {self.entries} "
                "entries (entries were removed)"
            )
        elif self.roots.get(size) != root:
            self.problem(
                f"{a.source}: checkpoint at size {size}: root does not match the entries"
                " (history was rewritten)"
            )
        signers = checkpoint_signers(cp, trust)
        if not signers:
            self.problem(
                f"{a.source}: checkpoint at size {size} has no valid signature"
                + (" by a pinned key" if trust is not None else "")
            )
        return signers


def verify_log(
    log_id: str,
    lines: Iterable[bytes],
    cps: Sequence[bytes],
    trust: Sequence[TrustKey] | None = None,
    **kw: Any,
) -> AuditReport:
    """Verify an audit log's entries and stored checkpoints in one pass (see
    :func:`audit_report` for the options)."""
    return audit_report(log_id, lines, cps, trust, **kw)


def _load(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return {}


def audit_report(
    log_id: str,
    lines: Iterable[bytes],
    cps: Sequence[bytes],
    trust: Sequence[TrustKey] | None = None,
    *,
    witnesses: Sequence[tuple[str, Mapping[str, Any]]] = (),
    known: Mapping[str, Any] | None = None,
    now: int | None = None,
    max_age: int | None = None,
    max_behind: int | None = None,
    progress: Callable[[int], None] | None = None,
    sealer: Sealer | None = None,
    seal: tuple[int, bytes] | None = None,
    parallel: bool = False,
    block: int = chainwork.BLOCK,
) -> AuditReport:
    """Verify an audit log and hold it to its checkpoints.

    Checks: canonical entries with contiguous ``seq`` and ``prev`` links from the log's
    genesis; every stored checkpoint's root against the entries, in increasing size, and
    its signature (pinned keys when *trust* is given). With *trust*, at least one checkpoint
    signed by a pinned key must exist, or the log's history is not anchored and the report
    fails. Each witness checkpoint (``(name, checkpoint)``, e.g. from ``audit checkpoint
    --export``) and the auditor's *known* checkpoint must be signed, lie within the log and
    match the root of its first ``tree_size`` entries; a witnessed checkpoint missing from
    the database fails too. Warnings (not failures): the newest pinned checkpoint is older
    than *max_age* seconds before *now*, or more than *max_behind* entries behind the log.
    With *sealer* (the token's MAC key), the newest *seal* ``(seq, mac)`` must exist and
    match the chain head recomputed from the entries up to it: a log rewritten and
    re-chained by someone without the token fails (the token is used here, once, after the
    entries). With *parallel*, a second process verifies blocks of *block* entries too (see
    :class:`LogVerifier`); the checks and the report are the same.
    """
    stored = [Anchor("database", _load(raw)) for raw in cps]
    wit = [Anchor(f"witness {name}", cp) for name, cp in witnesses]
    kn = [Anchor("known checkpoint", known)] if known is not None else []
    sizes = []
    for a in (*stored, *wit, *kn):
        with suppress(KeyError, ValueError, TypeError):
            sizes.append(int(a.raw["tree_size"]))
    heads_at = [seal[0] + 1] if seal is not None else []
    v = LogVerifier(
        log_id, sizes, progress=progress, parallel=parallel, block=block, heads_at=heads_at
    )
    try:
        v.feed(lines)
    finally:
        v.join()
    notes: list[str] = []
    warnings: list[str] = []
    pinned: list[tuple[int, int]] = []  # (tree_size, time) of checkpoints a trusted key signed
    prev_size = 0
    stored_keys = set()
    for a in stored:
        size = a.raw.get("tree_size") if isinstance(a.raw, dict) else None
        if isinstance(size, int) and size < prev_size:
            v.problem(f"checkpoint at size {size} is out of order")
        if v.check_anchor(a, trust):
            pinned.append((int(size or 0), int(a.raw.get("time", 0) or 0)))
        if isinstance(size, int):
            prev_size = max(prev_size, size)
            stored_keys.add((size, str(a.raw.get("root"))))
    for a in wit:
        if v.check_anchor(a, trust):
            pinned.append((int(a.raw["tree_size"]), int(a.raw.get("time", 0) or 0)))
        key = (a.raw.get("tree_size"), str(a.raw.get("root")))
        if a.raw.get("log") == log_id and key not in stored_keys:
            v.problem(
                f"{a.source}: checkpoint at size {a.raw.get('tree_size')} is missing from the "
                "database (checkpoints were deleted)"
            )
    for a in kn:
        if v.check_anchor(a, trust):
            pinned.append((int(a.raw["tree_size"]), int(a.raw.get("time", 0) or 0)))
    notes.append(f"{v.entries} entries chained")
    notes.append(f"{len(stored)} checkpoints, last at size {prev_size}")
    if wit:
        notes.append(f"held to {len(wit)} witness checkpoints")
    if kn:
        notes.append(f"held to the known checkpoint at size {kn[0].raw.get('tree_size')}")
    if prev_size < v.entries:
        notes.append(f"{v.entries - prev_size} entries after the last checkpoint")
    if trust is None:
        notes.append("checkpoint keys were not pinned (--trust): signatures are self-asserted")
    elif not pinned:
        v.problem(
            "no checkpoint signed by a pinned key: the log's history is not anchored "
            "(deleted checkpoints, or never checkpointed; run 'custody audit checkpoint')"
        )
    if pinned:
        size = max(s for s, _ in pinned)
        newest_t = max(t for _, t in pinned)
        if max_behind is not None and v.entries - size > max_behind:
            warnings.append(
                f"the newest pinned checkpoint (size {size}) is {v.entries - size} entries "
                f"behind the log (more than {max_behind})"
            )
        if max_age is not None and now is not None and now - newest_t > max_age:
            warnings.append(
                f"the newest pinned checkpoint is {now - newest_t} s old (more than {max_age} s)"
            )
    if sealer is not None:
        _check_seal(v, sealer, seal, notes)
    problems = list(v.problems)
    if v.more_problems:
        problems.append(f"... and {v.more_problems} more problems")
    return AuditReport(
        entries=v.entries,
        checkpoints=len(stored),
        problems=tuple(problems),
        notes=tuple(notes),
        warnings=tuple(warnings),
    )


def _check_seal(
    v: LogVerifier, sealer: Sealer, seal: tuple[int, bytes] | None, notes: list[str]
) -> None:
    if seal is None:
        if v.entries:
            v.problem(
                "no seal: the chain was never sealed with the token's MAC key, or the "
                "seals were deleted"
            )
        return
    seq, mac = seal
    head = v.heads.get(seq + 1)
    if head is None:
        v.problem(f"the newest seal (entry {seq}) is beyond the log's {v.entries} entries")
        return
    if not hmac.compare_digest(sealer.mac(seal_input(v.log_id, seq, head)), mac):
        v.problem(
            f"the newest seal (entry {seq}) does not match the entries: history was "
            "rewritten by someone without the token"
        )
        return
    notes.append(f"sealed by the token's MAC key up to entry {seq}")
    if v.entries > seq + 1:
        notes.append(f"{v.entries - seq - 1} entries after the newest seal")
