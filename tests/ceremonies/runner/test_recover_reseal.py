"""After a lost token, the access seal's key and counter went with it: access decisions on
the recovered deployment refuse the rows (the replacement token holds no access-seal key)
until a super-admin has reviewed them and run ``custody access seal``, which seals them
under a new key on the new token. The runbook step in docs/recovery.md, "Lost token"."""

from __future__ import annotations

import pytest

from tests.ceremony_fixtures import generated_copy, lose_token

pytestmark = pytest.mark.hsm


def test_a_recovered_deployment_reseals_its_access_rows_after_review(tmp_path, generated_master):
    d = generated_copy(generated_master, tmp_path / "home")
    h = ("--home", str(d.root), "--pin-file", str(d.pin))
    r = d.run("principal", "add", "billing-svc", "--role", "service-user", "--service-account",
              "--service", "billing", "--token-out", str(tmp_path / "t"), *h)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lose_token(d)
    r = d.ceremony("recover", *d.coord(), *d.shares("alice", "carol", "erin"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = d.run("principal", "list", "--json", *h)
    assert r.returncode == 6 and "no access-seal key" in r.stderr, (r.returncode, r.stderr)
    r = d.run("access", "seal", *h)
    assert r.returncode == 0, r.stdout + r.stderr
    r = d.run("principal", "list", "--json", *h)
    assert r.returncode == 0 and "billing-svc" in r.stdout, r.stderr
