"""Streaming verification: the fast canonical path agrees with the full check, progress,
bounded problem lists, the checkpoint rules with --trust, and age/behind warnings."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest

from custody.audit import verify as V
from custody.audit.log import AuditLog
from custody.audit.records import chain_hash, genesis
from custody.audit.signers import Ed25519Signer, TrustKey
from custody.canonical import canonical_bytes

SIGNER = Ed25519Signer.from_seed("audit-key", b"\x07" * 32)
TRUST = [TrustKey.of(SIGNER)]
LOG = "0123456789abcdef" * 2


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


def _fast_accepts(line: bytes, seq: int = 0, prev: bytes | None = None) -> bool:
    """Whether the verifier found no problem without calling the full check."""
    v = V.LogVerifier(LOG)
    if seq:
        v.entries, v._head = seq, prev or genesis(LOG)
    calls = []
    orig = V.entry_problem

    def counting(*a: object) -> str | None:
        calls.append(a)
        return orig(*a)  # type: ignore[arg-type]

    V.entry_problem = counting  # type: ignore[assignment]
    try:
        v.feed([line])
    finally:
        V.entry_problem = orig
    return not calls and not v.problems


def test_fast_path_takes_plain_entries_and_leaves_the_rest() -> None:
    g = genesis(LOG)
    assert _fast_accepts(_line(0, g))
    assert _fast_accepts(_line(0, g, details={}))
    assert _fast_accepts(_line(0, g, details={"a": None, "b": True, "c": -5, "d": "x:,{}"}))
    assert _fast_accepts(_line(7, b"\x01" * 32), 7, b"\x01" * 32)
    assert _fast_accepts(_line(0, g, time=-1))
    for odd in (
        {"actor": "ünï"},
        {"actor": 'a"b'},
        {"target": "a\\b"},
        {"details": {"n": {"nested": 1}}},
        {"details": {"f": 1.5}},
        {"details": {"big": 10**15}},
    ):
        assert not _fast_accepts(_line(0, g, **odd)), odd  # full check instead


CASES = [
    {},
    {"details": {}},
    {"details": {"a": "", "ab": 1, "b": False}},
    {"actor": 'ünï "q" \\ \n', "details": {"z": [1, {"b": None}]}},
    {"details": {"f": 1.5, "e": 1e21}},
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fast_path_never_accepts_what_the_full_check_rejects(case: int) -> None:
    rnd = random.Random(case)
    g = genesis(LOG)
    base = _line(0, g, **CASES[case])  # type: ignore[arg-type]
    alphabet = b' "\\{}[],:0123456789-.eE+abfnrtu\x00\x1f\x7f\xc3\xa9'
    tried = 0
    for pos in range(len(base)):
        for _ in range(3):
            mut = bytearray(base)
            op = rnd.randrange(3)
            if op == 0:
                mut[pos] = rnd.choice(alphabet)
            elif op == 1:
                mut.insert(pos, rnd.choice(alphabet))
            else:
                del mut[pos]
            line = bytes(mut)
            full = V.entry_problem(line, 0, LOG, g.hex())
            v = V.LogVerifier(LOG)
            v.feed([line])
            assert bool(v.problems) == (full is not None), (line, full, v.problems)
            _, two = _both([line], [1])
            assert two.problems == v.problems, (line, v.problems, two.problems)
            tried += 1
    assert tried > 300


def _filled(tmp_path: Path, n: int) -> AuditLog:
    log = AuditLog(tmp_path / "audit.db", durable=False, clock=lambda: 1_800_000_000)
    for i in range(n):
        log.append("secret.get", f"svc/{i % 5}", "alice", details={"i": i})
    return log


def test_progress_problem_cap_and_roots(tmp_path: Path) -> None:
    log = _filled(tmp_path, 300)
    seen: list[int] = []
    v = V.LogVerifier(log.log_id, [0, 1, 100, 299, 300], progress=seen.append, every=100)
    v.feed(log.iter_lines())
    assert seen == [100, 200, 300] and not v.problems
    log.checkpoint(SIGNER)
    cp = json.loads(log.checkpoint_lines()[-1])
    assert v.roots[300].hex() == cp["root"] and set(v.roots) == {0, 1, 100, 299, 300}
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    db.execute("UPDATE entries SET line = CAST(line || ' ' AS BLOB) WHERE seq % 2 = 0")
    db.close()
    rep = log.verify(TRUST)
    assert not rep.ok and len(rep.problems) <= V.MAX_PROBLEMS + 2
    assert any("more problems" in p for p in rep.problems)


def test_trust_requires_a_pinned_checkpoint_and_warns(tmp_path: Path) -> None:
    log = _filled(tmp_path, 10)
    rep = log.verify(TRUST)
    assert not rep.ok and "no checkpoint signed by a pinned key" in rep.problems[0]
    assert log.verify(None).ok  # without --trust: a note, not a failure
    log.checkpoint(SIGNER, now=1_800_000_000)
    for i in range(5):
        log.append("secret.get", "svc", "bob", details={"i": i})
    rep = log.verify(TRUST, max_age=3600, max_behind=4, now=1_800_000_000 + 7200)
    assert rep.ok and len(rep.warnings) == 2, rep
    assert "5 entries behind" in rep.warnings[0] and "7200 s old" in rep.warnings[1]
    assert not log.verify(TRUST, max_age=3600, max_behind=5, now=1_800_003_600).warnings
    other = [TrustKey.of(Ed25519Signer.from_seed("x", b"\x01" * 32))]
    assert not log.verify(other).ok


def test_known_checkpoint_must_be_an_ancestor(tmp_path: Path) -> None:
    log = _filled(tmp_path, 10)
    known = log.checkpoint(SIGNER)
    for i in range(5):
        log.append("secret.get", "svc", "bob", details={"i": i})
    assert log.verify(TRUST, known=known).ok
    forged = {**known, "root": "00" * 32}
    rep = log.verify(TRUST, known=forged)
    assert not rep.ok  # the signature no longer verifies, and the root does not match
    assert any("history was rewritten" in p for p in rep.problems)
    # re-chain entry 3 (as an attacker with write access would): the known root catches it
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    rows = db.execute("SELECT seq, line FROM entries ORDER BY seq").fetchall()
    prev = genesis(log.log_id)
    for s, line in rows:
        e = json.loads(line)
        e["prev"] = prev.hex()
        if s == 3:
            e["actor"] = "mallory"
        new = canonical_bytes(e)
        prev = chain_hash(new)
        db.execute("UPDATE entries SET line = ?, chain = ? WHERE seq = ?", (new, prev, s))
    db.execute("DELETE FROM checkpoints")
    db.close()
    assert log.verify(None).ok  # the unkeyed chain verifies again...
    rep = log.verify(TRUST, known=known)
    assert not rep.ok and any("history was rewritten" in p for p in rep.problems)


# -- the block-wise verifier (custody.audit.chainwork.check_block) against one line at a time
def _both(lines: list[bytes], sizes: list[int]) -> tuple[V.LogVerifier, V.LogVerifier]:
    one = V.LogVerifier(LOG, sizes)
    one.feed(lines)
    two = V.LogVerifier(LOG, sizes, block=8)  # small blocks, so the cases cross boundaries
    two.feed(lines)
    two.join()
    return one, two


def _chain(n: int, **kw: object) -> list[bytes]:
    out, prev = [], genesis(LOG)
    for i in range(n):
        line = _line(i, prev, **kw)
        out.append(line)
        prev = chain_hash(line)
    return out


def test_two_processes_agree_with_one_on_every_tampering() -> None:
    good = _chain(40)
    rnd = random.Random(5)
    variants: list[list[bytes]] = [good, good[:0], good[:1], good[:7], good[:8]]
    swapped = list(good)
    swapped[9], swapped[10] = swapped[10], swapped[9]
    variants.append(swapped)  # reordered
    variants.append(good[:12] + good[13:])  # one removed
    variants.append([*good[:12], good[12], *good[12:]])  # one repeated
    edited = list(good)
    edited[20] = edited[20].replace(b'"alice"', b'"mallo"')  # same length, chain breaks
    variants.append(edited)
    spaced = list(good)
    spaced[3] = spaced[3].replace(b'"op":', b'"op": ')  # not canonical
    variants.append(spaced)
    badseq = list(good)
    badseq[30] = _line(31, chain_hash(good[29]))
    variants.append(badseq)
    badprev = list(good)
    badprev[15] = _line(15, b"\x00" * 32)
    variants.append(badprev)
    for bad in ("ab", "*" * 64, genesis(LOG).hex().upper(), "é" * 32):
        # the wrong length; the worker's own "already reported" marker; not as it is spelt
        odd = json.loads(good[0])
        odd["prev"] = bad
        variants.append([canonical_bytes(odd), *good[1:]])
    unsorted = list(good)
    unsorted[2] = unsorted[2].replace(b'{"i":2,"kind":"read"}', b'{"kind":"read","i":2}')
    variants.append(unsorted)
    for _ in range(30):  # random byte edits
        mut = list(good)
        k = rnd.randrange(len(mut))
        b = bytearray(mut[k])
        b[rnd.randrange(len(b))] = rnd.choice(b' "\\{}0aZ\x00\xc3')
        mut[k] = bytes(b)
        variants.append(mut)
    sizes = [0, 1, 7, 8, 20, 40]
    for lines in variants:
        one, two = _both(lines, sizes)
        assert one.problems == two.problems, (one.problems, two.problems)
        assert one.entries == two.entries == len(lines)
        assert one.head() == two.head()
        assert one.roots == two.roots and one.heads == two.heads
        assert bool(one.problems) == (lines != good[: len(lines)])


def test_fast_path_keys_are_checked_in_order_up_to_the_limit() -> None:
    g = genesis(LOG)
    six = {k: 1 for k in "abcdef"}
    seven = {k: 1 for k in "abcdefg"}
    assert _fast_accepts(_line(0, g, details=six))
    assert not _fast_accepts(_line(0, g, details=seven))  # full check, still valid
    v = V.LogVerifier(LOG)
    v.feed([_line(0, g, details=seven)])
    assert not v.problems
    for keys in (("a", "a "), ("ab", "b"), ("A", "a", "b")):  # sorted: fast and valid
        assert _fast_accepts(_line(0, g, details=dict.fromkeys(keys, 0)))
    raw = _line(0, g, details={"a": 1, "a ": 2}).replace(b'"a":1,"a ":2', b'"a ":2,"a":1')
    v = V.LogVerifier(LOG)
    v.feed([raw])
    assert v.problems == ["entry 0 is not a canonical audit entry"]
    one, two = _both([raw], [1])
    assert one.problems == two.problems


def test_the_real_worker_process_verifies_and_fails_closed(tmp_path: Path) -> None:
    log = _filled(tmp_path, 5000)
    log.checkpoint(SIGNER)
    one = log.verify(TRUST, parallel=False)
    two = log.verify(TRUST, parallel=True)
    assert one.ok and two.ok and one.notes == two.notes
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    db.execute("DELETE FROM entries WHERE seq = 4321")
    db.close()
    one = log.verify(TRUST, parallel=False)
    two = log.verify(TRUST, parallel=True)
    assert not two.ok and one.problems == two.problems
    # the worker dies mid-run: the run fails, it does not pass unchecked
    v = V.LogVerifier(log.log_id, parallel=True)
    assert v.parallel and v._worker is not None
    v._worker.proc.kill()
    v.feed(log.iter_lines())
    v.join()
    assert any("hashing process" in p for p in v.problems)


def test_a_worker_module_planted_in_the_working_directory_is_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk operator plants custody/audit/chainwork.py where the auditor runs verify,
    answering "no problems" for any log: the worker runs isolated from its own source, so
    a rewritten entry is still found."""
    log = _filled(tmp_path, 300)
    fake = tmp_path / "cwd" / "custody" / "audit"
    fake.mkdir(parents=True)
    for d in (fake.parent, fake):
        (d / "__init__.py").write_text("")
    (fake / "chainwork.py").write_text(
        "import sys, json\n"
        "sys.stdin.buffer.read()\n"
        "r = json.dumps({'entries': 300, 'head': '00' * 32, 'roots': {}, 'heads': {},"
        " 'problems': [], 'more': 0}).encode()\n"
        "sys.stdout.buffer.write(len(r).to_bytes(4, 'big') + r)\n"
    )
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "cwd"))
    db = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    line = db.execute("SELECT line FROM entries WHERE seq = 7").fetchone()[0]
    db.execute(
        "UPDATE entries SET line = ? WHERE seq = 7", (bytes(line).replace(b"alice", b"malle"),)
    )
    db.close()
    rep = log.verify(parallel=True)
    assert not rep.ok and any("entry 8 breaks the chain" in p for p in rep.problems), rep
