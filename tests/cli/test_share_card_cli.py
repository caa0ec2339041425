"""``custody share card`` as a subprocess: sizes, the facts it prints, typed refusals."""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pypdf import PdfReader

from custody.shares import envelope as ev
from custody.shares import slip39
from tests.conftest import run_cli

CID = "0f0e0d0c0b0a09080706050403020100"
DEPLOYMENT = "d" * 32
PT = {"a6": (297.64, 419.53), "a4": (595.28, 841.89), "letter": (612.0, 792.0)}


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    d = tmp_path_factory.mktemp("cardkit")
    share = slip39.split(bytes(32), groups=[(3, 5)], iteration_exponent=0)[0][1]
    (d / "share.txt").write_text(share + "\n")
    env = ev.make_envelope(
        slip39.parse_share(share),
        ceremony_id=CID,
        policy_digest="00" * 32,
        epoch=1,
        custodian="ab" * 16,
        kcv="c0ffee",
        dealer=Ed25519PrivateKey.generate(),
    )
    (d / "env.json").write_bytes(env.to_bytes())
    return d, share, env


def card(kit, out, *extra):
    d, _, _ = kit
    return run_cli(
        "share", "card", str(d / "share.txt"), "--envelope", str(d / "env.json"),
        "--out", str(out), "--home", str(d / "no-home"), *extra,
    )  # fmt: skip


@pytest.mark.parametrize("size", ["a6", "a4", "letter"])
def test_share_card_pdf_at_each_size_prints_the_facts(kit, tmp_path, size):
    out = tmp_path / "card.pdf"
    r = card(
        kit, out, "--format", "pdf", "--size", size, "--name", "Alice",
        "--group-size", "5", "--deployment", DEPLOYMENT, "--kind", "generate",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    page = PdfReader(out).pages[0]
    assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx(
        PT[size], abs=0.01
    )
    assert len(page.images) == 0
    if shutil.which("pdftotext"):
        text = subprocess.run(
            ["pdftotext", "-layout", str(out), "-"], capture_output=True, text=True, check=True
        ).stdout
        for fact in ("Alice", "3 of 5 needed", DEPLOYMENT, f"generate {CID}", "c0ffee"):
            assert fact in text, fact
        assert kit[2].short_fingerprint() in text


def test_share_card_defaults_to_a6_and_says_what_it_was_not_given(kit, tmp_path):
    out = tmp_path / "card.svg"
    r = card(kit, out, "--format", "svg")
    assert r.returncode == 0, r.stderr
    svg = out.read_text()
    assert 'width="105mm" height="148mm"' in svg
    assert "3 of ? needed" in svg and "not given" in svg and CID in svg


def test_share_card_takes_the_deployment_from_the_home(kit, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "custody.toml").write_text(
        '[deployment]\nid = "' + "e" * 32 + '"\ncreated = "2026-01-01T00:00:00Z"\n'
        '[hsm]\nmodule = "/nonexistent.so"\ntoken_label = "t"\n'
    )
    d, _, _ = kit
    out = tmp_path / "card.svg"
    r = run_cli(
        "share", "card", str(d / "share.txt"), "--envelope", str(d / "env.json"),
        "--format", "svg", "--out", str(out), "--home", str(home),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "e" * 32 in out.read_text()


def test_share_card_refuses_a_group_smaller_than_its_threshold_and_a_bad_size(kit, tmp_path):
    out = tmp_path / "card.pdf"
    r = card(kit, out, "--format", "pdf", "--group-size", "2")
    assert r.returncode == 2 and "group size" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
    r = card(kit, out, "--format", "pdf", "--size", "a5")
    assert r.returncode != 0 and "invalid choice" in r.stderr and not out.exists()
    assert kit[1].split()[4] not in r.stderr


def test_share_card_takes_its_format_from_the_out_suffix_and_refuses_a_mismatch(kit, tmp_path):
    # A PNG saved as card.pdf would neither open nor print: the suffix decides, else PDF.
    for name, magic in (("card.pdf", b"%PDF-"), ("card.svg", b"<svg"), ("card.png", b"\x89PNG")):
        r = card(kit, tmp_path / name)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / name).read_bytes().startswith(magic), name
    r = card(kit, tmp_path / "card")
    assert r.returncode == 0 and (tmp_path / "card").read_bytes().startswith(b"%PDF-")
    assert "wrote pdf a6 card" in r.stderr
    r = card(kit, tmp_path / "other.pdf", "--format", "png")
    assert r.returncode == 2 and "--format png but --out ends in .pdf" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "other.pdf").exists()
    assert kit[1].split()[4] not in r.stderr + r.stdout
