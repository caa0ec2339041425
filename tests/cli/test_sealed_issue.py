"""Shares sealed to their custodians at issue (issue 12, item 1), through the CLI.

A 3-of-5 generate with ``--seal-to`` writes only ciphertext and envelopes: no file the
coordinator's process writes (the ``--out`` directory, the home with its store, audit log
and transcripts) holds any share's words. Each custodian opens their own share with their
own ``NAME.enc.pem``; the verification round and a later recover take the opened shares.
The attacks: a coordinator who swaps in an encryption key of their own (not endorsed by the
enrolled custodian), a custodian who tries another's file, a flipped byte in transit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.ceremony_fixtures import CUST, Dep, build_enrolled, copy_dep
from tests.conftest import run_cli

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("sealed-issue")]


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory) -> Dep:
    return build_enrolled(tmp_path_factory.mktemp("sealed") / "home")[0]


def _generate(d: Dep, out: Path, *extra: str):
    cust = [a for n in CUST for a in ("--custodian", n)]
    return run_cli(
        "ceremony", "generate", *d.coord(), *cust, "--threshold", "3", "--out", str(out), *extra
    )


def _open(d: Dep, out: Path, name: str, *, key: str | None = None, to: Path | None = None):
    return run_cli(
        "share", "open", str(out / f"{name}.share.sealed"),
        "--envelope", str(out / f"{name}.envelope.json"),
        "--key", str(d.people / f"{key or name}.enc.pem"),
        "--passphrase-file", str(d.people / f"{key or name}.pass"),
        "--trust", str(d.people / "admin.pub.json"),
        *(["--out", str(to)] if to else []), "--json",
    )  # fmt: skip


def _runs(words: list[str], n: int = 3) -> set[bytes]:
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


def _files(*roots: Path) -> list[Path]:
    return [Path(dp) / f for r in roots for dp, _, fs in os.walk(r) for f in fs]


def test_sealed_generate_leaves_no_words_on_the_coordinators_disk(enrolled: Dep, tmp_path: Path):
    d = copy_dep(enrolled, tmp_path / "home")
    out = tmp_path / "issued"
    r = _generate(d, out, "--seal-to", str(d.people))
    assert r.returncode == 10, r.stderr
    cid = json.loads(r.stdout)["ceremony_id"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{n}{s}" for n in CUST for s in (".share.sealed", ".envelope.json"))

    # each custodian opens their own share, on their own machine (here: their own dir)
    mine = tmp_path / "custodians"
    mine.mkdir()
    shares: dict[str, list[str]] = {}
    for n in CUST:
        o = _open(d, out, n, to=mine / f"{n}.share.txt")
        assert o.returncode == 0, o.stderr
        info = json.loads(o.stdout)
        assert info["custodian"] == n and info["ceremony_id"] == cid and info["dealer_checked"]
        shares[n] = (mine / f"{n}.share.txt").read_text().split()
        assert len(shares[n]) in (20, 33)
        assert " ".join(shares[n][:3]) not in o.stdout  # --json never carries the words

    # no file of the coordinator's holds three consecutive words of any share
    runs = set().union(*(_runs(w) for w in shares.values()))
    hits = [
        str(f)
        for f in _files(out, d.root)
        if f.is_file() and any(x in f.read_bytes() for x in runs)
    ]
    assert hits == []

    # the verification round takes the opened shares; the transcript records the delivery
    for n in ("alice", "bob", "carol"):
        (out / f"{n}.share.txt").write_text(" ".join(shares[n]) + "\n")
        os.chmod(out / f"{n}.share.txt", 0o600)
    r = d.ceremony("resume", cid, *d.coord(), *d.shares("alice", "bob", "carol", d=str(out)))
    assert r.returncode == 0, r.stderr
    d.verify(r.out["bundle"])
    events = (Path(r.out["bundle"]) / "events.jsonl").read_text().splitlines()
    issued = [e for e in map(json.loads, events) if e["kind"] == "share.issued"]
    assert len(issued) == 5
    assert all(e["body"]["delivery"] == "sealed-x25519" for e in issued), issued[0]


def test_a_custodian_cannot_open_anothers_share_and_a_flipped_byte_is_refused(
    enrolled: Dep, tmp_path: Path
):
    d = copy_dep(enrolled, tmp_path / "home")
    out = tmp_path / "issued"
    assert _generate(d, out, "--seal-to", str(d.people)).returncode == 10
    o = _open(d, out, "alice", key="bob")
    assert o.returncode != 0 and "another custodian" in o.stderr
    blob = json.loads((out / "alice.share.sealed").read_bytes())
    ct = bytearray(blob["ciphertext"].encode())
    ct[10] = ord("A") if ct[10] != ord("A") else ord("B")
    blob["ciphertext"] = ct.decode()
    (out / "alice.share.sealed").write_text(json.dumps(blob))
    o = _open(d, out, "alice")
    assert o.returncode != 0 and "altered" in o.stderr and "Traceback" not in o.stderr


def test_a_coordinator_cannot_seal_to_a_key_of_their_own(enrolled: Dep, tmp_path: Path):
    """The coordinator edits bob's NAME.pub.json to hold an X25519 key they own. The
    endorsement no longer verifies under bob's enrolled signing key: refused before the
    ceremony starts, nothing written, nothing open."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    d = copy_dep(enrolled, tmp_path / "home")
    seal_dir = tmp_path / "pubs"
    seal_dir.mkdir()
    for n in CUST:
        (seal_dir / f"{n}.pub.json").write_bytes((d.people / f"{n}.pub.json").read_bytes())
    doc = json.loads((seal_dir / "bob.pub.json").read_text())
    doc["x25519"] = X25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    (seal_dir / "bob.pub.json").write_text(json.dumps(doc))
    out = tmp_path / "issued"
    r = _generate(d, out, "--seal-to", str(seal_dir))
    assert r.returncode != 0 and "not endorsed" in r.stderr, r.stderr
    assert not out.exists() or not any(out.iterdir())
    # another custodian's (validly endorsed) identity under bob's name is refused as well
    (seal_dir / "bob.pub.json").write_bytes((d.people / "carol.pub.json").read_bytes())
    r = _generate(d, out, "--seal-to", str(seal_dir))
    assert r.returncode != 0, r.stderr
    # and the next ceremony starts: nothing was left open
    assert _generate(d, out, "--seal-to", str(d.people)).returncode == 10


