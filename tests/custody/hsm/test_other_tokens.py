"""custody on PKCS#11 tokens other than SoftHSMv2: NSS softokn (through p11-kit) passes
the known-answer tests and says which mechanisms it uses; opencryptoki's soft token is
refused at preflight with nothing created. Every custody call is a CLI subprocess (the
test process keeps to SoftHSM; see tests/token_fixtures.py)."""

from __future__ import annotations

import json

import pytest

from custody.config import Config, Home, HsmConfig
from tests.conftest import TEST_PIN, run_cli, write_secret
from tests.token_fixtures import (
    OPENCRYPTOKI,
    P11KIT_PROXY,
    nss_token,
    opencryptoki_token,
    token_objects,
)

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("other-tokens")]


# opencryptoki's soft token takes PINs of at most 8 characters
OCK_SO_PIN, OCK_PIN = "so-9130x", "us-4821x"


def _init(tmp_path, module, label, pin=TEST_PIN):
    pins = tmp_path / "pins"
    write_secret(pins, f"pin={pin}\n")
    home = tmp_path / "home"
    r = run_cli(
        "init",
        "--home",
        str(home),
        "--module",
        module,
        "--token-label",
        label,
        "--pin-file",
        str(pins),
        "--json",
    )
    return home, pins, r


def test_nss_softokn_passes_preflight_and_selftest_names_its_mechanisms(tmp_path):
    with nss_token(tmp_path / "nss", TEST_PIN) as label:
        home, pins, r = _init(tmp_path, P11KIT_PROXY, label)
        assert r.returncode == 0, r.stderr
        st = run_cli("hsm", "selftest", "--home", str(home), "--pin-file", str(pins), "--json")
        assert st.returncode == 0, st.stdout + st.stderr
        doc = json.loads(st.stdout)
        assert doc["ok"] is True
        # no traceback, and each check is pass / fail / missing
        assert set(doc["results"].values()) <= {"pass", "fail", "missing"}
        assert doc["results"]["allowed_mechanisms"] == "missing"  # NSS does not enforce it
        # chosen by the known-answer test, not by the name: NSS's CKM_AES_KEY_WRAP_PAD is
        # PKCS#7 + RFC 3394, so RFC 5649 comes from CKM_AES_KEY_WRAP_KWP (via the raw call)
        assert doc["choices"]["key_wrap"] == "rfc5649 (CKM_AES_KEY_WRAP_KWP, raw call)"
        assert doc["choices"]["aes_gcm"].startswith("in token (raw call")
        assert doc["signing_algorithm"] == "ecdsa-p256"
        text = run_cli("hsm", "selftest", "--home", str(home), "--pin-file", str(pins))
        assert text.returncode == 0 and "Traceback" not in text.stderr
        assert "key_wrap" in text.stdout and "rfc5649" in text.stdout
        assert token_objects(P11KIT_PROXY, label, TEST_PIN) == []  # nothing left behind
        assert TEST_PIN not in st.stdout + st.stderr + text.stdout + text.stderr
        # No EdDSA: the HSM audit key is ECDSA P-256, and 'audit verify' checks its
        # checkpoints with the key the auditor pinned (its algorithm recorded in the pin)
        pinned = tmp_path / "hsm-audit.json"
        cp = run_cli(
            "audit", "checkpoint", "--home", str(home), "--pin-file", str(pins),
            "--trust-out", str(pinned), "--json",
        )  # fmt: skip
        assert cp.returncode == 0, cp.stdout + cp.stderr
        signer = json.loads(cp.stdout)["signer"]
        assert signer["alg"] == "ecdsa-p256" and len(signer["public"]) == 130
        assert json.loads(pinned.read_text())["alg"] == "ecdsa-p256"
        v = run_cli("audit", "verify", "--home", str(home), "--trust", str(pinned), "--json")
        assert v.returncode == 0 and json.loads(v.stdout)["ok"] is True, v.stdout + v.stderr
        assert token_objects(P11KIT_PROXY, label, TEST_PIN) == ["audit", "audit"]  # the pair
        # another P-256 key pinned under that name counts for nothing: refused
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        other = ec.generate_private_key(ec.SECP256R1()).public_key()
        point = other.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        wrong = tmp_path / "other.json"
        wrong.write_text(json.dumps({**signer, "public": point.hex()}))
        v = run_cli("audit", "verify", "--home", str(home), "--trust", str(wrong), "--json")
        assert v.returncode == 6 and json.loads(v.stdout)["ok"] is False, v.stdout + v.stderr
        # the same point pinned as Ed25519 is not a key at all
        relabelled = tmp_path / "relabelled.json"
        relabelled.write_text(json.dumps({**signer, "alg": "ed25519"}))
        v = run_cli("audit", "verify", "--home", str(home), "--trust", str(relabelled))
        assert v.returncode == 2 and "Unsupported trust key" in v.stderr, v.stdout + v.stderr


