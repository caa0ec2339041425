"""The key algorithm of a roster entry and of a pin is recorded, bound and never guessed
(issue 13, item 3): an Ed25519 pin never vouches for a P-256 roster key nor the reverse, a
key of one algorithm is never read as the other, and an approval verifies under the roster
algorithm only (pure, in process)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ceremonies.engine.quorum import count_approvals
from ceremonies.participants import Identity, load_identity
from ceremonies.transcript.model import FormatError, RosterEntry
from ceremonies.transcript.pins import Pins, load_pins
from ceremonies.transcript.records import Approval
from custody.audit.signers import Ed25519Signer, TrustKey
from custody.errors import ConfigError

CID = "c0" * 16


@dataclasses.dataclass(frozen=True)
class P256Signer:
    """What a token without CKM_EDDSA signs with: raw r||s over SHA-256."""

    name: str
    key: ec.EllipticCurvePrivateKey = dataclasses.field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def alg(self) -> str:
        return "ecdsa-p256"

    @property
    def public(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


P = P256Signer("tina")
E = Ed25519Signer.from_seed("erin", b"\x07" * 32)


def _entry(s: P256Signer | Ed25519Signer, role: str = "custodian", **over: object) -> RosterEntry:
    kw: dict[str, object] = dict(
        name=s.name, role=role, public=s.public, valid_from=0, valid_until=10**10, alg=s.alg
    )
    kw.update(over)
    return RosterEntry(**kw)  # type: ignore[arg-type]


def test_a_roster_entry_holds_a_key_of_its_recorded_algorithm_only():
    e = _entry(P)
    assert RosterEntry.from_json(e.to_json()) == e and e.to_json()["alg"] == "ecdsa-p256"
    with pytest.raises(ValueError):  # a P-256 point recorded as Ed25519
        _entry(P, alg="ed25519")
    with pytest.raises(ValueError):  # an Ed25519 key recorded as P-256
        _entry(E, alg="ecdsa-p256")
    with pytest.raises(ValueError):
        _entry(P, alg="ecdsa-p384")
    for alg in ("ed25519", "ecdsa-p384"):
        with pytest.raises(FormatError):
            RosterEntry.from_json(dict(e.to_json(), alg=alg))
    off_curve = P.public[:-1] + bytes([P.public[-1] ^ 1])
    with pytest.raises(FormatError):
        RosterEntry.from_json(dict(e.to_json(), public=off_curve.hex()))


def test_a_pin_counts_only_for_a_roster_key_of_the_same_algorithm():
    entry = _entry(P)
    good = TrustKey(name="tina", alg="ecdsa-p256", public=P.public, role="custodian")
    pins = Pins.of([good])
    assert pins.standing(entry, "custodian") is None and pins.for_entry(entry) == good
    assert pins.identity_problems([entry]) == []
    # a pin object that names the same bytes under another algorithm (no pin file parses to
    # it; the check does not rely on that): it vouches for nothing and is a problem
    relabelled = Pins(keys=(dataclasses.replace(good, alg="ed25519"),))
    assert relabelled.standing(entry, "custodian") == (
        "pinned as an ed25519 key, the roster records ecdsa-p256"
    )
    assert relabelled.for_entry(entry) is None
    assert any("is pinned as ed25519" in p for p in relabelled.identity_problems([entry]))
    # her name pinned with an Ed25519 key: the roster's P-256 key is not the pinned one
    other = Pins.of([TrustKey(name="tina", alg="ed25519", public=E.public, role="custodian")])
    assert other.standing(entry, "custodian") == "not pinned"
    assert any("is pinned with key" in p for p in other.identity_problems([entry]))


def test_pin_files_carry_the_algorithm_and_refuse_a_relabelled_key(tmp_path: Path):
    doc = {"name": "tina", "role": "custodian", "alg": "ecdsa-p256", "public": P.public.hex()}
    (k,) = load_pins(json.dumps(doc).encode())
    assert (k.alg, k.public) == ("ecdsa-p256", P.public)
    from custody.errors import UsageError

    for bad in (dict(doc, alg="ed25519"), dict(doc, public=E.public.hex())):
        with pytest.raises(UsageError):
            load_pins(json.dumps(bad).encode())
    with pytest.raises(UsageError):  # a bare hex line is Ed25519 only: 130 hex is no key
        load_pins(P.public.hex().encode())


def _approval(signer: P256Signer | Ed25519Signer, name: str | None = None) -> Approval:
    a = Approval(
        ceremony=CID, action="rotate-root", action_id="rotate-root/v2",
        action_digest="ab" * 32, approver=name or signer.name, issued_at=1000,
        expires_at=1300, nonce="11" * 16,
    )  # fmt: skip
    return dataclasses.replace(a, sig=signer.sign(a.signing_input()))


def _count(members: dict[str, tuple[str, str, bytes, str | None]], *approvals: Approval):
    return count_approvals(
        approvals, members=members, role="custodian", needed=1, ceremony_id=CID,
        action="rotate-root", action_id="rotate-root/v2", digest="ab" * 32, now=1100,
        window=600,
    )  # fmt: skip


def test_an_approval_verifies_under_the_roster_algorithm_only():
    a = _approval(P)
    assert _count({"tina": ("custodian", "ecdsa-p256", P.public, None)}, a).met
    # the same member recorded as Ed25519 (its first 32 bytes, or the whole point): no
    rec = [P.public[1:33], P.public]
    for pub in rec:
        res = _count({"tina": ("custodian", "ed25519", pub, None)}, a)
        assert not res.met and res.rejected == (("tina", "has a bad signature"),)
    # an Ed25519 signature handed in for a P-256 member (a key of the attacker's own)
    forged = _approval(Ed25519Signer.from_seed("x", b"\x09" * 32), name="tina")
    res = _count({"tina": ("custodian", "ecdsa-p256", P.public, None)}, forged)
    assert not res.met and res.rejected == (("tina", "has a bad signature"),)
    # a flipped bit of the P-256 signature
    flipped = dataclasses.replace(a, sig=a.sig[:-1] + bytes([a.sig[-1] ^ 1]))
    assert not _count({"tina": ("custodian", "ecdsa-p256", P.public, None)}, flipped).met


def test_identity_files_record_the_algorithm_and_need_it(tmp_path: Path):
    ident = Identity(name="tina", role="custodian", public=P.public, alg="ecdsa-p256")
    f = tmp_path / "tina.pub.json"
    f.write_text(json.dumps(ident.to_json()))
    assert load_identity(f) == ident
    doc = ident.to_json()
    for bad in (
        {k: v for k, v in doc.items() if k != "alg"},  # never guessed from the length
        dict(doc, alg="ed25519"),
        dict(doc, alg="ecdsa-p384"),
    ):
        f.write_text(json.dumps(bad))
        with pytest.raises(ConfigError):
            load_identity(f)
    with pytest.raises(ValueError):
        Identity(name="tina", role="custodian", public=P.public)  # default Ed25519
