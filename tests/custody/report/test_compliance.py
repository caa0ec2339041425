"""The compliance report on a real deployment: a generated 3-of-5 root (SoftHSMv2, SQLite,
the audit log), a drill by three custodians, secrets put through the CLI. Each section is
shown detecting its case; the report recomputed offline from an exported bundle equals the
live one; the exporter who edits the bundle's audit log (and rewrites its manifest) is
caught by the pinned checkpoint; HTML and text escape what a secret's owner can write;
no secret value reaches the report or the bundle."""

from __future__ import annotations

import base64
import hashlib
import html
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ceremonies.participants import load_identity, load_signer
from custody.access import AccessControl
from custody.access.flow import GrantFlow
from custody.access.mfa import Mfa, totp_code
from custody.audit.log import AuditLog
from custody.audit.signers import parse_trust_key
from custody.canonical import canonical_bytes
from custody.clock import to_seconds
from custody.deployment import open_deployment
from custody.errors import IntegrityError, UsageError
from custody.report import (
    compliance_report,
    gather,
    load_bundle,
    section_map,
    to_html,
    to_text,
    write_bundle,
)
from custody.secrets import SecretPolicy
from tests.ceremony_fixtures import Dep, generated_copy
from tests.conftest import TEST_PIN, cli_env, passphrase_of, run_cli

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("compliance")]

CANARY = "Compliance-Canary-3e9d!Lp7#Wq2@Xz"
OWNER_HTML = '<script>alert("owner")</script>'
OWNER_ANSI = "ops\x1b[31mred"


def put_all(d: Dep, items: list[tuple[str, str, str]]) -> None:
    """``secret put`` of (path, owner, value) in prod, in process (one token login)."""
    from custody.secrets import Category, Vault

    dep = open_deployment(d.root, TEST_PIN)
    try:
        v = Vault(dep.store, dep.hierarchy, rng=dep.token.random)
        for path, owner, value in items:
            v.put("prod", path, value, category=Category.DATABASE_CREDENTIAL, owner=owner)
    finally:
        dep.close()


GRANTED = ("billing/db/password", "billing/db/replica", "billing/db/old", "billing/db/spare")


