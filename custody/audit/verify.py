"""Streaming verification of the audit log: one pass, flat memory, each line parsed once.

:class:`LogVerifier` takes the entries as an iterator (``feed``), keeps only the chain head
and an RFC 9162 :class:`~custody.audit.merkle.Frontier` (O(log n) hashes), and records the
Merkle root at every tree size it was asked about (the stored checkpoints, a witness
directory's checkpoints, the auditor's known checkpoint). ``finish`` then checks every
checkpoint against the roots of the entries themselves: a checkpoint whose root is the root
of the first *size* entries proves the log an append-only extension of it, which is what an
RFC 9162 consistency proof shows without the entries.

Canonical form is checked without re-encoding. Nearly every entry is *plain* (its strings
printable ASCII without quote or backslash, a flat ``details`` object of such strings,
small integers, booleans and nulls), and one compiled regular expression per log accepts
exactly the plain lines of the entry shape, with this log's id: each piece is then
canonical by construction (no whitespace, fixed key order, strings that need no escape,
integers without leading zeros and below 2**53), and the details' keys get a
strictly-increasing test (cached per key tuple). Any line the fast path does not accept
(escapes, non-ASCII, nested details, floats) goes through the full check: ``json.loads``
and the RFC 8785 encoder. The fast path never accepts a line the full check would reject
(tests/custody/audit/test_verify_stream.py).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

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
_STR = rb'"[ !#-\[\]-~]*"'  # printable ASCII but '"' and '\': canonical as it stands
_VALUE = rb"(?:" + _STR + rb"|" + _INT + rb"|true|false|null)"
_DETAILS = rb"(\{(?:" + _STR + rb":" + _VALUE + rb"(?:," + _STR + rb":" + _VALUE + rb")*)?\})"
_KEY = re.compile(rb'"([^"]*)":')
_SORTED_FIELDS = tuple(sorted(ENTRY_FIELDS))


def _entry_re(log_id: str) -> re.Pattern[bytes]:
    """The plain entry shape of log *log_id*: groups (details, prev, seq)."""
    return re.compile(
        rb'\{"actor":'
        + _STR
        + rb',"details":'
        + _DETAILS
        + rb',"log":"'
        + re.escape(log_id.encode("utf-8", "replace"))
        + rb'","op":'
        + _STR
        + rb',"outcome":"(?:intent|ok|denied|failed)","prev":"([0-9a-f]{64})",'
        rb'"seq":(0|[1-9][0-9]{0,14}),"target":' + _STR + rb',"time":' + _INT + rb"\}"
    )


def _keys_sorted(d: bytes, cache: dict[tuple[bytes, ...], bool]) -> bool:
    """True when the keys of *d* (a flat object the entry expression accepted) strictly
    increase, as RFC 8785 orders them (bytewise equals UTF-16 order for ASCII)."""
    if d.count(b'":') < 2:  # "{}" or one key (a plain string cannot hold '"')
        return True
    keys = tuple(_KEY.findall(d))
    ok = cache.get(keys)
    if ok is None:
        ok = all(a < b for a, b in itertools.pairwise(keys))
        if len(cache) < 4096:
            cache[keys] = ok
    return ok


def entry_problem(
    line: bytes, i: int, log_id: str, prev_hex: str, _cache: dict[str, Any] | None = None
) -> str | None:
    """The problem with *line* as entry *i* after chain head *prev_hex*, or None (full check)."""
    try:
        e = json.loads(line)
        if not isinstance(e, dict) or tuple(sorted(e)) != _SORTED_FIELDS:
            return f"entry {i} is not a canonical audit entry"
        if not is_canonical(line):
            return f"entry {i} is not a canonical audit entry"
        if e["seq"] != i or e["log"] != log_id or e["prev"] != prev_hex:
            return f"entry {i} breaks the chain (seq {e['seq']})"
        if e["outcome"] not in OUTCOMES:
            return f"entry {i} has unknown outcome {e['outcome']!r}"
    except (ValueError, TypeError, KeyError, RecursionError):
        return f"entry {i} is unreadable"
    return None


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
    """

    def __init__(
        self,
        log_id: str,
        sizes: Iterable[int] = (),
        *,
        progress: Callable[[int], None] | None = None,
        every: int = 50_000,
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
        if 0 in self._want:
            self.roots[0] = EMPTY_ROOT

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.more_problems += 1

    def feed(self, lines: Iterable[bytes]) -> None:
        """Verify the next entries, in order."""
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
        match = _entry_re(self.log_id).fullmatch
        keys_cache: dict[tuple[bytes, ...], bool] = {}
        every, progress = self._every, self._progress
        hexlify = binascii.hexlify
        for line in lines:
            m = match(line)
            if (
                m is None
                or m[2] != hexlify(head)
                or int(m[3]) != i
                or not _keys_sorted(m[1], keys_cache)
            ):
                p = entry_problem(line, i, self.log_id, head.hex())
                if p is not None:
                    self.problem(p)
            head = sha(chain_prefix + len(line).to_bytes(8, "big") + line).digest()
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
    re-chained by someone without the token fails.
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
    v = LogVerifier(log_id, sizes, progress=progress)
    v.feed(lines)
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
