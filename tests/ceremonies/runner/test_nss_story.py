"""The ceremony story on a second token: NSS softokn through the p11-kit proxy.

generate (3-of-5), KEKs and 50 DEKs, a drill that rebuilds the root (in a session object of
the deployment's token: there is no scratch token off SoftHSM), rotate-root, a KEK rotation
with its re-key run, then recovery into a fresh NSS token with three shares, and every
transcript verified. All through the CLI (tests/token_fixtures.py says why the test
process itself never loads the proxy).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from custody.config import Home
from tests.ceremony_fixtures import CUST, Dep, create_people, sign_approvals
from tests.conftest import TEST_PIN, run_cli, write_secret
from tests.token_fixtures import P11KIT_PROXY, nss_token, token_objects

pytestmark = [pytest.mark.hsm, pytest.mark.slow, pytest.mark.xdist_group("other-tokens")]


def _cli(d: Dep, *args: str) -> dict:
    r = run_cli(*args, "--home", str(d.root), "--pin-file", str(d.pin), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout) if r.stdout.strip() else {}


def test_ceremony_story_on_nss_softokn(tmp_path):
    with (
        nss_token(tmp_path / "nss1", TEST_PIN) as label,
        nss_token(tmp_path / "nss2", TEST_PIN) as fresh,
    ):
        root = tmp_path / "home"
        root.mkdir()
        d = Dep(root)
        write_secret(d.pin, f"pin={TEST_PIN}\n")
        r = run_cli(
            "init",
            "--home",
            str(root),
            "--module",
            P11KIT_PROXY,
            "--token-label",
            label,
            "--pin-file",
            str(d.pin),
        )
        assert r.returncode == 0, r.stderr
        create_people(d.people)
        adds = [
            a
            for n in ("admin", *CUST, "audrey", "wendy")
            for a in ("--add", str(d.people / f"{n}.pub.json"))
        ]
        r = d.ceremony("enrol", *d.coord(pin=False), *adds)
        assert r.returncode == 0, r.stderr
        bundles = [r.out["bundle"]]

        # generate: the root's blob is checked in the token before the root is locked
        cust = [a for n in CUST for a in ("--custodian", n)]
        r = d.ceremony(
            "generate", *d.coord(), *cust, "--threshold", "3", "--out", str(root / "shares")
        )
        assert r.returncode == 10, r.stderr
        r = d.ceremony(
            "resume", r.out["ceremony_id"], *d.coord(), *d.shares("alice", "bob", "carol")
        )
        assert r.returncode == 0, r.stderr
        assert r.out["facts"]["token_mechanisms"]["key_wrap"].startswith("rfc5649")
        bundles.append(r.out["bundle"])
        for b in ("data", "backup", "secrets"):
            _cli(d, "kek", "rotate", "--branch", b)
        _cli(d, "dek", "generate", "--count", "50")
        d.deks_ok()

        # the drill rebuilds root/v1 from its blob with the shares, on this very module
        r = d.ceremony("drill", *d.coord(), *d.shares("bob", "dave", "erin"))
        assert r.returncode == 0, r.stderr
        f = r.out["facts"]
        assert f["scratch"] == "session" and f["kcv_match"] is True
        assert f["scratch_root_kcv"] == f["root_kcv"]
        bundles.append(r.out["bundle"])

        # rotate-root: the new root is sealed to the share set inside the NSS token
        req = root / "req.json"
        r = d.ceremony("rotate-root", *d.coord(), "--request-out", str(req))
        assert r.returncode == 10, r.stderr
        appr = [a for p in sign_approvals(d, r.out["ceremony_id"]) for a in ("--approval", str(p))]
        r = d.ceremony("resume", r.out["ceremony_id"], *d.coord(), *appr)
        assert r.returncode == 0, r.stderr
        assert d.roots() == [(1, "decrypt-only"), (2, "active")]
        bundles.append(r.out["bundle"])
        d.deks_ok()

        # rekey: a new data KEK, every DEK moved to it
        _cli(d, "kek", "rotate", "--branch", "data")
        out = _cli(d, "rekey", "run", "--branch", "data", "--verify", "all")
        assert out, out
        d.deks_ok()

        # the token is lost: recover root/v2 into a fresh NSS token with three shares
        home = Home(root)
        cfg = home.load()
        home.write_config(replace(cfg, hsm=replace(cfg.hsm, token_label=fresh)))
        assert token_objects(P11KIT_PROXY, fresh, TEST_PIN) == []
        r = d.ceremony("recover", *d.coord(), *d.shares("alice", "carol", "erin"))
        assert r.returncode == 0, r.stderr
        assert r.out["facts"]["imported"] == [2]
        bundles.append(r.out["bundle"])
        assert "root/v2" in token_objects(P11KIT_PROXY, fresh, TEST_PIN)
        d.deks_ok()
        for b in bundles:
            d.verify(b)