@pytest.fixture(scope="module")
def gen(generated_master: Dep, tmp_path_factory: pytest.TempPathFactory):
    d = generated_copy(generated_master, tmp_path_factory.mktemp("compliance") / "home")
    r = d.ceremony("drill", *d.coord(pin=False), *d.shares("alice", "bob", "carol"))
    assert r.returncode == 0, r.stderr
    put_all(d, [
        *((path, "billing", f"{CANARY}-{path}") for path in GRANTED),
        ("ops/db/password", " ", CANARY + "2"),  # an owner that is only a space
        ("web/db/password", OWNER_HTML, CANARY + "3"),
        ("term/db/password", OWNER_ANSI, CANARY + "4"),
    ])  # fmt: skip
    grants = make_grants(d)
    # a read during the soft-delete window of billing/db/old, found by the monitoring rules
    assert run_cli("secret", "delete", "billing/db/old", "--env", "prod", "--home",
                   str(d.root)).returncode == 0  # fmt: skip
    r = run_cli("secret", "get", "billing/db/old", "--env", "prod", "--home", str(d.root),
                "--pin-file", str(d.pin))  # fmt: skip
    assert r.returncode == 7, r.stderr
    r = run_cli("alerts", "scan", "--home", str(d.root), "--json")
    assert r.returncode == 0, r.stderr
    trust = d.root.parent / "audit-trust.json"
    r = run_cli("audit", "checkpoint", "--home", str(d.root), "--pin-file", str(d.pin),
                "--trust-out", str(trust), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return d, [parse_trust_key(trust.read_bytes(), default_name="audit")], grants


def make_grants(d: Dep) -> dict[str, str]:
    """Principals (admin, two service-admins of billing who approve, two services) and one
    live one-hour grant per path of GRANTED, each approved by alice and bob; the replica's
    grant is used at once; svc2 is then revoked in the store alone (its grant left live)."""
    dep = open_deployment(d.root)
    log = AuditLog.for_home(dep.home)
    try:
        ac = AccessControl(dep.store, log)
        for n, role in (("admin", "super-admin"), ("alice", "service-admin"),
                        ("bob", "service-admin")):  # fmt: skip
            pub = load_identity(d.people / f"{n}.pub.json").public
            svcs = () if n == "admin" else ("billing",)
            ac.add_principal(n, kind="person", role=role, services=svcs, public=pub, by="admin")
        for n in ("svc", "svc2"):
            ac.add_principal(n, kind="service", role="service-user", services=("billing",),
                             by="admin")  # fmt: skip
        flow = GrantFlow(ac, dep.config.deployment_id)
        keys = [load_signer(d.people / f"{n}.key.pem", passphrase_of(n)) for n in ("alice", "bob")]
        out = {}
        for path in GRANTED:
            who = ac.principal("svc2" if path.endswith("spare") else "svc")
            req = flow.request(who, "prod", path, seconds=3600, why=f"compliance test {path}")
            for k in keys:
                done = flow.approve(req.id, k)
            out[path] = done["grant"]
        assert ac.authorize(ac.principal("svc"), "read", "prod", "billing/db/replica").allow
        dep.store.revoke_principal("svc2", now=int(datetime.now(UTC).timestamp()))
        return out
    finally:
        log.close()
        dep.close()


def live(d: Dep, now: datetime):
    dep = open_deployment(d.root)
    log = AuditLog.for_home(dep.home)
    try:
        return gather(
            dep.store,
            log,
            dep.config,
            SecretPolicy.for_home(dep.home.config_path),
            now=now,
            source="live",
        )
    finally:
        log.close()
        dep.close()


def report(d: Dep, trust, *, days: float = 0, **kw):
    now = datetime.now(UTC) + timedelta(days=days)
    return section_map(compliance_report(live(d, now), now=now, trust=trust, **kw))


def by_name(section) -> dict[str, dict]:
    return {i.get("name") or i.get("custodian"): i for i in section["items"]}


def test_rotations_overdue_and_soon_due_keys_and_secrets(gen):
    d, trust, _ = gen
    assert report(d, trust)["rotations"]["status"] == "ok"  # everything is fresh
    soon = by_name(report(d, trust, days=80)["rotations"])
    assert soon["secrets"]["kind"] == "key" and soon["secrets"]["status"] == "soon"
    assert soon["prod:billing/db/password"]["status"] == "soon"
    assert 9 <= soon["prod:billing/db/password"]["days_left"] <= 10
    assert "data" not in soon and "root" not in soon  # 180 and 365 days: not yet
    late = by_name(report(d, trust, days=100)["rotations"])
    assert late["secrets"]["status"] == "overdue"
    assert late["prod:billing/db/password"]["status"] == "overdue"
    assert late["prod:billing/db/password"]["owner"] == "billing"
    later = by_name(report(d, trust, days=340)["rotations"])  # root: 365 days, warned at 30
    assert later["data"]["status"] == "overdue" and later["root"]["status"] == "soon"
    # --within narrows what counts as soon for secrets
    narrow = by_name(report(d, trust, days=80, within_days=5)["rotations"])
    assert "prod:billing/db/password" not in narrow


def test_secrets_without_an_owner_or_an_expiry(gen):
    d, trust, _ = gen
    items = by_name(report(d, trust)["ownership"])
    assert items["prod:ops/db/password"]["problems"] == ["no owner"]
    assert "prod:billing/db/password" not in items
    dep = open_deployment(d.root)  # a legacy or imported row without an expiry
    try:
        with dep.store.transaction():
            dep.store.update_secret("prod", "web/db/password", expires="")
        items = by_name(report(d, trust)["ownership"])
        assert items["prod:web/db/password"]["problems"] == ["no expiry"]
    finally:
        with dep.store.transaction():
            dep.store.update_secret(
                "prod",
                "web/db/password",
                expires=(datetime.now(UTC) + timedelta(days=90)).isoformat(),
            )
        dep.close()


def test_principals_without_mfa_until_they_enrol_and_confirm(gen):
    d, trust, _ = gen
    s = report(d, trust)["mfa"]
    items = by_name(s)
    assert items["admin"]["required"] is True and items["admin"]["state"] == "not enrolled"
    assert items["alice"]["required"] is False and items["svc"]["kind"] == "service"
    assert sorted(items) == ["admin", "alice", "bob", "svc"]  # svc2 is revoked
    assert s["principals"] == 4
    dep = open_deployment(d.root, TEST_PIN)
    log = AuditLog.for_home(dep.home)
    try:
        mfa = Mfa(dep.store, dep.hierarchy, log)
        key = base64.b32decode(mfa.enrol("admin").secret_b32)
        assert by_name(report(d, trust)["mfa"])["admin"]["state"] == "enrolled, not confirmed"
        mfa.verify("admin", totp_code(key, to_seconds(datetime.now(UTC)) // 30))
    finally:
        log.close()
        dep.close()
    assert "admin" not in by_name(report(d, trust)["mfa"])


def test_grants_that_have_outlived_their_need(gen):
    d, trust, grants = gen
    s = report(d, trust)["grants"]
    assert s["live"] == 4
    early = {i["grant"]: i["why"] for i in s["items"]}
    # at once: the revoked principal's grant and the deleted secret's grant
    assert early == {
        grants["billing/db/spare"]: ["principal revoked"],
        grants["billing/db/old"]: ["secret deleted"],
    }
    late = {i["grant"]: i for i in report(d, trust, days=1900 / 86400)["grants"]["items"]}
    assert late[grants["billing/db/password"]]["why"] == ["never used"]
    assert late[grants["billing/db/replica"]]["why"] == ["idle"]
    assert late[grants["billing/db/replica"]]["uses"] == 1
    assert late[grants["billing/db/old"]]["why"] == ["never used", "secret deleted"]
    # once the hour is over nothing is live: nothing to report
    gone = report(d, trust, days=3601 / 86400)["grants"]
    assert gone["live"] == 0 and gone["status"] == "ok"


def test_open_alerts_until_acknowledged(gen):
    d, trust, _ = gen
    s = report(d, trust)["alerts"]
    assert s["status"] == "findings"
    (alert,) = [i for i in s["items"] if i["kind"] == "soft-delete-read"]
    assert alert["target"] == "prod:billing/db/old" and len(alert["seqs"]) >= 1
    r = run_cli("alerts", "ack", alert["id"], "--note", "test read", "--home", str(d.root),
                env=cli_env(CUSTODY_ACTOR="audrey"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert alert["id"] not in {i["id"] for i in report(d, trust)["alerts"]["items"]}


def test_custodians_without_a_drill_on_the_active_epoch(gen):
    d, trust, _ = gen
    s = report(d, trust)["drills"]
    assert s["status"] == "findings" and s["custodians"] == 5
    assert sorted(by_name(s)) == ["dave", "erin"]  # alice, bob and carol drilled


def test_a_section_without_its_subject_says_why(tmp_path):
    from tests.rekey_fixtures import make_deployment

    home, _ = make_deployment(tmp_path / "dev")  # a development root: no share set
    now = datetime.now(UTC)
    dep = open_deployment(home)
    log = AuditLog.for_home(dep.home)
    try:
        ev = gather(dep.store, log, dep.config, SecretPolicy(), now=now, source="live")
    finally:
        log.close()
        dep.close()
    s = section_map(compliance_report(ev, now=now))
    assert s["drills"]["status"] == "not-available" and "share set" in s["drills"]["reason"]
    assert s["checkpoint"]["status"] == "findings"  # no checkpoint yet
    assert s["checkpoint"]["items"] == [{"problem": "no signed checkpoint"}]
    assert s["mfa"]["status"] == "ok" and s["mfa"]["principals"] == 0
    assert {i["name"] for i in s["rotations"]["items"]} == {"backup", "secrets"}  # missing


def test_the_last_pinned_checkpoint_and_its_age(gen):
    d, trust, _ = gen
    s = report(d, trust)["checkpoint"]
    assert s["status"] == "ok" and s["pinned"] and s["log_verifies"]
    assert s["last"]["signers"] == ["hsm-audit"] and 0 <= s["last"]["age_seconds"] < 3600
    assert s["last"]["entries_after"] >= 0
    old = report(d, trust, days=2)["checkpoint"]
    assert old["status"] == "findings" and "old" in old["items"][0]["problem"]
    # an auditor who pins another key finds no pinned checkpoint at all
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    s = report(d, [parse_trust_key(other.hex().encode(), default_name="other")])["checkpoint"]
    assert s["status"] == "findings" and s["last"] is None
    assert any("pinned" in i["problem"] for i in s["items"])
    # without --trust the newest checkpoint is found but reported as not pinned
    s = report(d, None)["checkpoint"]
    assert s["pinned"] is False and "self-asserted" in s["last"]["signers"][0]


def test_offline_from_a_bundle_equals_live_and_a_doctored_bundle_is_caught(gen, tmp_path):
    d, trust, _ = gen
    now = datetime.now(UTC)
    ev = live(d, now)
    manifest = write_bundle(ev, tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "audit.jsonl", "checkpoints.jsonl", "manifest.json", "store.json"
    ]  # fmt: skip
    offline = load_bundle(tmp_path / "b")
    a = compliance_report(ev, now=now, trust=trust)
    b = compliance_report(offline, now=now, trust=trust)
    assert a["source"] == "live" and b["source"].startswith("bundle ")
    assert {**a, "source": ""} == {**b, "source": ""}
    assert manifest["entries"] == len(ev.lines) > 0
    # no secret value anywhere in the bundle or the report
    for f in (tmp_path / "b").iterdir():
        assert CANARY.encode() not in f.read_bytes()
    assert CANARY not in json.dumps(a) + to_html(a) + to_text(a)
    with pytest.raises(UsageError):
        write_bundle(ev, tmp_path / "b")  # never over an existing export
    # damage: a file that no longer matches its digest is refused
    audit = tmp_path / "b" / "audit.jsonl"
    lines = audit.read_bytes().splitlines()
    # the exporter hides what happened: the grant's use becomes something else ...
    idx = next(i for i, ln in enumerate(lines) if b'"op":"access grant use"' in ln)
    doctored = [*lines[:idx], lines[idx].replace(b"grant use", b"grant see"), *lines[idx + 1 :]]
    audit.write_bytes(b"\n".join(doctored) + b"\n")
    with pytest.raises(IntegrityError):
        load_bundle(tmp_path / "b")
    # ... and rewrites the manifest to match: the chain and the pinned checkpoint catch it
    m = json.loads((tmp_path / "b" / "manifest.json").read_bytes())
    m["files"]["audit.jsonl"] = hashlib.sha256(audit.read_bytes()).hexdigest()
    (tmp_path / "b" / "manifest.json").write_bytes(canonical_bytes(m))
    s = section_map(compliance_report(load_bundle(tmp_path / "b"), now=now, trust=trust))
    assert s["checkpoint"]["log_verifies"] is False and s["checkpoint"]["status"] == "findings"


def test_html_and_text_escape_what_an_owner_can_write(gen):
    d, trust, _ = gen
    now = datetime.now(UTC) + timedelta(days=100)  # every secret overdue: owners shown
    rep = compliance_report(live(d, now), now=now, trust=trust)
    page = to_html(rep)
    assert OWNER_HTML not in page and "<script" not in page
    assert html.escape(OWNER_HTML, quote=True) in page
    assert "Content-Security-Policy" in page
    text = to_text(rep)
    assert "\x1b" not in text and "ops" in text
