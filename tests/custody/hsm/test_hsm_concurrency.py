"""Several custody processes opening the same embedded SoftHSMv2 token at once.

SoftHSMv2's file store rewrites token.object on every login; without the adapter's open lock
a concurrent process sometimes saw no token at all ("No token labelled 'custody'": 2 of 100
opens in a 4-process loop before the fix)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import cli_env, run_cli, write_secret

pytestmark = pytest.mark.hsm


def test_concurrent_processes_always_find_the_token(tmp_path):
    pins = tmp_path / "pins"
    write_secret(pins, "pin=conc-pin-1234\nso_pin=conc-so-1234\n")
    home = tmp_path / "home"
    init = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--dev-root")
    assert init.returncode == 0, init.stderr
    assert (
        run_cli(
            "kek", "rotate", "--branch", "data", "--home", str(home), "--pin-file", str(pins)
        ).returncode
        == 0
    )
    cmd = [
        sys.executable,
        "-m",
        "custody_cli",
        "dek",
        "verify",
        "--home",
        str(home),
        "--pin-file",
        str(pins),
        "--json",
    ]
    failures = []
    for _ in range(8):
        procs = [
            subprocess.Popen(
                cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            for _ in range(4)
        ]
        for p in procs:
            _, err = p.communicate(timeout=120)
            if p.returncode != 0:
                failures.append(err.strip())
    assert failures == []
