"""A PUBLIC key planted (or swapped in) WITHOUT the PIN beside a token key pair.

Any process that can open the token may open a R/W public session and create, and destroy,
public token objects (CKO_PUBLIC_KEY with CKA_PRIVATE false, as custody's pairs used to
have). ``custody/hsm/pkcs11/keypairs.py`` ``_pair`` looked the public half up by label and
class only, so such a planter could:

1. plant a public key beside an existing pair: every sign and derive then failed with
   "Several key pairs" (a denial of service of the audit key, the CA key, ...);
2. plant it before custody creates that pair: the same, from the second use on;
3. destroy the genuine public key and plant one whose private half they hold:
   ``ensure_signing_key`` returned the planter's point as the token key's (what custody
   publishes and pins), ``verify`` accepted the planter's signatures, ``ensure_ecdh_key``
   returned the planter's point as the recipient key of sealed shares.

The public half custody uses must be proven to belong to the private key: planted extras
are ignored, and a pair left with no proven public half is refused, never silently used.
Real SoftHSMv2 token; the planter is a subprocess with no PIN.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from custody.config import DEFAULT_SOFTHSM_MODULE, HsmConfig
from custody.errors import IntegrityError
from tests.conftest import ROOT, cli_env

pytestmark = pytest.mark.hsm

# kind: ed25519 / p256 (signing pairs), ecdh (a P-256 CKA_DERIVE pair)
PLANTER = textwrap.dedent(
    """
    import sys
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    module, token_label, label, kind, mode = sys.argv[1:6]
    raw = ser.Encoding.Raw
    if kind == "ed25519":
        k = ed25519.Ed25519PrivateKey.generate()
        secret = k.private_bytes(raw, ser.PrivateFormat.Raw, ser.NoEncryption())
        point = k.public_key().public_bytes(raw, ser.PublicFormat.Raw)
        key_type, params = KeyType.EC_EDWARDS, bytes.fromhex("06032b6570")
    else:
        k = ec.generate_private_key(ec.SECP256R1())
        secret = k.private_numbers().private_value.to_bytes(32, "big")
        point = k.public_key().public_bytes(ser.Encoding.X962,
                                            ser.PublicFormat.UncompressedPoint)
        key_type, params = KeyType.EC, bytes.fromhex("06082a8648ce3d030107")
    tok = pkcs11.lib(module).get_token(token_label=token_label)
    destroyed = 0
    with tok.open(rw=True) as s:  # no login
        if mode == "swap":
            for o in list(s.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                                         Attribute.LABEL: label})):
                o.destroy()
                destroyed += 1
        s.create_object({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: key_type,
                         Attribute.TOKEN: True, Attribute.PRIVATE: False,
                         Attribute.LABEL: label, Attribute.VERIFY: kind != "ecdh",
                         Attribute.DERIVE: False, Attribute.EC_PARAMS: params,
                         Attribute.EC_POINT: bytes([4, len(point)]) + point})
    print(destroyed, secret.hex(), point.hex())
    """
)

# A pair made as custody made them before the fix: the public half CKA_PRIVATE false, so a
# pinless session can see and destroy it (logged in; the PIN on stdin).
LEGACY = textwrap.dedent(
    """
    import sys
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism
    module, token_label, label, kind = sys.argv[1:5]
    sign = kind != "ecdh"
    ed = kind == "ed25519"
    pub_t = {Attribute.EC_PARAMS: bytes.fromhex("06032b6570" if ed else "06082a8648ce3d030107"),
             Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.VERIFY: sign,
             Attribute.ENCRYPT: False, Attribute.WRAP: False, Attribute.DERIVE: False}
    priv_t = {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
              Attribute.EXTRACTABLE: False, Attribute.SIGN: sign, Attribute.DERIVE: not sign,
              Attribute.DECRYPT: False, Attribute.UNWRAP: False}
    tok = pkcs11.lib(module).get_token(token_label=token_label)
    with tok.open(rw=True, user_pin=sys.stdin.read().strip()) as s:
        pub, _ = s.generate_keypair(KeyType.EC_EDWARDS if ed else KeyType.EC,
                                    mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN if ed
                                    else Mechanism.EC_KEY_PAIR_GEN,
                                    store=True, label=label, public_template=pub_t,
                                    private_template=priv_t)
        raw = bytes(pub[Attribute.EC_POINT])
    print(raw[2:].hex())  # without its DER OCTET STRING header (short form here)
    """
)


# The genuine ECDH point's mirror (x, -y): x-only ECDH cannot tell it from the genuine one.
MIRROR = textwrap.dedent(
    """
    import sys
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass
    module, token_label, label, point = sys.argv[1:5]
    p = 2**256 - 2**224 + 2**192 + 2**96 - 1
    q = bytes.fromhex(point)
    mirror = q[:33] + (p - int.from_bytes(q[33:], "big")).to_bytes(32, "big")
    tok = pkcs11.lib(module).get_token(token_label=token_label)
    with tok.open(rw=True) as s:  # no login
        s.create_object({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC,
                         Attribute.TOKEN: True, Attribute.PRIVATE: False,
                         Attribute.LABEL: label, Attribute.VERIFY: False,
                         Attribute.DERIVE: False,
                         Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107"),
                         Attribute.EC_POINT: bytes([4, 65]) + mirror})
    print(mirror.hex())
    """
)


def _run(script: str, *args: str, stdin: str = "") -> str:
    r = subprocess.run(
        [sys.executable, "-c", script, DEFAULT_SOFTHSM_MODULE, *args],
        input=stdin, capture_output=True, text=True, cwd=ROOT, env=cli_env(), check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def plant(token_label: str, label: str, kind: str, mode: str = "plant") -> tuple[int, bytes, bytes]:
    """Plant (``swap``: first destroy every visible public key labelled *label*) a public
    key of *kind* without the PIN; (public keys destroyed, planter's private key, point)."""
    destroyed, secret, point = _run(PLANTER, token_label, label, kind, mode).split()
    return int(destroyed), bytes.fromhex(secret), bytes.fromhex(point)


@pytest.fixture
def hsm_for(softhsm_token, tmp_path):
    """An adapter whose new signing keys are of the kind asked (ecdh: the default)."""
    from custody.hsm.pkcs11.adapter import open_hsm

    _conf, token_label, pin = softhsm_token
    opened = []

    def make(kind: str):
        algs = {"ed25519": ("ed25519",), "p256": ("ecdsa-p256",)}.get(kind)
        kw = {"signing_algorithms": algs} if algs else {}
        h = open_hsm(HsmConfig(token_label=token_label), tmp_path, pin, **kw)
        opened.append(h)
        return h

    yield make
    for h in opened:
        h.close()


def ensure(h, label: str, kind: str) -> bytes:
    if kind == "ecdh":
        return bytes(h.ensure_ecdh_key(label))
    alg, pub = h.ensure_signing_key(label)
    assert alg == {"ed25519": "ed25519", "p256": "ecdsa-p256"}[kind]
    return bytes(pub)


def verify_in_process(kind: str, public: bytes, data: bytes, sig: bytes) -> None:
    if kind == "ed25519":
        Ed25519PublicKey.from_public_bytes(public).verify(sig, data)
    else:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
        der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))


