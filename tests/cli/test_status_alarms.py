"""``custody status`` compares the token's roots with the store (custody.status.token_alarms):
a swapped token (another deployment's root/v1: a KCV mismatch), a token holding a root the
store does not know, and a missing root are alarms with the fix, and status exits 6."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from custody.model import KeyState
from custody.status import ALARM_EXIT, token_alarms
from custody.store.rows import KekVersion, RootVersion
from tests.conftest import run_cli
from tests.tui_fixtures import dev_home

pytestmark = pytest.mark.hsm


def _root(v: int, state: KeyState, kcv: str, blob: bool = True) -> RootVersion:
    return RootVersion(
        version=v, state=state, kcv=kcv, epoch=1, has_blob=blob, created="", state_changed=""
    )


def _kek(root_version: int, state: KeyState = KeyState.ACTIVE) -> KekVersion:
    return KekVersion(
        branch="data",
        version=1,
        state=state,
        kcv="k",
        root_version=root_version,
        created="",
        state_changed="",
        destroy_after=None,
        objects=0,
    )


def test_alarm_table():
    roots = [_root(1, KeyState.DECRYPT_ONLY, "aaa"), _root(2, KeyState.ACTIVE, "bbb")]
    assert token_alarms(roots, [_kek(2)], {1: "aaa", 2: "bbb"}) == []
    # root/v1 still seals a live KEK: it must be on the token too
    got = token_alarms(roots, [_kek(1)], {2: "bbb"})
    assert [(a["key"], a["problem"], a["fix"]) for a in got] == [
        ("root/v1", "missing", "custody ceremony recover")
    ]
    # a KEK under v1 that is destroyed needs no v1
    assert token_alarms(roots, [_kek(1, KeyState.DESTROYED)], {2: "bbb"}) == []
    got = token_alarms(roots, [], {1: "aaa", 2: "ccc", 3: "ddd"})
    assert [(a["key"], a["problem"]) for a in got] == [
        ("root/v2", "kcv-mismatch"),
        ("root/v3", "unknown"),
    ]
    assert "custody store restore FILE" in got[1]["text"]
    # a development root (no blob) cannot be recovered: the alarm says so
    got = token_alarms([_root(1, KeyState.ACTIVE, "a", blob=False)], [], {})
    assert got[0]["problem"] == "missing" and "cannot be recovered" in got[0]["text"]


def _status(h: Path, pins: Path):
    r = run_cli("status", "--home", str(h), "--pin-file", str(pins), "--json")
    return r, json.loads(r.stdout)


def test_a_swapped_token_is_a_kcv_alarm_and_a_foreign_root_is_unknown(tmp_path: Path):
    for n in "abc":
        (tmp_path / n).mkdir()
    a, pins = dev_home(tmp_path / "a", 1)
    b, _ = dev_home(tmp_path / "b", 1)
    r, st = _status(a, pins)
    assert r.returncode == 0 and st["alarms"] == []
    # B's token (its own root/v1) put in A's place: same labels, another key
    shutil.rmtree(a / "tokens")
    shutil.copytree(b / "tokens", a / "tokens")
    r, st = _status(a, pins)
    assert r.returncode == ALARM_EXIT, r.stdout
    assert [al["problem"] for al in st["alarms"]] == ["kcv-mismatch"]
    t = run_cli("status", "--home", str(a), "--pin-file", str(pins))
    assert t.returncode == ALARM_EXIT and "ALARM" in t.stdout and "KCV" in t.stdout
    # a home whose store has no root, given B's token: root/v1 is unknown to the store
    c = tmp_path / "c" / "home"
    r = run_cli("init", "--home", str(c), "--pin-file", str(pins))
    assert r.returncode == 0, r.stderr
    shutil.rmtree(c / "tokens")
    shutil.copytree(b / "tokens", c / "tokens")
    r, st = _status(c, pins)
    assert r.returncode == ALARM_EXIT
    assert [(al["key"], al["problem"]) for al in st["alarms"]] == [("root/v1", "unknown")]
    # without a PIN the token is not checked: no alarm is claimed either way
    r = run_cli("status", "--home", str(c), "--no-token", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["alarms"] == []
