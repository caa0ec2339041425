"""Structured fuzzing of every parser that reads something a person or a peer hands in.

Each parser runs through its whole use (parse, then the checks a caller runs: signature,
binding, decryption) on at least 10,000 mutations of a valid input. A mutation either is
refused with a typed :class:`CustodyError` (title and hint), or yields exactly the result of
the original. Never another exception, never a different result.

The byte-flip tests in ``tests/custody/shares/test_shares_mutation.py`` rarely reach the
values a hostile peer can write into well-formed JSON: a lone surrogate, an integer of 2^53
or more, a float where an integer belongs, a non-hex id, a nesting deep enough to exhaust
the recursion limit, a key-derivation cost that would exhaust memory. The mutations here
put those values at every position of the decoded document, then re-encode it.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ceremonies.transcript import BundleData, checks, load_bundle, verify_bundle
from ceremonies.transcript.pins import load_pins
from custody.audit.signers import TrustKey, parse_trust_key
from custody.backup import format as bf
from custody.canonical import canonical_bytes
from custody.errors import CustodyError
from custody.keys import wrapped
from custody.shares import envelope as ev
from custody.shares import seal, slip39, transport
from custody.signing import public_raw
from tests.conftest import FIXTURES

N = 10_000
R = random.Random(2026)
SECRET = bytes(range(40, 72))
SHARES = slip39.split(SECRET, groups=[(3, 5)], iteration_exponent=0, rng=lambda n: R.randbytes(n))[
    0
]
DEALER = Ed25519PrivateKey.from_private_bytes(b"\x05" * 32)
COORD = Ed25519PrivateKey.from_private_bytes(b"\x06" * 32)
FAST = seal.Argon2Params(memory_kib=64, iterations=1, lanes=1)
PASS = b"correct horse battery staple fuzz 4711"
DEEP = 50_000

NASTY: tuple[Any, ...] = (
    "\ud800",
    "a\udfffb",
    "\x00",
    "",
    "zz",
    "0g" * 16,
    "ab" * 31 + "a",
    "AB" * 32,
    "é" * 40,
    2**53,
    2**53 + 1,
    -(2**53) - 1,
    2**64,
    10**400,
    -1,
    0,
    1,
    255,
    1.5,
    -0.0,
    1e308,
    float("nan"),
    float("inf"),
    True,
    False,
    None,
    [],
    {},
    [None],
    {"": ""},
    "x" * 5000,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    if isinstance(doc, dict):
        out_d = dict(doc)
        out_d[head] = _set(doc[head], tuple(rest), value)
        return out_d
    out_l = list(doc)
    out_l[head] = _set(doc[head], tuple(rest), value)
    return out_l


def _drop(doc: Any, path: tuple[Any, ...]) -> Any:
    head, *rest = path
    if rest:
        out: Any = dict(doc) if isinstance(doc, dict) else list(doc)
        out[head] = _drop(doc[head], tuple(rest))
        return out
    if isinstance(doc, dict):
        return {k: v for k, v in doc.items() if k != head}
    return [v for i, v in enumerate(doc) if i != head]


def _hex_edit(value: str, r: random.Random) -> str:
    i = r.randrange(len(value))
    return value[:i] + r.choice("0123456789abcdefABCDEFgz \ud800") + value[i + 1 :]


def mutate_doc(doc: Any, r: random.Random) -> str:
    """One structural mutation of a decoded JSON document, re-encoded as JSON text."""
    op = r.randrange(10)
    if op == 0:  # nest deeper than the recursion limit
        return "[" * DEEP + "]" * DEEP if r.random() < 0.5 else '{"a":' * DEEP + "1" + "}" * DEEP
    if op == 1:  # a duplicate key: the first copy must not be the one that is checked
        text = json.dumps(doc, ensure_ascii=True)
        return '{"type":' + json.dumps(r.choice(NASTY[:9]), ensure_ascii=True) + "," + text[1:]
    paths = _paths(doc)
    path = r.choice(paths)
    if op in (2, 3, 4, 5):
        new = _set(doc, path, r.choice(NASTY))
    elif op == 6 and path:
        new = _drop(doc, path)
    elif op == 7:
        holders = [p for p in paths if isinstance(_get(doc, p), dict)]
        p = r.choice(holders)
        new = _set(
            doc, p, {**_get(doc, p), r.choice(("extra", "type", "version")): r.choice(NASTY)}
        )
    elif op == 8:
        strings = [p for p in paths if isinstance(_get(doc, p), str) and _get(doc, p)]
        p = r.choice(strings)
        new = _set(doc, p, _hex_edit(_get(doc, p), r))
    else:
        ints = [p for p in paths if type(_get(doc, p)) is int]
        p = r.choice(ints) if ints else path
        old = _get(doc, p)
        new = _set(doc, p, (old if type(old) is int else 0) + r.choice((1, -1, 2**53, 0.0)))
    return json.dumps(new, ensure_ascii=r.random() < 0.7, allow_nan=True)


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def mutate_bytes(data: bytes, r: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(r.choice((1, 1, 2, 3))):
        i = r.randrange(len(b)) if b else 0
        op = r.randrange(5)
        if op == 0 and b:
            b[i] ^= 1 << r.randrange(8)
        elif op == 1 and b:
            b[i] = r.randrange(256)
        elif op == 2 and b:
            del b[i]
        elif op == 3:
            b[i:i] = r.randbytes(r.randrange(1, 9))
        else:
            del b[r.randrange(len(b) + 1) :]
    return bytes(b)


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.untyped: list[str] = []
        self.wrong: list[str] = []


def run(
    name: str,
    original: Any,
    pipeline: Callable[[Any], Any],
    mutations: Callable[[random.Random], Any],
    *,
    n: int = N,
    seed: int = 0,
    faithful: Callable[[Any, Any], bool] | None = None,
) -> Tally:
    """Feed *n* mutations through *pipeline*; each is refused (typed) or gives *original*.

    For a file nobody signs (a pin file, a public key file), a change can legitimately give
    another result: then *faithful* is a reference reading, written independently, and an
    accepted result must be exactly what it reads from the mutated input."""
    r = random.Random(f"{name}/{seed}")
    t = Tally()
    for _ in range(n):
        bad = mutations(r)
        try:
            got = pipeline(bad)
        except CustodyError as exc:
            assert exc.title and exc.hint, (name, type(exc).__name__)
            t.counts["refused"] += 1
            continue
        except Exception as exc:
            t.untyped.append(f"{type(exc).__name__}: {str(exc)[:80]} <- {str(bad)[:160]!r}")
            continue
        if got == original:
            t.counts["same"] += 1
        elif faithful is not None and _agrees(faithful, bad, got):
            t.counts["faithful"] += 1
        else:
            t.wrong.append(repr(bad)[:200])
    print(
        f"{name}: {n} mutations, {dict(t.counts)}, untyped {len(t.untyped)}, wrong {len(t.wrong)}"
    )
    assert not t.untyped, f"{name}: {len(t.untyped)} untyped exceptions, e.g. {t.untyped[:3]}"
    assert not t.wrong, f"{name}: {len(t.wrong)} silently wrong results, e.g. {t.wrong[:3]}"
    assert sum(t.counts.values()) == n
    return t


def _agrees(reference: Callable[[Any, Any], bool], bad: Any, got: Any) -> bool:
    try:
        return reference(bad, got)
    except Exception:
        return False


def _strict(raw: bytes | str) -> Any:
    """The reference JSON reading: strict, no duplicate keys, no NaN."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({k for k, _ in items}) == len(items)
        return dict(items)

    return json.loads(raw, object_pairs_hook=pairs, parse_constant=lambda c: 1 / 0)


