"""``custody shamir`` and ``custody share`` as real subprocesses: success paths and every
error case of issue 3 item 2, with canaries proving no secret reaches the error output."""

from __future__ import annotations

import itertools
import json
import stat

import pytest
from shamir_mnemonic.wordlist import WORDLIST

from tests.conftest import run_cli, write_secret

SECRET = "c0ffee00" * 8
CANARY_PW = "canary-pw-5512"


@pytest.fixture(scope="module")
def shares() -> list[str]:
    r = run_cli("shamir", "split", "--threshold", "3", "--shares", "5", input=SECRET + "\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 5 and all(len(m.split()) == 33 for m in lines)
    return lines


def combine(*shares: str, extra=()):
    return run_cli("shamir", "combine", *extra, input="\n".join(shares) + "\n")


def assert_failed(r, *needles: str, secret_words=()):
    assert r.returncode == 6, (r.returncode, r.stderr)
    assert r.stdout == ""
    assert r.stderr.startswith("error: ") and "\nhint: " in r.stderr
    for n in needles:
        assert n in r.stderr
    for m in secret_words:  # no two consecutive share words leak
        w = m.split()
        assert not any(f"{a} {b}" in r.stderr for a, b in itertools.pairwise(w))


def test_split_and_combine_with_passphrase_file_and_groups(tmp_path):
    pw = tmp_path / "pw"
    write_secret(pw, CANARY_PW + "\n")
    r = run_cli(
        "shamir",
        "split",
        "--group-threshold",
        "2",
        "--group",
        "2/3",
        "--group",
        "1/1",
        "--group",
        "3/5",
        "--passphrase-file",
        str(pw),
        "--no-extendable",
        input=SECRET[:32],
    )
    assert r.returncode == 0 and CANARY_PW not in r.stdout + r.stderr
    groups = [g.splitlines() for g in r.stdout.strip().split("\n\n")]
    assert [len(g) for g in groups] == [3, 1, 5]
    picked = [groups[2][4], groups[0][1], groups[2][0], groups[0][2], groups[2][2]]
    r = combine(*picked, extra=("--passphrase-file", str(pw)))
    assert (r.returncode, r.stdout) == (0, SECRET[:32] + "\n")
    r = combine(*picked)  # empty passphrase: SLIP-0039 gives another secret by design
    assert r.returncode == 0 and r.stdout.strip() != SECRET[:32]


def test_split_out_dir_files_are_private_and_combine_reads_files(tmp_path, shares):
    out = tmp_path / "out"
    r = run_cli("shamir", "split", "-t", "2", "-n", "3", "--out", str(out), input=SECRET)
    assert r.returncode == 0 and r.stdout == ""
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["share-g1-m1.txt", "share-g1-m2.txt", "share-g1-m3.txt"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    r = run_cli("shamir", "combine", str(files[2]), str(files[0]), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["secret"] == SECRET


def test_four_letter_prefixes(shares):
    typed = [" ".join(w[:4] for w in m.split()) for m in shares[2:5]]
    assert combine(*typed).stdout.strip() == SECRET


def test_checksum_failure_names_share_and_word(shares):
    w = shares[1].split()
    w[11] = WORDLIST[(WORDLIST.index(w[11]) + 1) % 1024]
    r = combine(shares[0], " ".join(w), shares[2])
    assert_failed(r, "stdin:2: checksum failure; word 12 looks wrong", secret_words=shares)


def test_unknown_word(shares):
    w = shares[2].split()
    w[4] = "xylophonez"
    r = combine(shares[0], shares[1], " ".join(w))
    assert_failed(r, "stdin:3: word 5 is not in the SLIP-0039 word list", secret_words=shares)
    assert "xylophonez" not in r.stderr


def test_different_sets(shares):
    r = run_cli("shamir", "split", "-t", "3", "-n", "5", input=SECRET)
    other = r.stdout.splitlines()
    assert_failed(
        combine(shares[0], other[1], shares[2]),
        "stdin:2 is from a different set than stdin:1",
        secret_words=shares + other,
    )


def test_duplicate_member_index(shares, tmp_path):
    f = tmp_path / "bob.txt"
    f.write_text("# bob's share\n" + shares[3] + "\n")
    r = run_cli("shamir", "combine", str(f), str(f), input="")
    assert_failed(r, f"{f}:2 is the same share as {f}:2", secret_words=shares)


def test_too_few_shares_single_group_and_groups(shares):
    assert_failed(combine(shares[0], shares[4]), "3 are needed, 1 more share required")
    r = run_cli(
        "shamir",
        "split",
        "--group-threshold",
        "2",
        "--group",
        "2/3",
        "--group",
        "2/2",
        input=SECRET,
    )
    g = [x.splitlines() for x in r.stdout.strip().split("\n\n")]
    assert_failed(
        combine(g[0][0], g[0][2], g[1][1]),
        "2 of 2 groups are needed",
        "group 2 needs 1 more (1 of 2)",
        "group 1 complete",
    )


def test_inconsistent_group():
    # SLIP-0039 vectors 8/12: mismatching group thresholds / member thresholds
    from tests.conftest import VECTORS

    data = {d[0]: d[1] for d in json.loads((VECTORS / "slip39-vectors.json").read_text())}
    ms = data["12. Mnemonics with mismatching member thresholds (128 bits)"]
    assert_failed(combine(*ms), "disagree on its threshold", secret_words=ms)
    ms = data["8. Mnemonics with mismatching group thresholds (128 bits)"]
    assert_failed(combine(*ms), "disagrees with stdin:1 on the groups", secret_words=ms)


def test_usage_errors_exit_2_with_nothing_on_stdout():
    for args, inp in (
        (("-t", "3", "-n", "5"), "zz"),
        (("-t", "3", "-n", "5"), "00" * 15),
        (("-t", "6", "-n", "5"), SECRET),
        (("--group", "2-3"), SECRET),
        ((), SECRET),
    ):
        r = run_cli("shamir", "split", *args, input=inp)
        assert r.returncode == 2 and r.stdout == "" and "hint:" in r.stderr, args


# --- custody share ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def kit(tmp_path_factory, shares):
    """A dealer key, one share file and its envelope, made through the library."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from custody.shares import envelope as ev
    from custody.shares import slip39
    from custody.signing import public_raw

    d = tmp_path_factory.mktemp("kit")
    dealer = Ed25519PrivateKey.generate()
    (d / "dealer.pub.json").write_text(ev.public_key_json(public_raw(dealer), "dealer"))
    (d / "share.txt").write_text("# alice\n" + shares[0] + "\n")
    (d / "other.txt").write_text(shares[1] + "\n")
    env = ev.make_envelope(
        slip39.parse_share(shares[0]),
        ceremony_id="gen-1",
        policy_digest="00" * 32,
        epoch=0,
        custodian="ab" * 16,
        kcv="123456",
        dealer=dealer,
    )
    (d / "env.json").write_bytes(env.to_bytes())
    return d


def test_share_verify_ok_and_failures(kit):
    base = (
        "share",
        "verify",
        "--envelope",
        str(kit / "env.json"),
        "--trust",
        str(kit / "dealer.pub.json"),
    )
    r = run_cli(*base, str(kit / "share.txt"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ceremony_id"] == "gen-1"
    r = run_cli(*base, str(kit / "other.txt"))
    assert r.returncode == 6 and "envelope is for group 1 member 1" in r.stderr
    r = run_cli(*base, str(kit / "share.txt"), "--ceremony", "gen-2")
    assert r.returncode == 6 and "not 'gen-2'" in r.stderr
    r = run_cli(*base, str(kit / "share.txt"), "--epoch", "1")
    assert r.returncode == 6 and "epoch 0, not 1" in r.stderr
    (kit / "wrong.pub").write_text("11" * 32 + "\n")
    r = run_cli(
        "share",
        "verify",
        str(kit / "share.txt"),
        "--envelope",
        str(kit / "env.json"),
        "--trust",
        str(kit / "wrong.pub"),
    )
    assert r.returncode == 6 and "signature does not verify" in r.stderr


def test_share_card_png_decodes(kit, tmp_path):
    import zxingcpp
    from PIL import Image

    out = tmp_path / "card.png"
    r = run_cli(
        "share",
        "card",
        str(kit / "share.txt"),
        "--envelope",
        str(kit / "env.json"),
        "--format",
        "png",
        "--out",
        str(out),
        "--name",
        "Alice",
        "--label",
        "Gen 1",
    )
    assert r.returncode == 0, r.stderr
    found = zxingcpp.read_barcodes(Image.open(out))
    assert found[0].bytes == (kit / "env.json").read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_share_seal_unseal_wrong_passphrase(kit, tmp_path, shares):
    pw, bad = tmp_path / "pw", tmp_path / "bad"
    write_secret(pw, CANARY_PW + "\n")
    write_secret(bad, "nope\n")
    sealed = tmp_path / "share.sealed"
    r = run_cli(
        "share",
        "seal",
        str(kit / "share.txt"),
        "--out",
        str(sealed),
        "--passphrase-file",
        str(pw),
        "--envelope",
        str(kit / "env.json"),
    )
    assert r.returncode == 0, r.stderr
    r = run_cli("share", "unseal", str(sealed), "--passphrase-file", str(pw))
    assert r.returncode == 0 and r.stdout.strip() == shares[0]
    r = run_cli("share", "unseal", str(sealed), "--passphrase-file", str(bad))
    assert r.returncode == 6 and r.stdout == "" and "Wrong passphrase" in r.stderr
    assert CANARY_PW not in r.stderr and "nope" not in r.stderr


def test_remote_hand_in_end_to_end(kit, tmp_path, shares):
    co = tmp_path / "co"
    r = run_cli(
        "share", "offer", "--ceremony", "gen-1", "--epoch", "0", "--out", str(co), "--ephemeral-key"
    )
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((co / "offer.key").stat().st_mode) == 0o600
    offer, offer_err = r.stdout.strip(), r.stderr
    assert offer.startswith("custody-offer:") and "\u2584" in r.stderr
    r = run_cli(
        "share",
        "send",
        str(kit / "share.txt"),
        "--offer",
        offer,
        "--envelope",
        str(kit / "env.json"),
        "--trust",
        str(co / "coordinator.pub.json"),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    r = run_cli("share", "receive", "--offer-key", str(co / "offer.key"), sent["blob"], "--json")
    got = json.loads(r.stdout)
    assert (got["share"], got["sas"]) == (shares[0], sent["sas"])
    # no --session: the offer gets a fresh random session, printed, named by send and receive
    session = sent["session"]
    assert len(session) == 32 and session != "gen-1" and f"session {session}" in offer_err
    assert got["session"] == session
    r = run_cli(
        "share",
        "receive",
        "--offer-key",
        str(co / "offer.key"),
        sent["blob"],
        "--session",
        "another-ceremony",
    )
    assert r.returncode == 6 and r.stdout == ""
    assert "for another ceremony" in r.stderr and shares[0] not in r.stderr
    # replay of the same blob into another ceremony's offer
    co2 = tmp_path / "co2"
    r = run_cli(
        "share", "offer", "--ceremony", "gen-2", "--out", str(co2), "--ephemeral-key", "--json"
    )
    assert json.loads(r.stdout)["session"] not in (session, "gen-2")  # fresh each time
    r = run_cli("share", "receive", "--offer-key", str(co2 / "offer.key"), sent["blob"])
    assert r.returncode == 6 and r.stdout == "" and "ceremony 'gen-1', not 'gen-2'" in r.stderr
    # the custodian refuses an offer for another ceremony than its envelope
    r = run_cli(
        "share",
        "send",
        str(kit / "share.txt"),
        "--offer",
        str(co2 / "offer.txt"),
        "--envelope",
        str(kit / "env.json"),
        "--trust",
        str(co2 / "coordinator.pub.json"),
    )
    assert r.returncode == 6 and r.stdout == ""
    # untrusted coordinator key
    r = run_cli(
        "share",
        "send",
        str(kit / "share.txt"),
        "--offer",
        offer,
        "--trust",
        str(co2 / "coordinator.pub.json"),
    )
    assert r.returncode == 6 and "not signed by the trusted coordinator" in r.stderr


def test_expired_offer_via_cli(kit, tmp_path):
    import time

    co = tmp_path / "co"
    r = run_cli(
        "share", "offer", "--ceremony", "gen-1", "--ttl", "1", "--out", str(co), "--ephemeral-key"
    )
    assert r.returncode == 0
    time.sleep(2.1)
    r = run_cli(
        "share",
        "send",
        str(kit / "share.txt"),
        "--offer",
        str(co / "offer.txt"),
        "--trust",
        str(co / "coordinator.pub.json"),
    )
    assert r.returncode == 6 and "expired" in r.stderr and r.stdout == ""


def test_help_texts():
    for args in (
        ("shamir", "split"),
        ("shamir", "combine"),
        ("share", "verify"),
        ("share", "seal"),
        ("share", "offer"),
        ("share", "send"),
        ("share", "receive"),
    ):
        r = run_cli(*args, "--help")
        assert r.returncode == 0 and len(r.stdout) > 300, args