def planter_sign(kind: str, secret: bytes, data: bytes) -> bytes:
    if kind == "ed25519":
        return Ed25519PrivateKey.from_private_bytes(secret).sign(data)
    k = ec.derive_private_key(int.from_bytes(secret), ec.SECP256R1())
    r, s = decode_dss_signature(k.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def works(h, label: str, kind: str, public: bytes) -> None:
    """The pair *label* is usable and is the one whose public half is *public*."""
    if kind == "ecdh":
        peer = ec.generate_private_key(ec.SECP256R1())
        peer_pub = peer.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        mine = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
        assert h.ecdh_derive(label, peer_pub) == peer.exchange(ec.ECDH(), mine)
        return
    sig = h.sign(label, b"audit checkpoint")
    verify_in_process(kind, public, b"audit checkpoint", sig)
    h.verify(label, b"audit checkpoint", sig)
    with pytest.raises(IntegrityError):
        h.verify(label, b"audit checkpoinT", sig)


KINDS = ("ed25519", "p256", "ecdh")


@pytest.mark.parametrize("kind", KINDS)
def test_a_public_key_planted_beside_a_pair_is_ignored(hsm_for, softhsm_token, kind):
    h = hsm_for(kind)
    label = f"pk-beside-{uuid.uuid4().hex[:8]}"
    genuine = ensure(h, label, kind)
    plant(softhsm_token[1], label, kind)
    assert ensure(h, label, kind) == genuine
    works(h, label, kind, genuine)
    h2 = hsm_for(kind)  # a fresh adapter (no cached proof) sees the same
    assert ensure(h2, label, kind) == genuine
    works(h2, label, kind, genuine)


@pytest.mark.parametrize("kind", KINDS)
def test_a_public_key_planted_before_the_pair_is_ignored(hsm_for, softhsm_token, kind):
    h = hsm_for(kind)
    label = f"pk-before-{uuid.uuid4().hex[:8]}"
    _, secret, _ = plant(softhsm_token[1], label, kind)
    genuine = ensure(h, label, kind)
    assert ensure(h, label, kind) == genuine
    works(h, label, kind, genuine)
    if kind != "ecdh":
        with pytest.raises(IntegrityError):
            h.verify(label, b"forged", planter_sign(kind, secret, b"forged"))


# how the pair was made, and whether custody used it (since this fix) before the attack:
# "new" (public half CKA_PRIVATE); "legacy-used" (made the old way, then proven once, which
# keeps a CKA_PRIVATE copy of its public half); "legacy-unused" (made the old way, attacked
# before custody's first use of it since the fix)
PAIRS = ("new", "legacy-used", "legacy-unused")


@pytest.mark.parametrize("made", PAIRS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_swapped_public_key_is_never_used(hsm_for, softhsm_token, kind, made):
    """The planter destroys every public key it sees labelled so and plants its own. A new
    pair's public half is CKA_PRIVATE: the planter cannot see it, and its own is ignored.
    A pair made the old way that custody has used since keeps a CKA_PRIVATE copy of its
    proven public half: the same. One attacked before that first use has lost its public
    half: it is refused for what needs it (never the planter's point), and keeps signing
    and deriving with its private key."""
    _conf, token_label, pin = softhsm_token
    h = hsm_for(kind)
    label = f"pk-swap-{uuid.uuid4().hex[:8]}"
    if made != "new":
        genuine = bytes.fromhex(_run(LEGACY, token_label, label, kind, stdin=pin))
    if made != "legacy-unused":
        genuine = ensure(h, label, kind)
    destroyed, secret, point = plant(token_label, label, kind, "swap")
    lost = made == "legacy-unused"
    breaches = []
    if destroyed != (0 if made == "new" else 1):
        breaches.append(f"the planter destroyed {destroyed} public key(s) without the PIN")
    for which, adapter in (("cached", h), ("fresh", hsm_for(kind))):
        if kind != "ecdh":
            forged = planter_sign(kind, secret, b"forged checkpoint")
            try:
                adapter.verify(label, b"forged checkpoint", forged)
                breaches.append(f"{which}: verify() accepted the planter's signature")
            except IntegrityError:
                pass
        try:
            got = ensure(adapter, label, kind)
        except IntegrityError as err:
            if not lost or "no public key" not in err.title or not err.hint:
                breaches.append(f"{which}: refused: {err}")
        else:
            if got == point:
                breaches.append(f"{which}: custody returned the planter's public key")
            elif got != genuine or lost:
                breaches.append(f"{which}: custody returned an unproven public key")
        try:  # what needs only the private key goes on
            if kind != "ecdh":
                verify_in_process(kind, genuine, b"c", adapter.sign(label, b"c"))
            else:
                peer = ec.generate_private_key(ec.SECP256R1())
                peer_pub = peer.public_key().public_bytes(
                    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
                )
                mine = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), genuine)
                if adapter.ecdh_derive(label, peer_pub) != peer.exchange(ec.ECDH(), mine):
                    breaches.append(f"{which}: derive used another private key")
        except Exception as exc:  # a breach to report, whatever it is
            breaches.append(f"{which}: the private key no longer works: {exc}")
    assert not breaches