def _doc_or_bytes(doc: Any, raw: bytes) -> Callable[[random.Random], bytes]:
    def m(r: random.Random) -> bytes:
        if r.random() < 0.75:
            return mutate_doc(doc, r).encode("utf-8", "surrogatepass")
        return mutate_bytes(raw, r)

    return m


# -- share envelopes --------------------------------------------------------------------------

PARSED = slip39.parse_share(SHARES[0])
ENV = ev.make_envelope(
    PARSED,
    ceremony_id="c" * 32,
    policy_digest="ab" * 32,
    epoch=0,
    custodian="cd" * 16,
    kcv="abcdef",
    dealer=DEALER,
)
ENV_RAW = ENV.to_bytes()


def test_envelopes() -> None:
    def pipeline(raw: bytes) -> Any:
        got = ev.load_envelope(raw)
        ev.verify_share(
            PARSED, got, public_raw(DEALER), expected_ceremony="c" * 32, expected_epoch=0
        )
        return got.payload

    t = run("envelope", ENV.payload, pipeline, _doc_or_bytes(json.loads(ENV_RAW), ENV_RAW))
    assert t.counts["refused"] > N * 0.8


def test_public_key_files() -> None:
    raw = ev.public_key_json(public_raw(DEALER), "dealer").encode()

    def pipeline(b: bytes) -> Any:
        return ev.load_public_key(b.decode("utf-8", "surrogatepass"))

    def m(r: random.Random) -> bytes:
        if r.random() < 0.75:
            return mutate_doc(json.loads(raw), r).encode("utf-8", "surrogatepass")
        return mutate_bytes(raw, r)

    def reference(b: bytes, got: Any) -> bool:
        text = b.decode("utf-8").strip()
        if not text.startswith("{"):
            return (bytes.fromhex(text), "") == got
        d = _strict(text)
        name = d.get("name", "")
        assert d["alg"] == "ed25519" and isinstance(name, str) and isinstance(d["public"], str)
        return (bytes.fromhex(d["public"]), name) == got

    original = (public_raw(DEALER), "dealer")
    run("public key", original, lambda b: _strict_decode(b, pipeline), m, faithful=reference)


