"""The versioned key hierarchy against a real SoftHSMv2 token and SQLite on disk."""

from __future__ import annotations

import contextlib

import pytest

from custody.config import HsmConfig
from custody.errors import CeremonyError, ConfigError, IntegrityError, PolicyError, UsageError
from custody.keys.hierarchy import KeyHierarchy
from custody.model import KeyState
from custody.secretsource import read_secret, read_secret_file
from custody.store.sqlite import SqliteStore as Store
from tests.conftest import write_secret

pytestmark = pytest.mark.hsm


@pytest.fixture
def hier(hsm, tmp_path):
    store = Store.open(tmp_path / "c.db", create=True)
    h = KeyHierarchy(store, hsm)
    yield h
    # leave the shared session token clean for other tests
    for r in h.roots():
        with contextlib.suppress(Exception):
            hsm.destroy_key("root", r.version)
    store.close()


def test_no_root_is_ceremony_error(hier):
    with pytest.raises(CeremonyError):
        hier.current_root()
    with pytest.raises(CeremonyError):
        hier.create_kek_version("data")


def test_kek_versions_and_dek_round_trip(hier):
    root = hier.create_dev_root()
    assert root.state is KeyState.ACTIVE and len(root.kcv) == 6
    k1 = hier.create_kek_version("data")
    uids = hier.generate_deks("data", 25)
    k2 = hier.create_kek_version("data")
    uids2 = hier.generate_deks("data", 5)
    states = {k.version: (k.state, k.objects) for k in hier.keks("data")}
    assert states == {k1.version: (KeyState.DECRYPT_ONLY, 25), k2.version: (KeyState.ACTIVE, 5)}
    hier.forget_keys()  # force the HSM unwrap path
    rep = hier.verify_objects()
    assert rep.ok and rep.checked == 30
    assert len(hier.unwrap_object(uids[0])) == 32 and len(hier.unwrap_object(uids2[0])) == 32
    with pytest.raises(UsageError):
        hier.create_kek_version("nope")


def test_rotate_root_rewraps_keks_and_guards_retirement(hier, hsm):
    r1 = hier.create_dev_root()
    hier.create_kek_version("data")
    hier.create_kek_version("backup")
    uids = hier.generate_deks("data", 10)
    r2 = hier.next_root_version()
    ref = hsm.generate_aes_key("root", r2, extractable=False)
    hier.record_root(r2, ref.kcv, blob=None, epoch=None, activate=True)
    with pytest.raises(PolicyError, match="still wraps"):
        hier.set_root_state(r1.version, KeyState.DISABLED)
    assert hier.rewrap_keks(r2) == 2
    hier.forget_keys()
    assert {k.root_version for k in hier.keks()} == {r2}
    hier.set_root_state(r1.version, KeyState.DISABLED)
    assert len(hier.unwrap_object(uids[3])) == 32
    assert hier.verify_objects().ok


def test_tampered_kek_fails_closed(hier):
    hier.create_dev_root()
    hier.create_kek_version("data")
    uid = hier.store_object("data", b"an api key", kind="secret", label="svc")
    row = hier.store.query("SELECT wrapped FROM kek_versions WHERE branch='data'")[0][0]
    with hier.store.tx() as c:
        c.execute(
            "UPDATE kek_versions SET wrapped=? WHERE branch='data'",
            (row[:-2] + bytes([row[-2] ^ 1, row[-1]]),),
        )
    hier.forget_keys()
    with pytest.raises(IntegrityError):
        hier.unwrap_object(uid)


def test_secret_sources(tmp_path, monkeypatch):
    f = tmp_path / "p"
    write_secret(f, "pin=abcd1234\nso_pin=zzzz9999\n")
    assert read_secret_file(f, key="pin") == "abcd1234"
    assert read_secret_file(f, key="so_pin") == "zzzz9999"
    f.write_text("only-one\n")
    assert read_secret(what="x", file=f, file_key="pin") == "only-one"
    with pytest.raises(ConfigError) as ei:
        read_secret(what="token SO PIN", file=f, file_key="so_pin")
    assert "only-one" not in str(ei.value) and "only-one" not in repr(ei.value)
    monkeypatch.setenv("CUSTODY_PIN", "from-env-1")
    assert read_secret(what="x", env="CUSTODY_PIN", prompt=False) == "from-env-1"
    monkeypatch.delenv("CUSTODY_PIN")
    with pytest.raises(ConfigError):
        read_secret(what="x", env="CUSTODY_PIN", prompt=False)


def test_retired_root_is_destroyed_in_stages(hier, hsm):
    from datetime import timedelta

    from custody.clock import utcnow
    from custody.config import Config
    from custody.errors import KeyNotFound
    from custody.rekey.retire import advance_retirement, cancel_destroy

    cfg = Config(deployment_id="t", created="2026-01-01T00:00:00+00:00", hsm=HsmConfig())
    r1 = hier.create_dev_root()
    hier.create_kek_version("data")
    uids = hier.generate_deks("data", 5)
    v2 = hier.next_root_version()
    ref = hsm.generate_aes_key("root", v2, extractable=False)
    hier.record_root(v2, ref.kcv, blob=b"\x00" * 40, epoch=None, activate=True)
    hier.rewrap_keks(v2)
    hier.set_root_state(r1.version, KeyState.DISABLED)
    now = utcnow()
    steps = advance_retirement(hier, cfg, now=now)
    assert f"root/v{r1.version}: destroy scheduled" in " ".join(steps)
    hsm.find_key("root", r1.version)  # still on the token during the delay
    # cancel, then release the hold and let it run out
    held = cancel_destroy(hier, "root", r1.version, now=now)
    assert held.state is KeyState.DISABLED
    assert advance_retirement(hier, cfg, now=now + timedelta(days=30)) == []
    with hier.store.tx() as c:
        c.execute("DELETE FROM retire_holds WHERE branch='root'")
    advance_retirement(hier, cfg, now=now)
    later = now + timedelta(days=cfg.destroy_delay_days, seconds=1)
    assert f"root/v{r1.version}: destroyed" in advance_retirement(hier, cfg, now=later)
    with pytest.raises(KeyNotFound):
        hsm.find_key("root", r1.version)
    gone = next(r for r in hier.roots() if r.version == r1.version)
    assert gone.state is KeyState.DESTROYED and not gone.has_blob
    hier.forget_keys()
    assert len(hier.unwrap_object(uids[0])) == 32  # nothing current depended on it
    assert next(r for r in hier.roots() if r.version == v2).state is KeyState.ACTIVE
