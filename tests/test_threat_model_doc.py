"""docs/threat-model.md: every claim points to a test that exists."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

DOC = ROOT / "docs" / "threat-model.md"
REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _tests_in(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    return {
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test_")
    }


def test_every_referenced_test_exists():
    refs = REF.findall(DOC.read_text(encoding="utf-8"))
    assert len(refs) > 30
    missing = [f"{f}::{t}" for f, t in refs if t not in _tests_in(f)]
    assert missing == []


def _claim_rows() -> list[str]:
    """Data rows of every table whose header ends with ``| check | test |``."""
    rows, in_claims = [], False
    for ln in DOC.read_text(encoding="utf-8").splitlines():
        if not ln.startswith("|"):
            in_claims = False
        elif ln.rstrip().endswith("| check | test |"):
            in_claims = True
        elif in_claims and not ln.startswith("|---"):
            rows.append(ln)
    return rows


def test_every_claim_row_names_a_test():
    rows = _claim_rows()
    assert len(rows) > 30
    bad = [r for r in rows if not REF.search(r.split("|")[-2])]
    assert bad == []
    assert "(test: pending)" not in DOC.read_text()
