"""Acknowledged rotation through ``custody serve`` (a subprocess on 127.0.0.1, real
certificates, SoftHSMv2 token, SQLite store): the consumers' acks are signed by the token's
audit key, an early revocation writes a signed record an auditor checks offline
(``custody secret verify-acks``), and acks are per version across two rotations.

The attacker is the operator with the disk: they write an ack into the ``meta`` row, delete
the row, put back an older one or one signed for another secret, or write a
record of their own; none makes ``previous`` die early or verifies."""

from __future__ import annotations

import json
import sqlite3
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from custody.canonical import canonical_bytes
from custody.secrets.consumers import RECORD_TAG
from tests.conftest import run_cli
from tests.server_fixtures import Server, audit_entries, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-serve-acks")]
PEOPLE = {
    "acks-admin": ("service-admin", ("payments",)),
    "svc-a": ("service-admin", ("payments",)),
    "svc-b": ("service-admin", ("payments",)),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("acks")
    home, pins, tokens, env = server_home(root, PEOPLE)
    hook = root / "alerts.jsonl"
    conf = home / "custody.toml"
    conf.write_text(
        conf.read_text().replace("[policy]", f'[policy]\nalert_hook = "tee -a {hook}"', 1)
    )
    s = Server(home, pins, make_pki(root / "pki"), env=env)
    s.tokens = tokens
    s.hook = hook  # type: ignore[attr-defined]
    s.trust = root / "audit.pub.json"  # type: ignore[attr-defined]
    r = run_cli("audit", "checkpoint", "--home", str(home), "--pin-file", str(pins),
                "--trust-out", str(s.trust))  # type: ignore[attr-defined]  # fmt: skip
    assert r.returncode == 0, r.stderr
    yield s
    s.stop()


def client(s, who: str) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(s.pki.ca))
    return httpx.Client(base_url=s.url, verify=ctx, timeout=30,
                        headers={"Authorization": f"Bearer {s.tokens[who]}"})  # fmt: skip


def put(s, path: str, value: str) -> None:
    with client(s, "acks-admin") as c:
        r = c.post(f"/v1/prod/data/{path}", json={"data": {"value": value}})
        assert r.status_code == 200, r.text


def read(s, who: str, path: str, **params) -> httpx.Response:
    with client(s, who) as c:
        return c.get(f"/api/v1/secrets/prod/{path}", params=params)


def rotate(s, path: str) -> dict:
    s.n = getattr(s, "n", 0) + 1
    value = f"Rotated-Value-{s.n:03d}-zQ8#pLm2@wR7!kT4"
    with client(s, "acks-admin") as c:
        r = c.post(f"/api/v1/rotate/prod/{path}", json={"overlap_seconds": 3600, "value": value})
        assert r.status_code == 200, r.text
        return r.json()


def ack(s, who: str, path: str, version: int) -> dict:
    with client(s, who) as c:
        r = c.post(f"/api/v1/ack/prod/{path}", json={"version": version})
        assert r.status_code == 200, r.text
        return r.json()


def hook_alerts(s) -> list[dict]:
    """The alerts the hook received (``tee -a``: JSON objects one after another)."""
    text = s.hook.read_text() if s.hook.exists() else ""
    out, i, dec = [], 0, json.JSONDecoder()
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = dec.raw_decode(text, i)
        out.append(obj)
    return out


def verify_acks(s, record: Path):
    return run_cli("secret", "verify-acks", str(record), "--trust", str(s.trust), "--json")


def records(s) -> list[Path]:
    return sorted((s.home / "transcripts").glob("early-revoke-*.json"))


