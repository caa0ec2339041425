"""`custody demo` end to end on a fresh home: exit 0, bundles verify (its time is measured by
bench/, never asserted here)."""

from __future__ import annotations

import json
import stat

import pytest

from tests.conftest import run_cli

# One xdist worker runs the whole module, so its module-scoped demo home is built once,
# not once on each worker.
pytestmark = pytest.mark.xdist_group("demo")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-run") / "demo"
    r = run_cli("demo", "--home", str(home), "--json", timeout=300)
    return home, r


def test_demo_json_and_bundles_verify(demo_run):
    home, r = demo_run
    assert r.returncode == 0, r.stderr[-2000:]
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


def test_demo_secret_files_are_private(demo_run):
    """Issue 11: the demo's PIN file, people/*.pass and every share file are 0600, and the
    directories holding them 0700 (the demo used to write people/*.pass 0644)."""
    home, r = demo_run
    assert r.returncode == 0, r.stderr[-2000:]
    passes = sorted((home / "people").glob("*.pass"))
    assert len(passes) == 9
    secrets = [home / "demo-pin", *passes, *home.glob("shares-*/*.share.txt")]
    secrets += [*home.glob("people/*.key.pem"), *home.glob("tampered/*.share.txt")]
    assert len(secrets) > 20
    for p in secrets:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for d in (home / "people", home / "tampered", *home.glob("shares-*")):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
