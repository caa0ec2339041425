"""The canary test of the secrets issue, extended to every command of issue 16.

One deployment (module scope, real SoftHSMv2 and SQLite) runs every command of
``custody principal``, ``access``, ``mfa``, ``alerts`` and ``report``, and the
``secret`` commands as a service (``--token-file``, ``$CUSTODY_TOKEN``) and ``--as``, as
subprocesses, with ``--json`` and without. Canaries are planted: a secret value, the
service tokens, the TOTP secret (and the codes made from it), the participants'
passphrases and the token PIN. They come only from files, the environment and stdin,
and the tests assert they never appear in any child's argv, in stdout or stderr (except
the one place a value is meant to be shown: ``secret get``, ``access open`` and the
enrolment's QR/secret), in the audit log, the store's bytes, the alert hook's output and
the alert file, the monitor's state, the compliance report (text, JSON, HTML) or the
exported bundle and release.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ceremonies.participants import create_participant
from custody.access.mfa import totp_code
from custody.audit.log import AuditLog
from tests.conftest import cli_env, passphrase_of, run_cli, write_secret
from tests.rekey_fixtures import cli, make_deployment

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("access-canaries")]
VALUE = "Access-Canary-Value-5k3!Rz8#Qm1@Tw"
OTHER = "Access-Canary-Other-2j7!Hx4#Lp9@Vn"
PATH = "billing/db/password"
QPATH = "billing/api/key"


@dataclass
class Run:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    shows: tuple[str, ...] = ()  # canaries this command is meant to print


@dataclass
class World:
    home: Path
    tmp: Path
    runs: list[Run] = field(default_factory=list)
    canaries: dict[str, str] = field(default_factory=dict)  # name -> text
    codes: list[str] = field(default_factory=list)  # TOTP codes (6 digits: argv/output only)
    files: list[Path] = field(default_factory=list)  # exported files that must hold none
    totp_key: bytes = b""

    def run(self, *args: str, shows: tuple[str, ...] = (), ok: bool = True, **kw) -> Run:
        env = cli_env(**kw.pop("env", {}))
        p = run_cli(*args, env=env, **kw)
        r = Run(["custody", *args], p.returncode, p.stdout, p.stderr, shows)
        self.runs.append(r)
        if ok:
            assert p.returncode == 0, f"{args}: {p.stderr}"
        return r

    def both(self, *args: str, **kw) -> dict:
        """The command in its human form and with --json (the JSON parsed)."""
        self.run(*args, **kw)
        return json.loads(self.run(*args, "--json", **kw).stdout)


def _code(key: bytes) -> str:
    return totp_code(key, int(time.time()) // 30)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("canary")
    home, pins = make_deployment(tmp / "d")
    w = World(home, tmp)
    w.canaries.update(value=VALUE, other=OTHER, pin=pins.read_text().strip())
    hook = tmp / "hook.jsonl"
    conf = home / "custody.toml"
    conf.write_text(
        conf.read_text().replace("[policy]", f'[policy]\nalert_hook = "tee -a {hook}"', 1)
        + '\n[monitor]\nalert_file = "alerts.jsonl"\n'
    )
    h = ("--home", str(home))
    hp = (*h, "--pin-file", str(pins))
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    people = tmp / "people"
    people.mkdir()
    roster = [("admin", "super-admin"), *((n, "custodian") for n in ("alice", "bob", "dave"))]
    for n, role in roster:
        write_secret(people / f"{n}.pass", passphrase_of(n) + "\n")
        create_participant(n, role, passphrase_of(n), people)
        w.canaries[f"passphrase:{n}"] = passphrase_of(n)
    key = {n: ("--key", str(people / f"{n}.key.pem"), "--passphrase-file",
               str(people / f"{n}.pass")) for n, _r in roster}  # fmt: skip
    adds = [a for n, _r in roster for a in ("--add", str(people / f"{n}.pub.json"))]
    w.run("ceremony", "enrol", *h, *key["admin"], *adds, "--json")
    vfile = write_secret(tmp / "other.value", OTHER)
    put = ("secret", "put", "--env", "prod", "--category", "database-credential")
    w.run(*put[:2], PATH, *put[2:], "--owner", "billing", "--stdin", *hp, input=VALUE)
    w.run(*put[:2], QPATH, *put[2:], "--owner", "billing", "--value-file", str(vfile), *hp)

    # principal: add (people and services), list, show, token
    for n in ("alice", "bob", "dave"):
        w.run("principal", "add", n, "--role", "service-admin", "--key",
              str(people / f"{n}.pub.json"), "--service", "billing", *hp)  # fmt: skip
    svc, carol, aud = tmp / "svc.token", tmp / "carol.token", tmp / "aud.token"
    w.run("principal", "add", "billing-svc", "--role", "service-user", "--service-account",
          "--service", "billing", "--env", "prod", "--token-out", str(svc), *hp,
          "--json")  # fmt: skip
    w.run("principal", "add", "carol", "--role", "service-user", "--service-account",
          "--service", "billing", "--token-out", str(carol), *hp)  # fmt: skip
    w.run("principal", "add", "aud", "--role", "auditor", "--service-account",
          "--token-out", str(aud), *hp)  # fmt: skip
    old = svc.read_text().strip()
    w.canaries["token:old"] = old
    w.run("principal", "token", "billing-svc", "--token-out", str(tmp / "svc1.token"), *hp)
    w.canaries["token:svc1"] = (tmp / "svc1.token").read_text().strip()
    svc2 = tmp / "svc2.token"
    w.run("principal", "token", "billing-svc", "--token-out", str(svc2), *hp, "--json")
    for name, f in (("svc", svc2), ("carol", carol), ("aud", aud)):
        w.canaries[f"token:{name}"] = f.read_text().strip()
    w.both("principal", "list", *h)
    w.both("principal", "show", "billing-svc", *h)

    # mfa: enrol (the one place the TOTP secret shows), verify from stdin and a file, list
    enrol = w.run("mfa", "enrol", "carol", "--png", str(tmp / "carol.png"), *hp, "--json")
    secret = json.loads(enrol.stdout)["secret_b32"]
    w.totp_key = base64.b32decode(secret)
    w.canaries.update(totp=secret, totp_lower=secret.lower(), totp_hex=w.totp_key.hex())
    enrol.shows = (secret,)
    w.run("mfa", "enrol", "bob", "--png", str(tmp / "bob.png"), *hp, cwd=tmp)
    code = _code(w.totp_key)
    w.codes.append(code)
    r = w.run("mfa", "verify", "carol", "--stdin", *hp, input=code + "\n", ok=False)
    assert r.rc == 0 or "already used" in r.stderr, r.stderr  # the step may have turned
    wrong = f"{(int(code) + 1) % 1000000:06d}"
    w.codes.append(wrong)
    r = w.run("mfa", "verify", "carol", "--stdin", "--json", *hp, input=wrong + "\n", ok=False)
    assert r.rc == 7
    codefile = write_secret(tmp / "code", _code(w.totp_key) + "\n")
    w.codes.append(codefile.read_text().strip())
    # a code from a file in an audited read (carol holds no grant: refused, and audited)
    r = w.run("secret", "get", PATH, "--env", "prod", *hp, "--token-file", str(carol),
              "--mfa-code-file", str(codefile), ok=False)  # fmt: skip
    assert r.rc == 7 and VALUE not in r.stdout
    # 'secret list' opens no token: a code cannot be checked there, and it says so
    r = w.run("secret", "list", "--env", "prod", *h, "--token-file", str(carol),
              "--mfa-code-file", str(codefile), ok=False)  # fmt: skip
    assert r.rc == 2 and "needs the HSM" in r.stderr, r.stderr
    w.both("mfa", "list", *h)

    # access: request (as the service, token from a file), approve (passphrase files),
    # requests, grants, show, verify; the grant read with the token from the environment
    tok = ("--token-file", str(svc2))
    w.run("access", "request", PATH, "--env", "prod", "--for", "1h", "--why", "incident 9",
          *h, *tok)  # fmt: skip
    req = w.both("access", "requests", *h)
    rid = next(iter(req if isinstance(req, list) else req["requests"]))["id"]
    w.run("access", "approve", rid, *key["alice"], *h)
    out = json.loads(w.run("access", "approve", rid, *key["bob"], *h, "--json").stdout)
    gid, record = out["grant"], tmp / "grant.json"
    w.both("access", "grants", *h)
    w.both("access", "show", rid, *h)
    w.run("access", "show", gid, "--record-out", str(record), *h)
    w.files.append(record)
    trust = ("--trust", str(people / "alice.pub.json"), "--trust", str(people / "bob.pub.json"))
    w.both("access", "verify", str(record), *trust)
    env = {"CUSTODY_TOKEN": w.canaries["token:svc"]}
    w.run("secret", "get", PATH, "--env", "prod", *hp, env=env, shows=(VALUE,))
    w.run("secret", "get", PATH, "--env", "prod", *hp, *tok, "--json", shows=(VALUE,))
    got = tmp / "got.value"
    w.run("secret", "get", PATH, "--env", "prod", "--out", str(got), *hp, *tok)
    assert got.read_text() == VALUE
    w.both("secret", "list", "--env", "prod", *h, *tok)
    w.both("secret", "show", PATH, "--env", "prod", *h, *tok)
    w.both("secret", "versions", PATH, "--env", "prod", *h, "--as", "alice")
    w.both("secret", "due", "--within", "400", *h, "--as", "alice")
    # refused: a write by the service, the old token, a wrong token (audited, no echo)
    r = w.run("secret", "put", PATH, "--env", "prod", "--stdin", *hp, *tok, input=OTHER, ok=False)
    assert r.rc == 7
    oldf = write_secret(tmp / "old.token", old)
    r = w.run("secret", "get", PATH, "--env", "prod", *hp, "--token-file", str(oldf), ok=False)
    assert r.rc == 7
    bad = old[:-4] + ("AAAA" if not old.endswith("AAAA") else "BBBB")
    w.canaries["token:bad"] = bad
    badf = write_secret(tmp / "bad.token", bad)
    r = w.run("secret", "get", PATH, "--env", "prod", *hp, "--token-file", str(badf), ok=False)
    assert r.rc == 7
    w.run("access", "revoke", gid, "--reason", "done", *h, "--json")
    r = w.run("secret", "get", PATH, "--env", "prod", *hp, *tok, ok=False)  # revoked grant
    assert r.rc == 7 and "revoked" in r.stderr

    # quorum release: rule, request (as dave), approvals, release sealed, open with dave's key
    w.run("access", "release-rule", QPATH, "--env", "prod", "--quorum", "2", *hp)
    rq = json.loads(w.run("access", "request", QPATH, "--env", "prod", "--for", "30m",
                          "--why", "by hand", "--release", "--as", "dave", *h,
                          "--json").stdout)  # fmt: skip
    for n in ("alice", "bob"):
        w.run("access", "approve", rq["id"], *key[n], *h, "--json")
    sealed = tmp / "sealed.json"
    w.run("access", "release", rq["id"], "--as", "dave", "--out", str(sealed), *hp)
    w.files.append(sealed)
    enc = ("--key", str(people / "dave.enc.pem"), "--passphrase-file", str(people / "dave.pass"))
    w.run("access", "open", str(sealed), *enc, shows=(OTHER,))
    w.run("access", "open", str(sealed), *enc, "--json", shows=(OTHER,))
    w.run("access", "release-rule", QPATH, "--env", "prod", "--normal", *hp, "--json")

    # alerts: scan, list, show, rules, ack (as an auditor; the token from a file)
    scan = json.loads(w.run("alerts", "scan", *h, "--json").stdout)
    w.run("alerts", "scan", *h)
    assert scan["alerts"], scan  # the wrong and revoked tokens at least
    w.both("alerts", *h)
    aid = scan["alerts"][0]["id"]
    w.both("alerts", "show", aid, *h)
    w.both("alerts", "rules", *h)
    w.run("alerts", "ack", aid, "--note", "seen", *h, env={"CUSTODY_ACTOR": "aud"})
    w.files += [hook, home / "alerts.jsonl", home / "monitor-state.json"]

    # report: text, JSON, HTML; export; recomputed from the bundle
    w.both("report", "compliance", *h)
    page = tmp / "report.html"
    w.run("report", "compliance", "--html", "--out", str(page), *h)
    bundle = tmp / "bundle"
    w.run("report", "export", str(bundle), *h, "--json")
    w.both("report", "compliance", "--bundle", str(bundle), cwd=tmp)
    w.files += [page, *bundle.iterdir()]

    # the audit log as people read it, and exported checkpoints
    w.both("audit", "tail", "-n", "500", *h)
    w.both("audit", "tail", "-n", "50", *h, "--as", "billing-svc")
    ex = tmp / "cps"
    w.run("audit", "checkpoint", "--export", str(ex), *hp)
    w.files += [f for f in ex.rglob("*") if f.is_file()]

    # the end of it: a reset (an enrolled super-admin's key), revocations
    w.run("mfa", "reset", "carol", *key["admin"], "--reason", "lost phone", *hp, "--json")
    w.run("principal", "revoke", "billing-svc", "--token-only", *hp)
    w.run("principal", "revoke", "carol", *hp, "--json")
    w.both("principal", "list", *h)
    return w


def _forbidden(w: World) -> dict[str, str]:
    return dict(w.canaries)


def test_no_canary_in_any_childs_argv(world: World):
    every = [*world.canaries.values(), *world.codes]
    assert len(world.runs) > 60
    for r in world.runs:
        line = " ".join(r.argv)
        for c in every:
            assert c not in line, (c[:6], r.argv[:3])


def test_no_canary_in_output_but_where_it_is_meant_to_show(world: World):
    shown: set[str] = set()
    for r in world.runs:
        for name, c in _forbidden(world).items():
            if c in r.shows:
                if c in r.stdout:
                    shown.add(c)
                assert c not in r.stderr, (name, r.argv[:3])
                continue
            assert c not in r.stdout and c not in r.stderr, (name, r.argv[:4])
        if r.argv[1:3] != ["mfa", "enrol"]:
            assert not any(code in r.stdout + r.stderr for code in world.codes), r.argv[:4]
    assert {VALUE, OTHER, world.canaries["totp"]} <= shown  # the checks above could fail


def test_no_canary_in_the_audit_log_or_the_store(world: World):
    home = world.home
    raw = {f: (home / f).read_bytes() for f in ("audit.db", "custody.db")}
    for f, data in raw.items():
        for name, c in _forbidden(world).items():
            assert c.encode() not in data, (name, f)
        assert world.totp_key not in data, f
    with AuditLog(home / "audit.db") as log:
        entries = [json.loads(x) for x in log.lines()]
    values = {json.dumps(v) for e in entries for v in e["details"].values()}
    assert not any(json.dumps(c) in values for c in world.codes)
    # the log did record what the canaries were used for
    ops = {(e["op"], e["outcome"]) for e in entries}
    for want in (("access grant use", "ok"), ("mfa verify", "denied"),
                 ("access authenticate", "denied"), ("alert.raised", "ok"),
                 ("principal revoke", "ok"), ("mfa reset", "ok")):  # fmt: skip
        assert want in ops, want


def test_no_canary_in_alerts_reports_bundles_or_records(world: World):
    assert len(world.files) >= 8
    for f in world.files:
        data = f.read_bytes()
        for name, c in _forbidden(world).items():
            assert c.encode() not in data, (name, f.name)
        assert world.totp_key not in data, f.name
    hook = world.files[world.files.index(world.tmp / "hook.jsonl")].read_text()
    assert '"monitor-alert"' in hook  # the hook did run: the check above saw its output
    assert b"compliance" in (world.tmp / "report.html").read_bytes().lower()


def test_alerts_are_scoped_to_the_acting_principal(world: World):
    """``custody alerts --as/--token-file``: an auditor sees every alert, a service's admin
    those about its services, a service-user its own; what one may not see is "no such
    alert" to them, and a service-user acknowledges nothing."""
    h = ("--home", str(world.home))
    pins = world.home.parent / "pins"
    everything = json.loads(world.run("alerts", *h, "--json").stdout)["alerts"]
    about = {a["principal"] for a in everything}
    assert "billing-svc" in about, about
    aud = world.tmp / "aud.token"
    seen = {
        who: {a["id"] for a in json.loads(world.run("alerts", *h, *how, "--json").stdout)["alerts"]}
        for who, how in (("aud", ("--token-file", str(aud))), ("alice", ("--as", "alice")),
                         ("svc", ("--as", "billing-svc")))
    }  # fmt: skip
    assert seen["aud"] == {a["id"] for a in everything}
    mine = {a["id"] for a in everything if a["principal"] == "billing-svc"}
    assert seen["svc"] == mine and mine <= seen["alice"]
    world.run("principal", "add", "ops-svc", "--role", "service-user", "--service-account",
              "--service", "ops", "--token-out", str(world.tmp / "ops.token"), *h,
              "--pin-file", str(pins))  # fmt: skip
    ops = json.loads(world.run("alerts", *h, "--as", "ops-svc", "--json").stdout)["alerts"]
    assert ops == []
    one = sorted(mine)[0]
    r = world.run("alerts", "show", one, *h, "--as", "ops-svc", ok=False)
    assert r.rc == 2 and "No alert matches" in r.stderr
    shown = json.loads(world.run("alerts", "show", one, *h, "--as", "billing-svc", "--json").stdout)
    assert shown["entries"] and all(e["actor"] == "billing-svc" for e in shown["entries"])
    r = world.run("alerts", "ack", one, *h, "--as", "billing-svc", ok=False)
    assert r.rc == 7 and "cannot acknowledge" in r.stderr


def test_a_revoked_principal_loses_its_enrolment_and_cannot_enrol(world: World):
    h = ("--home", str(world.home))
    hp = (*h, "--pin-file", str(world.home.parent / "pins"))
    before = {i["principal"] for i in world.both("mfa", "list", *h)}
    assert "bob" in before  # enrolled in the fixture (not yet confirmed)
    world.run("principal", "revoke", "bob", *hp)
    assert "bob" not in {i["principal"] for i in world.both("mfa", "list", *h)}
    r = world.run("mfa", "enrol", "bob", "--png", str(world.tmp / "bob-again.png"), *hp, ok=False)
    assert r.rc == 7 and "revoked" in r.stderr and not (world.tmp / "bob-again.png").exists()
    with AuditLog(world.home / "audit.db") as log:
        mine = [json.loads(x) for x in log.lines() if b'"target":"bob"' in x]
    assert [(e["op"], e["outcome"]) for e in mine[-6:]] == [
        ("principal revoke", "intent"),
        ("mfa reset", "intent"),
        ("mfa reset", "ok"),
        ("principal revoke", "ok"),
        ("mfa enrol", "intent"),
        ("mfa enrol", "denied"),
    ]
