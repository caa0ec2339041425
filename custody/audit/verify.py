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

With ``parallel=True`` the work is split across two processes: this one reads the lines
and checks canonical form, ``seq`` and ``log``; :mod:`custody.audit.chainwork` recomputes
the chain, checks every ``prev`` link, and keeps the Merkle frontier. Both halves report
the same problems, in the same order, as one process does.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import itertools
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custody.audit import chainwork
from custody.audit.merkle import EMPTY_ROOT, Frontier
from custody.audit.records import (
    CHECKPOINT_TYPE,
    ENTRY_FIELDS,
    OUTCOMES,
    TAG_CHAIN,
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
    """A flat details object of up to ``_MAX_KEYS`` plain members, each key captured."""
    inner = b""
    for _ in range(_MAX_KEYS - 1):
        inner = rb'(?:,"(' + _CH + rb')":' + _VALUE + inner + rb")?"
    return rb'\{(?:"(' + _CH + rb')":' + _VALUE + inner + rb")?\}"


def _entry_re(log_id: str) -> re.Pattern[bytes]:
    """The plain entry shape of log *log_id*: groups 1.._MAX_KEYS (details keys, None when
    absent), then prev and seq."""
    return re.compile(
        rb'\{"actor":'
        + _STR
        + rb',"details":'
        + _details_re()
        + rb',"log":"'
        + re.escape(log_id.encode("utf-8", "replace"))
        + rb'","op":'
        + _STR
        + rb',"outcome":"(?:intent|ok|denied|failed)","prev":"([0-9a-f]{64})",'
        rb'"seq":(0|[1-9][0-9]{0,14}),"target":' + _STR + rb',"time":' + _INT + rb"\}"
    )


_PREV, _SEQ = _MAX_KEYS + 1, _MAX_KEYS + 2
_HEX64 = re.compile(rb"[0-9a-f]{64}")
_GROUPS = tuple(range(1, _MAX_KEYS + 3))


def _keys_sorted(keys: tuple[bytes | None, ...]) -> bool:
    """True when the captured details keys strictly increase, as RFC 8785 orders them
    (bytewise equals UTF-16 order for ASCII); absent keys are None, and only trail."""
    ks = [k for k in keys if k is not None]
    return all(a < b for a, b in itertools.pairwise(ks))


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


class _Worker:
    """The chain and Merkle half of the verifier in a second process
    (:mod:`custody.audit.chainwork`). Fails closed: any fault of the process is a problem."""

    BATCH = 4096

    def __init__(self, genesis: bytes, sizes: Sequence[int], start: int) -> None:
        # Isolated (-I): no current directory, PYTHONPATH or user site on its path, so a
        # module planted where the auditor runs the command cannot stand in for the worker;
        # it needs the standard library only, and runs from its own source.
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _worker_source()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        if proc.stdin is None or proc.stdout is None:  # pragma: no cover - PIPE gives both
            raise OSError("no pipe to the chain worker")
        self.proc, self._in, self._out = proc, proc.stdin, proc.stdout
        cfg = {"genesis": genesis.hex(), "sizes": list(sizes), "start": start}
        try:
            self.send(json.dumps(cfg).encode())
        except OSError:
            self.kill()
            raise

    def send(self, payload: bytes) -> None:
        self._in.write(chainwork.frame(payload))

    def result(self) -> dict[str, Any]:
        self.send(b"")
        self._in.close()
        data = chainwork.read_frame(self._out)
        rc = self.proc.wait()
        if data is None or rc != 0:
            raise OSError(f"the chain worker exited with {rc} and no answer")
        out: dict[str, Any] = json.loads(data)
        return out

    def kill(self) -> None:
        with suppress(OSError):
            self.proc.kill()
        self.proc.wait()


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
        parallel: hash on a second process (:mod:`custody.audit.chainwork`) while this one
            checks canonical form; call :meth:`join` after the last :meth:`feed`. Falls
            back to one process when the worker cannot start.
    """

    def __init__(
        self,
        log_id: str,
        sizes: Iterable[int] = (),
        *,
        progress: Callable[[int], None] | None = None,
        every: int = 50_000,
        parallel: bool = False,
    ) -> None:
        self.log_id = log_id
        self.entries = 0
        self.problems: list[str] = []
        self.more_problems = 0
        self.roots: dict[int, bytes] = {}
        self.heads: dict[int, bytes] = {}  # chain head after the first *size* entries
        self._want = sorted({s for s in sizes if s >= 0})
        self._head = genesis(log_id)
        self._frontier = Frontier()
        self._progress = progress
        self._every = max(1, every)
        self._at: list[int] = []  # entry index of each problem in self.problems (parallel)
        self._worker: _Worker | None = None
        if 0 in self._want:
            self.roots[0] = EMPTY_ROOT
        if parallel:
            try:
                self._worker = _Worker(self._head, self._want, 0)
            except OSError:
                self._worker = None

    @property
    def parallel(self) -> bool:
        return self._worker is not None

    def problem(self, text: str, at: int = -1) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
            self._at.append(at)
        else:
            self.more_problems += 1

    def feed(self, lines: Iterable[bytes]) -> None:
        """Verify the next entries, in order."""
        if self._worker is not None:
            self._feed_parallel(lines, self._worker)
            return
        i = self.entries
        head = self._head
        frontier = self._frontier
        stack = frontier._stack  # inlined Frontier.append_hash (hot loop)
        want = [s for s in self._want if s > i]
        want.reverse()  # pop() from the end: next wanted size last
        nxt = want.pop() if want else -1
        sha = hashlib.sha256
        tag = TAG_CHAIN.encode()
        chain_prefix = len(tag).to_bytes(2, "big") + tag
        lb: dict[int, bytes] = {}
        match = _entry_re(self.log_id).fullmatch
        keys_ok: dict[tuple[bytes | None, ...], bool] = {}
        every, progress = self._every, self._progress
        hexlify = binascii.hexlify
        groups = _GROUPS
        for line in lines:
            m = match(line)
            g = m.group(*groups) if m is not None else None
            if g is None or g[_PREV - 1] != hexlify(head) or int(g[_SEQ - 1]) != i:
                p = entry_problem(line, i, self.log_id, head.hex())
                if p is not None:
                    self.problem(p, i)
            else:
                ok = keys_ok.get(g[:_MAX_KEYS])
                if ok is None:
                    ok = _keys_sorted(g[:_MAX_KEYS])
                    if len(keys_ok) < 4096:
                        keys_ok[g[:_MAX_KEYS]] = ok
                if not ok:
                    p = entry_problem(line, i, self.log_id, head.hex())
                    if p is not None:
                        self.problem(p, i)
            n = len(line)
            ln = lb.get(n)
            if ln is None:
                ln = lb[n] = chain_prefix + n.to_bytes(8, "big")
            head = sha(ln + line).digest()
            i += 1
            if nxt >= 0:  # past the largest wanted size, no Merkle leaf is needed
                # Frontier.append_hash, inlined
                h, height = sha(b"\x00" + line).digest(), 0
                while stack and stack[-1][0] == height:
                    h = sha(b"\x01" + stack.pop()[1] + h).digest()
                    height += 1
                stack.append((height, h))
                if i == nxt:
                    frontier.size = i
                    self.roots[i] = frontier.root()
                    self.heads[i] = head
                    nxt = want.pop() if want else -1
            if progress is not None and i % every == 0:
                progress(i)
        frontier.size = i
        self.entries = i
        self._head = head

    def _feed_parallel(self, lines: Iterable[bytes], worker: _Worker) -> None:
        """Check canonical form, seq and log here; the worker checks the prev links and
        hashes (the chain and the Merkle tree)."""
        i = self.entries
        match = _entry_re(self.log_id).fullmatch
        keys_ok: dict[tuple[bytes | None, ...], bool] = {}
        every, progress = self._every, self._progress
        groups, skip, batch_n = _GROUPS, chainwork.SKIP, worker.BATCH
        blines: list[bytes] = []
        prevs: list[bytes] = []
        add_line, add_prev = blines.append, prevs.append
        seqs = [b"%d" % k for k in range(i, i + batch_n)]
        k = 0
        try:
            for line in lines:
                m = match(line)
                g = m.group(*groups) if m is not None else None
                ok: bool | None = False
                if g is not None and g[_SEQ - 1] == seqs[k]:
                    ok = keys_ok.get(g[:_MAX_KEYS])
                    if ok is None:
                        ok = _keys_sorted(g[:_MAX_KEYS])
                        if len(keys_ok) < 4096:
                            keys_ok[g[:_MAX_KEYS]] = ok
                if ok and g is not None:
                    add_prev(g[_PREV - 1])
                else:
                    p, e = _check(line, i, self.log_id)
                    prev = e["prev"].encode() if e is not None and type(e["prev"]) is str else b""
                    if p is None and _HEX64.fullmatch(prev) is None:
                        # not a chain hash as the worker spells it (it could even be SKIP):
                        # the link is broken, and reported here
                        p = f"entry {i} breaks the chain (seq {i})"
                    if p is not None:
                        self.problem(p, i)
                        prev = skip
                    add_prev(prev)
                add_line(line)
                i += 1
                k += 1
                if k == batch_n:
                    worker.send(chainwork.pack_batch(blines, prevs))
                    blines.clear()
                    prevs.clear()
                    seqs = [b"%d" % n for n in range(i, i + batch_n)]
                    k = 0
                if progress is not None and i % every == 0:
                    progress(i)
            if blines:
                worker.send(chainwork.pack_batch(blines, prevs))
        except OSError as exc:
            self._fail_worker(exc)
        self.entries = i

    def _fail_worker(self, exc: BaseException) -> None:
        if self._worker is not None:
            self._worker.kill()
            self._worker = None
        self.problem(f"the chain could not be checked: the hashing process failed ({exc})")

    def join(self) -> None:
        """Collect the worker's half (no-op in one process). After it, ``roots``,
        ``heads``, :meth:`head` and the problems are complete."""
        w, self._worker = self._worker, None
        if w is None:
            return
        try:
            r = w.result()
        except (OSError, ValueError) as exc:
            w.kill()
            self._fail_worker(exc)
            return
        if r["entries"] != self.entries:
            self.problem(
                f"the chain could not be checked: the hashing process saw {r['entries']} "
                f"of {self.entries} entries"
            )
            return
        self._head = bytes.fromhex(r["head"])
        self.roots.update({int(k): bytes.fromhex(v) for k, v in r["roots"].items()})
        self.heads.update({int(k): bytes.fromhex(v) for k, v in r["heads"].items()})
        mine = [(a, t) for a, t in zip(self._at, self.problems, strict=True)]
        merged = sorted([*mine, *((int(a), str(t)) for a, t in r["problems"])])
        total = len(merged) + self.more_problems + int(r["more"])
        self.problems = [t for _, t in merged[:MAX_PROBLEMS]]
        self._at = [a for a, _ in merged[:MAX_PROBLEMS]]
        self.more_problems = total - len(self.problems)

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
    re-chained by someone without the token fails. With *parallel*, the hashing runs on a
    second process (see :class:`LogVerifier`); the checks and the report are the same.
    """
    stored = [Anchor("database", _load(raw)) for raw in cps]
    wit = [Anchor(f"witness {name}", cp) for name, cp in witnesses]
    kn = [Anchor("known checkpoint", known)] if known is not None else []
    sizes = []
    for a in (*stored, *wit, *kn):
        with suppress(KeyError, ValueError, TypeError):
            sizes.append(int(a.raw["tree_size"]))
    if seal is not None:
        sizes.append(seal[0] + 1)
    v = LogVerifier(log_id, sizes, progress=progress, parallel=parallel)
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
