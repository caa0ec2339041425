"""Acknowledged rotation through ``custody serve`` on NSS softokn (through the p11-kit
proxy): a home whose token keeps no CKO_DATA token objects and has no CKM_EDDSA. The
access seal and the consumers' anchor are held by the token's counters in their key form
(custody/hsm/pkcs11/counters.py), and the consumers' state and the early-revocation record
are signed by a P-256 audit key. Two services read, the secret rotates, both ack, the last
ack revokes ``previous`` early, and the record verifies offline against the pinned P-256
audit key; an edited record does not."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import pytest

from custody.canonical import canonical_bytes
from tests.conftest import TEST_PIN, run_cli, write_secret
from tests.server_fixtures import Server, make_pki, server_home
from tests.token_fixtures import P11KIT_PROXY, nss_token, token_objects

pytestmark = [pytest.mark.hsm, pytest.mark.slow, pytest.mark.xdist_group("other-tokens")]
PEOPLE = {
    "acks-admin": ("service-admin", ("payments",)),
    "svc-a": ("service-admin", ("payments",)),
    "svc-b": ("service-admin", ("payments",)),
}


def test_acked_rotation_through_custody_serve_on_nss_softokn(tmp_path: Path):
    with nss_token(tmp_path / "nss", TEST_PIN) as label:

        def make(root: Path) -> tuple[Path, Path]:
            root.mkdir(parents=True)
            pins = write_secret(root / "pins", f"pin={TEST_PIN}\n")
            home = root / "home"
            r = run_cli("init", "--home", str(home), "--pin-file", str(pins), "--module",
                        P11KIT_PROXY, "--token-label", label, "--dev-root")  # fmt: skip
            assert r.returncode == 0, r.stderr
            return home, pins

        home, pins, tokens, env = server_home(tmp_path / "srv", PEOPLE, make=make)
        trust = tmp_path / "audit.pub.json"
        r = run_cli("audit", "checkpoint", "--home", str(home), "--pin-file", str(pins),
                    "--trust-out", str(trust))  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(trust.read_text())["alg"] == "ecdsa-p256"
        s = Server(home, pins, make_pki(tmp_path / "pki"), env=env)
        try:
            ctx = ssl.create_default_context(cafile=str(s.pki.ca))

            def client(who: str) -> httpx.Client:
                return httpx.Client(base_url=s.url, verify=ctx, timeout=30,
                                    headers={"Authorization": f"Bearer {tokens[who]}"})  # fmt: skip

            path = "payments/acked"
            with client("acks-admin") as c:
                resp = c.post(f"/v1/prod/data/{path}",
                           json={"data": {"value": "Nss-Acked-1-zQ8#pLm2@wR7!kT4"}})  # fmt: skip
                assert resp.status_code == 200, resp.text
            for who in ("svc-a", "svc-b"):
                with client(who) as c:
                    assert c.get(f"/api/v1/secrets/prod/{path}").status_code == 200
            with client("acks-admin") as c:
                body = {"overlap_seconds": 3600, "value": "Nss-Rotated-2-q#8Lm2@wR7!k"}
                resp = c.post(f"/api/v1/rotate/prod/{path}", json=body)
                assert resp.status_code == 200 and resp.json()["current"] == 2, resp.text
            with client("svc-a") as c:
                first = c.post(f"/api/v1/ack/prod/{path}", json={"version": 2}).json()
            assert first["revoked"] is None and first["stragglers"] == ["svc-b"], first
            with client("svc-b") as c:
                last = c.post(f"/api/v1/ack/prod/{path}", json={"version": 2}).json()
            assert last["revoked"] == 1 and last["verified"] is True, last
            with client("svc-a") as c:
                resp = c.get(f"/api/v1/secrets/prod/{path}", params={"label": "previous"})
                assert resp.status_code != 200
        finally:
            s.stop()
        objs = token_objects(P11KIT_PROXY, label, TEST_PIN)
        assert any(o.startswith("custody-counter:") for o in objs), objs  # the key form
        (rec,) = sorted((home / "transcripts").glob("early-revoke-*.json"))
        v = run_cli("secret", "verify-acks", str(rec), "--trust", str(trust), "--json")
        assert v.returncode == 0, v.stdout + v.stderr
        assert json.loads(v.stdout)["acknowledged"] == ["svc-a", "svc-b"]
        doc = json.loads(rec.read_bytes())
        del doc["acks"]["svc-b"]
        edited = tmp_path / "edited.json"
        edited.write_bytes(canonical_bytes(doc))
        bad = run_cli("secret", "verify-acks", str(edited), "--trust", str(trust))
        assert bad.returncode == 6 and "does not verify" in bad.stderr
        assert "Nss-Acked-1" not in s.output() and "Nss-Rotated-2" not in s.output()
