"""The cards the generate ceremony writes at issue: the page size it was asked for, and the
facts a custodian needs (deployment, full ceremony id, k of n, KCV, date), from the
ceremony itself. Through the CLI as a subprocess against SoftHSMv2."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from pypdf import PdfReader

from tests.ceremony_fixtures import CUST, Dep, build_enrolled, copy_dep

pytestmark = pytest.mark.hsm


@pytest.fixture(scope="module")
def enrolled_tpl(tmp_path_factory) -> Dep:
    return build_enrolled(tmp_path_factory.mktemp("enr") / "home")[0]


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils missing")
def test_generate_writes_letter_cards_with_the_ceremony_facts(enrolled_tpl: Dep, tmp_path: Path):
    d = copy_dep(enrolled_tpl, tmp_path / "home")
    out = d.root / "shares"
    r = d.ceremony(
        "generate", *d.coord(), *[a for n in CUST for a in ("--custodian", n)],
        "--threshold", "3", "--out", str(out),
        "--card-format", "pdf", "--card-format", "png", "--card-size", "letter",
    )  # fmt: skip
    assert r.returncode == 10, r.stderr  # waiting for the verification round
    cid = r.out["ceremony_id"]
    deployment = tomllib.loads((d.root / "custody.toml").read_text())["deployment"]["id"]
    env = (out / "bob.envelope.json").read_bytes()
    pdf = out / "bob.card.pdf"
    page = PdfReader(pdf).pages[0]
    assert (float(page.mediabox.width), float(page.mediabox.height)) == (612, 792)
    assert len(page.images) == 0
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    today = datetime.now(UTC).date().isoformat()
    for fact in ("bob", "3 of 5 needed", deployment, f"generate {cid}", today, "What to do"):
        assert fact in text, fact
    assert r.out["facts"]["new_rk_kcv"] in text
    assert [x.bytes for x in zxingcpp.read_barcodes(Image.open(out / "bob.card.png"))] == [env]
    assert Image.open(out / "bob.card.png").size == (2550, 3300)  # Letter at 300 dpi
