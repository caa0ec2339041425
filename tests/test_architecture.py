"""Dependency direction, the single importer of pkcs11 and the store adapters as the single
importers of their drivers (sqlite3, psycopg and psycopg_pool)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    mods: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    return mods


ALL = ("custody", "ceremonies", "tui", "custody_cli", "custody_server", "custody_client")
FRONT = {"tui", "custody_cli", "custody_server"}


def test_only_the_hsm_adapter_imports_pkcs11():
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in ALL
        for p in (ROOT / pkg).rglob("*.py")
        if "pkcs11" in _imports(p) and p.parent != ROOT / "custody" / "hsm" / "pkcs11"
    ]
    assert offenders == []


def test_only_the_store_adapter_imports_sqlite3():
    store = ROOT / "custody" / "store"
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in ALL
        for p in (ROOT / pkg).rglob("*.py")
        if "sqlite3" in _imports(p) and not (p.parent == store and p.name.startswith("sqlite"))
    ]
    assert offenders == []


def test_only_the_postgres_store_adapter_imports_psycopg():
    store = ROOT / "custody" / "store"
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in ("custody", "ceremonies", "tui", "custody_cli")
        for p in (ROOT / pkg).rglob("*.py")
        if _imports(p) & {"psycopg", "psycopg_pool"}
        and not (p.parent == store and p.name.startswith("postgres"))
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("pkg", "forbidden"),
    [
        ("custody", {"ceremonies", "textual", "custody_client"} | FRONT),
        ("ceremonies", {"textual", "custody_client"} | FRONT),
        ("custody_cli", {"tui", "textual", "custody_server", "custody_client"}),
        ("custody_server", {"tui", "textual", "custody_cli", "custody_client"}),
        ("custody_client", {"custody", "ceremonies", "starlette", "uvicorn"} | FRONT),
    ],
)
def test_layers_point_one_way(pkg, forbidden):
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / pkg).rglob("*.py") if _imports(p) & forbidden
    ]
    assert offenders == []


def test_import_linter_contracts():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed in this environment")
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]
