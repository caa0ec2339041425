"""A signing key pair planted on the token WITHOUT the PIN (a R/W public session may
create public objects, a CKO_PRIVATE_KEY with CKA_PRIVATE false among them): custody's
``ensure_signing_key`` must not adopt it, or whoever planted it knows the private key of
custody's signatures (custody/hsm/pkcs11/keypairs.py ``_pair`` searched by class, label,
token and use, not CKA_PRIVATE: the planted pair was adopted). A planted public key beside
custody's own still makes the pair ambiguous ("Several key pairs"): a denial of service,
not a known key. Real SoftHSMv2 token; the planter is a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from custody.config import DEFAULT_SOFTHSM_MODULE
from tests.conftest import cli_env

pytestmark = pytest.mark.hsm

PLANT = textwrap.dedent(
    """
    import os, sys
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    module, conf, token_label, label = sys.argv[1:5]
    os.environ["SOFTHSM2_CONF"] = conf
    k = ec.derive_private_key(123456789, ec.SECP256R1())
    point = k.public_key().public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint)
    params = bytes.fromhex("06082a8648ce3d030107")  # the P-256 OID, DER
    der_point = bytes([4, len(point)]) + point
    tok = pkcs11.lib(module).get_token(token_label=token_label)
    with tok.open(rw=True) as s:  # no login
        s.create_object({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.EC,
                         Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.LABEL: label,
                         Attribute.SIGN: True, Attribute.EC_PARAMS: params,
                         Attribute.VALUE: k.private_numbers().private_value.to_bytes(32, "big")})
        s.create_object({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC,
                         Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.LABEL: label,
                         Attribute.VERIFY: True, Attribute.EC_PARAMS: params,
                         Attribute.EC_POINT: der_point})
    print(point.hex())
    """
)


def test_a_pinless_planted_signing_pair_is_not_adopted(hsm, softhsm_token):
    conf, token_label, _pin = softhsm_token
    label = f"attack-signer-{uuid.uuid4().hex[:8]}"
    r = subprocess.run(
        [sys.executable, "-c", PLANT, DEFAULT_SOFTHSM_MODULE, str(conf), token_label, label],
        capture_output=True, text=True, env={**cli_env(), "SOFTHSM2_CONF": str(conf)},
        check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    planted = bytes.fromhex(r.stdout.strip())
    alg, public = hsm.ensure_signing_key(label, ("ecdsa-p256",))
    assert alg == "ecdsa-p256"
    assert public != planted, "custody adopted a key pair planted without the PIN"
    assert os.environ.get("SOFTHSM2_CONF")