def _strict_decode(b: bytes, f: Callable[[bytes], Any]) -> Any:
    """A file read as UTF-8 text: undecodable bytes are the reader's typed error, not ours."""
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return ev.load_public_key("{}")  # raises the typed error
    return f(b)


# -- sealed shares ----------------------------------------------------------------------------

SEALED = seal.seal_with_passphrase(SHARES[1], PASS, envelope=ENV_RAW, params=FAST)


def test_sealed_shares() -> None:
    def pipeline(raw: bytes) -> Any:
        return seal.unseal_with_passphrase(raw, PASS, envelope=ENV_RAW)

    t = run("sealed share", SHARES[1], pipeline, _doc_or_bytes(json.loads(SEALED), SEALED))
    assert t.counts["refused"] > N * 0.8


def test_sealed_share_kdf_costs_are_bounded() -> None:
    """A hostile file must not make the opener allocate terabytes or loop for hours."""
    doc = json.loads(SEALED)
    for name, value in (
        ("memory_kib", 2**32 - 1),
        ("memory_kib", 2**31),
        ("iterations", 2**31),
        ("lanes", 2**24 - 1),
        ("memory_kib", 7),
    ):
        bad = json.loads(SEALED)
        bad["header"]["kdf"][name] = value
        try:
            seal.unseal_with_passphrase(canonical_bytes(bad), PASS, envelope=ENV_RAW)
        except seal.SealError as exc:
            assert "parameters" in exc.title, exc.title
        else:
            raise AssertionError(f"{name}={value} was accepted")
    assert seal.unseal_with_passphrase(canonical_bytes(doc), PASS, envelope=ENV_RAW) == SHARES[1]


# -- transport: offers, offer keys, blobs ------------------------------------------------------

OFFER_KEY = transport.make_offer(
    ceremony_id="c" * 32, epoch=0, session="s" * 32, coordinator=COORD, now=0, ttl=1000
)
OFFER_TEXT = OFFER_KEY.offer.to_text()
BLOB, SAS = transport.seal_to_offer(
    OFFER_TEXT,
    SHARES[2],
    trusted_coordinator=public_raw(COORD),
    now=1,
    expected_session="s" * 32,
    envelope=ENV_RAW,
)


