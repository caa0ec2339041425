"""ECDSA P-256 participants on tokens without EdDSA, end to end (issue 13, item 3).

A token that offers CKM_ECDSA but no CKM_EDDSA (NSS softokn through p11-kit) gives its
participant a P-256 key, made on the token (sensitive, non-extractable). Its algorithm is
recorded in ``NAME.pub.json``, ``NAME.token.json``, the roster, the policy's signed roster
and the enrol action the super-admins approve; ``custody transcript verify`` checks every
signature offline (``cryptography``) under the algorithm of the auditor's pin and the
roster, never one read from a signature. SoftHSMv2 offers both, so ``--token-alg
ecdsa-p256`` stands for such a token in the fast tests; the NSS test runs the real one,
and opencryptoki's soft token (neither mechanism) is refused with nothing created.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.ceremony_fixtures import CUST, Dep, create_people, init_home, sign_approvals
from tests.conftest import TEST_SO_PIN, cli_env, run_cli, write_secret

pytestmark = pytest.mark.hsm

TPIN = "tess-token-pin-5531"


def _token(root: Path, label: str = "people-token") -> dict[str, str]:
    """A SoftHSMv2 config of its own with one token (the participants' own machine)."""
    from custody.hsm import softhsm

    root.mkdir(parents=True)
    conf = softhsm.write_conf(root)
    softhsm.init_token(conf, label, TEST_SO_PIN, TPIN)
    return cli_env(SOFTHSM2_CONF=str(conf))


def _new_on_token(
    out: Path, env: dict[str, str], name: str, role: str, *extra: str, label: str = "people-token"
) -> Any:
    pin = out.parent / f"{name}.tokenpin"
    write_secret(pin, f"pin={TPIN}\n")
    r = run_cli(
        "participant", "new", name, "--role", role, "--out", str(out),
        "--token-label", label, "--pin-file", str(pin), "--json", *extra, env=env,
    )  # fmt: skip
    r.out = json.loads(r.stdout) if r.returncode == 0 else {}  # type: ignore[attr-defined]
    return r


def _coord(d: Dep, name: str, *, pin: bool = False) -> list[str]:
    """Coordinator args for a token-held participant (the secret is the token PIN)."""
    pw = d.root / f"{name}.pass"
    write_secret(pw, TPIN + "\n")
    a = ["--home", str(d.root), "--key", str(d.people / f"{name}.token.json")]
    a += ["--passphrase-file", str(pw), "--json"]
    return a + (["--pin-file", str(d.pin)] if pin else [])


def _events(bundle: str | Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (Path(bundle) / "events.jsonl").read_text().splitlines()]


def _verify(bundle: str | Path, *trust: str) -> Any:
    return run_cli("transcript", "verify", str(bundle), *trust)


def _trust_but(d: Dep, name: str) -> list[str]:
    """--trust for every identity in d.people except *name*'s."""
    files = [p for p in sorted(d.people.glob("*.pub.json")) if p.name != f"{name}.pub.json"]
    return [a for p in files for a in ("--trust", str(p))]


def _endorse(bundle: str | Path, key: Path, pw: Path, env: dict[str, str] | None = None) -> None:
    r = run_cli(
        "transcript", "endorse", str(bundle), "--key", str(key), "--passphrase-file", str(pw),
        env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def _p256_ok(public_hex: str, sig_hex: str, data: bytes) -> bool:
    """An independent check of the documented encoding: raw r||s over SHA-256(data)."""
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(public_hex))
    sig = bytes.fromhex(sig_hex)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def test_p256_token_participants_sign_ceremony_steps_and_approvals_that_verify_offline(tmp_path):
    """tess (super-admin) and tina (custodian) hold P-256 keys on their token. tess runs an
    enrolment: every event is signed by her token and verifies offline; tina's approval
    counts toward a rotate-root. A flipped signature byte and algorithm confusion fail."""
    from ceremonies.transcript.records import Approval
    from custody.audit.signers import verify_signature

    root = tmp_path / "home"
    d = Dep(root)
    init_home(root, d.pin)
    create_people(d.people, ("zed", "witness"))
    env = _token(tmp_path / "people-hsm")
    for name, role in (("tess", "super-admin"), ("tina", "custodian")):
        r = _new_on_token(d.people, env, name, role, "--token-alg", "ecdsa-p256")
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.out["alg"] == "ecdsa-p256"
        ident = json.loads((d.people / f"{name}.pub.json").read_text())
        ref = json.loads((d.people / f"{name}.token.json").read_text())
        assert ident["alg"] == ref["alg"] == "ecdsa-p256"
        assert ident["public"] == ref["public"] and len(ident["public"]) == 130
        assert ident["public"].startswith("04") and TPIN not in json.dumps([ident, ref])

    # the bootstrap enrolment records each P-256 key's algorithm in the enrol action that is
    # approved, in the roster and in the signed policy roster of later ceremonies
    adds = [
        a
        for n in ("admin", *CUST, "audrey", "wendy", "tess", "tina")
        for a in ("--add", str(d.people / f"{n}.pub.json"))
    ]
    r = d.ceremony("enrol", *d.coord(pin=False), *adds)
    assert r.returncode == 0, r.stdout + r.stderr
    enrol_ev = next(e for e in _events(r.out["bundle"]) if e["kind"] == "enrol")
    added = {a["name"]: a for a in enrol_ev["body"]["params"]["add"]}
    assert added["tess"]["alg"] == added["tina"]["alg"] == "ecdsa-p256"
    assert "alg" not in added["alice"]  # Ed25519 enrolments keep their old form and digest
    lst = run_cli("participant", "list", "--home", str(root), "--json")
    algs = {m["name"]: m["alg"] for m in json.loads(lst.stdout)}
    assert algs["tess"] == algs["tina"] == "ecdsa-p256" and algs["admin"] == "ed25519"

    # tess coordinates an enrolment (2 super-admins: her own approval and admin's)
    req = root / "enrol-req.json"
    r = d.ceremony(
        "enrol", *_coord(d, "tess"), "--add", str(d.people / "zed.pub.json"),
        "--request-out", str(req), env=env,
    )  # fmt: skip
    assert r.returncode == 10 and r.out["awaiting"] == "approvals", r.stdout + r.stderr
    cid, bundle = r.out["ceremony_id"], Path(r.out["bundle"])
    files = sign_approvals(d, cid, ("admin",), tag="-enrol", req=req)
    r = d.ceremony("resume", cid, *_coord(d, "tess"), "--approval", str(files[0]), env=env)
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    v = _verify(bundle, *d.trust())  # two super-admins now: one policy signature is short
    assert v.returncode == 6 and "1/2 needed" in v.stdout, v.stdout + v.stderr
    _endorse(bundle, d.people / "admin.key.pem", d.people / "admin.pass")
    v = _verify(bundle, *d.trust())
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr

    # every event is tess's P-256 signature: raw r||s (64 bytes) over SHA-256 of the
    # signing input, checked here with cryptography directly
    from ceremonies.transcript.records import Event

    tess_pub = json.loads((d.people / "tess.pub.json").read_text())["public"]
    evs = _events(bundle)
    assert evs and all(s["signer"] == "tess" for e in evs for s in e["signatures"])
    for e in evs:
        ev = Event.from_json(e)
        data = ev.signing_input(cid)
        for s in e["signatures"]:
            assert len(s["sig"]) == 128 and _p256_ok(tess_pub, s["sig"], data)
            assert not verify_signature("ed25519", bytes.fromhex(tess_pub[2:66]), bytes.fromhex(
                s["sig"]), data)  # fmt: skip
    gated = next(e for e in evs if e["kind"] == "enrol")
    tess_appr = next(a for a in gated["body"]["approvals"] if a["approver"] == "tess")
    assert _p256_ok(tess_pub, tess_appr["sig"], Approval.from_json(tess_appr).signing_input())
    pol = json.loads((bundle / "policy.json").read_text())
    entry = next(e for e in pol["payload"]["roster"] if e["name"] == "tess")
    assert entry["alg"] == "ecdsa-p256" and entry["public"] == tess_pub

    # a flipped byte in one of tess's signatures: INVALID, naming the bad signature
    bad = tmp_path / "flipped"
    shutil.copytree(bundle, bad)
    lines = (bad / "events.jsonl").read_text().splitlines()
    ev0 = json.loads(lines[1])
    sig = ev0["signatures"][0]["sig"]
    ev0["signatures"][0]["sig"] = sig[:-2] + format(int(sig[-2:], 16) ^ 1, "02x")
    lines[1] = json.dumps(ev0, separators=(",", ":"), sort_keys=True)
    (bad / "events.jsonl").write_text("\n".join(lines) + "\n")
    v = _verify(bad, *d.trust())
    assert v.returncode == 6 and "bad signature by tess" in v.stdout, v.stdout + v.stderr

    # algorithm confusion, by whoever hands the auditor a pin or edits the bundle
    others = _trust_but(d, "tess")
    pin = tmp_path / "tess-pin.json"
    doc = json.loads((d.people / "tess.pub.json").read_text())
    # (1) her P-256 point claimed as an Ed25519 key: not a key of that algorithm (exit 2)
    pin.write_text(json.dumps({k: doc[k] for k in ("name", "role", "public")} | {"alg": "ed25519"}))
    v = _verify(bundle, *others, "--trust", str(pin))
    assert v.returncode == 2 and "Unsupported trust key" in v.stderr, v.stdout + v.stderr
    # (2) her name pinned with an Ed25519 key: that key never verifies her P-256 signatures
    ed = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    pin.write_text(
        json.dumps({"name": "tess", "role": "super-admin", "alg": "ed25519", "public": ed})
    )
    v = _verify(bundle, *others, "--trust", str(pin))
    assert v.returncode == 6 and "INVALID" in v.stdout, v.stdout + v.stderr
    assert "tess is pinned with key" in v.stdout, v.stdout
    # (3) the policy's roster relabels her key as Ed25519: the roster entry is refused
    relabelled = tmp_path / "relabelled"
    shutil.copytree(bundle, relabelled)
    pol["payload"]["roster"] = [
        dict(e, alg="ed25519") if e["name"] == "tess" else e for e in pol["payload"]["roster"]
    ]
    (relabelled / "policy.json").write_text(json.dumps(pol))
    v = _verify(relabelled, *d.trust())
    assert v.returncode != 0 and "INVALID" in v.stdout + v.stderr, v.stdout + v.stderr
    # (4) her identity file relabelled: refused where it is read (enrol --add, --trust)
    pin.write_text(json.dumps(dict(doc, alg="ed25519")))
    v = _verify(bundle, *others, "--trust", str(pin))
    assert v.returncode == 2, v.stdout + v.stderr

    # tina's P-256 token approval counts toward a rotate-root's custodian quorum
    holders = (*CUST[:4], "tina")
    cust = [a for n in holders for a in ("--custodian", n)]
    # (sealed issue: tina's share is sealed to her X25519 key, whose endorsement is a P-256
    # signature checked under her enrolled key's algorithm)
    out = root / "shares"
    r = d.ceremony(
        "generate", *d.coord(), *cust, "--threshold", "3", "--out", str(out),
        "--seal-to", str(d.people),
    )  # fmt: skip
    assert r.returncode == 10, r.stdout + r.stderr
    gcid, gbundle = r.out["ceremony_id"], r.out["bundle"]
    issued = {e["body"]["custodian"]: e for e in _events(gbundle) if e["kind"] == "share.issued"}
    assert issued["tina"]["body"]["delivery"] == "sealed-x25519", issued["tina"]
    tina_pw = root / "tina.pass"
    write_secret(tina_pw, TPIN + "\n")
    opens: list[tuple[str, Path, Path, dict[str, str] | None]] = [
        *((n, d.people / f"{n}.enc.pem", d.people / f"{n}.pass", None) for n in CUST[:3]),
        ("tina", d.people / "tina.enc.token.json", tina_pw, env),
    ]
    for n, key, pw, cenv in opens:
        o = run_cli(
            "share", "open", str(out / f"{n}.share.sealed"),
            "--envelope", str(out / f"{n}.envelope.json"), "--key", str(key),
            "--passphrase-file", str(pw), "--trust", str(d.people / "admin.pub.json"),
            "--out", str(out / f"{n}.share.txt"), "--json", env=cenv,
        )  # fmt: skip
        assert o.returncode == 0 and json.loads(o.stdout)["custodian"] == n, o.stdout + o.stderr
    r = d.ceremony("resume", gcid, *d.coord(), *d.shares("alice", "bob", "carol"))
    assert r.returncode == 0, r.stdout + r.stderr
    rreq = root / "req.json"
    r = d.ceremony("rotate-root", *d.coord(), "--request-out", str(rreq))
    assert r.returncode == 10 and r.out["awaiting"] == "approvals", r.stdout + r.stderr
    rcid, rbundle = r.out["ceremony_id"], r.out["bundle"]
    tina_appr = root / "appr-tina.json"
    pw = tina_pw
    r = run_cli(
        "ceremony", "approve", str(rreq), "--key", str(d.people / "tina.token.json"),
        "--passphrase-file", str(pw), "--out", str(tina_appr), "--json", env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    tina_pub = json.loads((d.people / "tina.pub.json").read_text())["public"]
    a = json.loads(tina_appr.read_text())
    assert _p256_ok(tina_pub, a["sig"], Approval.from_json(a).signing_input())
    two = sign_approvals(d, rcid, ("alice", "bob"))
    apps = [x for f in (*two, tina_appr) for x in ("--approval", str(f))]
    r = d.ceremony("resume", rcid, *d.coord(), *apps)
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    gated = next(e for e in _events(rbundle) if e["kind"] == "rotate-root")
    assert sorted(x["approver"] for x in gated["body"]["approvals"]) == ["alice", "bob", "tina"]
    _endorse(rbundle, d.people / "tess.token.json", root / "tess.pass", env=env)  # P-256
    pol = json.loads((Path(rbundle) / "policy.json").read_text())
    tess_sig = next(x for x in pol["signatures"] if x["signer"] == "tess")
    assert len(tess_sig["sig"]) == 128
    v = _verify(rbundle, *d.trust())
    assert v.returncode == 0, v.stdout + v.stderr
    # tina's approval pinned under an Ed25519 key for her name: no longer counts
    tina_doc = json.loads((d.people / "tina.pub.json").read_text())
    pin.write_text(
        json.dumps({"name": "tina", "role": "custodian", "alg": "ed25519", "public": ed})
    )
    rest = _trust_but(d, "tina")
    v = _verify(rbundle, *rest, "--trust", str(pin))
    assert v.returncode == 6 and "INVALID" in v.stdout, v.stdout + v.stderr
    assert tina_doc["alg"] == "ecdsa-p256"


def _key_attributes(module: str, label: str, pin: str, key_label: str) -> dict[str, Any]:
    """The private key's type and protection, read in a child process (see
    tests/token_fixtures.py: the test process keeps to SoftHSM)."""
    import subprocess
    import sys

    code = (
        "import sys, json, pkcs11\n"
        "from pkcs11 import Attribute, ObjectClass\n"
        "lib = pkcs11.lib(sys.argv[1])\n"
        "tok = lib.get_token(token_label=sys.argv[2])\n"
        "with tok.open(user_pin=sys.stdin.read().strip()) as s:\n"
        "    k = s.get_key(object_class=ObjectClass.PRIVATE_KEY, label=sys.argv[3])\n"
        "    print(json.dumps({'key_type': int(k[Attribute.KEY_TYPE]),\n"
        "        'sensitive': bool(k[Attribute.SENSITIVE]),\n"
        "        'extractable': bool(k[Attribute.EXTRACTABLE])}))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, module, label, key_label],
        input=pin,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(r.stdout))


@pytest.mark.xdist_group("other-tokens")
def test_a_participant_on_nss_softokn_gets_a_p256_key_that_signs_a_verified_ceremony(tmp_path):
    """The real token without EdDSA: NSS softokn through p11-kit. Asked for Ed25519 it is
    refused with nothing created; by default its participant gets a P-256 key on the token
    (non-extractable), coordinates an enrolment, and the transcript verifies offline."""
    from custody.audit.signers import verify_signature
    from tests.token_fixtures import P11KIT_PROXY, nss_token, token_objects

    root = tmp_path / "home"
    d = Dep(root)
    init_home(root, d.pin)
    create_people(d.people, ("zed", "witness"))
    with nss_token(tmp_path / "nss", TPIN) as label:
        env = cli_env()
        tok = ("--token-module", P11KIT_PROXY)
        r = _new_on_token(
            d.people, env, "tess", "super-admin", *tok, "--token-alg", "ed25519", label=label
        )
        assert r.returncode == 5, r.stdout + r.stderr
        err = json.loads(r.stdout)
        assert err["error"] == "MechanismUnsupported" and "CKM_EDDSA" in err["title"], err
        assert not list(d.people.glob("tess.*")) and token_objects(P11KIT_PROXY, label, TPIN) == []

        r = _new_on_token(d.people, env, "tess", "super-admin", *tok, label=label)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.out["alg"] == "ecdsa-p256" and r.out["encryption_key"], r.out
        text = run_cli(
            "participant", "new", "tara", "--role", "witness", "--out", str(tmp_path / "t"),
            "--token-label", label, "--token-module", P11KIT_PROXY,
            "--pin-file", str(d.people.parent / "tess.tokenpin"), env=env,
        )  # fmt: skip
        assert text.returncode == 0 and "the token has no CKM_EDDSA" in text.stdout, text.stdout
        attrs = _key_attributes(P11KIT_PROXY, label, TPIN, "participant/tess")
        assert attrs == {"key_type": 3, "sensitive": True, "extractable": False}  # CKK_EC
        ident = json.loads((d.people / "tess.pub.json").read_text())
        assert ident["alg"] == "ecdsa-p256"
        # the X25519 key's endorsement is a P-256 signature by the token key
        from ceremonies.participants import endorsement_digest, load_identity

        li = load_identity(d.people / "tess.pub.json")
        assert li.encryption_key() is not None and li.x25519 is not None
        assert verify_signature(
            "ecdsa-p256",
            li.public,
            li.x25519_endorsement or b"",
            endorsement_digest(li.public, li.x25519),
        )

        adds = [
            a
            for n in ("admin", *CUST, "audrey", "wendy", "tess")
            for a in ("--add", str(d.people / f"{n}.pub.json"))
        ]
        r = d.ceremony("enrol", *d.coord(pin=False), *adds)
        assert r.returncode == 0, r.stdout + r.stderr
        req = root / "enrol-req.json"
        r = d.ceremony(
            "enrol", *_coord(d, "tess"), "--add", str(d.people / "zed.pub.json"),
            "--request-out", str(req), env=env,
        )  # fmt: skip
        assert r.returncode == 10, r.stdout + r.stderr
        cid, bundle = r.out["ceremony_id"], Path(r.out["bundle"])
        files = sign_approvals(d, cid, ("admin",), tag="-enrol", req=req)
        r = d.ceremony("resume", cid, *_coord(d, "tess"), "--approval", str(files[0]), env=env)
        assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    # offline: the NSS token is gone, the pins and cryptography are enough
    _endorse(bundle, d.people / "admin.key.pem", d.people / "admin.pass")
    v = _verify(bundle, *d.trust())
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr
    from ceremonies.transcript.records import Event

    for e in _events(bundle):
        for s in e["signatures"]:
            assert s["signer"] == "tess"
            assert _p256_ok(ident["public"], s["sig"], Event.from_json(e).signing_input(cid))
    gated = next(e for e in _events(bundle) if e["kind"] == "enrol")
    assert sorted(a["approver"] for a in gated["body"]["approvals"]) == ["admin", "tess"]
    assert TPIN not in (bundle / "events.jsonl").read_text()


@pytest.mark.xdist_group("other-tokens")
def test_a_token_with_neither_eddsa_nor_ecdsa_is_refused_with_nothing_created(tmp_path):
    """opencryptoki's soft token offers no EC at all: no participant key, no file."""
    from tests.token_fixtures import OPENCRYPTOKI, opencryptoki_token, token_objects

    ock_so, ock_pin = "so-9130x", "us-4821x"  # its PINs are at most 8 characters
    people = tmp_path / "people"
    with opencryptoki_token(ock_so, ock_pin) as label:
        pin = tmp_path / "ock.pin"
        write_secret(pin, f"pin={ock_pin}\n")
        r = run_cli(
            "participant", "new", "oscar", "--role", "custodian", "--out", str(people),
            "--token-label", label, "--token-module", OPENCRYPTOKI, "--pin-file", str(pin),
            "--json",
        )  # fmt: skip
        assert r.returncode == 5, r.stdout + r.stderr
        err = json.loads(r.stdout)
        assert err["error"] == "MechanismUnsupported", err
        assert "neither CKM_EDDSA nor CKM_ECDSA" in err["title"], err
        assert "Nothing was created" in err["hint"]
        assert not people.exists() or not list(people.iterdir())
        assert token_objects(OPENCRYPTOKI, label, ock_pin) == []
        assert ock_pin not in r.stdout + r.stderr
