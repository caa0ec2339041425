"""``custody hsm selftest`` as a real subprocess against the session's SoftHSMv2 token."""

from __future__ import annotations

import json

import pytest

from custody.config import Config, Home, HsmConfig
from tests.conftest import TEST_PIN, cli_env, run_cli

pytestmark = pytest.mark.hsm


@pytest.fixture
def home(softhsm_token, tmp_path):
    """A hand-written custody.toml naming the session token through softhsm_conf."""
    conf, label, _pin = softhsm_token
    h = Home(tmp_path / "home")
    h.root.mkdir()
    h.write_config(
        Config(
            deployment_id="hsm-cli-test",
            created="2025-01-01T00:00:00Z",
            hsm=HsmConfig(token_label=label, softhsm_conf=str(conf)),
        )
    )
    return h


def test_selftest_json(home, pin_file):
    res = run_cli(
        "hsm", "selftest", "--home", str(home.root), "--pin-file", str(pin_file), "--json"
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] is True and doc["signing_algorithm"] == "ed25519"
    # SoftHSM has no AES-ECB unwrap, so the KEK-sealing fallback is missing (GCM seals)
    assert doc["results"].pop("cbc_hmac") == "missing" and set(doc["errors"]) == {"cbc_hmac"}
    assert set(doc["results"].values()) == {"pass"} and doc["choices"]["kek_seal"] == "aes-gcm"
    assert doc["mechanisms"]["AES_KEY_WRAP_PAD"] and doc["mechanisms"]["EDDSA"]
    assert doc["token"]["manufacturer"] == "SoftHSM project"
    assert TEST_PIN not in res.stdout + res.stderr


def test_selftest_text_with_pin_from_env(home):
    res = run_cli("hsm", "selftest", "--home", str(home.root), env=cli_env(CUSTODY_PIN=TEST_PIN))
    assert res.returncode == 0, res.stderr
    assert "selftest passed" in res.stdout and "CKM_AES_GCM" in res.stdout


def test_selftest_wrong_pin_exit_5(home):
    res = run_cli(
        "hsm",
        "selftest",
        "--home",
        str(home.root),
        "--json",
        env=cli_env(CUSTODY_PIN="wrong-pin-canary-5521"),
    )
    assert res.returncode == 5
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["error"] == "PinIncorrect" and doc["hint"]
    assert "wrong-pin-canary-5521" not in res.stdout + res.stderr


def test_selftest_missing_token_exit_5(softhsm_token, tmp_path, pin_file):
    conf, _label, _pin = softhsm_token
    h = Home(tmp_path)
    h.write_config(
        Config(
            deployment_id="x",
            created="2025-01-01T00:00:00Z",
            hsm=HsmConfig(token_label="absent", softhsm_conf=str(conf)),
        )
    )
    res = run_cli("hsm", "selftest", "--home", str(tmp_path), "--pin-file", str(pin_file))
    assert res.returncode == 5 and "error: No token labelled 'absent'" in res.stderr
    assert "hint:" in res.stderr


def test_selftest_without_home_is_config_error(tmp_path, pin_file):
    res = run_cli("hsm", "selftest", "--home", str(tmp_path / "none"), "--pin-file", str(pin_file))
    assert res.returncode == 3
