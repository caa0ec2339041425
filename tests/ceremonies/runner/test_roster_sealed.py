"""A ceremony opened with the token checks the participants roster against the access seal
(custody/access/seal.py covers the roster) before it reads it. The operator with the disk
swaps a sealed custodian's key for one they hold: rotate-root is refused at open (exit 6,
audited), with nothing recorded, instead of running with approvals the swapped key could
sign. A home never sealed is not sealed by a ceremony (its first access command does
that), so a refused ceremony still leaves the token as it was."""

from __future__ import annotations

import json
import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.ceremony_fixtures import generated_copy

pytestmark = pytest.mark.hsm


def test_a_custodian_key_swapped_on_disk_stops_rotate_root_at_open(tmp_path, generated_master):
    d = generated_copy(generated_master, tmp_path / "home")
    h = ("--home", str(d.root))
    r = d.run("access", "seal", *h, "--pin-file", str(d.pin), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    db = sqlite3.connect(d.root / "custody.db")
    with db:
        (before,) = db.execute("SELECT public FROM participants WHERE name='alice'").fetchone()
        mallory = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        db.execute("UPDATE participants SET public=? WHERE name='alice'", (mallory,))
    db.close()
    r = d.ceremony("rotate-root", *d.coord(), "--request-out", str(tmp_path / "req.json"))
    assert r.returncode == 6 and "fail their seal" in r.stderr, (r.returncode, r.stderr)
    assert not (tmp_path / "req.json").exists()
    listed = d.run("ceremony", "list", *h, "--json")
    assert listed.returncode == 0, listed.stderr
    assert all(c["state"] != "open" for c in json.loads(listed.stdout)), listed.stdout
    audit = (d.root / "audit.db").read_bytes()
    assert b'"op":"access seal"' in audit and b'"outcome":"failed"' in audit
    # the key put back: the ceremony opens
    db = sqlite3.connect(d.root / "custody.db")
    with db:
        db.execute("UPDATE participants SET public=? WHERE name='alice'", (before,))
    db.close()
    r = d.ceremony("rotate-root", *d.coord(), "--request-out", str(tmp_path / "req.json"))
    assert r.returncode == 10, r.stdout + r.stderr
