"""At the end of a rotation's overlap window, ``custody secret rotate --due`` records the
consumers' acknowledgements in the signed revoke record and names the stragglers in an
alert (the API's consumers, custody.secrets.consumers)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from custody.audit.signers import AUDIT_KEY_LABEL, HsmSigner
from custody.config import Home
from custody.deployment import open_deployment
from custody.secrets import Vault
from custody.secrets.consumers import Consumers
from tests.cli.test_secret_rotation import PATH, dep, rotate, verify_record
from tests.conftest import TEST_PIN
from tests.server_fixtures import audit_entries

pytestmark = pytest.mark.hsm
__all__ = ["dep"]  # the fixture, shared with the rotation tests


def test_window_end_records_acks_and_alerts_the_stragglers(dep):
    home, pins, key, people, tmp = dep
    hook = tmp / "alerts.jsonl"
    conf = home / "custody.toml"
    conf.write_text(
        conf.read_text().replace("[policy]", f'[policy]\nalert_hook = "tee -a {hook}"', 1)
    )
    r = rotate(home, pins, key, PATH, "--env", "prod", "--overlap", "1h")
    assert r.returncode == 0, r.stderr
    with open_deployment(Home(home), TEST_PIN) as d:  # as custody serve records them
        signer = HsmSigner("hsm-audit", d.token, AUDIT_KEY_LABEL)
        cons = Consumers(Vault(d.store, d.hierarchy), signer, token=d.token,
                         deployment=d.config.deployment_id)  # fmt: skip
        cons.register("prod", PATH, "billing-api")  # read v1, never moved
        cons.ack("prod", PATH, "billing-worker", 2)
        assert cons.settle("prod", PATH) is None  # a straggler: previous is kept
    c = sqlite3.connect(home / "custody.db")
    c.execute("UPDATE secrets SET previous_until='2000-01-01T00:00:00Z'")
    c.commit()
    c.close()
    d = rotate(home, pins, key, "--due")
    assert d.returncode == 0, d.stderr
    bundle = json.loads(d.stdout)["revoked"][0]["bundle"]
    assert verify_record(bundle, people).returncode == 0
    events = [json.loads(x) for x in (Path(bundle) / "events.jsonl").read_text().splitlines()]
    revokes = [e for e in events if "secret.revoke" in json.dumps(e)]
    assert len(revokes) == 1
    text = json.dumps(revokes[0])
    assert '"billing-worker": 2' in text and '"stragglers": ["billing-api"]' in text
    assert '"acks_verified": true' in text  # signed by the token's audit key
    alerts = [json.loads(x) for x in hook.read_text().splitlines()]
    assert any(a.get("kind") == "rotation-stragglers" and a.get("stragglers") == ["billing-api"]
               for a in alerts)  # fmt: skip
    logged = [e for e in audit_entries(home) if e["op"] == "secret alert"]
    assert any(e["details"].get("stragglers") == ["billing-api"] for e in logged)


def test_a_second_rotation_names_the_consumers_of_the_previous_it_revokes(dep):
    """Acks are per version: billing-api never acked v2, so the rotation to v3 (which revokes
    v1) names it in its signed promote step; billing-worker's ack of v2 is stale for v3."""
    home, pins, key, people, _tmp = dep
    r = rotate(home, pins, key, PATH, "--env", "prod", "--overlap", "1h")
    assert r.returncode == 0, r.stderr
    with open_deployment(Home(home), TEST_PIN) as d:
        cons = Consumers(Vault(d.store, d.hierarchy),
                         HsmSigner("hsm-audit", d.token, AUDIT_KEY_LABEL), token=d.token,
                         deployment=d.config.deployment_id)  # fmt: skip
        cons.register("prod", PATH, "billing-api")
        cons.ack("prod", PATH, "billing-worker", 2)
    second = rotate(home, pins, key, PATH, "--env", "prod", "--overlap", "1h")
    assert second.returncode == 0, second.stderr
    bundle = json.loads(second.stdout)["bundle"]
    assert verify_record(bundle, people).returncode == 0
    events = [json.loads(x) for x in (Path(bundle) / "events.jsonl").read_text().splitlines()]
    (promote,) = [e for e in events if "secret.promote" in json.dumps(e)]
    text = json.dumps(promote)
    assert '"revoked_version": 1' in text and '"stragglers": ["billing-api"]' in text
    with open_deployment(Home(home), TEST_PIN) as d:
        signer = HsmSigner("hsm-audit", d.token, AUDIT_KEY_LABEL)
        st = Consumers(Vault(d.store, d.hierarchy), signer, token=d.token,
                       deployment=d.config.deployment_id).state("prod", PATH)  # fmt: skip
    assert st["current"] == 3 and st["verified"]
    assert st["stragglers"] == ["billing-api", "billing-worker"]  # v2's ack is no ack of v3
