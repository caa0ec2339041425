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
from custody.secrets.consumers import INDEX_KEY, Consumers, counter_label
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


# -- the anchor: the token's counter (the disk operator alone; a crash) ----------------
def _cons(d, cls=Consumers, deployment: str | None = None, exclusive: bool = True):
    """As the server and the CLI make it (the home's own token: exclusive)."""
    return cls(Vault(d.store, d.hierarchy), HsmSigner("hsm-audit", d.token, AUDIT_KEY_LABEL),
               token=d.token, deployment=deployment or d.config.deployment_id,
               exclusive=exclusive)  # fmt: skip


def _meta(home: Path, key: str, value: str | None) -> None:
    """The disk operator writes (or deletes) one meta row."""
    c = sqlite3.connect(home / "custody.db", timeout=30)
    if value is None:
        c.execute("DELETE FROM meta WHERE key=?", (key,))
    else:
        c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
    c.commit()
    c.close()


ROW = f"secret-consumers:prod:{PATH}"


class _StopsAfterCommit(Consumers):
    """The process stops between the store's commit and the token's advance."""

    def _advance(self) -> None:
        self._pending = None
        raise SystemExit(9)


def test_a_crash_between_commit_and_counter_is_recovered_and_then_anchored(dep):
    home, pins, key, _people, _tmp = dep
    assert rotate(home, pins, key, PATH, "--env", "prod", "--overlap", "1h").returncode == 0
    with open_deployment(Home(home), TEST_PIN) as d:
        label = counter_label(d.config.deployment_id)
        cons = _cons(d)
        cons.register("prod", PATH, "billing-api")
        on_token = d.token.counter(label)
        assert on_token is not None  # the registration advanced it
        before = (d.store.get_meta(ROW), d.store.get_meta(INDEX_KEY))
        with pytest.raises(SystemExit):  # so register raised: the server served no value
            _cons(d, _StopsAfterCommit).register("prod", PATH, "billing-worker")
        assert d.token.counter(label) == on_token  # committed, the token not advanced
        st = _cons(d).state("prod", PATH)  # one ahead: accepted, the token brought on
        assert st["verified"] and set(st["consumers"]) == {"billing-api", "billing-worker"}
        assert d.token.counter(label) == on_token + 1
        # now the state from before the crashed write is a rollback
        _meta(home, ROW, before[0])
        _meta(home, INDEX_KEY, before[1])
        st = _cons(d).state("prod", PATH)
        assert not st["verified"] and "rolled back" in st["reason"]
        cons = _cons(d)
        cons.ack("prod", PATH, "billing-api", 2)  # alone, as in the put-back state
        assert cons.settle("prod", PATH) is None
        st = cons.state("prod", PATH)
        assert st["verified"] and not st["early"] and st["distrusted"] == 2
        # both acked now: still no early revocation for the versions it had
        cons.ack("prod", PATH, "billing-worker", 2)
        assert cons.settle("prod", PATH) is None
        assert d.store.secret("prod", PATH).previous_version == 1


def test_the_whole_state_put_back_or_its_index_deleted_revokes_nothing_early(dep):
    home, pins, key, _people, _tmp = dep
    assert rotate(home, pins, key, PATH, "--env", "prod", "--overlap", "1h").returncode == 0
    with open_deployment(Home(home), TEST_PIN) as d:
        cons = _cons(d)
        cons.register("prod", PATH, "billing-api")
        older = (d.store.get_meta(ROW), d.store.get_meta(INDEX_KEY))  # signed, one consumer
        cons.register("prod", PATH, "billing-worker")
        # an older row and an older index, both signed, put back together
        _meta(home, ROW, older[0])
        _meta(home, INDEX_KEY, older[1])
        st = _cons(d).state("prod", PATH)
        assert not st["verified"] and "rolled back" in st["reason"]
        cons = _cons(d)
        cons.ack("prod", PATH, "billing-api", 2)
        assert cons.settle("prod", PATH) is None and not cons.state("prod", PATH)["early"]
        # the index and the row deleted together (as if no consumer had ever registered)
        _meta(home, ROW, None)
        _meta(home, INDEX_KEY, None)
        st = _cons(d).state("prod", PATH)
        assert not st["verified"] and "index is missing" in st["reason"]
        cons = _cons(d)
        cons.ack("prod", PATH, "billing-api", 2)  # the only consumer left in the state
        assert cons.state("prod", PATH)["consumers"] == {"billing-api": 2}
        assert cons.settle("prod", PATH) is None
        assert d.store.secret("prod", PATH).previous_version == 1


def test_a_fresh_state_with_no_tampering_revokes_on_the_last_ack(dep):
    home, pins, key, _people, _tmp = dep
    assert rotate(home, pins, key, PATH, "--env", "prod", "--overlap", "1h").returncode == 0
    with open_deployment(Home(home), TEST_PIN) as d:
        cons = _cons(d)
        cons.register("prod", PATH, "billing-api")
        cons.ack("prod", PATH, "billing-worker", 2)
        assert cons.settle("prod", PATH) is None  # billing-api has not moved
        cons.ack("prod", PATH, "billing-api", 2)
        assert cons.settle("prod", PATH) == 1
        # without the token the state is not believed (no anchor to check it against)
        bare = Consumers(Vault(d.store, d.hierarchy), trust=cons.trust,
                         deployment=d.config.deployment_id)  # fmt: skip
        assert bare.state("prod", PATH)["verified"] is False


def test_a_changed_deployment_id_with_the_state_deleted_is_not_a_fresh_start(dep):
    """The counter is named after the deployment id, which lives in custody.toml, on the
    disk. The disk operator deletes the state (row and index) and changes the id: the
    token has no counter of the new id, but it holds the old one, so the state is lost,
    not new, and one consumer's ack revokes nothing early."""
    home, pins, key, _people, _tmp = dep
    assert rotate(home, pins, key, PATH, "--env", "prod", "--overlap", "1h").returncode == 0
    with open_deployment(Home(home), TEST_PIN) as d:
        cons = _cons(d)
        cons.register("prod", PATH, "billing-api")
        cons.register("prod", PATH, "billing-worker")
        _meta(home, ROW, None)
        _meta(home, INDEX_KEY, None)
        new_id = "f" * 32
        assert d.token.counter(counter_label(new_id)) is None
        st = _cons(d, deployment=new_id).state("prod", PATH)
        assert not st["verified"] and "another deployment id" in st["reason"]
        cons = _cons(d, deployment=new_id)
        cons.ack("prod", PATH, "billing-worker", 2)  # alone, billing-api cut off
        assert cons.settle("prod", PATH) is None
        assert d.store.secret("prod", PATH).previous_version == 1
        # the same steps on a token shared with other deployments (not exclusive) would
        # have started afresh: what the exclusive check is for
        _meta(home, ROW, None)
        _meta(home, INDEX_KEY, None)
        other = "e" * 32
        shared = _cons(d, deployment=other, exclusive=False)
        assert shared.state("prod", PATH)["verified"]
