"""The SQLite store and the wrapped-object envelope, on disk, without the HSM."""

from __future__ import annotations

import os

import pytest

from custody.errors import IntegrityError, StorageError
from custody.keys import wrapped as envelope
from custody.store.sqlite import SCHEMA_VERSION
from custody.store.sqlite import SqliteStore as Store


def test_new_store_is_wal_and_migrated(tmp_path):
    s = Store.open(tmp_path / "c.db", create=True)
    assert s.query("PRAGMA journal_mode")[0][0] == "wal"
    assert s.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    s.set_meta("k", "v")
    s.close()
    s2 = Store.open(tmp_path / "c.db")
    assert s2.get_meta("k") == "v"


def test_missing_store_is_typed_error(tmp_path):
    with pytest.raises(StorageError) as ei:
        Store.open(tmp_path / "absent.db")
    assert "custody init" in ei.value.hint


def test_corrupted_store_is_typed_error(tmp_path):
    p = tmp_path / "c.db"
    s = Store.open(p, create=True)
    s.close()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(p) + suffix):
            os.unlink(str(p) + suffix)
    p.write_bytes(b"this is not sqlite" * 300)
    with pytest.raises(StorageError) as ei:
        Store.open(p)
    assert "corrupted" in ei.value.title


def test_newer_schema_refused(tmp_path):
    s = Store.open(tmp_path / "c.db", create=True)
    s.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    s.close()
    with pytest.raises(StorageError, match="newer"):
        Store.open(tmp_path / "c.db")


def test_tx_rolls_back_on_error(tmp_path):
    s = Store.open(tmp_path / "c.db", create=True)
    with pytest.raises(RuntimeError), s.tx() as c:
        c.execute("INSERT INTO meta(key, value) VALUES('a', 'b')")
        raise RuntimeError("boom")
    assert s.get_meta("a") is None


KEY = bytes(range(32))


def test_envelope_round_trip_and_layout():
    blob = envelope.seal(KEY, "data", 7, b"secret-dek", b"ctx", nonce=b"\x01" * 12)
    assert blob[0] == 1 and blob[1] == 4 and blob[2:6] == b"data"
    assert blob[6:10] == (7).to_bytes(4, "big") and blob[10:22] == b"\x01" * 12
    env = envelope.parse(blob)
    assert (env.key_id, env.key_version) == ("data", 7)
    assert envelope.open_sealed(KEY, env, b"ctx") == b"secret-dek"
    assert "secret" not in repr(env)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # tag
        lambda b: b[:15] + bytes([b[15] ^ 1]) + b[16:],  # nonce
        lambda b: b[:9] + bytes([b[9] ^ 1]) + b[10:],  # key version
    ],
    ids=["tag", "nonce", "version"],
)
def test_envelope_tamper_detected(mutate):
    blob = envelope.seal(KEY, "data", 7, b"secret-dek", b"ctx")
    env = envelope.parse(mutate(blob))
    with pytest.raises(IntegrityError):
        envelope.open_sealed(KEY, env, b"ctx")


def test_envelope_wrong_context_detected():
    env = envelope.parse(envelope.seal(KEY, "data", 7, b"x", b"row-1"))
    with pytest.raises(IntegrityError):
        envelope.open_sealed(KEY, env, b"row-2")


@pytest.mark.parametrize("blob", [b"", b"\x02", b"\x01\x00abcd", b"\x01\x04data" + b"\0" * 10])
def test_envelope_malformed(blob):
    with pytest.raises(IntegrityError):
        envelope.parse(blob)
