"""``custody transcript verify|show`` as a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import FIXTURES, run_cli

FX = FIXTURES / "transcripts"
DAVE = str(FX / "trust" / "dave.json")
PINS = str(FX / "trust" / "pins.json")  # issue 11: every identity whose signature counts


def test_verify_golden_exit_0() -> None:
    r = run_cli("transcript", "verify", str(FX / "golden" / "rotate-root"), "--trust", PINS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rotate-root a17: 3/3 custodians (alice, bob, carol)" in r.stdout
    assert "verdict: VALID" in r.stdout


def test_verify_archive_with_hex_trust_json() -> None:
    """Issue 11 changed this: a bare hex key is pinned without a role and counts toward no
    quorum, so dave.hex alone no longer makes the policy count; a pin list does."""
    r = run_cli(
        "transcript",
        "verify",
        str(FX / "golden" / "rotate-root.tar"),
        "--trust",
        str(FX / "trust" / "dave.hex"),
        "--trust",
        str(FX / "trust" / "erin.json"),
        "--json",
    )
    assert r.returncode == 6 and "policy-signatures" in json.loads(r.stdout)["failed"]
    r = run_cli(
        "transcript", "verify", str(FX / "golden" / "rotate-root.tar"), "--trust", PINS, "--json"
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["checks"][0]["id"] == "canonical"


def test_verify_tampered_exit_6_names_check() -> None:
    r = run_cli(
        "transcript",
        "verify",
        str(FX / "tampered" / "replayed-approval"),
        "--trust",
        PINS,
        "--json",
    )
    assert r.returncode == 6
    doc = json.loads(r.stdout)
    assert "quorum" in doc["failed"] and not doc["ok"]


def test_verify_wrong_trust_fails() -> None:
    r = run_cli(
        "transcript",
        "verify",
        str(FX / "golden" / "rotate-root"),
        "--trust",
        str(FX / "trust" / "erin.json"),
    )
    assert r.returncode == 6
    assert "FAIL  policy-signatures" in r.stdout


def test_verify_bad_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "k.json"
    bad.write_text("not a key")
    r = run_cli("transcript", "verify", str(FX / "golden" / "rotate-root"), "--trust", str(bad))
    assert r.returncode == 2 and "hint:" in r.stderr
    r = run_cli("transcript", "verify", str(tmp_path / "nope"), "--trust", DAVE)
    assert r.returncode == 6 and "error:" in r.stderr
    r = run_cli("transcript", "verify", str(FX / "golden" / "rotate-root"))
    assert r.returncode == 2


def test_show_and_html(tmp_path: Path) -> None:
    out = tmp_path / "t.html"
    r = run_cli(
        "transcript",
        "show",
        str(FX / "golden" / "drill-exception"),
        "--html",
        str(out),
        "--trust",
        PINS,
    )
    assert r.returncode == 0, r.stderr
    assert "resume at destroy-scratch" in r.stdout and "signed by dave, erin" in r.stdout
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "destroy-scratch" in page and "PASS" in page


def test_html_escapes(tmp_path: Path) -> None:
    from ceremonies.transcript import BundleData, load_bundle
    from ceremonies.transcript.show import render_html

    d = load_bundle(FX / "golden" / "rotate-root")
    evil = d.events.replace(b"scheduled rotation", b"<script>alert(1)</script>")
    page = render_html(
        BundleData(policy=d.policy, events=evil, checkpoints=d.checkpoints, artifacts=d.artifacts)
    )
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_pack_reproduces_golden_archive(tmp_path: Path) -> None:
    out = tmp_path / "b.tar"
    r = run_cli("transcript", "pack", str(FX / "golden" / "rotate-root"), str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (FX / "golden" / "rotate-root.tar").read_bytes()
