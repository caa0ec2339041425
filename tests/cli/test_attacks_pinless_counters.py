"""Token counters against a process that opens the token WITHOUT the PIN.

PKCS#11 lets any process that can load the module open a read/write session and create
*public* token objects without logging in (a R/W public session). The counters behind the
access seal (custody/hsm/pkcs11/counters.py) must therefore never be read from a public
object: custody only ever creates private ones, which need the logged-in user. Here the
operator with the disk (no PIN) plants public counter objects on a real SoftHSMv2 token,
then the PIN holder re-seals tampered rows: a planted "lifted" local-operator anchor must
not let the PIN alone re-seal, and a planted generation must not be believed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from tests.cli.test_attacks_local_mfa_reseal import _bound, _seal, _sql, _still_refused
from tests.conftest import cli_env, run_cli

pytestmark = pytest.mark.hsm

PLANT = textwrap.dedent(
    """
    import sys
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    module, conf, token_label, label, value = sys.argv[1:6]
    import os
    os.environ["SOFTHSM2_CONF"] = conf
    lib = pkcs11.lib(module)
    tok = lib.get_token(token_label=token_label)
    with tok.open(rw=True) as s:  # no login: a R/W public session
        s.create_object({
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.LABEL: label,
            Attribute.APPLICATION: "custody-counter",
            Attribute.VALUE: int(value).to_bytes(8, "big"),
        })
    print("planted")
    """
)


def _plant(home: Path, label: str, value: int) -> None:
    """Create a PUBLIC data object like a counter's on the home's token, without the PIN."""
    cfg = tomllib.loads((home / "custody.toml").read_text())
    hsm = cfg["hsm"]
    conf = next(home.rglob("softhsm2.conf"))
    r = subprocess.run(
        [sys.executable, "-c", PLANT, hsm["module"], str(conf), hsm["token_label"], label,
         str(value)],
        capture_output=True, text=True, env=cli_env(), check=False,
    )  # fmt: skip
    assert r.returncode == 0 and "planted" in r.stdout, r.stderr


def _seal_label(home: Path) -> str:
    dep = tomllib.loads((home / "custody.toml").read_text())["deployment"]["id"]
    return f"access-seal-{dep}"


def test_a_public_lifted_anchor_does_not_let_the_pin_alone_reseal(tmp_path: Path):
    """The disk operator (without the PIN) plants a public object naming the binding
    lifted, at an epoch above the real anchor's, and deletes the binding row. The PIN
    holder without ops's TOTP must still be refused by `custody access seal`."""
    home, h, ops, _m = _bound(tmp_path)
    _plant(home, f"{_seal_label(home)}/local-mfa:", 1 << 40)
    _sql(home, ("DELETE FROM meta WHERE key='access_local_operator'", ()))
    r = _seal(h)
    assert r.returncode == 7 and "ops's current TOTP code is needed" in r.stderr, (
        r.returncode,
        r.stdout,
        r.stderr,
    )
    _still_refused(home, h, ops)


def test_a_public_generation_object_is_not_the_counter(tmp_path: Path):
    """A public object holding a generation far ahead: not custody's counter, so the rows
    still pass their seal (a planted value neither locks the home nor is believed)."""
    home, h, _ops, _m = _bound(tmp_path)
    _plant(home, f"{_seal_label(home)}/generation", 1 << 40)
    r = run_cli("principal", "list", "--json", *h)
    assert r.returncode == 0, (r.returncode, r.stderr)


PLANT_KEY = textwrap.dedent(
    """
    import os, sys
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass

    module, conf, token_label, label, value_hex = sys.argv[1:6]
    os.environ["SOFTHSM2_CONF"] = conf
    tok = pkcs11.lib(module).get_token(token_label=token_label)
    with tok.open(rw=True) as s:  # no login: a R/W public session
        s.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.LABEL: label,
            Attribute.SIGN: True,
            Attribute.VERIFY: True,
            Attribute.VALUE: bytes.fromhex(value_hex),
        })
    print("planted")
    """
)

KNOWN = b"disk-operator-knows-this-key-32b"


def _plant_key(home: Path, label: str) -> None:
    cfg = tomllib.loads((home / "custody.toml").read_text())["hsm"]
    conf = next(home.rglob("softhsm2.conf"))
    r = subprocess.run(
        [sys.executable, "-c", PLANT_KEY, cfg["module"], str(conf), cfg["token_label"], label,
         KNOWN.hex()],
        capture_output=True, text=True, env=cli_env(), check=False,
    )  # fmt: skip
    assert r.returncode == 0 and "planted" in r.stdout, r.stderr


