"""Shared helpers for the re-key, backup and crash-harness tests: CLI-built deployments."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import TEST_PIN, TEST_SO_PIN, run_cli


def write_pins(path: Path) -> Path:
    path.write_text(f"pin={TEST_PIN}\nso_pin={TEST_SO_PIN}\n")
    path.chmod(0o600)
    return path


def cli(home: Path, pins: Path | None, *args: str, check: bool = True, timeout: float = 300):
    """Run ``custody ARGS --home H [--pin-file P]``; with *check*, fail on a non-zero exit."""
    extra = ("--pin-file", str(pins)) if pins is not None else ()
    proc = run_cli(*args, "--home", str(home), *extra, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"custody {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def cli_json(home: Path, pins: Path | None, *args: str) -> dict:
    return json.loads(cli(home, pins, *args, "--json").stdout)


def make_deployment(
    root: Path, *, data_objects: int = 0, backup_kek: bool = False
) -> tuple[Path, Path]:
    """A fresh home with a dev root, a data KEK with *data_objects* DEKs, and a backup KEK."""
    root.mkdir(parents=True, exist_ok=True)
    pins = write_pins(root / "pins")
    home = root / "home"
    proc = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--dev-root")
    assert proc.returncode == 0, proc.stderr
    cli(home, pins, "kek", "rotate", "--branch", "data")
    if data_objects:
        cli(home, pins, "dek", "generate", "--count", str(data_objects))
    if backup_kek:
        cli(home, pins, "kek", "rotate", "--branch", "backup")
    return home, pins


def db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "custody.db", timeout=30)


def retired_but_used(home: Path) -> list[tuple[str, int, int]]:
    """KEK versions that can no longer decrypt but still wrap objects: must always be empty."""
    with db(home) as c:
        return c.execute(
            "SELECT k.branch, k.version, COUNT(o.id) FROM kek_versions k JOIN objects o "
            "ON o.branch=k.branch AND o.kek_version=k.version "
            "WHERE k.state NOT IN ('active','decrypt-only') GROUP BY 1, 2"
        ).fetchall()
