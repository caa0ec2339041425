"""`make run`'s entry point: builds the embedded default home once, then reuses it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import cli_env

pytestmark = pytest.mark.hsm


def _devhome(home):
    return subprocess.run(
        [sys.executable, "-m", "custody_cli.devhome", str(home)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def test_make_run_builds_then_reuses_the_home(tmp_path):
    home = tmp_path / "custody-home"
    first = _devhome(home)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "token       custody: reachable" in first.stdout
    assert "objects     1000 wrapped" in first.stdout
    db = (home / "custody.db").stat().st_ino
    second = _devhome(home)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "custody demo" not in second.stdout  # no second set-up
    assert (home / "custody.db").stat().st_ino == db
    pin = (home / "demo-pin").read_text().strip().split("=", 1)[-1]
    assert pin and pin not in first.stdout + first.stderr + second.stdout


def test_make_run_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "junk").write_text("x")
    r = _devhome(tmp_path)
    assert r.returncode != 0 and "not a finished custody home" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk"]
