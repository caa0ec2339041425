"""Participants whose signing key lives on their own PKCS#11 token (real SoftHSMv2).

* ``custody participant new NAME --token-label L`` generates the Ed25519 key ON the token and
  writes ``NAME.pub.json`` plus ``NAME.token.json``, a reference that holds no secret.
* ``custody ceremony approve REQ --key NAME.token.json`` signs with the token (the secret
  from ``--passphrase-file`` is the token PIN); that approval counts toward a rotate-root's
  custodian quorum, and the transcript verifies with ``--trust NAME.pub.json``.
* A wrong token PIN exits 5 (PinIncorrect) and writes nothing; a token whose key is not
  the referenced one exits 6 (IntegrityError) and writes nothing.

The custodian's token sits in a SoftHSMv2 config of its own ($SOFTHSM2_CONF of the
custodian's commands), as on their own machine: ``ceremony approve`` never opens the
deployment's token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.ceremony_fixtures import CUST, Dep, create_people, init_home, sign_approvals
from tests.conftest import TEST_SO_PIN, cli_env, run_cli, write_secret

pytestmark = pytest.mark.hsm

TINA_PIN = "tina-token-pin-7391"


def _token(root: Path, label: str = "tina-token") -> dict[str, str]:
    """A SoftHSMv2 config of its own holding one token; the env its commands run with."""
    from custody.hsm import softhsm

    root.mkdir(parents=True)
    conf = softhsm.write_conf(root)
    softhsm.init_token(conf, label, TEST_SO_PIN, TINA_PIN)
    return cli_env(SOFTHSM2_CONF=str(conf))


def _new_on_token(out: Path, env: dict[str, str], name: str = "tina") -> Any:
    pin = out.parent / f"{name}.pin"
    write_secret(pin, f"pin={TINA_PIN}\n")
    return run_cli(
        "participant",
        "new",
        name,
        "--role",
        "custodian",
        "--out",
        str(out),
        "--token-label",
        "tina-token",
        "--pin-file",
        str(pin),
        "--json",
        env=env,
    )


def _approve(req: Path, key: Path, pw: Path, out: Path, env: dict[str, str]) -> Any:
    r = run_cli(
        "ceremony",
        "approve",
        str(req),
        "--key",
        str(key),
        "--passphrase-file",
        str(pw),
        "--out",
        str(out),
        "--json",
        env=env,
    )
    r.out = json.loads(r.stdout) if r.stdout.strip() else {}  # type: ignore[attr-defined]
    return r


def _request(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "type": "custody-approval-request",
                "ceremony_id": "0123abcd" * 4,
                "action": "rotate-root",
                "action_id": "rotate-root/v2",
                "action_digest": "ab" * 32,
                "window": 600,
            }
        )
    )
    return path


def test_token_key_reference_has_no_secret_and_refuses_bad_pin_or_key(tmp_path):
    env = _token(tmp_path / "hsm")
    people = tmp_path / "people"
    r = _new_on_token(people, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (people / "tina.key.pem").exists()
    ident = json.loads((people / "tina.pub.json").read_text())
    ref = json.loads((people / "tina.token.json").read_text())
    assert ident["alg"] == "ed25519" and len(bytes.fromhex(ident["public"])) == 32
    assert ident["name"] == "tina" and ident["role"] == "custodian"
    assert ref == {
        "type": "pkcs11",
        "module": "/usr/lib/softhsm/libsofthsm2.so",
        "token_label": "tina-token",
        "slot": None,
        "key_label": "participant/tina",
        "alg": "ed25519",
        "public": ident["public"],
    }
    raw = (people / "tina.token.json").read_text() + (people / "tina.pub.json").read_text()
    assert TINA_PIN not in raw and TEST_SO_PIN not in raw and TINA_PIN not in r.stdout + r.stderr
    # the same name again: refused, nothing overwritten
    again = _new_on_token(tmp_path / "people2", env)
    assert again.returncode == 2 and "already holds" in again.stdout + again.stderr

    req = _request(tmp_path / "req.json")
    good, bad = tmp_path / "tina.pass", tmp_path / "bad.pass"
    write_secret(good, TINA_PIN + "\n")
    write_secret(bad, "not-the-pin-0000\n")
    out = tmp_path / "appr.json"
    r = _approve(req, people / "tina.token.json", bad, out, env)
    assert r.returncode == 5 and r.out["error"] == "PinIncorrect", r.stdout + r.stderr
    assert not out.exists()
    # a reference naming another public key: the token's key is not that one
    forged = tmp_path / "forged" / "tina.token.json"
    forged.parent.mkdir()
    forged.write_text(json.dumps(dict(ref, public="11" * 32)))
    r = _approve(req, forged, good, out, env)
    assert r.returncode == 6 and r.out["error"] == "IntegrityError", r.stdout + r.stderr
    assert not out.exists()
    # a reference written before ECDSA support (no "alg") is read as Ed25519 and still signs
    legacy = tmp_path / "legacy" / "tina.token.json"
    legacy.parent.mkdir()
    legacy.write_text(json.dumps({k: v for k, v in ref.items() if k != "alg"}))
    r = _approve(req, legacy, good, out, env)
    assert r.returncode == 0 and r.out["approver"] == "tina", r.stdout + r.stderr
    out.unlink()
    # the same reference claiming the key is ECDSA P-256: refused, nothing written
    legacy.write_text(json.dumps(dict(ref, alg="ecdsa-p256")))
    r = _approve(req, legacy, good, out, env)
    assert r.returncode != 0 and not out.exists(), r.stdout + r.stderr
    # the right PIN signs, with the key NAME.pub.json names
    r = _approve(req, people / "tina.token.json", good, out, env)
    assert r.returncode == 0 and r.out["approver"] == "tina", r.stdout + r.stderr
    from ceremonies.transcript.records import Approval
    from custody.audit.signers import verify_signature

    a = json.loads(out.read_text())
    appr = Approval.from_json(a)
    assert appr.approver == "tina"
    assert TINA_PIN not in out.read_text()
    assert verify_signature(
        "ed25519", bytes.fromhex(ident["public"]), appr.sig, appr.signing_input()
    )
    # passphrase-only flags are refused with a token, token flags without one
    bad_mix = run_cli(
        "participant",
        "new",
        "x",
        "--role",
        "witness",
        "--out",
        str(tmp_path),
        "--token-label",
        "tina-token",
        "--passphrase-file",
        str(good),
        env=env,
    )
    assert bad_mix.returncode == 2
    bad_mix = run_cli(
        "participant",
        "new",
        "x",
        "--role",
        "witness",
        "--out",
        str(tmp_path),
        "--token-slot",
        "3",
        "--passphrase-file",
        str(good),
        env=env,
    )
    assert bad_mix.returncode == 2


def _events(bundle: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (Path(bundle) / "events.jsonl").read_text().splitlines()]


def test_token_custodian_approval_counts_toward_rotate_root(tmp_path):
    root = tmp_path / "home"
    d = Dep(root)
    init_home(root, d.pin)
    create_people(d.people)
    env = _token(tmp_path / "tina-hsm")
    r = _new_on_token(d.people, env)
    assert r.returncode == 0, r.stdout + r.stderr
    adds = [
        a
        for n in ("admin", *CUST, "audrey", "tina")
        for a in ("--add", str(d.people / f"{n}.pub.json"))
    ]
    r = d.ceremony("enrol", *d.coord(pin=False), *adds)
    assert r.returncode == 0, r.stdout + r.stderr
    # tina holds a share of the set (issue 11: only holders of the active share set count
    # toward a rotate-root, by key fingerprint)
    holders = (*CUST[:4], "tina")
    cust = [a for n in holders for a in ("--custodian", n)]
    r = d.ceremony("generate", *d.coord(), *cust, "--threshold", "3", "--out", str(root / "shares"))
    assert r.returncode == 10, r.stdout + r.stderr
    r = d.ceremony("resume", r.out["ceremony_id"], *d.coord(), *d.shares("alice", "bob", "carol"))
    assert r.returncode == 0, r.stdout + r.stderr

    req = root / "req.json"
    r = d.ceremony("rotate-root", *d.coord(), "--request-out", str(req))
    assert r.returncode == 10 and r.out["awaiting"] == "approvals", r.stdout + r.stderr
    cid, bundle = r.out["ceremony_id"], r.out["bundle"]
    assert "tina" in json.loads(req.read_text())["eligible"]
    before = (Path(bundle) / "events.jsonl").read_bytes()

    # tina signs on her own machine, with her token; a wrong PIN first: exit 5, nothing
    pw, bad = tmp_path / "tina.pass", tmp_path / "bad.pass"
    write_secret(pw, TINA_PIN + "\n")
    write_secret(bad, "wrong-pin-0000\n")
    tina_appr = root / "appr-tina.json"
    r = _approve(req, d.people / "tina.token.json", bad, tina_appr, env)
    assert r.returncode == 5 and r.out["error"] == "PinIncorrect", r.stdout + r.stderr
    assert not tina_appr.exists()
    assert (Path(bundle) / "events.jsonl").read_bytes() == before
    r = _approve(req, d.people / "tina.token.json", pw, tina_appr, env)
    assert r.returncode == 0, r.stdout + r.stderr

    # two passphrase custodians + tina = the 3-custodian quorum
    others = sign_approvals(d, cid, ("alice", "bob"))
    apps = [a for f in (*others, tina_appr) for a in ("--approval", str(f))]
    r = d.ceremony("resume", cid, *d.coord(), *apps)
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    gated = [e for e in _events(bundle) if e["kind"] == "rotate-root"]
    assert len(gated) == 1
    assert sorted(a["approver"] for a in gated[0]["body"]["approvals"]) == ["alice", "bob", "tina"]
    v = run_cli(
        "transcript", "verify", bundle, "--trust", str(d.people / "tina.pub.json"), *d.trust()
    )
    assert v.returncode == 0, v.stdout + v.stderr


def test_a_token_participant_gets_an_encryption_key_that_only_their_token_opens(tmp_path):
    """Issue 12: a custodian whose keys live on a token can be sealed to at issue. Their
    X25519 key exists only sealed under a non-extractable AES key on their token, endorsed
    by the token's signing key; opening it needs that token and its PIN."""
    import os
    import stat

    from ceremonies.participants import load_encryption_key, load_identity
    from custody.errors import CustodyError, IntegrityError, KeyNotFound
    from custody.shares import seal

    env = _token(tmp_path / "hsm")
    people = tmp_path / "people"
    r = _new_on_token(people, env)
    assert r.returncode == 0, r.stdout + r.stderr
    enc = people / "tina.enc.token.json"
    assert json.loads(r.stdout)["encryption_key"] == str(enc)
    assert stat.S_IMODE(enc.stat().st_mode) == 0o600
    ident = load_identity(people / "tina.pub.json")
    x_pub = ident.encryption_key()  # endorsed by the token-held signing key
    assert x_pub is not None and json.loads(enc.read_text())["x25519"] == x_pub.hex()

    sealed = seal.seal_to_recipient(
        "alpha bravo charlie", x_pub, custodian="tina", ceremony_id="c" * 32
    )
    os.environ["SOFTHSM2_CONF"], before = env["SOFTHSM2_CONF"], os.environ.get("SOFTHSM2_CONF")
    try:
        key = load_encryption_key(enc, TINA_PIN)
        assert seal.unseal_with_recipient_key(sealed, key) == "alpha bravo charlie"
        with pytest.raises(CustodyError) as e:  # a wrong PIN opens nothing
            load_encryption_key(enc, "not-the-pin-0000")
        assert type(e.value).__name__ == "PinIncorrect"
        # someone who swaps in their own public key (to have shares sealed to it) is caught
        # by the endorsement; an edited file that names another key does not open
        doc = json.loads(enc.read_text())
        edited = tmp_path / "edited.enc.token.json"
        edited.write_text(json.dumps(dict(doc, x25519="22" * 32)))
        with pytest.raises(IntegrityError):
            load_encryption_key(edited, TINA_PIN)
        # the sealed key moved to another token with the same label: that token cannot open it
        from custody.hsm import softhsm

        other = softhsm.write_conf(tmp_path / "other")
        softhsm.init_token(other, "tina-token", TEST_SO_PIN, TINA_PIN)
        os.environ["SOFTHSM2_CONF"] = str(other)
        with pytest.raises(KeyNotFound):  # no participant-enc/tina AES key on it
            load_encryption_key(enc, TINA_PIN)
    finally:
        if before is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = before
    assert TINA_PIN not in enc.read_text() and "alpha" not in enc.read_text()