def test_plain_shares_need_the_flag(enrolled: Dep, tmp_path: Path):
    d = copy_dep(enrolled, tmp_path / "home")
    r = _generate(d, tmp_path / "o1")
    assert r.returncode == 2 and "--seal-to" in r.stderr
    r = _generate(d, tmp_path / "o2", "--plain-shares")
    assert r.returncode == 10, r.stderr
    assert (tmp_path / "o2" / "alice.share.txt").is_file()


def test_transcript_verify_notes_how_shares_were_delivered(enrolled: Dep, tmp_path: Path):
    d = copy_dep(enrolled, tmp_path / "home")
    for flag, want in (("--plain-shares", "issued in plain text"), ("--seal-to", "sealed to")):
        out = tmp_path / flag.strip("-")
        extra = [flag] + ([str(d.people)] if flag == "--seal-to" else [])
        r = _generate(d, out, *extra)
        assert r.returncode == 10, r.stderr
        cid = json.loads(r.stdout)["ceremony_id"]
        a = run_cli("ceremony", "abort", cid, "--home", str(d.root), "--key",
                    str(d.people / "admin.key.pem"), "--passphrase-file",
                    str(d.people / "admin.pass"), "--pin-file", str(d.pin), "--json")  # fmt: skip
        assert a.returncode == 0, a.stderr
        bundle = json.loads(a.stdout)["bundle"]
        v = run_cli("transcript", "verify", bundle, *d.trust())
        assert want in v.stdout, v.stdout
