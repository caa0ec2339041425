"""tests/ mirrors the packages: every test folder names a package or wing that exists
(tests/cli is custody_cli), so a test's place says what it tests (CONTRIBUTING.md)."""

from __future__ import annotations

from tests.conftest import ROOT

TESTS = ROOT / "tests"
NOT_MIRRORS = {"fixtures", "vectors", "__snapshots__", "__pycache__"}
ALIASES = {"cli": "custody_cli"}


def test_every_test_folder_mirrors_a_package():
    strays = []
    for d in sorted(p for p in TESTS.rglob("*") if p.is_dir()):
        rel = d.relative_to(TESTS)
        if NOT_MIRRORS & set(rel.parts):
            continue
        parts = [ALIASES.get(rel.parts[0], rel.parts[0]), *rel.parts[1:]]
        if not (
            ROOT.joinpath(*parts).is_dir() or ROOT.joinpath(*parts).with_suffix(".py").is_file()
        ):
            strays.append(str(rel))
        if not (d / "__init__.py").is_file():
            strays.append(f"{rel} (no __init__.py: tests/ is a package)")
    assert strays == []
