"""The dashboard's view model raises the token-versus-store alarm (through
tui/services/status.py, from custody.status): an emptied token is not "token ok"."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST_PIN, TEST_SO_PIN
from tests.tui_fixtures import dev_home

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from custody.hsm import softhsm
from tui.screens.dashboard import STATUS_STYLE, styled
from tui.services.home import HomeServices, Settings

pytestmark = pytest.mark.hsm


def test_an_emptied_token_is_an_alarm_on_the_dashboard(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("CUSTODY_PIN", raising=False)
    h, pins = dev_home(tmp_path, 1)
    svc = HomeServices(Settings(home=h, pin_file=pins))
    v = svc.dashboard()
    assert v.hsm.state == "ok" and v.hsm.alarms == ()
    assert not [a for a in v.alerts if a.level == "error"]
    conf = h / softhsm.CONF_NAME
    softhsm.delete_token(conf, "custody")
    softhsm.init_token(conf, "custody", TEST_SO_PIN, TEST_PIN)
    v = HomeServices(Settings(home=h, pin_file=pins)).dashboard()
    assert v.hsm.state == "alarm" and v.hsm.root_keys_on_token == ()
    errors = [a for a in v.alerts if a.level == "error"]
    assert errors and errors[0].text.startswith("root/v1 is not on this token")
    assert "docs/recovery.md" in errors[0].hint
    assert v.hsm.detail == errors[0].text
    # and the dashboard shows that state as an error, never in the default (unstyled) colour
    assert styled(v.hsm.state).style == STATUS_STYLE["unreachable"] == "bold red"
