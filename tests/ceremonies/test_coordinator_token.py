"""A coordinator whose signing key is on a PKCS#11 token runs rotate-root, recover (into a
fresh token) and drill (issue 13), all through the CLI as a subprocess.

* SoftHSMv2 (an Ed25519 token key): the coordinator's token is made in the deployment's own
  SoftHSMv2 config and the commands run with ``SOFTHSM2_CONF`` set to that config (one
  SoftHSMv2 config per process; docs/ceremonies.md, "A key on the participant's own PKCS#11
  token").
* NSS softokn through p11-kit (an ECDSA P-256 token key, NSS has no CKM_EDDSA): the
  deployment's token and the coordinator's token are two NSS tokens behind the one proxy,
  and recovery goes into a third, fresh NSS token.

Every transcript verifies offline with ``custody transcript verify`` against the pinned
``*.pub.json`` files; with two super-admins enrolled, the other one endorses the policy.
Attacks: a coordinator whose token key is not its roster entry's (another token's key under
the same name, or a P-256 key where the roster holds an Ed25519 one) is refused with nothing
recorded, a transcript signed by such a key does not verify against the pins, and one
flipped signature byte fails verify.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.ceremony_fixtures import (
    Dep,
    approval_args,
    copy_dep,
    enrol_with_quorum,
    generated_copy,
    lose_token,
    sign_approvals,
)
from tests.conftest import TEST_SO_PIN, cli_env, run_cli, write_secret

pytestmark = pytest.mark.hsm

SPIN = "sam-token-pin-4417"  # sam's token user PIN (a test value)


def _conf_env(d: Dep) -> dict[str, str]:
    """The env of commands that open both the deployment's token and sam's: the deployment's
    own SoftHSMv2 config, by the absolute path custody resolves it to."""
    return cli_env(SOFTHSM2_CONF=str((d.root / "softhsm2.conf").resolve()))


def _token_participant(
    d: Dep, env: dict[str, str], name: str, label: str, *extra: str, role: str = "super-admin"
) -> Any:
    pin = d.root / f"{name}.tokenpin"
    write_secret(pin, f"pin={SPIN}\n")
    r = run_cli(
        "participant", "new", name, "--role", role, "--out", str(d.people),
        "--token-label", label, "--pin-file", str(pin), "--json", *extra, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def _tcoord(d: Dep, name: str = "sam", *, ref: Path | None = None) -> list[str]:
    """Coordinator args for a token-held super-admin: --key NAME.token.json, and the token
    PIN from --passphrase-file; the deployment's PIN as usual."""
    pw = d.root / f"{name}.pass"
    write_secret(pw, SPIN + "\n")
    key = ref or d.people / f"{name}.token.json"
    a = ["--home", str(d.root), "--key", str(key), "--passphrase-file", str(pw), "--json"]
    return [*a, "--pin-file", str(d.pin)]


def _events(bundle: str | Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (Path(bundle) / "events.jsonl").read_text().splitlines()]


