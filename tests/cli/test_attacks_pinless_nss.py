"""NSS softokn's key-form counters (custody/hsm/pkcs11/counters.py) against a process that
opens the token WITHOUT the PIN. NSS merges a new token key of the same class and CKA_ID
into an existing one (overwriting its label), so a key planted with the CKA_ID of the
current local-operator anchor could take that anchor away and leave an older binding the
highest. NSS refuses every token object to a session that is not logged in
(CKR_USER_NOT_LOGGED_IN), for created and generated keys alike, so the counters and their
labels are unchanged. Subprocesses through the p11-kit proxy (tests/token_fixtures.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST_PIN, cli_env
from tests.token_fixtures import P11KIT_PROXY, nss_token

pytestmark = [pytest.mark.hsm, pytest.mark.slow, pytest.mark.xdist_group("other-tokens")]

LOGGED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from custody.config import HsmConfig
    from custody.hsm.pkcs11.adapter import open_hsm
    module, token, home, pin, what = sys.argv[1:6]
    h = open_hsm(HsmConfig(module=module, token_label=token), Path(home), pin)
    if what == "setup":
        h.advance_counter("L/local-mfa:", 1)
        h.advance_counter("L/local-mfa:ops:aa", 2)
        h.advance_counter("L/generation", 7)
    print(sorted((c, h.counter(c)) for c in h.counter_labels()))
    """
)
PINLESS = textwrap.dedent(
    """
    import hashlib, sys
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass
    tok = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
    out = []
    for label, value in (("L/local-mfa:ops:aa", 2), ("L/generation", 7)):
        cid = value.to_bytes(8, "big") + hashlib.sha256(label.encode()).digest()[:16]
        with tok.open(rw=True) as s:  # no login
            try:
                s.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                 Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                                 Attribute.TOKEN: True, Attribute.PRIVATE: False,
                                 Attribute.LABEL: "junk", Attribute.ID: cid,
                                 Attribute.VALUE: b"k" * 16})
                out.append("created")
            except pkcs11.exceptions.PKCS11Error as e:
                out.append(type(e).__name__)
            try:
                s.generate_key(KeyType.GENERIC_SECRET, 128, label="custody-counter:" + label,
                               id=(1 << 40).to_bytes(8, "big") + cid[8:], store=True,
                               template={Attribute.PRIVATE: False, Attribute.TOKEN: True})
                out.append("generated")
            except pkcs11.exceptions.PKCS11Error as e:
                out.append(type(e).__name__)
    print(",".join(out))
    """
)


def _py(script: str, *args: str) -> str:
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                       cwd=ROOT, env=cli_env(), check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_pinless_keys_cannot_touch_nss_key_form_counters(tmp_path: Path) -> None:
    with nss_token(tmp_path / "nss", TEST_PIN) as label:
        home = tmp_path / "h"
        home.mkdir()
        before = _py(LOGGED, P11KIT_PROXY, label, str(home), TEST_PIN, "setup")
        assert "('L/local-mfa:ops:aa', 2)" in before and "('L/generation', 7)" in before
        got = _py(PINLESS, P11KIT_PROXY, label)
        assert "created" not in got.split(",") and "generated" not in got.split(","), got
        assert _py(LOGGED, P11KIT_PROXY, label, str(home), TEST_PIN, "read") == before
