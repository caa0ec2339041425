"""Block-wise verification (custody.audit.chainwork.check_block), in this process and on the
real worker process: every tampering gives the same problems, roots and chain heads as one
line at a time, wherever it falls relative to the blocks (the first, a middle one, the last
partial one, across a boundary), and the first bad line is still reported first."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from custody.audit import chainwork
from custody.audit import verify as V
from custody.audit.log import AuditLog
from custody.audit.merkle import MerkleTree, leaf_hash
from custody.audit.records import chain_hash, genesis
from custody.audit.signers import Ed25519Signer, HsmSealer, TrustKey
from custody.canonical import canonical_bytes

SIGNER = Ed25519Signer.from_seed("audit-key", b"\x07" * 32)
TRUST = [TrustKey.of(SIGNER)]
LOG = "0123456789abcdef" * 2
BLOCK = 16  # small, so a short log has many blocks
N = 90  # five full blocks and a partial one of 10
SIZES = [0, 1, 15, 16, 17, 31, 32, 40, 48, 64, 80, 85, 89, 90, 91]


def _line(seq: int, prev: bytes, **kw: object) -> bytes:
    e = {
        "actor": "alice",
        "details": {"i": seq, "kind": "read"},
        "log": LOG,
        "op": "secret.get",
        "outcome": "ok",
        "prev": prev.hex(),
        "seq": seq,
        "target": "svc/db",
        "time": 1_800_000_000,
    }
    e.update(kw)
    return canonical_bytes(e)


def _chain(n: int) -> list[bytes]:
    out, prev = [], genesis(LOG)
    for i in range(n):
        line = _line(i, prev)
        out.append(line)
        prev = chain_hash(line)
    return out


GOOD = _chain(N)


def _one_by_one(lines: list[bytes]) -> V.LogVerifier:
    """The reference: one line per feed, so every block is a single line (and, after the
    first, an unaligned one whose leaves are appended one by one)."""
    v = V.LogVerifier(LOG, SIZES)
    for ln in lines:
        v.feed([ln])
    return v


def _run(lines: Iterable[bytes], *, parallel: bool, block: int = BLOCK) -> V.LogVerifier:
    v = V.LogVerifier(LOG, SIZES, parallel=parallel, block=block)
    try:
        v.feed(lines)
    finally:
        v.join()
    return v


def _same(lines: list[bytes]) -> list[str]:
    """Every path agrees: one line at a time, one default block, small blocks in this
    process, small blocks shared with the worker process, and the lines handed over in
    lists that do not fall on the blocks (as a store's fetches). Returns the problems."""
    ref = _one_by_one(lines)
    chunks = V.LineChunks([lines[k : k + 7] for k in range(0, len(lines), 7)])
    for v in (
        _run(lines, parallel=False, block=chainwork.BLOCK),
        _run(lines, parallel=False),
        _run(lines, parallel=True),
        _run(chunks, parallel=True),
        _run(chunks, parallel=False, block=4),
    ):
        assert v.problems == ref.problems, (v.problems, ref.problems)
        assert v.more_problems == ref.more_problems
        assert v.entries == ref.entries == len(lines)
        assert v.head() == ref.head()
        assert v.roots == ref.roots and v.heads == ref.heads
    tree = MerkleTree(leaf_hash(ln) for ln in lines)
    assert ref.roots == {s: tree.root(s) for s in SIZES if s <= len(lines)}
    assert ref.heads == {s: chain_hash(lines[s - 1]) for s in SIZES if 0 < s <= len(lines)}
    return ref.problems


def test_an_intact_log_has_no_problem_on_any_path() -> None:
    assert _same(GOOD) == []
    assert _same(GOOD[:BLOCK]) == []  # exactly one block
    assert _same(GOOD[: 3 * BLOCK]) == []  # whole blocks only
    assert _same(GOOD[:1]) == []
    assert _same([]) == []


def test_the_worker_process_takes_blocks() -> None:
    v = V.LogVerifier(LOG, SIZES, parallel=True, block=BLOCK)
    assert v.parallel
    v.feed(GOOD)
    v.join()
    assert v.blocks_sent >= 1 and not v.problems
    assert v.blocks_sent <= -(-N // BLOCK)


def _edit(k: int, old: bytes, new: bytes) -> list[bytes]:
    lines = list(GOOD)
    assert old in lines[k]
    lines[k] = lines[k].replace(old, new)
    return lines


def test_an_edit_in_the_first_block() -> None:
    # same length: the line is canonical, the next one's prev no longer names it
    assert _same(_edit(3, b'"alice"', b'"mallo"')) == ["entry 4 breaks the chain (seq 4)"]


def test_a_non_canonical_line_in_a_middle_block() -> None:
    assert _same(_edit(40, b'"op":', b'"op": ')) == [
        "entry 40 is not a canonical audit entry",
        "entry 41 breaks the chain (seq 41)",
    ]


def test_an_edit_in_the_last_partial_block() -> None:
    assert _same(_edit(85, b'"kind":"read"', b'"kind":"rear"')) == [
        "entry 86 breaks the chain (seq 86)"
    ]
    assert _same(_edit(89, b'"kind":"read"', b'"kind":"rear"')) == []  # the head moved only
    assert _one_by_one(_edit(89, b'"kind":"read"', b'"kind":"rear"')).head() != chain_hash(GOOD[89])


def test_a_broken_prev_at_a_block_boundary() -> None:
    for k in (BLOCK, 3 * BLOCK, 5 * BLOCK):  # the first line of a block
        lines = list(GOOD)
        lines[k] = _line(k, b"\x00" * 32)
        assert _same(lines) == [
            f"entry {k} breaks the chain (seq {k})",
            f"entry {k + 1} breaks the chain (seq {k + 1})",
        ]
    lines = list(GOOD)
    lines[2 * BLOCK - 1] = _line(2 * BLOCK - 1, b"\x00" * 32)  # the last line of a block
    assert _same(lines) == [
        f"entry {2 * BLOCK - 1} breaks the chain (seq {2 * BLOCK - 1})",
        f"entry {2 * BLOCK} breaks the chain (seq {2 * BLOCK})",
    ]


def test_a_pair_reordered_across_a_block_boundary() -> None:
    lines = list(GOOD)
    k = 2 * BLOCK
    lines[k - 1], lines[k] = lines[k], lines[k - 1]
    problems = _same(lines)
    assert problems == [
        f"entry {k - 1} breaks the chain (seq {k})",
        f"entry {k} breaks the chain (seq {k - 1})",
        f"entry {k + 1} breaks the chain (seq {k + 1})",
    ]


def test_a_truncated_tail_and_removed_or_repeated_lines() -> None:
    assert _same(GOOD[:-5]) == []  # the lines left are intact: the checkpoints catch it
    removed = GOOD[:50] + GOOD[51:]
    assert _same(removed)[0] == "entry 50 breaks the chain (seq 51)"
    repeated = [*GOOD[:33], GOOD[32], *GOOD[33:]]
    assert _same(repeated)[0] == "entry 33 breaks the chain (seq 32)"


def test_the_first_bad_line_comes_first_when_later_blocks_fail_too() -> None:
    lines = _edit(70, b'"op":', b'"op": ')
    lines[20] = lines[20].replace(b'"op":', b'"op": ')
    lines[5] = _line(5, b"\x01" * 32)
    problems = _same(lines)
    assert problems[0] == "entry 5 breaks the chain (seq 5)"
    assert [p.split()[1] for p in problems] == ["5", "6", "20", "21", "70", "71"]


def test_lines_the_fast_check_leaves_to_the_full_check() -> None:
    lines = list(GOOD)
    # valid but not plain (the full check accepts them): non-ASCII, seven details keys,
    # nested details; each re-chained so the log stays intact
    prev = chain_hash(lines[16])
    for k, kw in (
        (17, {"actor": "ünï"}),
        (18, {"details": {c: 1 for c in "abcdefg"}}),
        (19, {"details": {"n": {"x": [1, 2]}}}),
    ):
        lines[k] = _line(k, prev, **kw)
        prev = chain_hash(lines[k])
    lines[20] = _line(20, prev)
    for k in range(21, N):
        lines[k] = _line(k, chain_hash(lines[k - 1]))
    assert _same(lines) == []
    # unsorted details keys, a line with a newline inside, an empty line
    bad = list(lines)
    bad[33] = bad[33].replace(b'{"i":33,"kind":"read"}', b'{"kind":"read","i":33}')
    bad[50] = bad[50].replace(b'"op":', b'"op":\n')
    bad[66] = b""
    assert _same(bad) == [
        "entry 33 is not a canonical audit entry",
        "entry 34 breaks the chain (seq 34)",
        "entry 50 is not a canonical audit entry",
        "entry 51 breaks the chain (seq 51)",
        "entry 66 is unreadable",
        "entry 67 breaks the chain (seq 67)",
    ]


def test_many_problems_are_capped_the_same_way() -> None:
    lines = [ln.replace(b'"op":', b'"op": ') for ln in GOOD]
    problems = _same(lines)
    assert len(problems) == V.MAX_PROBLEMS
    assert _run(lines, parallel=True).more_problems == N - V.MAX_PROBLEMS


def test_progress_on_the_worker_path() -> None:
    seen: list[int] = []
    v = V.LogVerifier(LOG, progress=seen.append, every=20, parallel=True, block=BLOCK)
    v.feed(GOOD)
    v.join()
    assert seen == [20, 40, 60, 80]


# -- the whole report, from a real log on disk -----------------------------------------
def _filled(tmp_path: Path, n: int, sealer: HsmSealer | None = None) -> AuditLog:
    log = AuditLog(tmp_path / "audit.db", durable=False, sealer=sealer)
    for i in range(n):
        log.append("secret.get", f"svc/{i % 5}", "alice", details={"i": i})
    return log


Report = tuple[bool, tuple[str, ...], tuple[str, ...], tuple[str, ...]]


def _report(log: AuditLog, parallel: bool, **kw: Any) -> Report:
    with log._db.snapshot():
        rep = V.audit_report(
            log.log_id,
            log.iter_lines(),
            log.checkpoint_lines(),
            TRUST,
            parallel=parallel,
            block=BLOCK,
            **kw,
        )
    return rep.ok, rep.problems, rep.notes, rep.warnings


def _both(log: AuditLog, **kw: Any) -> Report:
    one = _report(log, False, **kw)
    assert _report(log, True, **kw) == one
    return one


def test_reports_agree_on_checkpoints_witnesses_and_a_truncated_tail(tmp_path: Path) -> None:
    log = _filled(tmp_path, 40)
    known = log.checkpoint(SIGNER)
    for i in range(37):
        log.append("secret.get", "svc", "bob", details={"i": i})
    log.checkpoint(SIGNER)
    wit = tmp_path / "witness"
    log.export_checkpoints(wit)
    witnesses = [(p.name, json.loads(p.read_bytes())) for p in sorted(wit.iterdir())]
    ok, *_ = _both(log, known=known, witnesses=witnesses)
    assert ok
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    db.execute("DELETE FROM entries WHERE seq >= 70")  # the tail, past a block boundary
    db.execute("DELETE FROM checkpoints WHERE tree_size = 77")
    db.close()
    ok, problems, *_ = _both(log, known=known, witnesses=witnesses)
    assert not ok
    assert any("beyond the log's 70 entries" in p for p in problems)
    assert any("missing from the database" in p for p in problems)


def test_reports_agree_on_a_rewritten_middle_block(tmp_path: Path) -> None:
    log = _filled(tmp_path, 77)
    log.checkpoint(SIGNER)
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    line = db.execute("SELECT line FROM entries WHERE seq = 37").fetchone()[0]
    db.execute("UPDATE entries SET line = ? WHERE seq = 37", (line.replace(b"alice", b"malle"),))
    db.close()
    ok, problems, *_ = _both(log)
    assert not ok and problems[0] == "entry 38 breaks the chain (seq 38)"
    assert any("history was rewritten" in p for p in problems)


@pytest.mark.hsm
def test_reports_agree_on_the_token_seal(hsm, tmp_path: Path) -> None:
    sealer = HsmSealer(hsm, f"mac{uuid.uuid4().hex[:8]}", create=True)
    log = _filled(tmp_path, 70, sealer)
    log.checkpoint(SIGNER)
    seal = log._db.last_seal()
    ok, _, notes, _ = _both(log, sealer=sealer, seal=seal)
    assert ok and "sealed by the token's MAC key up to entry 69" in notes
    # re-chained without the token: the unkeyed chain holds, the seal does not
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    rows = db.execute("SELECT seq, line FROM entries ORDER BY seq").fetchall()
    prev = genesis(log.log_id)
    for s, line in rows:
        e = json.loads(line)
        e["prev"] = prev.hex()
        if s == 20:
            e["actor"] = "mallory"
        new = canonical_bytes(e)
        prev = chain_hash(new)
        db.execute("UPDATE entries SET line = ?, chain = ? WHERE seq = ?", (new, prev, s))
    db.close()
    ok, problems, *_ = _both(log, sealer=sealer, seal=seal)
    assert not ok
    assert any("rewritten by someone without the token" in p for p in problems)


def test_a_worker_that_dies_mid_run_fails_the_run_and_the_rest_stays_exact(
    tmp_path: Path,
) -> None:
    v = V.LogVerifier(LOG, SIZES, parallel=True, block=BLOCK)
    assert v._worker is not None
    v._worker.proc.kill()
    lines = _edit(60, b'"op":', b'"op": ')
    v.feed(lines)
    v.join()
    ref = _one_by_one(lines)
    assert any("hashing process failed" in p for p in v.problems)
    assert [p for p in v.problems if "hashing" not in p] == ref.problems
    assert v.roots == ref.roots and v.heads == ref.heads and v.entries == N


def _chain_of(details: list[dict[str, object]]) -> list[bytes]:
    out, prev = [], genesis(LOG)
    for i, d in enumerate(details):
        out.append(_line(i, prev, details=d))
        prev = chain_hash(out[-1])
    return out


def test_details_keys_are_checked_in_blocks_with_mixed_key_counts() -> None:
    pat = V._entry_re(LOG)
    mixed: list[dict[str, object]] = [{}, {"a": 1}, {"a": 1, "b": 2}, {"": 0, "a": 1}] * 4
    lines = _chain_of(mixed)

    def bad(ls: list[bytes]) -> list[int]:
        r = chainwork.check_block(pat, b"\n".join(ls), 0, genesis(LOG), lines=ls)
        return [k for k, _, _ in r[3]]

    assert bad(lines) == [] and _same(lines) == []
    same_count = _chain_of([{"a": 1, "b": 2, "c": 3}] * 16)
    assert bad(same_count) == []
    for ls, k in ((lines, 6), (same_count, 9)):
        unsorted = list(ls)
        e = json.loads(unsorted[k])
        raw = canonical_bytes(e).replace(b'{"a":1,"b":2', b'{"b":2,"a":1')
        assert raw != unsorted[k]
        unsorted[k] = raw
        assert bad(unsorted) == [k, k + 1]  # the line, and the next one's broken link
        assert _same(unsorted)[0] == f"entry {k} is not a canonical audit entry"


def test_heads_alone_are_taken_without_the_tree() -> None:
    want = {s: chain_hash(GOOD[s - 1]) for s in (5, 16, 17, 90)}
    for par, blk in ((False, BLOCK), (True, BLOCK), (False, chainwork.BLOCK)):
        v = V.LogVerifier(LOG, [16], parallel=par, block=blk, heads_at=[5, 17, 90, 91])
        v.feed(GOOD)
        v.join()
        assert v.heads == want and set(v.roots) == {16}, (par, blk)
    v = V.LogVerifier(LOG, heads_at=[5, 17, 90])
    for ln in GOOD:  # unaligned blocks
        v.feed([ln])
    assert v.heads == {s: h for s, h in want.items() if s != 16} and v.roots == {}
