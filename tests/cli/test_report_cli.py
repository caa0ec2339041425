"""``custody report compliance|export`` through the CLI as subprocesses: from the home,
offline from an exported bundle with no home at all, as JSON, text and an HTML file; a
damaged bundle is refused; no secret value in any output or in the bundle."""

from __future__ import annotations

import html
import json
import stat
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
CANARY = "Report-Canary-8c1f!Vb4#Tn6@Yq"
OWNER = "<b onmouseover=alert(1)>ops</b>"


def test_report_from_the_home_and_offline_from_its_bundle(tmp_path: Path):
    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    cli(home, pins, "kek", "rotate", "--branch", "backup")
    r = run_cli("secret", "put", "ops/db/password", "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", OWNER, "--home", str(home), "--pin-file",
                str(pins), input=CANARY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    trust = tmp_path / "audit.pub"
    cli(home, pins, "audit", "checkpoint", "--trust-out", str(trust))
    r = run_cli("report", "compliance", "--home", str(home), "--trust", str(trust), "--json")
    assert r.returncode == 0, r.stderr
    live = json.loads(r.stdout)
    sec = {s["id"]: s for s in live["sections"]}
    assert sec["checkpoint"]["status"] == "ok" and sec["checkpoint"]["pinned"]
    assert sec["drills"]["status"] == "not-available"
    assert sec["grants"]["status"] == "ok" and sec["grants"]["live"] == 0
    assert sec["rotations"]["status"] == "ok"
    text = run_cli("report", "compliance", "--home", str(home))
    assert text.returncode == 0 and "[NOT AVAILABLE] Custodians without a drill" in text.stdout
    # export, then recompute with no home at all
    bundle = tmp_path / "bundle"
    r = run_cli("report", "export", str(bundle), "--home", str(home), "--json")
    assert r.returncode == 0, r.stderr
    man = json.loads(r.stdout)
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in bundle.iterdir())
    at = man["collected_at"]
    nohome = tmp_path / "elsewhere"
    nohome.mkdir()
    r = run_cli("report", "compliance", "--bundle", str(bundle), "--trust", str(trust),
                "--at", at, "--json", cwd=nohome)  # fmt: skip
    assert r.returncode == 0, r.stderr
    off = json.loads(r.stdout)
    assert off["source"] == f"bundle {bundle}" and off["at"] == at
    osec = {s["id"]: s for s in off["sections"]}
    assert osec["checkpoint"]["log_verifies"] and osec["checkpoint"]["status"] == "ok"
    assert osec["checkpoint"]["entries"] == man["entries"]
    # a year on, the offline report finds the overdue rotations too (from the bundle alone)
    r = run_cli("report", "compliance", "--bundle", str(bundle), "--at", "2028-01-01T00:00:00Z",
                "--html", "--out", str(tmp_path / "r.html"), cwd=nohome)  # fmt: skip
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "r.html").read_text()
    assert stat.S_IMODE((tmp_path / "r.html").stat().st_mode) == 0o600
    assert "prod:ops/db/password" in page and "overdue" in page
    assert OWNER not in page and html.escape(OWNER, quote=True) in page
    # the bundle and every output hold no value
    for f in bundle.iterdir():
        assert CANARY.encode() not in f.read_bytes()
    assert CANARY not in live.__repr__() + text.stdout + page + json.dumps(off)
    # damage is refused (integrity, exit 6)
    (bundle / "store.json").write_text((bundle / "store.json").read_text().replace("ops", "opz"))
    r = run_cli("report", "compliance", "--bundle", str(bundle), cwd=nohome)
    assert r.returncode == 6 and "does not match the manifest" in r.stderr
    # an export never writes into a directory that holds something
    r = run_cli("report", "export", str(bundle), "--home", str(home))
    assert r.returncode == 2