def _endorse(d: Dep, bundle: str | Path) -> None:
    """admin, the other super-admin, endorses the policy sam signed (2 of 2 super-admins)."""
    r = run_cli(
        "transcript", "endorse", str(bundle), "--key", str(d.people / "admin.key.pem"),
        "--passphrase-file", str(d.people / "admin.pass"),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def _verify(d: Dep, bundle: str | Path, *trust: str) -> Any:
    return run_cli("transcript", "verify", str(bundle), *(trust or d.trust()))


def _signed_by(bundle: str | Path, name: str, alg: str) -> None:
    """Every event of *bundle* is signed by *name* alone, with a signature of *alg*'s size."""
    size = {"ed25519": 128, "ecdsa-p256": 128}[alg]  # hex: 64 bytes either way
    evs = _events(bundle)
    assert evs and all(
        [s["signer"] for s in e["signatures"]] == [name] and len(e["signatures"][0]["sig"]) == size
        for e in evs
    ), [e["signatures"] for e in evs]
    pol = json.loads((Path(bundle) / "policy.json").read_text())
    entry = next(e for e in pol["payload"]["roster"] if e["name"] == name)
    assert entry.get("alg", "ed25519") == alg


def _flip(bundle: str | Path, dst: Path, line: int = 1) -> Path:
    """A copy of *bundle* with one byte of the first signature of event *line* flipped."""
    shutil.copytree(bundle, dst)
    lines = (dst / "events.jsonl").read_text().splitlines()
    ev = json.loads(lines[line])
    sig = ev["signatures"][0]["sig"]
    ev["signatures"][0]["sig"] = sig[:-2] + format(int(sig[-2:], 16) ^ 1, "02x")
    lines[line] = json.dumps(ev, separators=(",", ":"), sort_keys=True)
    (dst / "events.jsonl").write_text("\n".join(lines) + "\n")
    return dst


# ------------------------------------------------------------------ SoftHSMv2 (Ed25519)
@pytest.fixture(scope="module")
def sam_template(generated_master: Dep, tmp_path_factory) -> Dep:
    """The generated deployment plus sam, a super-admin whose Ed25519 key is on his own
    token in the deployment's SoftHSMv2 config, enrolled (a custodian majority approves)."""
    from custody.hsm import softhsm

    d = generated_copy(generated_master, tmp_path_factory.mktemp("coord-tpl") / "home")
    softhsm.init_token(d.root / softhsm.CONF_NAME, "sam-token", TEST_SO_PIN, SPIN)
    out = _token_participant(d, _conf_env(d), "sam", "sam-token")
    assert out["alg"] == "ed25519", out
    assert not (d.people / "sam.key.pem").exists()
    enrol_with_quorum(d, "--add", str(d.people / "sam.pub.json"))
    return d


@pytest.fixture
def sdep(sam_template: Dep, tmp_path: Path) -> Dep:
    return copy_dep(sam_template, tmp_path / "home")


def _rotate_root(d: Dep, coord: list[str], env: dict[str, str]) -> Any:
    req = d.root / "req.json"
    r = d.ceremony("rotate-root", *coord, "--request-out", str(req), env=env)
    assert r.returncode == 10 and r.out["awaiting"] == "approvals", r.stdout + r.stderr
    cid = r.out["ceremony_id"]
    files = sign_approvals(d, cid)
    r = d.ceremony("resume", cid, *coord, *approval_args(files), env=env)
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    return r


def test_a_token_held_coordinator_rotates_the_root_and_the_transcript_verifies(sdep: Dep):
    env = _conf_env(sdep)
    r = _rotate_root(sdep, _tcoord(sdep), env)
    assert r.out["facts"]["approved_by"] == ["alice", "bob", "carol"]
    assert sdep.roots() == [(1, "decrypt-only"), (2, "active")]
    sdep.deks_ok()
    bundle = r.out["bundle"]
    _signed_by(bundle, "sam", "ed25519")
    v = _verify(sdep, bundle)
    assert v.returncode == 6 and "1/2 needed" in v.stdout, v.stdout + v.stderr
    _endorse(sdep, bundle)
    v = _verify(sdep, bundle)
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr
    assert SPIN not in (Path(bundle) / "events.jsonl").read_text() + r.stdout + r.stderr
    bad = _flip(bundle, sdep.root / "flipped")
    v = _verify(sdep, bad)
    assert v.returncode == 6 and "bad signature by sam" in v.stdout, v.stdout + v.stderr


def test_a_token_held_coordinator_recovers_into_a_fresh_token(sdep: Dep):
    env = _conf_env(sdep)
    lose_token(sdep)  # the deployment's token is replaced by an empty one; sam's stays
    r = sdep.ceremony("recover", *_tcoord(sdep), *sdep.shares("alice", "carol", "erin"), env=env)
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    assert r.out["facts"]["imported"] == [1]
    sdep.deks_ok()
    bundle = r.out["bundle"]
    _signed_by(bundle, "sam", "ed25519")
    _endorse(sdep, bundle)
    v = _verify(sdep, bundle)
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr
    bad = _flip(bundle, sdep.root / "flipped", line=-1)
    v = _verify(sdep, bad)
    assert v.returncode == 6 and "bad signature by sam" in v.stdout, v.stdout + v.stderr


def test_a_token_held_coordinator_runs_a_drill_that_rebuilds_the_root(sdep: Dep):
    env = _conf_env(sdep)
    r = sdep.ceremony("drill", *_tcoord(sdep), *sdep.shares("alice"), env=env)
    assert r.returncode == 10, r.stdout + r.stderr  # waiting for more custodians (3 of 5)
    r = sdep.ceremony(
        "resume", r.out["ceremony_id"], *_tcoord(sdep), *sdep.shares("carol", "dave"), env=env
    )
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    f = r.out["facts"]
    assert f["kcv_match"] is True and f["scratch_root_kcv"] == f["root_kcv"], f
    bundle = r.out["bundle"]
    _signed_by(bundle, "sam", "ed25519")
    _endorse(sdep, bundle)
    v = _verify(sdep, bundle)
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr
    bad = _flip(bundle, sdep.root / "flipped", line=2)
    v = _verify(sdep, bad)
    assert v.returncode == 6 and "bad signature by sam" in v.stdout, v.stdout + v.stderr


def test_a_renamed_token_reference_signs_as_its_roster_name(sdep: Dep):
    """The roster entry the key matched names the signer, not the reference's file name
    (as for a renamed NAME.key.pem): sam's reference kept as sam-laptop.token.json still
    opens, signs and resumes a rotate-root as sam, and the transcript verifies."""
    env = _conf_env(sdep)
    ref = sdep.root / "keys" / "sam-laptop.token.json"
    ref.parent.mkdir()
    shutil.copy(sdep.people / "sam.token.json", ref)
    r = _rotate_root(sdep, _tcoord(sdep, ref=ref), env)
    bundle = r.out["bundle"]
    _signed_by(bundle, "sam", "ed25519")
    _endorse(sdep, bundle)
    v = _verify(sdep, bundle)
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr


# ------------------------------------------------------- NSS softokn (ECDSA P-256)
def _nss_cli(d: Dep, *args: str) -> None:
    r = run_cli(*args, "--home", str(d.root), "--pin-file", str(d.pin), "--json")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("other-tokens")
def test_a_p256_coordinator_on_nss_softokn_rotates_drills_and_recovers(tmp_path):
    """The deployment on one NSS token, tess's P-256 key on another (both behind the p11-kit
    proxy), a third, empty NSS token to recover into. admin generates; tess, enrolled after
    it, coordinates rotate-root, a drill that rebuilds the root, a reshare (her token signs
    the envelopes) and the recovery with the shares she dealt."""
    from dataclasses import replace

    from custody.config import Home
    from tests.ceremony_fixtures import CUST, create_people
    from tests.conftest import TEST_PIN
    from tests.token_fixtures import P11KIT_PROXY, nss_token, token_objects

    with (
        nss_token(tmp_path / "nss-dep", TEST_PIN) as label,
        nss_token(tmp_path / "nss-tess", SPIN) as tess_label,
        nss_token(tmp_path / "nss-fresh", TEST_PIN) as fresh,
    ):
        root = tmp_path / "home"
        root.mkdir()
        d = Dep(root)
        write_secret(d.pin, f"pin={TEST_PIN}\n")
        r = run_cli(
            "init", "--home", str(root), "--module", P11KIT_PROXY, "--token-label", label,
            "--pin-file", str(d.pin),
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        create_people(d.people)
        env = cli_env()
        out = _token_participant(d, env, "tess", tess_label, "--token-module", P11KIT_PROXY)
        assert out["alg"] == "ecdsa-p256", out  # NSS softokn has no CKM_EDDSA
        adds = [
            a
            for n in ("admin", *CUST, "audrey", "wendy")
            for a in ("--add", str(d.people / f"{n}.pub.json"))
        ]
        r = d.ceremony("enrol", *d.coord(pin=False), *adds)
        assert r.returncode == 0, r.stdout + r.stderr
        cust = [a for n in CUST for a in ("--custodian", n)]
        r = d.ceremony(
            "generate", *d.coord(), *cust, "--threshold", "3", "--out", str(root / "shares")
        )
        assert r.returncode == 10, r.stdout + r.stderr
        r = d.ceremony(
            "resume", r.out["ceremony_id"], *d.coord(), *d.shares("alice", "bob", "carol")
        )
        assert r.returncode == 0, r.stdout + r.stderr
        for b in ("data", "backup", "secrets"):
            _nss_cli(d, "kek", "rotate", "--branch", b)
        _nss_cli(d, "dek", "generate", "--count", "50")
        enrol_with_quorum(d, "--add", str(d.people / "tess.pub.json"))
        bundles: list[str] = []

        # rotate-root: tess's token signs every event, the new root is sealed in the NSS token
        r = _rotate_root(d, _tcoord(d, "tess"), env)
        assert d.roots() == [(1, "decrypt-only"), (2, "active")]
        d.deks_ok()
        bundles.append(r.out["bundle"])

        # the drill rebuilds root/v2 in a session object of the deployment's NSS token
        r = d.ceremony("drill", *_tcoord(d, "tess"), *d.shares("bob", "dave", "erin"), env=env)
        assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
        f = r.out["facts"]
        assert f["scratch"] == "session" and f["kcv_match"] is True, f
        assert f["scratch_root_kcv"] == f["root_kcv"]
        bundles.append(r.out["bundle"])

        # tess reshares: her NSS token signs every envelope (P-256), checked under her pin
        r = d.ceremony(
            "reshare", *_tcoord(d, "tess"), *cust, "--threshold", "3",
            "--out", str(root / "new"), *d.shares("alice", "bob", "carol"), env=env,
        )  # fmt: skip
        assert r.returncode == 10, r.stdout + r.stderr
        r = d.ceremony(
            "resume", r.out["ceremony_id"], *_tcoord(d, "tess"),
            *d.shares("alice", "bob", "carol", d="new"), env=env,
        )  # fmt: skip
        assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
        assert r.out["facts"]["dealer_alg"] == "ecdsa-p256", r.out["facts"]
        bundles.append(r.out["bundle"])
        ok = _share_verify(d, "erin", d.people / "tess.pub.json", sub="new")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        active = [v for v, st in d.roots() if st == "active"]

        # the deployment's token is lost: tess recovers the active root into the fresh NSS
        # token, with the shares her token dealt
        home = Home(root)
        cfg = home.load()
        home.write_config(replace(cfg, hsm=replace(cfg.hsm, token_label=fresh)))
        assert token_objects(P11KIT_PROXY, fresh, TEST_PIN) == []
        r = d.ceremony(
            "recover", *_tcoord(d, "tess"), *d.shares("alice", "carol", "erin", d="new"),
            env=env,
        )  # fmt: skip
        assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
        assert r.out["facts"]["imported"] == active, (active, r.out["facts"])
        assert f"root/v{active[0]}" in token_objects(P11KIT_PROXY, fresh, TEST_PIN)
        d.deks_ok()
        bundles.append(r.out["bundle"])

    # offline: the NSS tokens are gone; the pins and cryptography are enough
    for b in bundles:
        _signed_by(b, "tess", "ecdsa-p256")
        v = _verify(d, b)
        assert v.returncode == 6 and "1/2 needed" in v.stdout, v.stdout + v.stderr
        _endorse(d, b)
        v = _verify(d, b)
        assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr
        assert SPIN not in (Path(b) / "events.jsonl").read_text()
        v = _verify(d, _flip(b, tmp_path / f"flipped-{Path(b).name}"))
        assert v.returncode == 6 and "bad signature by tess" in v.stdout, v.stdout + v.stderr


# --------------------------------------------------------------------------- attacks
def _nothing_recorded(d: Dep, before: list[str]) -> None:
    """No open ceremony, no new bundle, the root unchanged."""
    lst = json.loads(run_cli("ceremony", "list", "--home", str(d.root), "--json").stdout)
    assert [c for c in lst if c["state"] == "open"] == [], lst
    assert sorted(p.name for p in (d.root / "transcripts").iterdir()) == before
    assert d.roots() == [(1, "active")]


def _bundles(d: Dep) -> list[str]:
    return sorted(p.name for p in (d.root / "transcripts").iterdir())


def _other_token(d: Dep, label: str, *extra: str) -> Path:
    """Another token in the deployment's config, holding a key labelled participant/sam
    (made by 'participant new sam' into its own directory). Returns its sam.token.json."""
    from custody.hsm import softhsm

    softhsm.init_token(d.root / softhsm.CONF_NAME, label, TEST_SO_PIN, SPIN)
    other = Dep(d.root)
    other.people = d.root / label
    _token_participant(other, _conf_env(d), "sam", label, *extra)
    return other.people / "sam.token.json"


def _set_roster_key(d: Dep, name: str, pub_json: Path, alg: str) -> None:
    """The operator with the disk rewrites *name*'s roster row in the store: the key of
    *pub_json*, recorded as *alg*."""
    import sqlite3

    from custody.signing import fingerprint

    public = bytes.fromhex(json.loads(pub_json.read_text())["public"])
    c = sqlite3.connect(d.root / "custody.db")
    try:
        with c:
            n = c.execute(
                "UPDATE participants SET public=?, fingerprint=?, alg=? WHERE name=?",
                (public, fingerprint(public), alg, name),
            ).rowcount
    finally:
        c.close()
    assert n == 1


def test_a_coordinator_holding_another_tokens_key_is_refused_with_nothing_recorded(sdep: Dep):
    """Another token's key under sam's name, a reference that points sam's public key at
    that token, and that token on a ceremony sam opened: each refused before anything is
    recorded. Where the disk insider rewrites sam's roster row to that key, the ceremony
    runs, but its transcript does not verify against the auditor's pin of sam."""
    env = _conf_env(sdep)
    evil = _other_token(sdep, "evil-token")
    req = str(sdep.root / "req.json")
    before = _bundles(sdep)
    # (1) the other token's own reference: its key is nobody's on the roster
    r = sdep.ceremony("rotate-root", *_tcoord(sdep, ref=evil), "--request-out", req, env=env)
    assert r.returncode == 7, r.stdout + r.stderr
    assert "The coordinator must be an enrolled super-admin" in r.stderr
    _nothing_recorded(sdep, before)
    # (2) sam's reference (sam's public key), edited to name the other token
    forged = sdep.root / "forged" / "sam.token.json"
    forged.parent.mkdir()
    ref = json.loads((sdep.people / "sam.token.json").read_text())
    forged.write_text(json.dumps(dict(ref, token_label="evil-token")))
    r = sdep.ceremony("rotate-root", *_tcoord(sdep, ref=forged), "--request-out", req, env=env)
    assert r.returncode == 6 and "IntegrityError" in r.stdout, r.stdout + r.stderr
    assert "is not the one" in r.stderr
    _nothing_recorded(sdep, before)
    # (3) sam opens a rotate-root; the other token cannot carry it on
    r = sdep.ceremony("rotate-root", *_tcoord(sdep), "--request-out", req, env=env)
    assert r.returncode == 10, r.stdout + r.stderr
    cid, bundle = r.out["ceremony_id"], Path(r.out["bundle"])
    events = (bundle / "events.jsonl").read_bytes()
    files = approval_args(sign_approvals(sdep, cid))
    for key in (evil, forged):
        r = sdep.ceremony("resume", cid, *_tcoord(sdep, ref=key), *files, env=env)
        assert r.returncode in (6, 7), r.stdout + r.stderr
        assert (bundle / "events.jsonl").read_bytes() == events
    assert sdep.roots() == [(1, "active")]
    r = sdep.ceremony("abort", cid, *_tcoord(sdep), env=env)
    assert r.returncode in (0, 8), r.stdout + r.stderr
    # (4) the store's roster row for sam rewritten to the other token's key: the runner
    # trusts its store, but the transcript names a key the auditor never pinned for sam
    _set_roster_key(sdep, "sam", evil.with_name("sam.pub.json"), "ed25519")
    r = _rotate_root(sdep, _tcoord(sdep, ref=evil), env)
    bundle = Path(r.out["bundle"])
    _signed_by(bundle, "sam", "ed25519")
    _endorse(sdep, bundle)
    v = _verify(sdep, bundle)
    assert v.returncode == 6 and "INVALID" in v.stdout, v.stdout + v.stderr
    assert "sam is pinned with key" in v.stdout and "bad signature" not in v.stdout, v.stdout


def test_a_p256_token_key_where_the_roster_holds_ed25519_is_refused(sdep: Dep):
    """sam's roster entry is Ed25519; a P-256 key under his label on a token is refused
    as his whatever the reference claims, a roster row that says Ed25519 over a P-256
    point is refused with a typed error (not a traceback) before anything is recorded,
    and a row relabelled to the P-256 key yields a transcript that does not verify
    against the auditor's Ed25519 pin of sam."""
    env = _conf_env(sdep)
    p256 = _other_token(sdep, "p256-token", "--token-alg", "ecdsa-p256")
    assert json.loads(p256.read_text())["alg"] == "ecdsa-p256"
    req = str(sdep.root / "req.json")
    before = _bundles(sdep)
    # (1) the P-256 key's own reference: not sam's roster key
    r = sdep.ceremony("rotate-root", *_tcoord(sdep, ref=p256), "--request-out", req, env=env)
    assert r.returncode == 7 and "must be an enrolled super-admin" in r.stderr, r.stderr
    _nothing_recorded(sdep, before)
    # (2) a reference claiming sam's Ed25519 key on the token that holds the P-256 one
    claim = sdep.root / "claim" / "sam.token.json"
    claim.parent.mkdir()
    ref = json.loads((sdep.people / "sam.token.json").read_text())
    claim.write_text(json.dumps(dict(ref, token_label="p256-token")))
    r = sdep.ceremony("rotate-root", *_tcoord(sdep, ref=claim), "--request-out", req, env=env)
    assert r.returncode == 6 and "is not the ed25519 key" in r.stderr, r.stdout + r.stderr
    _nothing_recorded(sdep, before)
    # (3) the store's row for sam: alg ed25519 over the P-256 point
    _set_roster_key(sdep, "sam", p256.with_name("sam.pub.json"), "ed25519")
    r = sdep.ceremony("rotate-root", *_tcoord(sdep, ref=p256), "--request-out", req, env=env)
    assert r.returncode == 6 and "IntegrityError" in r.stdout, r.stdout + r.stderr
    assert "roster entry for sam in the store does not hold an ed25519 key" in r.stderr
    assert "Traceback" not in r.stderr
    _nothing_recorded(sdep, before)
    # (4) the row relabelled to match the P-256 key: the ceremony runs on the store's word;
    # the auditor pinned sam's Ed25519 key, so the transcript does not verify
    _set_roster_key(sdep, "sam", p256.with_name("sam.pub.json"), "ecdsa-p256")
    r = _rotate_root(sdep, _tcoord(sdep, ref=p256), env)
    bundle = Path(r.out["bundle"])
    _signed_by(bundle, "sam", "ecdsa-p256")
    _endorse(sdep, bundle)
    v = _verify(sdep, bundle)
    assert v.returncode == 6 and "INVALID" in v.stdout, v.stdout + v.stderr
    assert "sam is pinned with key" in v.stdout, v.stdout


# ------------------------------------------------------- a token-held dealer (issue 13)
def _share_verify(d: Dep, name: str, trust: Path, *, sub: str = "shares") -> Any:
    return run_cli(
        "share", "verify", str(d.root / sub / f"{name}.share.txt"),
        "--envelope", str(d.root / sub / f"{name}.envelope.json"), "--trust", str(trust),
        "--json",
    )  # fmt: skip


def _remote_hand_in(
    d: Dep, cid: str, coord: list[str], env: dict[str, str], name: str, trust: Path, sub: str
) -> None:
    """The token-held coordinator makes an offer for *cid*; *name* checks it against the
    pinned *trust* and seals their share to it; the coordinator opens it, then confirms the
    SAS the custodian reads out."""
    o = d.ceremony("offer", cid, *coord, env=env)
    assert o.returncode == 0, o.stdout + o.stderr
    blob = d.root / f"{name}.blob"
    s = run_cli(
        "share", "send", str(d.root / sub / f"{name}.share.txt"),
        "--envelope", str(d.root / sub / f"{name}.envelope.json"), "--offer", o.out["offer"],
        "--trust", str(trust), "--session", cid, "--out", str(blob), "--json",
    )  # fmt: skip
    assert s.returncode == 0, s.stdout + s.stderr
    sas = json.loads(s.stdout)["sas"]
    r = d.ceremony("resume", cid, *coord, "--sealed-share", str(blob), env=env)
    assert r.returncode == 11, r.stdout + r.stderr
    r = d.ceremony("resume", cid, *coord, "--confirm-sas", f"{name}={sas}", env=env)
    assert r.returncode == 10, r.stdout + r.stderr
    (h,) = r.out["handins"]
    assert h["custodian"] == name and h["status"] in ("accepted", "held"), h  # counted


def test_a_token_held_coordinator_reshares_and_its_envelopes_verify(sdep: Dep):
    """sam's token signs every envelope of a reshare and its verification round; the new
    shares verify under sam's pinned key (not admin's), admin's drill accepts them (checked
    under the roster's algorithm for sam's key), and sam's own offer carries a remote
    hand-in in a drill."""
    env = _conf_env(sdep)
    sam = sdep.people / "sam.pub.json"
    cust = [a for n in ("alice", "bob", "carol", "dave", "erin") for a in ("--custodian", n)]
    r = sdep.ceremony(
        "reshare", *_tcoord(sdep), *cust, "--threshold", "3", "--out", str(sdep.root / "new"),
        *sdep.shares("alice", "bob", "carol"), env=env,
    )  # fmt: skip
    assert r.returncode == 10 and r.out["awaiting"] == "shares", r.stdout + r.stderr
    cid, bundle = r.out["ceremony_id"], r.out["bundle"]
    r = sdep.ceremony(
        "resume", cid, *_tcoord(sdep), *sdep.shares("alice", "bob", "carol", d="new"), env=env
    )
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    assert r.out["facts"]["dealer_public"] == json.loads(sam.read_text())["public"]
    assert "dealer_alg" not in r.out["facts"]  # Ed25519: the facts keep their old form
    sdep.deks_ok()
    _signed_by(bundle, "sam", "ed25519")
    _endorse(sdep, bundle)
    v = _verify(sdep, bundle)
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr
    ok = _share_verify(sdep, "dave", sam, sub="new")
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True, ok.stdout + ok.stderr
    bad = _share_verify(sdep, "dave", sdep.people / "admin.pub.json", sub="new")
    assert bad.returncode == 6 and "does not verify" in bad.stderr, bad.stdout + bad.stderr
    # admin (a key file) drills with sam's new shares
    r = sdep.ceremony("drill", *sdep.coord(), *sdep.shares("bob", "dave", "erin", d="new"))
    assert r.returncode == 0 and r.out["facts"]["kcv_match"] is True, r.stdout + r.stderr
    # sam drills with a remote hand-in through his own (token-signed) offer
    coord = _tcoord(sdep)
    r = sdep.ceremony("drill", *coord, *sdep.shares("alice", d="new"), env=env)
    assert r.returncode == 10, r.stdout + r.stderr
    cid = r.out["ceremony_id"]
    _remote_hand_in(sdep, cid, coord, env, "carol", sam, "new")
    r = sdep.ceremony("resume", cid, *coord, *sdep.shares("erin", d="new"), env=env)
    assert r.returncode == 0 and r.out["facts"]["kcv_match"] is True, r.stdout + r.stderr
    offer = next(e for e in _events(r.out["bundle"]) if e["kind"] == "offer.made")
    assert [s["signer"] for s in offer["signatures"]] == ["sam"]
    _endorse(sdep, r.out["bundle"])
    v = _verify(sdep, r.out["bundle"])
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr


def _p256_sig_ok(public_hex: str, sig: bytes, data: bytes) -> bool:
    """An independent check: raw r||s over SHA-256(data), with cryptography directly."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(public_hex))
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def test_a_p256_token_coordinator_generates_and_deals_envelopes_that_verify_as_p256_only(
    tmp_path,
):
    """pia's P-256 key is on a token (SoftHSMv2 with --token-alg ecdsa-p256, standing for a
    token without EdDSA). She generates: every envelope is her P-256 signature, checked
    independently with cryptography; the shares verify under her pinned key only (her point
    claimed as Ed25519 is refused, an Ed25519 key under her name fails); a flipped envelope
    byte is rejected by name in admin's drill; her own offer carries a remote hand-in."""
    from custody.hsm import softhsm
    from custody.shares.envelope import load_envelope
    from tests.ceremony_fixtures import CUST, create_people, init_home

    root = tmp_path / "home"
    d = Dep(root)
    init_home(root, d.pin)
    create_people(d.people)
    softhsm.init_token(root / softhsm.CONF_NAME, "pia-token", TEST_SO_PIN, SPIN)
    env = _conf_env(d)
    out = _token_participant(d, env, "pia", "pia-token", "--token-alg", "ecdsa-p256")
    assert out["alg"] == "ecdsa-p256", out
    pia = d.people / "pia.pub.json"
    pia_pub = json.loads(pia.read_text())["public"]
    adds = [
        a
        for n in ("admin", *CUST, "audrey", "wendy", "pia")
        for a in ("--add", str(d.people / f"{n}.pub.json"))
    ]
    r = d.ceremony("enrol", *d.coord(pin=False), *adds)
    assert r.returncode == 0, r.stdout + r.stderr
    coord = _tcoord(d, "pia")
    cust = [a for n in CUST for a in ("--custodian", n)]
    r = d.ceremony(
        "generate", *coord, *cust, "--threshold", "3", "--out", str(root / "shares"), env=env
    )
    assert r.returncode == 10 and r.out["awaiting"] == "shares", r.stdout + r.stderr
    cid, bundle = r.out["ceremony_id"], r.out["bundle"]
    r = d.ceremony("resume", cid, *coord, *d.shares("alice", "bob", "carol"), env=env)
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    f = r.out["facts"]
    assert f["dealer_public"] == pia_pub and f["dealer_alg"] == "ecdsa-p256", f
    _signed_by(bundle, "pia", "ecdsa-p256")
    _endorse(d, bundle)
    v = _verify(d, bundle)
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr
    for n in CUST:
        e = load_envelope((root / "shares" / f"{n}.envelope.json").read_bytes())
        assert _p256_sig_ok(pia_pub, e.signature, e.payload.signing_bytes()), n
        ok = _share_verify(d, n, pia)
        assert ok.returncode == 0, ok.stdout + ok.stderr
    # pin confusion: her point claimed as Ed25519 (refused as a pin), and an Ed25519 key
    # pinned under her name (the envelope does not verify under it)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pin = tmp_path / "pia-pin.json"
    pin.write_text(json.dumps({"name": "pia", "alg": "ed25519", "public": pia_pub}))
    v = _share_verify(d, "alice", pin)
    assert v.returncode == 3 and "ConfigError" in v.stdout, v.stdout + v.stderr
    ed = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    pin.write_text(json.dumps({"name": "pia", "alg": "ed25519", "public": ed}))
    v = _share_verify(d, "alice", pin)
    assert v.returncode == 6 and "does not verify" in v.stderr, v.stdout + v.stderr
    # a flipped byte in bob's envelope signature: share verify fails; admin's drill
    # rejects bob's share by name and counts the others
    bad = root / "bad"
    bad.mkdir()
    shutil.copy(root / "shares" / "bob.share.txt", bad / "bob.share.txt")
    doc = json.loads((root / "shares" / "bob.envelope.json").read_text())
    sig = doc["signatures"][0]["sig"]
    doc["signatures"][0]["sig"] = sig[:-2] + format(int(sig[-2:], 16) ^ 1, "02x")
    (bad / "bob.envelope.json").write_text(json.dumps(doc))
    v = _share_verify(d, "bob", pia, sub="bad")
    assert v.returncode == 6 and "does not verify" in v.stderr, v.stdout + v.stderr
    r = d.ceremony(
        "drill", *d.coord(), "--share", str(bad / "bob.share.txt"),
        *d.shares("alice", "carol", "dave"),
    )  # fmt: skip
    assert r.returncode == 0 and r.out["facts"]["kcv_match"] is True, r.stdout + r.stderr
    assert any("bob" in m and "rejected" in m for m in r.out["messages"]), r.out["messages"]
    assert r.out["facts"]["collect-shares.accepted"] == ["alice", "carol", "dave"]
    # pia's offer (P-256, through her token): carol checks it against her pin and sends
    r = d.ceremony("drill", *coord, *d.shares("alice"), env=env)
    assert r.returncode == 10, r.stdout + r.stderr
    dcid = r.out["ceremony_id"]
    o = d.ceremony("offer", dcid, *coord, env=env)
    assert o.returncode == 0, o.stdout + o.stderr
    s = run_cli(
        "share", "send", str(root / "shares" / "carol.share.txt"),
        "--envelope", str(root / "shares" / "carol.envelope.json"), "--offer", o.out["offer"],
        "--trust", str(pin), "--session", dcid, "--json",
    )  # fmt: skip
    assert s.returncode == 6 and "not signed by the trusted coordinator" in s.stderr, s.stderr
    _remote_hand_in(d, dcid, coord, env, "carol", pia, "shares")
    r = d.ceremony("resume", dcid, *coord, *d.shares("erin"), env=env)
    assert r.returncode == 0 and r.out["facts"]["kcv_match"] is True, r.stdout + r.stderr
    _endorse(d, r.out["bundle"])
    v = _verify(d, r.out["bundle"])
    assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr
    assert SPIN not in "".join(p.read_text() for p in (root / "shares").glob("*.json"))
