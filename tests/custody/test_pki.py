"""custody.pki on a real SoftHSMv2 token: a self-signed CA whose key is on the token, and
client certificates it signs (the token's ECDSA signature spliced into the DER)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from custody.errors import UsageError
from custody.pki import CA_LABEL, _der_items, init_ca, issue

pytestmark = pytest.mark.hsm
T = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def test_ca_and_client_certificates_signed_on_the_token(hsm):
    ca_pem = init_ca(hsm, name="unit CA", days=30, now=lambda: T)
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca.verify_directly_issued_by(ca)  # self-signed, by the token's key
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert init_ca(hsm, name="unit CA", now=lambda: T) != ca_pem  # a new cert, same key
    got = issue(hsm, ca_pem, "svc-a", days=2, now=lambda: T)
    cert = x509.load_pem_x509_certificate(got.cert_pem)
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "svc-a"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_after_utc == T + dt.timedelta(days=2)
    assert got.key_pem is not None and "PRIVATE KEY" not in repr(got)
    # the CA key is the token's: its public half is what verifies the certificates
    alg, point = hsm.ensure_signing_key(CA_LABEL, ("ecdsa-p256",))
    assert alg == "ecdsa-p256"
    assert ca.public_key() == ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def test_a_foreign_ca_certificate_is_refused(hsm):
    init_ca(hsm, now=lambda: T)
    other = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "custody client CA")])
    fake = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(other.public_key()).serial_number(1)
        .not_valid_before(T).not_valid_after(T + dt.timedelta(days=1))
        .sign(other, hashes.SHA256())
    )  # fmt: skip
    with pytest.raises(UsageError):
        issue(hsm, fake.public_bytes(serialization.Encoding.PEM), "svc-a", now=lambda: T)


def test_der_sequence_items():
    assert _der_items(bytes.fromhex("3006020101020102")) == [b"\x02\x01\x01", b"\x02\x01\x02"]
    with pytest.raises(ValueError):
        _der_items(b"\x02\x01\x01")
