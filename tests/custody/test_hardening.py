"""custody/hardening.py: child processes get an allow-listed environment (issue 11, item 7).
Core dumps are tested on real entry points in tests/cli/test_hygiene.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def test_child_env_is_an_allow_list():
    from custody.hardening import child_env

    parent = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "CUSTODY_PIN": "canary-pin",
        "CUSTODY_PASSPHRASE": "canary-pw",
        "LD_PRELOAD": "/tmp/evil.so",
        "PYTHONPATH": "/src",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    assert child_env(environ=parent) == {"PATH": "/usr/bin", "LANG": "C.UTF-8"}
    assert child_env(environ=parent, python=True, extra={"SOFTHSM2_CONF": "/c"}) == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": "/src",
        "SOFTHSM2_CONF": "/c",
    }


def _env_dumper(d: Path, name: str) -> Path:
    script = d / name
    out = d / f"{name}.env"
    script.write_text(f"#!/bin/sh\nenv > {out}\nexit 1\n")
    script.chmod(0o700)
    return out


def test_softhsm_util_and_alert_hook_get_no_pin_from_the_environment(tmp_path, monkeypatch):
    from custody import policy
    from custody.errors import HsmError
    from custody.hsm import softhsm

    bindir = tmp_path / "bin"
    bindir.mkdir()
    dump = _env_dumper(bindir, "softhsm2-util")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUSTODY_PIN", "canary-pin-8812")
    monkeypatch.setenv("CUSTODY_PASSPHRASE", "canary-pw-8812")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(HsmError):
        softhsm.init_token(tmp_path / "softhsm2.conf", "t", "so-pin-1234", "user-pin-1234")
    env = dict(ln.split("=", 1) for ln in dump.read_text().splitlines() if "=" in ln)
    assert env["SOFTHSM2_CONF"] == str(tmp_path / "softhsm2.conf")
    assert not {k for k in env if k.startswith("CUSTODY_")} and "HOME" not in env
    assert "canary" not in dump.read_text()

    hook_dump = _env_dumper(bindir, "hook")
    res = policy.run_alert_hook(str(bindir / "hook"), {"key": "data"})
    assert res.ok is False  # the dumper exits 1
    text = hook_dump.read_text()
    assert "canary" not in text and "CUSTODY_" not in text and f"HOME={tmp_path}" in text