def _forge_seal(home: Path) -> None:
    """Re-seal the store's rows as they are under KNOWN, as the disk operator would."""
    import hashlib
    import hmac

    from custody.access.seal import (
        DOMAIN,
        GEN_META,
        REVOKED_META,
        ROSTER_META,
        SEAL_META,
        SECRETS_META,
        state_digest,
    )
    from custody.store import open_store

    store = open_store(home / "custody.db")
    try:
        meta = {k: store.get_meta(k) or "[]" for k in (REVOKED_META, ROSTER_META, SECRETS_META)}
        gen = int(store.get_meta(GEN_META) or "0")
        digest = state_digest(store, meta[REVOKED_META], meta[ROSTER_META],
                              meta[SECRETS_META], gen)  # fmt: skip
        mac = hmac.new(KNOWN, DOMAIN + digest, hashlib.sha256).hexdigest()
        with store.transaction():
            store.set_meta(SEAL_META, mac)
    finally:
        store.close()


def test_a_public_mac_key_planted_before_the_first_seal_is_not_used(tmp_path: Path):
    """The disk operator plants a public HMAC key of their own under the seal key's label
    before the home's first sealed write. Custody must not seal with it: otherwise they
    could re-seal any row they edit."""
    import sqlite3

    from tests.rekey_fixtures import make_deployment

    home, pins = make_deployment(tmp_path / "d")
    h = ("--home", str(home), "--pin-file", str(pins))
    with sqlite3.connect(home / "custody.db") as c:
        assert c.execute("SELECT value FROM meta WHERE key='access_seal'").fetchone() is None
    _plant_key(home, _seal_label(home))
    r = run_cli("principal", "add", "svc", "--role", "service-user", "--service-account",
                "--service", "billing", "--env", "prod", "--token-out",
                str(tmp_path / "svc.token"), *h)  # fmt: skip
    if r.returncode == 6 and "seal is missing" in r.stderr:
        # the planted key makes the home look sealed before; the hint's remedy:
        r = run_cli("access", "seal", "--json", *h)
        if r.returncode == 0:
            r = run_cli("principal", "add", "svc", "--role", "service-user",
                        "--service-account", "--service", "billing", "--env", "prod",
                        "--token-out", str(tmp_path / "svc.token"), *h)  # fmt: skip
    if r.returncode == 0:  # the write went through: the rows must not be forgeable
        _sql(home, ("UPDATE principals SET role='super-admin' WHERE name='svc'", ()))
        _forge_seal(home)
        r = run_cli("principal", "list", "--json", *h)
        assert r.returncode == 6 and '"svc"' not in r.stdout, (r.returncode, r.stdout, r.stderr)


PLANT_AES = textwrap.dedent(
    """
    import os, sys
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass

    module, conf, token_label, label = sys.argv[1:5]
    os.environ["SOFTHSM2_CONF"] = conf
    tok = pkcs11.lib(module).get_token(token_label=token_label)
    with tok.open(rw=True) as s:  # no login: a R/W public session
        s.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.LABEL: label,
            Attribute.ENCRYPT: True,
            Attribute.DECRYPT: True,
            Attribute.WRAP: True,
            Attribute.UNWRAP: True,
            Attribute.VALUE: bytes(32),
        })
    print("planted")
    """
)


def test_a_public_aes_key_planted_under_the_root_label_does_not_stop_the_home(tmp_path: Path):
    from tests.rekey_fixtures import make_deployment

    home, pins = make_deployment(tmp_path / "d")
    h = ("--home", str(home), "--pin-file", str(pins))
    r = run_cli("status", "--json", *h)
    assert r.returncode == 0, r.stderr
    cfg = tomllib.loads((home / "custody.toml").read_text())["hsm"]
    conf = next(home.rglob("softhsm2.conf"))
    labels = ["root/v1"]  # the token-held root key (the KEKs are wrapped under it)
    assert '"root/v1"' in r.stdout, r.stdout
    p = subprocess.run(
        [sys.executable, "-c", PLANT_AES, cfg["module"], str(conf), cfg["token_label"],
         labels[0]],
        capture_output=True, text=True, env=cli_env(), check=False,
    )  # fmt: skip
    assert p.returncode == 0 and "planted" in p.stdout, p.stderr
    r = run_cli("dek", "generate", "--count", "1", *h)
    assert r.returncode == 0, r.stderr
