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