def _armored(prefix: str, text: str) -> Callable[[random.Random], str]:
    doc = transport._unarmor(text, prefix)

    def m(r: random.Random) -> str:
        x = r.random()
        if x < 0.75:
            body = mutate_doc(doc, r).encode("utf-8", "surrogatepass")
            return prefix + transport._b64(body)
        if x < 0.9:
            return prefix + transport._b64(mutate_bytes(canonical_bytes(doc), r))
        return mutate_bytes(text.encode(), r).decode("latin-1")

    return m


def test_offers() -> None:
    def pipeline(text: str) -> Any:
        o = transport.parse_offer(text)
        transport.verify_offer(
            o,
            public_raw(COORD),
            now=1,
            expected_ceremony="c" * 32,
            expected_epoch=0,
            expected_session="s" * 32,
        )
        return o

    t = run("offer", OFFER_KEY.offer, pipeline, _armored(transport.OFFER_PREFIX, OFFER_TEXT))
    assert t.counts["refused"] > N * 0.8


def test_blobs() -> None:
    def pipeline(text: str) -> Any:
        h = transport.open_blob(text, OFFER_KEY, now=2, expected_session="s" * 32)
        return (h.share, h.envelope, h.sas)

    original = (SHARES[2], ENV_RAW, SAS)
    t = run("blob", original, pipeline, _armored(transport.BLOB_PREFIX, BLOB))
    assert t.counts["refused"] > N * 0.8


def test_offer_key_files() -> None:
    raw = OFFER_KEY.to_json()

    def pipeline(text: str) -> Any:
        k = transport.load_offer_key(text)
        return (k.offer, k.private.private_bytes_raw())

    def m(r: random.Random) -> str:
        return mutate_doc(json.loads(raw), r) if r.random() < 0.8 else _latin(raw, r)

    def reference(text: str, got: Any) -> bool:
        d = _strict(text)
        assert d["type"] == "custody-offer-key" and isinstance(d["x25519_private"], str)
        return (transport.parse_offer(d["offer"]), bytes.fromhex(d["x25519_private"])) == got

    original = (OFFER_KEY.offer, OFFER_KEY.private.private_bytes_raw())
    run("offer key", original, pipeline, m, faithful=reference)


def _latin(text: str, r: random.Random) -> str:
    return mutate_bytes(text.encode(), r).decode("latin-1")


# -- trust keys and pin files -----------------------------------------------------------------

PINS_RAW = (FIXTURES / "transcripts" / "trust" / "pins.json").read_bytes()
TRUST = load_pins(PINS_RAW)


def _ref_trust(d: Any, default: str = "pinned") -> TrustKey:
    if isinstance(d, str):
        assert len(d) == 64 and d.strip() == d
        return TrustKey(name=default, alg="ed25519", public=bytes.fromhex(d))
    alg, name, role, fp = (d.get(k) for k in ("alg", "name", "role", "fingerprint"))
    pub = d["public"]
    assert alg in (None, "ed25519") and isinstance(pub, str) and len(pub) == 64
    assert all(v is None or isinstance(v, str) for v in (name, role, fp))
    key = TrustKey(
        name=name or default, alg="ed25519", public=bytes.fromhex(pub), role=role or None
    )
    assert fp is None or fp == key.fingerprint
    return key


def _trust_reference(b: bytes, got: Any) -> bool:
    text = b.decode("utf-8").strip()
    d = text if not text.startswith("{") else _strict(text)
    return _ref_trust(d) == got


def _pins_reference(b: bytes, got: Any) -> bool:
    text = b.decode("utf-8").strip()
    d = text if not text.startswith("{") else _strict(text)
    items = (
        d["pins"] if isinstance(d, dict) and d.get("type") == "custody.transcript.pins/v1" else [d]
    )
    return tuple(_ref_trust(i) for i in items) == got


def test_pin_files() -> None:
    m = _doc_or_bytes(json.loads(PINS_RAW), PINS_RAW)
    run("pins", TRUST, load_pins, m, faithful=_pins_reference)


