"""A home is self-contained: every path the store or a transcript keeps is relative to the
home, so a plain copy of a home (``cp -a``) is a deployment of its own. An abort in the
copy touches neither the original's transcripts, nor its issued share files, nor its
token; the original's ceremony stays open and resumable.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.ceremony_fixtures import CUST, Dep, build_enrolled

pytestmark = pytest.mark.hsm


def _tree_digest(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def _states(d: Dep) -> dict[str, str]:
    r = d.ceremony("list", "--home", str(d.root), "--json")
    assert r.returncode == 0, r.stderr
    return {c["id"]: c["state"] for c in json.loads(r.stdout)}


def _stored_paths(root: Path) -> list[str]:
    c = sqlite3.connect(root / "custody.db")
    try:
        rows = c.execute("SELECT bundle, pending FROM ceremonies").fetchall()
    finally:
        c.close()
    out = []
    for bundle, pending in rows:
        out.append(bundle)
        doc = json.loads(pending or "{}")
        out.append(doc.get("params", {}).get("out", ""))
        out += doc.get("files", [])
    return out


def test_an_abort_in_a_copied_home_leaves_the_original_open_and_resumable(tmp_path: Path):
    orig, _ = build_enrolled(tmp_path / "orig")
    cust = [a for n in CUST for a in ("--custodian", n)]
    r = orig.ceremony(
        "generate", *orig.coord(), *cust, "--threshold", "3", "--out", str(orig.root / "shares")
    )
    assert r.returncode == 10 and r.out["awaiting"] == "shares", r.stderr
    cid = r.out["ceremony_id"]

    # nothing the store keeps for the ceremony names the original's absolute location
    stored = _stored_paths(orig.root)
    assert stored and all(not p.startswith("/") for p in stored), stored
    assert f"transcripts/{cid}" in stored and "shares" in stored
    facts = (orig.root / "transcripts" / cid / "events.jsonl").read_text()
    assert str(orig.root) not in facts

    # a plain copy: custody itself repoints the copy's SoftHSMv2 config at its own tokens
    shutil.copytree(orig.root, tmp_path / "copy")
    copy = Dep(tmp_path / "copy")
    for d in (copy.people, copy.pin):  # the copy's own participant files and PINs
        assert d.exists()
    before_tr = _tree_digest(orig.root / "transcripts")
    before_sh = _tree_digest(orig.root / "shares")
    before_tok = _tree_digest(orig.root / "tokens")

    a = copy.ceremony("abort", cid, *copy.coord())
    assert a.returncode == 0, a.stdout + a.stderr
    assert str(copy.root / "tokens") in (copy.root / "softhsm2.conf").read_text()
    # the abort removed the copy's issued files and its copy of the new root ...
    assert not list((copy.root / "shares").glob("*.share.txt"))
    assert _states(copy)[cid] == "aborted"
    # ... and wrote only into the copy's transcript
    assert _tree_digest(copy.root / "transcripts") != before_tr
    assert _tree_digest(orig.root / "transcripts") == before_tr
    assert _tree_digest(orig.root / "shares") == before_sh
    assert _tree_digest(orig.root / "tokens") == before_tok

    # the original is still open, and resumes to the end with its own share files
    assert _states(orig)[cid] == "open"
    r = orig.ceremony("resume", cid, *orig.coord(), *orig.shares("alice", "bob", "carol"))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    assert orig.roots() == [(1, "active")]
    assert copy.roots() == []
    orig.verify(r.out["bundle"])
    assert r.out["bundle"].startswith(str(orig.root))
