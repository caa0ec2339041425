"""The one door to a deployment (custody.deployment.open_deployment), on a real SoftHSMv2
token and a real SQLite store: a missing home, a missing store, a wrong PIN, a missing token
and a PIN source without a PIN are typed errors, the PIN is asked for only once the home and
its store have opened, and nothing is left open (no file handle on the store, the token
logged out) when any part fails.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from custody.config import Home
from custody.deployment import init_deployment, open_audit_log, open_deployment, open_token
from custody.errors import (
    AuditError,
    ConfigError,
    PinIncorrect,
    StorageError,
    TokenNotPresent,
    UsageError,
)
from tests.conftest import TEST_PIN, TEST_SO_PIN


def _open_files(root: Path) -> list[str]:
    """Paths under *root* this process holds open (from /proc/self/fd)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)):
            out.append(target)
    return out


def _store_handles(root: Path) -> list[str]:
    return [p for p in _open_files(root) if Path(p).name.startswith("custody.db")]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    h = Home(tmp_path_factory.mktemp("door") / "home")
    init_deployment(h, user_pin=TEST_PIN, so_pin=TEST_SO_PIN)
    return h


class _Asked:
    """A PIN source that records whether it was consulted."""

    def __init__(self, pin: str = TEST_PIN) -> None:
        self.pin, self.calls = pin, 0

    def __call__(self) -> str:
        self.calls += 1
        return self.pin


def test_opens_config_store_and_token_and_closes_them(home: Home) -> None:
    asked = _Asked()
    dep = open_deployment(home, asked)
    try:
        assert asked.calls == 1
        assert dep.token.info().label == "custody"
        assert dep.store.get_meta("deployment_id") == dep.config.deployment_id
        assert _store_handles(home.root)
    finally:
        dep.close()
    assert _store_handles(home.root) == []
    assert dep.hsm is None


def test_without_pin_the_token_is_not_opened(home: Home) -> None:
    with open_deployment(home) as dep:
        assert dep.hsm is None
        with pytest.raises(UsageError, match="token is not open"):
            _ = dep.token
    assert _store_handles(home.root) == []


def test_missing_home_is_a_config_error_before_any_pin_is_asked(tmp_path: Path) -> None:
    asked = _Asked()
    with pytest.raises(ConfigError) as ei:
        open_deployment(tmp_path / "nowhere", asked)
    assert ei.value.title.startswith("No custody deployment") and "custody init" in ei.value.hint
    assert asked.calls == 0
    assert not (tmp_path / "nowhere").exists()  # the door creates nothing


def test_missing_store_is_a_storage_error_before_any_pin_is_asked(
    home: Home, tmp_path: Path
) -> None:
    other = Home(tmp_path / "copy")
    other.root.mkdir()
    other.write_config(home.load())  # a config, but no custody.db beside it
    asked = _Asked()
    with pytest.raises(StorageError):
        open_deployment(other, asked)
    assert asked.calls == 0
    assert not other.db_path.exists()


def test_wrong_pin_is_typed_and_leaves_nothing_open(home: Home) -> None:
    with pytest.raises(PinIncorrect) as ei:
        open_deployment(home, "not-the-pin-0000")
    assert "not-the-pin" not in str(ei.value) + ei.value.title + ei.value.hint
    assert _store_handles(home.root) == []  # the store opened first is closed again
    with open_deployment(home, TEST_PIN) as dep:  # and the token is free for the next login
        assert dep.token.info().label == "custody"


def test_missing_token_is_typed_and_leaves_nothing_open(home: Home, tmp_path: Path) -> None:
    cfg = home.load()
    other = Home(tmp_path / "elsewhere")
    other.root.mkdir()
    # the same token directory, but a label that no token has
    conf = str(home.root / (cfg.hsm.softhsm_conf or ""))
    other.write_config(replace(cfg, hsm=replace(cfg.hsm, token_label="gone", softhsm_conf=conf)))
    (other.db_path).write_bytes(home.db_path.read_bytes())
    with pytest.raises(TokenNotPresent):
        open_deployment(other, TEST_PIN)
    assert _store_handles(other.root) == []


def test_pin_source_without_a_pin_is_typed_and_leaves_nothing_open(home: Home) -> None:
    def no_pin() -> str:
        raise ConfigError("No token user PIN was given", "Provide it.")

    with pytest.raises(ConfigError, match="No token user PIN"):
        open_deployment(home, no_pin)
    assert _store_handles(home.root) == []


def test_login_later_on_an_open_deployment(home: Home) -> None:
    with open_deployment(home) as dep:
        with pytest.raises(PinIncorrect):
            dep.login("not-the-pin-0000")
        assert dep.hsm is None  # nothing kept from the failed login
        assert dep.login(TEST_PIN) is dep.token
    assert dep.hsm is None and _store_handles(home.root) == []


def test_audit_log_door_refuses_a_home_without_one(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="No audit log") as ei:
        open_audit_log(tmp_path, hint="Try elsewhere.")
    assert ei.value.hint == "Try elsewhere."
    assert not (tmp_path / "audit.db").exists()


def test_token_door_needs_no_store_and_asks_for_the_pin_last(home: Home, tmp_path: Path) -> None:
    asked = _Asked()
    with pytest.raises(ConfigError, match="No custody deployment"):
        open_token(tmp_path / "nowhere", asked)
    assert asked.calls == 0
    with pytest.raises(PinIncorrect):
        open_token(home, "not-the-pin-0000")
    hsm = open_token(home, asked)
    try:
        assert asked.calls == 1 and hsm.info().label == "custody"
    finally:
        hsm.close()
    assert _store_handles(home.root) == []  # the token door never opens the store