def test_the_last_ack_revokes_previous_with_a_record_the_auditor_verifies(srv):
    path = "payments/acked"
    put(srv, path, "Acked-Value-1-zQ8#pLm2@wR7!kT4")
    assert read(srv, "svc-a", path).status_code == 200  # both become consumers
    assert read(srv, "svc-b", path).status_code == 200
    assert rotate(srv, path)["current"] == 2
    first = ack(srv, "svc-a", path, 2)
    assert first["revoked"] is None and first["stragglers"] == ["svc-b"]
    assert read(srv, "svc-a", path, label="previous").status_code == 200
    last = ack(srv, "svc-b", path, 2)
    assert last["revoked"] == 1 and last["stragglers"] == [] and last["verified"] is True
    assert read(srv, "svc-a", path, label="previous").status_code != 200  # revoked
    (rec,) = [p for p in records(srv) if "payments_acked" in p.name]
    assert rec.stat().st_mode & 0o777 == 0o600
    (audited,) = [e for e in audit_entries(srv.home)
                  if e["op"] == "secret revoke" and e["target"] == f"prod:{path}"]  # fmt: skip
    assert audited["details"]["early"] is True and audited["details"]["record"] == rec.name
    v = verify_acks(srv, rec)
    assert v.returncode == 0, v.stderr
    out = json.loads(v.stdout)
    assert out["acknowledged"] == ["svc-a", "svc-b"]
    assert (out["revoked_version"], out["current"]) == (1, 2)
    # an edited record (one ack taken out) no longer verifies
    doc = json.loads(rec.read_bytes())
    del doc["acks"]["svc-b"]
    edited = rec.parent / "edited.json"
    edited.write_bytes(canonical_bytes(doc))
    bad = verify_acks(srv, edited)
    assert bad.returncode == 6 and "does not verify" in bad.stderr


def test_a_fake_ack_row_from_the_disk_does_not_revoke_previous_early(srv):
    path = "payments/forged"
    put(srv, path, "Forged-Value-1-zQ8#pLm2@wR7!kT4")
    assert read(srv, "svc-a", path).status_code == 200
    assert read(srv, "svc-b", path).status_code == 200
    assert rotate(srv, path)["current"] == 2
    # the operator with the disk writes svc-b's ack of v2 into the row (keeping the rest)
    con = sqlite3.connect(srv.home / "custody.db", timeout=30)
    key = f"secret-consumers:prod:{path}"
    (raw,) = con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    doc = json.loads(raw)
    doc["consumers"]["svc-b"] = {"version": 2, "at": "2026-01-01T00:00:00Z"}
    con.execute("UPDATE meta SET value=? WHERE key=?", (json.dumps(doc), key))
    con.commit()
    con.close()
    with client(srv, "acks-admin") as c:
        st = c.get(f"/api/v1/consumers/prod/{path}").json()
    assert st["verified"] is False and st["stragglers"] == ["svc-a", "svc-b"]
    out = ack(srv, "svc-a", path, 2)  # the last real ack would have completed the set
    assert out["revoked"] is None and "svc-b" in out["stragglers"]
    assert read(srv, "svc-b", path, label="previous").status_code == 200  # still served
    # re-signed now, but with early revocation off for this rotation: even svc-b's real
    # ack does not revoke previous before its window ends
    assert ack(srv, "svc-b", path, 2)["revoked"] is None
    assert read(srv, "svc-b", path, label="previous").status_code == 200
    assert not [p for p in records(srv) if "payments_forged" in p.name]
    # nor can the operator write a record of their own: signed by their key, it fails
    # against the pinned audit key
    mine = Ed25519PrivateKey.generate()
    body = {
        "type": "custody/secret-early-revoke/v1", "deployment": "", "env": "prod",
        "path": path, "current": 2, "revoked_version": 1, "at": "2026-01-01T00:00:00Z",
        "acks": {"svc-a": {"version": 2, "at": None}, "svc-b": {"version": 2, "at": None}},
        "reason": "every registered consumer acknowledged current",
        "signer": {"name": "hsm-audit", "alg": "ed25519",
                   "public": mine.public_key().public_bytes_raw().hex()},
    }  # fmt: skip
    sig = mine.sign(RECORD_TAG + canonical_bytes(body)).hex()
    forged = srv.home.parent / "forged-record.json"
    forged.write_bytes(canonical_bytes({**body, "signature": sig}))
    bad = verify_acks(srv, forged)
    assert bad.returncode == 6 and "does not verify" in bad.stderr


