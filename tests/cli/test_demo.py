"""`custody demo` end to end on a fresh home: exit 0, under a minute, bundles verify."""

from __future__ import annotations

import json
import time

from tests.conftest import run_cli


def test_demo_json_and_bundles_verify(tmp_path):
    home = tmp_path / "demo"
    t0 = time.monotonic()
    r = run_cli("demo", "--home", str(home), "--json", timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert took < 60
    out = json.loads(r.stdout)
    assert out["home"] == str(home)
    assert len(out["bundles"]) == 8 and len(out["trust_keys"]) == 9
    names = [s["step"] for s in out["steps"]]
    for step in (
        "enrol",
        "generate",
        "recover",
        "rotate-root",
        "reshare",
        "drill",
        "emergency-rotate",
        "verify",
    ):
        assert step in names
    rec = next(s for s in out["steps"] if s["step"] == "recover")
    assert "bob rejected" in rec["detail"]
    trust = [a for t in out["trust_keys"] for a in ("--trust", t)]
    v = run_cli("transcript", "verify", out["bundles"][1], *trust)
    assert v.returncode == 0, v.stdout
    # the home stays usable with the demo PIN
    s = run_cli(
        "dek",
        "verify",
        "--all",
        "--home",
        str(home),
        "--pin-file",
        str(home / "demo-pin"),
        "--json",
    )
    assert s.returncode == 0 and json.loads(s.stdout)["failed"] == []
