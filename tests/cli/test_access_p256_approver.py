"""Access approvals by an ECDSA P-256 participant key held on a token (issue 13: tokens
without CKM_EDDSA give their participants P-256 keys). SoftHSMv2 with ``--token-alg
ecdsa-p256`` stands for such a token here; the NSS story uses the real one.

pat (P-256, on a token) and alice (Ed25519, a key file) approve a high-class request; the
grant opens the secret, and its record verifies offline only with both pinned, each under
its own algorithm. The record names pat's algorithm; a record edited to say Ed25519 (or with
the name removed), a flipped signature byte, or pat's identity file edited to claim Ed25519,
each fails. A P-256 key presented for an Ed25519 roster entry is refused by name, before
anything is signed or stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ceremonies.participants import create_participant
from tests.conftest import TEST_SO_PIN, cli_env, passphrase_of, run_cli, write_secret
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
CANARY = "P256-Approver-Canary-8w!Qz3#"
PATH = "billing/db/password"
TPIN = "pat-token-pin-6642"


def _flip(sig_hex: str) -> str:
    return sig_hex[:-2] + f"{int(sig_hex[-2:], 16) ^ 1:02x}"


def test_a_p256_token_approver_counts_and_its_record_verifies_under_p256_only(tmp_path: Path):
    from custody.hsm import softhsm

    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    people = tmp_path / "people"
    people.mkdir()
    for n, role in (("admin", "super-admin"), ("alice", "custodian")):
        write_secret(people / f"{n}.pass", passphrase_of(n) + "\n")
        create_participant(n, role, passphrase_of(n), people)
    tok = tmp_path / "pat-hsm"
    tok.mkdir()
    conf = softhsm.write_conf(tok)
    softhsm.init_token(conf, "pat-token", TEST_SO_PIN, TPIN)
    penv = cli_env(SOFTHSM2_CONF=str(conf))
    pat_pin = write_secret(tmp_path / "pat.pin", f"pin={TPIN}\n")
    r = run_cli("participant", "new", "pat", "--role", "custodian", "--out", str(people),
                "--token-label", "pat-token", "--pin-file", str(pat_pin), "--token-alg",
                "ecdsa-p256", "--json", env=penv)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["alg"] == "ecdsa-p256"
    adds = [a for n in ("admin", "alice", "pat") for a in ("--add", str(people / f"{n}.pub.json"))]
    r = run_cli("ceremony", "enrol", "--home", str(home), "--key", str(people / "admin.key.pem"),
                "--passphrase-file", str(people / "admin.pass"), *adds, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "billing", "--home", str(home), "--pin-file",
                str(pins), input=CANARY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    for n in ("alice", "pat"):  # a P-256 participant is a principal like any other
        cli(home, pins, "principal", "add", n, "--role", "service-admin", "--key",
            str(people / f"{n}.pub.json"), "--service", "billing")  # fmt: skip
    svc = tmp_path / "svc.token"
    cli(
        home,
        pins,
        "principal",
        "add",
        "billing-svc",
        "--role",
        "service-user",
        "--service-account",
        "--service",
        "billing",
        "--env",
        "prod",
        "--token-out",
        str(svc),
    )
    as_svc = ["--home", str(home), "--token-file", str(svc)]
    r = run_cli("access", "request", PATH, "--env", "prod", "--for", "1h", "--why",
                "incident 9: rotate the replica", *as_svc, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    req = json.loads(r.stdout)
    assert req["needed"] == 2

    pat_pw = write_secret(tmp_path / "pat.pass", TPIN + "\n")
    one = run_cli(
        "access",
        "approve",
        req["id"],
        "--key",
        str(people / "pat.token.json"),
        "--passphrase-file",
        str(pat_pw),
        "--home",
        str(home),
        "--json",
        env=penv,
    )
    assert one.returncode == 0, one.stdout + one.stderr
    assert json.loads(one.stdout)["grant"] is None
    two = run_cli("access", "approve", req["id"], "--key", str(people / "alice.key.pem"),
                  "--passphrase-file", str(people / "alice.pass"), "--home", str(home),
                  "--json")  # fmt: skip
    assert two.returncode == 0, two.stderr
    out = json.loads(two.stdout)
    assert out["approvals"] == 2 and out["grant"], out
    r = run_cli(
        "secret",
        "get",
        PATH,
        "--env",
        "prod",
        "--home",
        str(home),
        "--pin-file",
        str(pins),
        "--json",
        env=cli_env(CUSTODY_TOKEN=svc.read_text().strip()),
    )
    assert r.returncode == 0 and json.loads(r.stdout)["value"] == CANARY, r.stderr

    record = Path(out["record"])
    doc = json.loads(record.read_text())
    algs = {a["approver"]: a.get("alg", "ed25519") for a in doc["approvals"]}
    assert algs == {"pat": "ecdsa-p256", "alice": "ed25519"}
    assert "alg" not in next(a for a in doc["approvals"] if a["approver"] == "alice")
    both = ("--trust", str(people / "alice.pub.json"), "--trust", str(people / "pat.pub.json"))

    def verify(path: Path, *trust: str):
        return run_cli("access", "verify", str(path), *trust)

    v = verify(record, *both)
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr
    v = verify(record, "--trust", str(people / "alice.pub.json"))
    assert v.returncode == 6 and "1 of 2" in v.stderr, v.stderr

    def edited(name: str, change) -> Path:
        d = json.loads(record.read_text())
        change(next(a for a in d["approvals"] if a["approver"] == "pat"))
        p = tmp_path / name
        p.write_text(json.dumps(d))
        return p

    for name, change in (
        ("as-ed25519.json", lambda a: a.update(alg="ed25519")),
        ("no-alg.json", lambda a: a.pop("alg")),
        ("other-alg.json", lambda a: a.update(alg="ecdsa-p384")),
        ("flipped.json", lambda a: a.update(sig=_flip(a["sig"]))),
    ):  # fmt: skip
        v = verify(edited(name, change), *both)
        assert v.returncode == 6 and "1 of 2" in v.stderr, (name, v.stdout, v.stderr)
    # pat's identity file edited to claim Ed25519: pat's approval no longer counts
    fake = json.loads((people / "pat.pub.json").read_text())
    fake["alg"] = "ed25519"
    fake_path = tmp_path / "pat-as-ed25519.pub.json"
    fake_path.write_text(json.dumps(fake))
    v = verify(record, "--trust", str(people / "alice.pub.json"), "--trust", str(fake_path))
    assert v.returncode != 0 and "VALID" not in v.stdout, v.stdout + v.stderr

    # the server side honours the grant only while its record verifies: pat's approval
    # turned into an "Ed25519" one in the stored record stops the read
    import sqlite3

    db = sqlite3.connect(home / "custody.db")
    with db:
        (rec,) = db.execute("SELECT record FROM grants WHERE id=?", (out["grant"],)).fetchone()
        d = json.loads(rec)
        next(a for a in d["approvals"] if a["approver"] == "pat").pop("alg")
        db.execute("UPDATE grants SET record=? WHERE id=?", (json.dumps(d), out["grant"]))
    db.close()
    r = run_cli(
        "secret",
        "get",
        PATH,
        "--env",
        "prod",
        "--home",
        str(home),
        "--pin-file",
        str(pins),
        "--json",
        env=cli_env(CUSTODY_TOKEN=svc.read_text().strip()),
    )
    assert r.returncode != 0 and CANARY not in r.stdout, (r.returncode, r.stdout)


def test_a_key_of_another_algorithm_than_the_enrolled_one_is_refused_by_name(tmp_path: Path):
    """alice is enrolled with an Ed25519 key; a P-256 token key carrying alice's name cannot
    approve for her (its public key is not hers, and its algorithm is not hers)."""
    from custody.hsm import softhsm

    home, pins = make_deployment(tmp_path / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    people = tmp_path / "people"
    people.mkdir()
    for n, role in (("admin", "super-admin"), ("alice", "custodian")):
        write_secret(people / f"{n}.pass", passphrase_of(n) + "\n")
        create_participant(n, role, passphrase_of(n), people)
    adds = [a for n in ("admin", "alice") for a in ("--add", str(people / f"{n}.pub.json"))]
    r = run_cli("ceremony", "enrol", "--home", str(home), "--key", str(people / "admin.key.pem"),
                "--passphrase-file", str(people / "admin.pass"), *adds, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli("secret", "put", PATH, "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "billing", "--home", str(home), "--pin-file",
                str(pins), input=CANARY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli(home, pins, "principal", "add", "alice", "--role", "service-admin", "--key",
        str(people / "alice.pub.json"), "--service", "billing")  # fmt: skip
    svc = tmp_path / "svc.token"
    cli(
        home,
        pins,
        "principal",
        "add",
        "billing-svc",
        "--role",
        "service-user",
        "--service-account",
        "--service",
        "billing",
        "--env",
        "prod",
        "--token-out",
        str(svc),
    )
    r = run_cli("access", "request", PATH, "--env", "prod", "--for", "1h", "--why", "x",
                "--home", str(home), "--token-file", str(svc), "--json")  # fmt: skip
    req = json.loads(r.stdout)
    tok = tmp_path / "mallory-hsm"
    tok.mkdir()
    conf = softhsm.write_conf(tok)
    softhsm.init_token(conf, "m-token", TEST_SO_PIN, TPIN)
    penv = cli_env(SOFTHSM2_CONF=str(conf))
    other = tmp_path / "other"
    other.mkdir()
    pin = write_secret(tmp_path / "m.pin", f"pin={TPIN}\n")
    r = run_cli("participant", "new", "alice", "--role", "custodian", "--out", str(other),
                "--token-label", "m-token", "--pin-file", str(pin), "--token-alg",
                "ecdsa-p256", env=penv)  # fmt: skip
    assert r.returncode == 0, r.stderr
    pw = write_secret(tmp_path / "m.pass", TPIN + "\n")
    r = run_cli("access", "approve", req["id"], "--key", str(other / "alice.token.json"),
                "--passphrase-file", str(pw), "--home", str(home), "--json", env=penv)  # fmt: skip
    assert r.returncode != 0 and "not a live person principal" in r.stderr, r.stderr
    r = run_cli("access", "show", req["id"], "--home", str(home))
    assert json.loads(r.stdout)["approvals"] == []