def test_acks_are_per_version_across_a_second_rotation(srv):
    path = "payments/twice"
    put(srv, path, "Twice-Value-1-zQ8#pLm2@wR7!kT4")
    assert read(srv, "svc-a", path).status_code == 200
    assert read(srv, "svc-b", path).status_code == 200
    first = rotate(srv, path)
    assert (first["current"], first["previous"]) == (2, 1) and "revoked" not in first
    ack(srv, "svc-a", path, 2)  # svc-b stays on v1
    second = rotate(srv, path)  # before svc-b acked: v1 goes, svc-b is named
    assert (second["current"], second["previous"]) == (3, 2)
    assert second["revoked"] == 1 and second["stragglers"] == ["svc-b"]
    alerts = hook_alerts(srv)
    assert any(a.get("kind") == "rotation-stragglers" and a.get("stragglers") == ["svc-b"]
               and a.get("path") == path for a in alerts)  # fmt: skip
    assert any(e["op"] == "secret alert" and e["target"] == f"prod:{path}"
               and e["details"].get("stragglers") == ["svc-b"]
               for e in audit_entries(srv.home))  # fmt: skip
    with client(srv, "acks-admin") as c:
        st = c.get(f"/api/v1/consumers/prod/{path}").json()
    # svc-a's ack of v2 is stale for v3: it does not count
    assert st["consumers"] == {"svc-a": 2, "svc-b": None}
    assert st["stragglers"] == ["svc-a", "svc-b"]
    assert ack(srv, "svc-a", path, 3)["revoked"] is None
    assert ack(srv, "svc-b", path, 2)["revoked"] is None  # an ack of previous is no ack of current
    done = ack(srv, "svc-b", path, 3)
    assert done["revoked"] == 2 and done["stragglers"] == []
    (rec,) = [p for p in records(srv) if "payments_twice" in p.name]
    out = json.loads(verify_acks(srv, rec).stdout)
    assert (out["revoked_version"], out["current"]) == (2, 3)


def _row(s, path: str) -> str | None:
    con = sqlite3.connect(s.home / "custody.db", timeout=30)
    try:
        got = con.execute("SELECT value FROM meta WHERE key=?",
                          (f"secret-consumers:prod:{path}",)).fetchone()  # fmt: skip
    finally:
        con.close()
    return None if got is None else str(got[0])


def _set_row(s, path: str, value: str | None) -> None:
    con = sqlite3.connect(s.home / "custody.db", timeout=30)
    key = f"secret-consumers:prod:{path}"
    if value is None:
        con.execute("DELETE FROM meta WHERE key=?", (key,))
    else:
        con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
    con.commit()
    con.close()


def _distrust_alerts(s, path: str) -> list[dict]:
    return [
        a
        for a in hook_alerts(s)
        if a.get("kind") == "consumers-distrusted" and a.get("path") == path
    ]


def _no_early_revocation(s, path: str, why: str, floor: int = 2) -> None:
    """svc-a's ack alone, then svc-b's too: previous lives to its window end, and the alert
    and the audit log say why."""
    out = ack(s, "svc-a", path, 2)
    assert out["revoked"] is None and out["verified"] is True
    assert read(s, "svc-b", path, label="previous").status_code == 200  # still served
    # even when both acked: early revocation is off for every version the secret had
    assert ack(s, "svc-b", path, 2)["revoked"] is None
    assert read(s, "svc-b", path, label="previous").status_code == 200
    assert not [p for p in records(s) if path.replace("/", "_") + "-" in p.name]
    (alert,) = _distrust_alerts(s, path)
    assert why in alert["reason"] and alert["distrusted"] == floor
    logged = [e for e in audit_entries(s.home) if e["op"] == "secret alert"
              and e["target"] == f"prod:{path}"
              and e["details"].get("kind") == "consumers-distrusted"]  # fmt: skip
    assert len(logged) == 1 and why in logged[0]["details"]["reason"]


