"""``verify_objects`` (``custody dek verify``) on its batched path, against a real SoftHSMv2
token and SQLite on disk: it must catch every damage the per-object path caught (it may not
get faster by checking less), look each KEK version up once, and stream generation."""

from __future__ import annotations

import contextlib
import os

import pytest

from custody.canonical import domain_hash
from custody.keys import wrapped as envelope
from custody.keys.hierarchy import KeyHierarchy, object_context, object_digest
from custody.model import KeyState
from custody.store.sqlite import SqliteStore as Store

pytestmark = pytest.mark.hsm


@pytest.fixture
def hier(hsm, tmp_path):
    store = Store.open(tmp_path / "c.db", create=True)
    h = KeyHierarchy(store, hsm)
    h.create_dev_root()
    yield h
    for r in h.roots():
        with contextlib.suppress(Exception):
            hsm.destroy_key("root", r.version)
    store.close()


def _row(h: KeyHierarchy, uid: bytes) -> tuple[bytes, int, bytes]:
    assert isinstance(h.store, Store)
    r = h.store.query("SELECT wrapped, kek_version, digest FROM objects WHERE uid=?", (uid,))[0]
    return bytes(r[0]), int(r[1]), bytes(r[2])


def _set(h: KeyHierarchy, uid: bytes, **cols: object) -> None:
    assert isinstance(h.store, Store)
    sets = ", ".join(f"{c}=?" for c in cols)
    with h.store.tx() as c:
        c.execute(f"UPDATE objects SET {sets} WHERE uid=?", (*cols.values(), uid))


def _flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]


def test_object_digest_is_the_domain_hash() -> None:
    for uid, plain in [(b"", b""), (os.urandom(16), os.urandom(32)), (b"u" * 300, b"p" * 70000)]:
        want = domain_hash("custody/object-digest/v1", uid, plain)
        assert object_digest(uid, plain) == want


def test_every_kind_of_damage_is_caught_and_only_that(hier):
    hier.create_kek_version("data")
    v1 = hier.generate_deks("data", 60)
    hier.create_kek_version("data")
    v2 = hier.generate_deks("data", 40)
    hier.create_kek_version("secrets")
    sec = [hier.store_object("secrets", b"an api key %d" % i, kind="secret") for i in range(5)]
    hier.forget_keys()
    assert hier.verify_objects().ok and hier.verify_objects().checked == 105

    bad: set[bytes] = set()
    hdr_len = len(envelope.header("data", 1))
    # each row's own envelope, damaged: ciphertext, tag, nonce; truncation; a wrong format
    # or key-version byte (the header is not under the tag as stored, only as expected)
    damage = [
        lambda w: _flip(w, hdr_len + 12),  # first ciphertext byte
        lambda w: _flip(w, len(w) - 1),  # tag
        lambda w: _flip(w, hdr_len),  # nonce
        lambda w: w[: hdr_len + 12 + 15],  # shorter than a tag
        lambda w: w[:hdr_len],  # header only
        lambda w: b"",
        lambda w: _flip(w, 0),  # format version
        lambda w: _flip(w, hdr_len - 1),  # key version in the header
        lambda w: _flip(w, 2),  # key id in the header
        lambda w: w + b"\x00",  # trailing byte
    ]
    for uid, mutate in zip(v1[1:], damage, strict=False):
        _set(hier, uid, wrapped=mutate(_row(hier, uid)[0]))
        bad.add(uid)
    # wrong AAD: two valid envelopes swapped between rows (the uid is in the context)
    a, b = _row(hier, v1[20])[0], _row(hier, v1[21])[0]
    _set(hier, v1[20], wrapped=b)
    _set(hier, v1[21], wrapped=a)
    bad |= {v1[20], v1[21]}
    # wrong KEK: a v1 envelope whose row says v2 (header mismatch) ...
    _set(hier, v1[22], kek_version=2)
    bad.add(v1[22])
    # ... and an envelope with v1's header and uid context but sealed under v2's key
    dek = os.urandom(32)
    forged = envelope.seal(hier.kek_plaintext("data", 2), "data", 1, dek, object_context(v1[23]))
    _set(hier, v1[23], wrapped=forged, digest=object_digest(v1[23], dek))
    bad.add(v1[23])
    # a secrets envelope moved onto a data row (other branch, other key)
    _set(hier, v2[0], wrapped=_row(hier, sec[0])[0])
    bad.add(v2[0])
    # right ciphertext, wrong digest; a digest of the wrong type
    _set(hier, v2[1], digest=_flip(_row(hier, v2[1])[2], 5))
    _set(hier, v2[2], digest="not bytes")
    _set(hier, v2[3], wrapped=_row(hier, v2[3])[0].hex())  # the ciphertext stored as TEXT
    bad |= {v2[1], v2[2], v2[3]}
    hier.forget_keys()
    rep = hier.verify_objects()
    assert rep.checked == 105
    assert set(rep.failed) == {u.hex() for u in bad}


