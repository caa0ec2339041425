"""``custody hsm provision``: a replacement embedded token, its PINs never on a command line,
refused while the token is there and for a home on a real HSM."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import TEST_PIN, TEST_SO_PIN, cli_env, run_cli, write_secret
from tests.tui_fixtures import dev_home

pytestmark = pytest.mark.hsm


def test_provision_types_the_pins_and_never_passes_them_as_arguments(tmp_path: Path):
    h, pins = dev_home(tmp_path, 1)
    shutil.rmtree(h / "tokens")
    # a softhsm2-util shim first on PATH records every argv it is run with
    real = shutil.which("softhsm2-util")
    assert real
    shim, log = tmp_path / "bin", tmp_path / "argv.log"
    shim.mkdir()
    (shim / "softhsm2-util").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    (shim / "softhsm2-util").chmod(0o755)
    env = cli_env(PATH=f"{shim}{os.pathsep}{os.environ['PATH']}")
    r = run_cli("hsm", "provision", "--home", str(h), "--pin-file", str(pins), env=env)
    assert r.returncode == 0, r.stderr
    argv = log.read_text()
    assert "--init-token" in argv and "--label custody" in argv
    assert TEST_PIN not in argv and TEST_SO_PIN not in argv
    assert TEST_PIN not in r.stdout + r.stderr
    # the new token works with the user PIN, and is empty: the dev root is an alarm
    r = run_cli("status", "--home", str(h), "--pin-file", str(pins), "--json")
    assert r.returncode == 6 and '"reachable": true' in r.stdout
    # the PINs also come from the environment
    shutil.rmtree(h / "tokens")
    env2 = cli_env(CUSTODY_PIN=TEST_PIN, CUSTODY_SO_PIN=TEST_SO_PIN)
    assert run_cli("hsm", "provision", "--home", str(h), env=env2).returncode == 0


def test_provision_refuses_a_present_token_and_an_external_module(tmp_path: Path):
    from custody.hsm import softhsm

    h, pins = dev_home(tmp_path, 1)
    before = sorted(p.name for p in (h / "tokens").rglob("*"))
    r = run_cli("hsm", "provision", "--home", str(h), "--pin-file", str(pins))
    assert r.returncode == 2 and "still there" in r.stderr
    assert sorted(p.name for p in (h / "tokens").rglob("*")) == before
    # a home on an external PKCS#11 module: the vendor's tool, not custody
    conf = softhsm.write_conf(tmp_path / "hsm")
    softhsm.init_token(conf, "bank-hsm", TEST_SO_PIN, TEST_PIN)
    env = cli_env(SOFTHSM2_CONF=str(conf))
    ext = tmp_path / "ext"
    p2 = write_secret(tmp_path / "p2", f"pin={TEST_PIN}\n")
    r = run_cli(
        "init",
        "--home",
        str(ext),
        "--module",
        "/usr/lib/softhsm/libsofthsm2.so",
        "--token-label",
        "bank-hsm",
        "--pin-file",
        str(p2),
        env=env,
    )
    assert r.returncode == 0, r.stderr
    r = run_cli("hsm", "provision", "--home", str(ext), "--pin-file", str(p2), env=env)
    assert r.returncode == 2 and "vendor" in r.stderr and "docs/recovery.md" in r.stderr
    assert not (ext / "tokens").exists()
