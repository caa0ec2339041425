"""The services layer's public PIN access: what the ceremony services use, never a copy."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from tests.conftest import ROOT, TEST_PIN

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tui.fakes import StaticServices
from tui.services.ceremony import HomeCeremonyServices, ceremony_services
from tui.services.home import HomeServices, Settings


def test_ceremony_services_read_the_pin_through_the_public_accessor(tmp_path, monkeypatch):
    monkeypatch.delenv("CUSTODY_PIN", raising=False)
    pins = tmp_path / "pins"
    pins.write_text(f"pin={TEST_PIN}\n")
    pins.chmod(0o600)
    svc = HomeServices(Settings(home=tmp_path, pin_file=pins))
    assert svc.pin() == TEST_PIN and svc.has_pin()
    app = SimpleNamespace(settings=svc.settings, services=svc)
    cer = ceremony_services(app)
    assert isinstance(cer, HomeCeremonyServices) and app.ceremony_services is cer
    assert cer._pin() == TEST_PIN  # the bound accessor, read when a ceremony opens
    assert TEST_PIN not in repr(svc) + repr(cer) + repr(vars(svc))
    cer.close()


def test_no_pin_anywhere(tmp_path, monkeypatch):
    monkeypatch.delenv("CUSTODY_PIN", raising=False)
    assert HomeServices(Settings(home=tmp_path)).pin() is None
    assert StaticServices(settings=Settings(home=tmp_path)).pin() is None