def test_objects_under_a_kek_that_cannot_decrypt_all_fail(hier):
    hier.create_kek_version("data")
    v1 = hier.generate_deks("data", 7)
    hier.create_kek_version("data")
    v2 = hier.generate_deks("data", 3)
    assert isinstance(hier.store, Store)
    with hier.store.tx() as c:  # disabled while objects still use it: store damaged/edited
        c.execute(
            "UPDATE kek_versions SET state=? WHERE branch='data' AND version=1", ("disabled",)
        )
    hier.forget_keys()
    rep = hier.verify_objects()
    assert rep.checked == 10 and set(rep.failed) == {u.hex() for u in v1}
    with hier.store.tx() as c:  # a version that does not exist at all
        c.execute("UPDATE objects SET kek_version=9 WHERE uid=?", (v2[0],))
    rep = hier.verify_objects()
    assert set(rep.failed) == {u.hex() for u in v1} | {v2[0].hex()}
    # a KEK whose sealed bytes were tampered fails its HSM unwrap: every object under it fails
    # (a typed IntegrityError from the unwrap, reported per object, not a crash)
    row = hier.store.query("SELECT wrapped FROM kek_versions WHERE branch='data' AND version=2")
    with hier.store.tx() as c:
        c.execute(
            "UPDATE kek_versions SET state=?, wrapped=? WHERE branch='data' AND version=1",
            (KeyState.DECRYPT_ONLY, bytes(row[0][0])),  # v2's sealed key in v1's row
        )
    hier.forget_keys()
    rep = hier.verify_objects()
    assert set(rep.failed) == {u.hex() for u in v1} | {v2[0].hex()}


def test_one_kek_lookup_per_version_and_progress_per_batch(hier):
    hier.create_kek_version("data")
    hier.generate_deks("data", 12_000)
    hier.create_kek_version("data")
    hier.generate_deks("data", 500)
    hier.forget_keys()
    calls: list[tuple[str, int]] = []
    real = hier.kek_plaintext

    def counting(branch, version, **kw):
        calls.append((branch, version))
        return real(branch, version, **kw)

    hier.kek_plaintext = counting
    seen: list[int] = []
    rep = hier.verify_objects(progress=seen.append)
    assert rep.ok and rep.checked == 12_500 and sum(seen) == 12_500 and seen == [10_000, 2_000, 500]
    assert sorted(calls) == [("data", 1), ("data", 2)]
    calls.clear()
    rep = hier.verify_objects(sample=50)
    assert rep.ok and rep.checked == 50 and len(calls) <= 2


def test_generation_streams_committed_batches(hier):
    hier.create_kek_version("data")
    it = hier.iter_generate_deks("data", 12, batch=5)
    assert hier.object_counts() == {}  # nothing made before the first batch is asked for
    first = next(it)
    assert len(first) == 5 and hier.object_counts() == {"dek": 5}  # committed as yielded
    rest = [u for b in it for u in b]
    assert len(rest) == 7 and len(set(first + rest)) == 12
    assert hier.object_counts() == {"dek": 12}
    assert hier.verify_objects().ok
    for u in first + rest:
        assert len(hier.unwrap_object(u)) == 32
