"""The consumers' state and the early-revocation record on a deployment whose token audit
key is ECDSA P-256 (a token without CKM_EDDSA, e.g. NSS softokn; here SoftHSMv2's key made
P-256 only): acks count, the record verifies offline with ``custody secret verify-acks``
against the pinned P-256 key, and a tampered record or a key of the other algorithm is
refused (no algorithm confusion, either way)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from custody.audit.signers import AUDIT_KEY_LABEL, HsmSigner, TrustKey
from custody.config import Home
from custody.deployment import open_deployment
from custody.errors import IntegrityError
from custody.secrets import Vault
from custody.secrets.consumers import Consumers, early_revoke_record, verify_early_revoke
from tests.cli.test_secret_rotation import PATH, dep, rotate
from tests.conftest import TEST_PIN, run_cli

pytestmark = pytest.mark.hsm
__all__ = ["dep"]
EC_LABEL = "audit-p256-acks"


def _p256(d) -> HsmSigner:
    signer = HsmSigner("hsm-audit", d.token, EC_LABEL, ("ecdsa-p256",))
    assert signer.alg == "ecdsa-p256" and len(signer.public) == 65
    return signer


def _cons(d, signer, **kw) -> Consumers:
    return Consumers(Vault(d.store, d.hierarchy), signer, token=d.token,
                     deployment=d.config.deployment_id, exclusive=True, **kw)  # fmt: skip


def _pin(path: Path, key: TrustKey) -> Path:
    path.write_text(json.dumps(key.to_json()) + "\n")
    return path


def _verify_acks(record: Path, trust: Path):
    return run_cli("secret", "verify-acks", str(record), "--trust", str(trust), "--json")


def test_a_p256_audit_key_signs_acks_that_count_and_a_record_that_verifies(dep):
    home, pins, key, _people, tmp = dep
    assert rotate(home, pins, key, PATH, "--env", "prod", "--overlap", "1h").returncode == 0
    out = tmp / "records"
    with open_deployment(Home(home), TEST_PIN) as d:
        signer = _p256(d)
        ed = HsmSigner("hsm-audit", d.token, AUDIT_KEY_LABEL)
        assert ed.alg == "ed25519"
        cons = _cons(d, signer)
        cons.register("prod", PATH, "billing-api")
        cons.ack("prod", PATH, "billing-api", 2)
        st = cons.state("prod", PATH)
        assert st["verified"] and st["consumers"] == {"billing-api": 2} and st["early"]
        # read back as the CLI does, by the pinned P-256 key alone (no signer)
        ro = Consumers(Vault(d.store, d.hierarchy), trust=signer.public,
                       trust_alg="ecdsa-p256", token=d.token,
                       deployment=d.config.deployment_id, exclusive=True)  # fmt: skip
        assert ro.state("prod", PATH)["verified"]
        # the same P-256 bytes read as Ed25519: nothing verifies, no ack counts
        confused = Consumers(Vault(d.store, d.hierarchy), trust=signer.public,
                             trust_alg="ed25519", token=d.token,
                             deployment=d.config.deployment_id, exclusive=True)  # fmt: skip
        bad = confused.state("prod", PATH)
        assert not bad["verified"] and bad["stragglers"] == ["billing-api"]
        # an Ed25519 pin (the deployment's other audit key) does not verify P-256 rows
        other = Consumers(Vault(d.store, d.hierarchy), trust=ed.public, trust_alg="ed25519",
                          token=d.token, deployment=d.config.deployment_id,
                          exclusive=True)  # fmt: skip
        assert not other.state("prod", PATH)["verified"]
        with pytest.raises(ValueError):  # a signer and a pin of different algorithms
            _cons(d, signer, trust_alg="ed25519")
        assert cons.settle("prod", PATH, record_dir=out, deployment="dep") == 1
        ed_doc = early_revoke_record(ed, "dep", "prod", PATH, {
            "previous": 1, "current": 2, "consumers": {"billing-api": 2},
            "acked_at": {"billing-api": "2026-01-01T00:00:00Z"}})  # fmt: skip
        ec_pin = _pin(tmp / "audit-p256.json", TrustKey.of(signer))
        ed_pin = _pin(tmp / "audit-ed.json", TrustKey.of(ed))
    (record,) = sorted(out.glob("early-revoke-*.json"))
    doc = json.loads(record.read_text())
    assert doc["signer"]["alg"] == "ecdsa-p256"
    # offline, as the auditor: the P-256 pin verifies it
    r = _verify_acks(record, ec_pin)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["ok"] and got["revoked_version"] == 1 and got["acknowledged"] == ["billing-api"]
    # tampered: one ack's time changed
    bad_doc = dict(doc, acks={"billing-api": {"version": 2, "at": "2000-01-01T00:00:00Z"}})
    tampered = tmp / "tampered.json"
    tampered.write_text(json.dumps(bad_doc))
    r = _verify_acks(tampered, ec_pin)
    assert r.returncode != 0 and "does not verify" in r.stderr
    # tampered signature (one bit)
    sig = bytes.fromhex(doc["signature"])
    flipped = tmp / "flipped.json"
    flipped.write_text(json.dumps(dict(doc, signature=(sig[:-1] + bytes([sig[-1] ^ 1])).hex())))
    assert _verify_acks(flipped, ec_pin).returncode != 0
    # algorithm confusion: the Ed25519 pin against the P-256 record is refused
    r = _verify_acks(record, ed_pin)
    assert r.returncode != 0 and "algorithm" in r.stderr
    # ... the record relabelled as Ed25519 under the Ed25519 pin: the signature is the
    # P-256 key's, so it still fails
    relabel = tmp / "relabel.json"
    relabel.write_text(json.dumps(dict(doc, signer=dict(doc["signer"], alg="ed25519"))))
    assert _verify_acks(relabel, ed_pin).returncode != 0
    # ... and the P-256 pin's bytes claimed as Ed25519 are refused as a key
    claim = tmp / "claim.json"
    claim.write_text(json.dumps({**json.loads(ec_pin.read_text()), "alg": "ed25519"}))
    assert _verify_acks(record, claim).returncode != 0
    # reverse: an Ed25519 record against the P-256 pin is refused; under its own pin it
    # verifies
    ed_file = tmp / "ed-record.json"
    ed_file.write_text(json.dumps(ed_doc))
    r = _verify_acks(ed_file, ec_pin)
    assert r.returncode != 0 and "algorithm" in r.stderr
    assert _verify_acks(ed_file, ed_pin).returncode == 0
    with pytest.raises(IntegrityError):  # the library refuses the same way
        verify_early_revoke(ed_file.read_bytes(), json_pub(ec_pin), alg="ecdsa-p256")
    assert verify_early_revoke(record.read_bytes(), json_pub(ec_pin), alg="ecdsa-p256")


def json_pub(pin: Path) -> bytes:
    return bytes.fromhex(json.loads(pin.read_text())["public"])