def test_opencryptoki_is_refused_at_preflight_and_nothing_is_created(tmp_path):
    with opencryptoki_token(OCK_SO_PIN, OCK_PIN) as label:
        home, pins, r = _init(tmp_path, OPENCRYPTOKI, label, OCK_PIN)
        assert r.returncode == 5, r.stdout + r.stderr
        doc = json.loads(r.stdout)
        assert doc["error"] == "MechanismUnsupported"
        for name in ("key_wrap missing", "ecdh missing", "ecdh_wrap missing"):
            assert name in doc["title"], doc["title"]
        assert "no AES key-wrap mechanism offered" in doc["title"]  # each one says why
        # no GCM is no longer a reason: the AES-CBC-PAD + HMAC fallback seals KEKs there
        assert "kek_seal" not in doc["title"] and "aes_gcm" not in doc["title"]
        assert "Nothing was created" in doc["hint"]
        assert not home.exists()  # no home, no store, no config
        assert token_objects(OPENCRYPTOKI, label, OCK_PIN) == []  # no key on the token
        assert OCK_PIN not in r.stdout + r.stderr
        # the selftest on it does not crash: each check is pass, fail or missing
        h = Home(tmp_path / "st")
        h.root.mkdir()
        h.write_config(
            Config(
                deployment_id="ock-selftest",
                created="2025-01-01T00:00:00Z",
                hsm=HsmConfig(module=OPENCRYPTOKI, token_label=label),
            )
        )
        st = run_cli("hsm", "selftest", "--home", str(h.root), "--pin-file", str(pins), "--json")
        assert st.returncode == 5 and "Traceback" not in st.stderr, st.stderr
        doc = json.loads(st.stdout)
        assert doc["ok"] is False
        assert doc["results"]["random"] == "pass" and doc["results"]["aes_key_gen"] == "pass"
        for name in ("aes_gcm", "key_wrap", "ecdh", "ecdh_wrap", "sign_verify"):
            assert doc["results"][name] == "missing", (name, doc["results"], doc["errors"])
        assert doc["results"]["cbc_hmac"] == "pass" and doc["results"]["kek_seal"] == "pass"
        assert doc["choices"]["key_wrap"] == "none"
        assert doc["choices"]["kek_seal"] == "aes-cbc-hmac"
        text = run_cli("hsm", "selftest", "--home", str(h.root), "--pin-file", str(pins))
        assert text.returncode == 5 and "Traceback" not in text.stderr
        assert "missing" in text.stdout and "selftest FAILED" in text.stdout


def test_a_ceremony_on_an_unsuitable_token_is_refused_before_it_is_recorded(tmp_path):
    """The ceremony hook (not only init): a home whose [hsm] now names opencryptoki's soft
    token refuses generate at preflight: no open ceremony, no bundle, no key, no file."""
    from dataclasses import replace

    from custody.config import Home
    from tests.ceremony_fixtures import CUST, Dep, create_people, init_home

    d = Dep(tmp_path / "home")
    init_home(d.root, d.pin)
    create_people(d.people)
    adds = [a for n in ("admin", *CUST) for a in ("--add", str(d.people / f"{n}.pub.json"))]
    assert d.ceremony("enrol", *d.coord(pin=False), *adds).returncode == 0
    bundles = sorted(p.name for p in (d.root / "transcripts").iterdir())
    with opencryptoki_token(OCK_SO_PIN, OCK_PIN) as label:
        home = Home(d.root)
        cfg = home.load()
        home.write_config(
            replace(
                cfg, hsm=replace(cfg.hsm, module=OPENCRYPTOKI, token_label=label, softhsm_conf=None)
            )
        )
        write_secret(d.pin, f"pin={OCK_PIN}\n")
        cust = [a for n in CUST for a in ("--custodian", n)]
        out = d.root / "shares"
        r = d.ceremony("generate", *d.coord(), *cust, "--threshold", "3", "--out", str(out))
        assert r.returncode == 5, r.stdout + r.stderr
        assert "not suitable for custody" in r.stderr and "key_wrap missing" in r.stderr
        listed = run_cli("ceremony", "list", "--home", str(d.root), "--json")
        assert [c for c in json.loads(listed.stdout) if c["state"] == "open"] == []
        assert sorted(p.name for p in (d.root / "transcripts").iterdir()) == bundles
        assert not out.exists()
        assert token_objects(OPENCRYPTOKI, label, OCK_PIN) == []