def test_trust_key_files() -> None:
    raw = json.dumps(json.loads(PINS_RAW)["pins"][0]).encode()
    original = parse_trust_key(raw)
    m = _doc_or_bytes(json.loads(raw), raw)
    run("trust key", original, parse_trust_key, m, faithful=_trust_reference)


# -- wrapped objects and backup headers (binary) ----------------------------------------------

KEK = bytes(range(32))


def test_wrapped_objects() -> None:
    blob = wrapped.seal(KEK, "data", 3, b"\x11" * 32, b"ctx")

    def pipeline(b: bytes) -> Any:
        return wrapped.open_sealed(KEK, wrapped.parse(b), b"ctx")

    run("wrapped object", b"\x11" * 32, pipeline, lambda r: mutate_bytes(blob, r))


def test_backup_headers() -> None:
    h = bf.wrap_key(bf.new_header(1 << 12), KEK, 2, b"\x22" * 32)
    raw = h.to_bytes()

    def pipeline(b: bytes) -> Any:
        return bf.unwrap_key(bf.parse_header(b), KEK)

    run("backup header", b"\x22" * 32, pipeline, lambda r: mutate_bytes(raw, r))


# -- transcript bundles -----------------------------------------------------------------------

GOLDEN = load_bundle(FIXTURES / "transcripts" / "golden" / "rotate-root")


def _bundle_mutation(r: random.Random) -> BundleData:
    part = r.choice(BUNDLE_PARTS)
    lines = getattr(GOLDEN, part).split(b"\n")
    i = r.choice([k for k, ln in enumerate(lines) if ln.strip()])
    if r.random() < 0.8:
        lines[i] = mutate_doc(json.loads(lines[i]), r).encode("utf-8", "surrogatepass")
    else:
        lines[i] = mutate_bytes(lines[i], r)
    fields = {p: getattr(GOLDEN, p) for p in BUNDLE_PARTS}
    fields[part] = b"\n".join(lines)
    return BundleData(**fields, artifacts=GOLDEN.artifacts)


BUNDLE_PARTS = ("events", "checkpoints", "policy")


def test_bundle_parser() -> None:
    """The bundle parser turns every defect into a problem: it never raises."""
    r = random.Random("bundle-parse")
    problems = 0
    for _ in range(N):
        parsed = checks.parse(_bundle_mutation(r))
        problems += bool(parsed.problems) or None in parsed.events
    print(f"bundle parser: {N} mutations, {problems} with problems, raised 0")
    assert problems > N * 0.5


def test_bundle_verifier() -> None:
    """The whole verifier (about 20 ms a bundle, so fewer runs): it reports, never raises,
    and never passes a changed bundle."""
    r = random.Random("bundle-verify")
    outcome: Counter[str] = Counter()
    for _ in range(1500):
        data = _bundle_mutation(r)
        rep = verify_bundle(data, TRUST)
        same = all(getattr(data, p) == getattr(GOLDEN, p) for p in BUNDLE_PARTS)
        assert same or not rep.ok, "a changed bundle passed"
        outcome["same" if same else "reported"] += 1
    print(f"bundle verifier: 1500 mutations, {dict(outcome)}, raised 0")
    assert outcome["reported"] > 1400


def test_share_text() -> None:
    def m(r: random.Random) -> str:
        words = SHARES[3].split()
        op = r.randrange(4)
        i = r.randrange(len(words))
        if op == 0:
            words[i] = r.choice(("\ud800", "é", "\x00", "aaaa" * 50, "", "ACID", "acid\u200b"))
        elif op == 1:
            words[i] = words[i][:4]
        elif op == 2:
            words.insert(i, r.choice(("\ud800", "zzzz", words[i])))
        else:
            return _latin(SHARES[3], r)
        return " ".join(words)

    def pipeline(text: str) -> Any:
        p = slip39.parse_share(text)
        return (p.group_index, p.member_index, p.mnemonic)

    o = slip39.parse_share(SHARES[3])
    run("share text", (o.group_index, o.member_index, o.mnemonic), pipeline, m)
