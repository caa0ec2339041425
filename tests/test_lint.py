"""STYLE.md's enforcement: ruff and mypy --strict stay clean (import-linter is in
tests/test_architecture.py). Skipped only where the tool is not installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(BIN))
    if exe is None:
        pytest.skip(f"{name} is not installed in this environment")
    return exe


def test_ruff_is_clean():
    r = subprocess.run(
        [
            _tool("ruff"),
            "check",
            "custody",
            "ceremonies",
            "tui",
            "custody_cli",
            "custody_server",
            "custody_client",
            "tests",
            "bench",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:]


def test_ruff_format_is_applied():
    r = subprocess.run(
        [
            _tool("ruff"),
            "format",
            "--check",
            "custody",
            "ceremonies",
            "tui",
            "custody_cli",
            "custody_server",
            "custody_client",
            "tests",
            "bench",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:]


def test_mypy_strict_is_clean():
    r = subprocess.run(
        [_tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, r.stdout[-3000:]
