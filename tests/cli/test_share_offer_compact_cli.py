"""``custody share send --offer`` reads the compact offer (the QR's 322 digits) as it reads
the text, and ``share offer`` draws the compact form's QR (issue 12: the offer QR fits a
small terminal). Through the CLI as subprocesses."""

from __future__ import annotations

import json

from custody.shares import transport
from tests.conftest import run_cli

CID, SESSION = "9e0d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", "5e551017c3a1f09e5b7d4e21a0b1c2d3"


def test_send_reads_the_compact_offer_and_the_blob_opens(tmp_path):
    r = run_cli("shamir", "split", "--threshold", "2", "--shares", "3", input="ab" * 16 + "\n")
    assert r.returncode == 0, r.stderr
    share = r.stdout.splitlines()[0]
    (tmp_path / "share.txt").write_text(share + "\n")
    co = tmp_path / "co"
    r = run_cli("share", "offer", "--ceremony", CID, "--epoch", "1", "--session", SESSION,
                "--out", str(co), "--ephemeral-key")  # fmt: skip
    assert r.returncode == 0, r.stderr
    text = r.stdout.strip()
    compact = transport.parse_offer(text).to_compact()
    qr_rows = [ln for ln in r.stderr.splitlines() if ln and set(ln) <= set("\u2588\u2580\u2584 ")]
    assert len(qr_rows) == 23 and max(len(ln) for ln in qr_rows) == 45  # version 6, level L
    r = run_cli("share", "send", str(tmp_path / "share.txt"), "--offer", compact, "--trust",
                str(co / "coordinator.pub.json"), "--session", SESSION, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    r = run_cli("share", "receive", "--offer-key", str(co / "offer.key"), sent["blob"],
                "--session", SESSION, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["share"], got["sas"]) == (share, sent["sas"])
    # one digit changed: refused, nothing sealed
    bad = compact[:50] + str((int(compact[50]) + 1) % 10) + compact[51:]
    r = run_cli("share", "send", str(tmp_path / "share.txt"), "--offer", bad, "--trust",
                str(co / "coordinator.pub.json"), "--session", SESSION)  # fmt: skip
    assert r.returncode != 0 and r.stdout == "" and share not in r.stderr
