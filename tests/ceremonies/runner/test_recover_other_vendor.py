"""Disaster recovery onto a token of another make: a deployment generated on the embedded
SoftHSMv2 loses its token, and the replacement at hand is NSS softokn (through the p11-kit
proxy). The home is pointed at the new module, recover imports the root from its blob with
three shares (the new token's own preflight chooses its wrap and seal ways; the stored
KEKs were sealed with AES-GCM on SoftHSM, which NSS opens in token too), and every DEK
opens again; the transcript verifies, and a drill on the new token rebuilds the root.
All through the CLI (tests/token_fixtures.py says why the test process itself never loads
the proxy)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from custody.config import Home
from tests.ceremony_fixtures import generated_copy
from tests.conftest import TEST_PIN
from tests.token_fixtures import P11KIT_PROXY, nss_token, token_objects

pytestmark = [pytest.mark.hsm, pytest.mark.slow, pytest.mark.xdist_group("other-tokens")]


def test_a_softhsm_deployment_recovers_onto_nss_softokn(tmp_path, generated_master):
    d = generated_copy(generated_master, tmp_path / "home")
    d.deks_ok()
    with nss_token(tmp_path / "nss", TEST_PIN) as label:
        home = Home(d.root)
        cfg = home.load()
        assert cfg.hsm.kek_seal in (None, "aes-gcm"), cfg.hsm
        # the SoftHSM token is gone; the operator points the home at the replacement
        home.write_config(
            replace(
                cfg,
                hsm=replace(
                    cfg.hsm, module=P11KIT_PROXY, token_label=label, slot=None, softhsm_conf=None
                ),
            )
        )
        assert token_objects(P11KIT_PROXY, label, TEST_PIN) == []
        r = d.run("dek", "verify")
        assert r.returncode != 0  # nothing opens before the root is back
        r = d.ceremony("recover", *d.coord(), *d.shares("alice", "carol", "erin"))
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.out["facts"]["imported"] == [1]
        d.verify(r.out["bundle"])
        assert "root/v1" in token_objects(P11KIT_PROXY, label, TEST_PIN)
        d.deks_ok()
        r = d.ceremony("drill", *d.coord(), *d.shares("bob", "dave", "erin"))
        assert r.returncode == 0, r.stdout + r.stderr
        f = r.out["facts"]
        assert f["kcv_match"] is True and f["scratch_root_kcv"] == f["root_kcv"]
        d.verify(r.out["bundle"])