@pytest.mark.parametrize("made", PAIRS)
def test_the_mirror_of_an_ecdh_point_is_never_returned(hsm_for, softhsm_token, made):
    """(x, -y) passes the ECDH proof too (the token's ECDH gives x alone, and d, -d give
    the same x). Beside a new pair, or one made the old way that custody has used since
    (it keeps a CKA_PRIVATE copy), the PIN-made public key wins; beside an old pair not
    used since, custody cannot tell which it published and refuses to say."""
    _conf, token_label, pin = softhsm_token
    h = hsm_for("ecdh")
    label = f"pk-mirror-{uuid.uuid4().hex[:8]}"
    if made != "new":
        genuine = bytes.fromhex(_run(LEGACY, token_label, label, "ecdh", stdin=pin))
    if made != "legacy-unused":
        genuine = ensure(h, label, "ecdh")
    mirror = bytes.fromhex(_run(MIRROR, token_label, label, genuine.hex()))
    assert mirror != genuine and mirror[:33] == genuine[:33]
    for adapter in (h, hsm_for("ecdh")):
        if made == "legacy-unused":
            with pytest.raises(IntegrityError, match="Several public keys"):
                ensure(adapter, label, "ecdh")
        else:
            assert ensure(adapter, label, "ecdh") == genuine
        works(adapter, label, "ecdh", genuine)
