"""Shared fixtures: a real SoftHSMv2 token per test session, and the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg_fixtures import backend, pg_server, pg_url  # noqa: F401 - shared fixtures

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors"
FIXTURES = ROOT / "tests" / "fixtures"

TEST_PIN = "test-user-pin-4821"
TEST_SO_PIN = "test-so-pin-9130"


def passphrase_of(name: str) -> str:
    """The test passphrase of participant *name*: strong enough for custody's bar
    (custody/passphrase.py: zxcvbn, 10^12 guesses), deterministic so tests can retype it."""
    return f"{name}-ochre-pylon-marsh-4417"


def write_secret(path: Path, text: str) -> Path:
    """Write a PIN or passphrase file as custody requires it: mode 0600 (custody refuses a
    secret file that group or others can read)."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODY_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(
    *args: str,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run ``custody ARGS`` as a real subprocess (``python -m custody_cli``)."""
    text = not isinstance(input, bytes)
    return subprocess.run(
        [sys.executable, "-m", "custody_cli", *args],
        input=input,
        env=env if env is not None else cli_env(),
        cwd=cwd,
        capture_output=True,
        text=text,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory):
    """A real SoftHSMv2 token for the whole session: (conf path, label, user PIN).

    Sets SOFTHSM2_CONF for this process, since SoftHSMv2 reads it at C_Initialize.
    """
    from custody.hsm import softhsm

    root = tmp_path_factory.mktemp("softhsm")
    conf = softhsm.write_conf(root)
    softhsm.init_token(conf, "custody-test", TEST_SO_PIN, TEST_PIN)
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return conf, "custody-test", TEST_PIN


@pytest.fixture
def pin_file(tmp_path: Path) -> Path:
    return write_secret(tmp_path / "pins", f"pin={TEST_PIN}\nso_pin={TEST_SO_PIN}\n")


@pytest.fixture
def hsm(softhsm_token, tmp_path: Path):
    """The PKCS#11 adapter opened on the session token (closed afterwards)."""
    from custody.config import HsmConfig
    from custody.hsm.pkcs11.adapter import open_hsm

    _conf, label, pin = softhsm_token
    h = open_hsm(HsmConfig(token_label=label), tmp_path, pin)
    yield h
    h.close()


@pytest.fixture(scope="session")
def generated_master(tmp_path_factory: pytest.TempPathFactory):
    """One generated deployment per test process (tests/ceremony_fixtures.build_generated),
    never used in place: modules take a copy of it with ``generated_copy``."""
    from tests.ceremony_fixtures import build_generated

    return build_generated(tmp_path_factory.mktemp("generated-master") / "home")