def test_a_deleted_consumers_row_does_not_let_one_ack_revoke_previous(srv):
    path = "payments/deleted"
    put(srv, path, "Deleted-Value-1-zQ8#pLm2@wR7!kT4")
    assert read(srv, "svc-a", path).status_code == 200
    assert read(srv, "svc-b", path).status_code == 200
    assert rotate(srv, path)["current"] == 2
    _set_row(srv, path, None)  # the disk operator deletes the whole row
    with client(srv, "acks-admin") as c:
        st = c.get(f"/api/v1/consumers/prod/{path}").json()
    assert st["verified"] is False  # the signed index still names the row
    assert read(srv, "svc-a", path).status_code == 200  # registers again, alone
    _no_early_revocation(srv, path, "deleted")


def test_a_row_deleted_before_the_next_consumer_registered_is_caught(srv):
    """svc-b registers, the row is deleted, then svc-a's first read writes what looks like
    a fresh set of one: the index still names the deleted row."""
    path = "payments/predeleted"
    put(srv, path, "Predeleted-Value-1-zQ8#pLm2@wR7!kT4")
    assert read(srv, "svc-b", path).status_code == 200
    _set_row(srv, path, None)
    assert read(srv, "svc-a", path).status_code == 200
    assert rotate(srv, path)["current"] == 2
    _no_early_revocation(srv, path, "deleted", floor=1)  # caught at svc-a's read, on v1


def test_an_older_signed_row_put_back_is_caught(srv):
    path = "payments/older"
    put(srv, path, "Older-Value-1-zQ8#pLm2@wR7!kT4")
    assert read(srv, "svc-a", path).status_code == 200
    old = _row(srv, path)  # signed, svc-a alone
    assert old is not None
    assert read(srv, "svc-b", path).status_code == 200
    assert rotate(srv, path)["current"] == 2
    _set_row(srv, path, old)
    _no_early_revocation(srv, path, "older")


def test_a_row_signed_for_another_secret_is_not_believed(srv):
    """A row where svc-a is the only consumer, signed for another secret, copied over."""
    other, path = "payments/donor", "payments/replayed"
    put(srv, other, "Donor-Value-1-zQ8#pLm2@wR7!kT4")
    assert read(srv, "svc-a", other).status_code == 200
    put(srv, path, "Replayed-Value-1-zQ8#pLm2@wR7!kT4")
    assert read(srv, "svc-a", path).status_code == 200
    assert read(srv, "svc-b", path).status_code == 200
    assert rotate(srv, path)["current"] == 2
    donor = _row(srv, other)
    assert donor is not None
    _set_row(srv, path, donor)
    with client(srv, "acks-admin") as c:
        st = c.get(f"/api/v1/consumers/prod/{path}").json()
    assert st["verified"] is False and st["consumers"] == {"svc-a": None}
    _no_early_revocation(srv, path, "another secret")


def test_a_row_created_without_deletion_still_revokes_early(srv):
    """No false alarm: a secret whose row nobody touched revokes previous on the last ack."""
    path = "payments/clean"
    put(srv, path, "Clean-Value-1-zQ8#pLm2@wR7!kT4")
    assert read(srv, "svc-a", path).status_code == 200
    assert read(srv, "svc-b", path).status_code == 200
    assert rotate(srv, path)["current"] == 2
    assert ack(srv, "svc-a", path, 2)["revoked"] is None
    assert ack(srv, "svc-b", path, 2)["revoked"] == 1
    assert not _distrust_alerts(srv, path)
