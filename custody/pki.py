"""The client-certificate CA of ``custody serve``: its key is on the token (docs/api.md).

:func:`init_ca` creates an ECDSA P-256 signing key pair on the token (label
:data:`CA_LABEL`, never extractable) and a self-signed CA certificate for it;
:func:`issue` signs a client certificate whose subject CN is a principal's name, for a key
made here (returned once, to be written 0600) or for the public key of a CSR (the key never
leaves its owner). The server's ``--client-ca`` is the CA certificate, and the certificate's
CN is the principal (:func:`custody_server.tls.peer_identity`).

``cryptography`` builds certificates only with a private key in hand, so the token signs
instead: the TBSCertificate is built by ``cryptography`` (signed once by a throwaway key of
the same algorithm, which fixes the signature algorithm field), and its DER is signed by the
token (ECDSA over SHA-256) and reassembled as ``SEQUENCE {tbs, algorithm, BIT STRING sig}``.
The result is checked against the CA's public key before it is returned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from custody.errors import IntegrityError, UsageError
from custody.hsm import Hsm

CA_LABEL = "custody-client-ca"
Clock = Callable[[], dt.datetime]


@dataclass(frozen=True, slots=True)
class Issued:
    """A client certificate (PEM) and, when custody made the key, the key (PEM, shown once;
    ``repr`` never shows it)."""

    name: str
    serial: int
    not_after: str
    cert_pem: bytes
    key_pem: bytes | None = field(default=None, repr=False)


def _der_items(der: bytes) -> list[bytes]:
    """The encoded elements of a DER SEQUENCE (tag, length and content of each)."""

    def header(buf: bytes, i: int) -> tuple[int, int]:
        n = buf[i + 1]
        if n < 0x80:
            return i + 2, n
        k = n & 0x7F
        return i + 2 + k, int.from_bytes(buf[i + 2 : i + 2 + k], "big")

    if not der or der[0] != 0x30:
        raise ValueError("not a SEQUENCE")
    start, length = header(der, 0)
    out, i = [], start
    while i < start + length:
        body, n = header(der, i)
        out.append(der[i : body + n])
        i = body + n
    return out


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _seq(*items: bytes) -> bytes:
    body = b"".join(items)
    return b"\x30" + _der_len(len(body)) + body


def _ca_public(hsm: Hsm) -> ec.EllipticCurvePublicKey:
    alg, point = hsm.ensure_signing_key(CA_LABEL, ("ecdsa-p256",))
    if alg != "ecdsa-p256":  # pragma: no cover - ensure_signing_key refuses others
        raise UsageError("The CA key must be ECDSA P-256", "")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def _token_signed(builder: x509.CertificateBuilder, hsm: Hsm) -> x509.Certificate:
    """*builder*'s certificate, signed by the CA key on *hsm*."""
    draft = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    tbs = draft.tbs_certificate_bytes
    _tbs, algorithm, _sig = _der_items(draft.public_bytes(serialization.Encoding.DER))
    raw = hsm.sign(CA_LABEL, tbs)  # ECDSA P-256 over SHA-256(tbs), raw r || s
    sig = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    bits = b"\x03" + _der_len(len(sig) + 1) + b"\x00" + sig
    cert = x509.load_der_x509_certificate(_seq(tbs, algorithm, bits))
    try:
        _ca_public(hsm).verify(cert.signature, tbs, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise IntegrityError(
            "The token's signature on a certificate does not verify", "Check the token."
        ) from exc
    return cert


def init_ca(hsm: Hsm, *, name: str = "custody client CA", days: int = 3650, now: Clock) -> bytes:
    """The CA certificate (PEM) for the token's CA key, which is created if absent.

    Raises:
        MechanismUnsupported: the token has no ECDSA P-256.
    """
    pub = _ca_public(hsm)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    t = now()
    usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(t - dt.timedelta(minutes=5))
        .not_valid_after(t + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
    )
    return _token_signed(b, hsm).public_bytes(serialization.Encoding.PEM)


def issue(
    hsm: Hsm,
    ca_pem: bytes,
    name: str,
    *,
    days: int = 90,
    csr_pem: bytes | None = None,
    now: Clock,
) -> Issued:
    """A client certificate for principal *name*, signed by the token's CA key.

    Raises:
        UsageError: *ca_pem* is not this token's CA, or the CSR is bad, badly signed, or
            names someone else.
    """
    ca = x509.load_pem_x509_certificate(ca_pem)
    pub = _ca_public(hsm)
    if ca.public_key() != pub:
        raise UsageError("That CA certificate is not this token's CA", "Run 'custody ca init'.")
    key_pem = None
    if csr_pem is not None:
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise UsageError("Not a PEM certificate request", "Give --csr a CSR.") from exc
        cns = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if not csr.is_signature_valid or cns != [name]:
            raise UsageError(
                f"The request is not a valid CSR for CN={name}",
                "Make the CSR with the principal's name as its only CN.",
            )
        subject_key = csr.public_key()
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        subject_key = key.public_key()
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    t = now()
    serial = x509.random_serial_number()
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(subject_key)
        .serial_number(serial)
        .not_valid_before(t - dt.timedelta(minutes=5))
        .not_valid_after(t + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(pub), critical=False)
    )
    cert = _token_signed(b, hsm)
    return Issued(
        name=name,
        serial=serial,
        not_after=cert.not_valid_after_utc.isoformat(timespec="seconds"),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key_pem,
    )
