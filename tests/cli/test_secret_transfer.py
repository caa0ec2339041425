"""``custody secret export``/``import`` between two homes: signed by the sender, encrypted to
one recipient; a bundle for another recipient, from an unpinned sender, or with one byte
changed is refused, and no plaintext value lands on disk."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ceremonies.participants import create_participant
from tests.conftest import passphrase_of, run_cli, write_secret
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
VALUE = "Transfer-" + "Canary-8d2f!Qs5#Lx1@Vm"


@pytest.fixture
def two(tmp_path: Path):
    homes = []
    for n in ("a", "b"):
        home, pins = make_deployment(tmp_path / n)
        cli(home, pins, "kek", "rotate", "--branch", "secrets")
        homes.append((home, pins))
    people = tmp_path / "people"
    people.mkdir()
    for n in ("sam", "rita", "eve"):
        write_secret(people / f"{n}.pass", passphrase_of(n) + "\n")
        create_participant(n, "super-admin", passphrase_of(n), people)
    (ha, pa) = homes[0]
    r = run_cli("secret", "put", "app/db/password", "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "app", "--home", str(ha), "--pin-file",
                str(pa), input=VALUE)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return homes, people, tmp_path


def export(home, pins, people, to, out):
    return run_cli("secret", "export", "app/db/password", "--env", "prod", "--to",
                   str(people / f"{to}.pub.json"), "--key", str(people / "sam.key.pem"),
                   "--passphrase-file", str(people / "sam.pass"), "--out", str(out),
                   "--home", str(home), "--pin-file", str(pins), "--json")  # fmt: skip


def imp(home, pins, people, f, who="rita", trust="sam"):
    return run_cli("secret", "import", str(f), "--key", str(people / f"{who}.enc.pem"),
                   "--passphrase-file", str(people / f"{who}.pass"), "--trust",
                   str(people / f"{trust}.pub.json"), "--home", str(home), "--pin-file",
                   str(pins), "--json")  # fmt: skip


def test_round_trip_between_two_homes(two):
    (ha, pa), (hb, pb) = two[0]
    people, tmp = two[1], two[2]
    f = tmp / "bundle.json"
    r = export(ha, pa, people, "rita", f)
    assert r.returncode == 0, r.stderr
    assert VALUE.encode() not in f.read_bytes()
    r = imp(hb, pb, people, f)
    assert r.returncode == 0, r.stderr
    got = run_cli("secret", "get", "app/db/password", "--env", "prod", "--home", str(hb),
                  "--pin-file", str(pb))  # fmt: skip
    assert got.stdout == VALUE
    for h in (ha, hb):
        for name in ("custody.db", "audit.db"):
            assert VALUE.encode() not in (h / name).read_bytes()
    assert b"secret import" in (hb / "audit.db").read_bytes()
    assert b"secret export" in (ha / "audit.db").read_bytes()


def test_another_recipient_an_unpinned_sender_or_a_changed_byte_is_refused(two):
    (ha, pa), (hb, pb) = two[0]
    people, tmp = two[1], two[2]
    f = tmp / "bundle.json"
    assert export(ha, pa, people, "rita", f).returncode == 0
    r = imp(hb, pb, people, f, who="eve")  # eve is not the recipient
    assert r.returncode == 6 and "another recipient" in r.stderr
    r = imp(hb, pb, people, f, trust="eve")  # sam is not pinned
    assert r.returncode == 6 and "not a pinned key" in r.stderr
    doc = json.loads(f.read_bytes())
    ct = bytearray(base64.urlsafe_b64decode(doc["ciphertext"] + "=="))
    ct[5] ^= 1
    doc["ciphertext"] = base64.urlsafe_b64encode(bytes(ct)).decode().rstrip("=")
    bad = tmp / "bad.json"
    bad.write_text(json.dumps(doc))
    r = imp(hb, pb, people, bad)
    assert r.returncode == 6 and "signature" in r.stderr
    doc = json.loads(f.read_bytes())
    doc["header"]["count"] = 2
    bad.write_text(json.dumps(doc))
    assert imp(hb, pb, people, bad).returncode == 6
    # nothing was imported by any refused attempt
    r = run_cli("secret", "list", "--home", str(hb), "--json")
    assert json.loads(r.stdout) == []
