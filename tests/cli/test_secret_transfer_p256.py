"""``custody secret export``/``import`` with ECDSA P-256 participants held on tokens (issue
13: a token without CKM_EDDSA gives its participants P-256 keys). SoftHSMv2 with
``--token-alg ecdsa-p256`` stands for such a token. SoftHSMv2 reads one config per
process, so each participant's token is a token of its home's own SoftHSMv2 (another slot,
its own PINs).

pat (P-256, on home A's SoftHSM) exports to tess (P-256, whose X25519 key is wrapped on
home B's SoftHSM); tess imports with pat pinned. The export names pat's algorithm in its
signed header. An export whose algorithm name is removed or changed, a pin that claims
another algorithm, and a flipped signature byte are each refused, and nothing is imported.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from custody.config import Home
from custody.hsm import softhsm
from tests.conftest import TEST_SO_PIN, cli_env, run_cli, write_secret
from tests.rekey_fixtures import cli, make_deployment

pytestmark = pytest.mark.hsm
VALUE = "P256-Transfer-Canary-3k!Vw8#Qa"
TPIN = "p256-transfer-pin-7731"


def _home_conf(home: Path) -> Path:
    conf = Home(home).load().hsm.softhsm_conf
    assert conf is not None
    return home / conf


def _participant(home: Path, people: Path, name: str, tmp: Path) -> dict[str, str]:
    """*name* with a P-256 key on a new token of *home*'s SoftHSM; the env that reaches it."""
    conf = _home_conf(home)
    softhsm.init_token(conf, f"{name}-token", TEST_SO_PIN, TPIN)
    env = cli_env(SOFTHSM2_CONF=str(conf))
    pin = write_secret(tmp / f"{name}.tokenpin", f"pin={TPIN}\n")
    r = run_cli("participant", "new", name, "--role", "super-admin", "--out", str(people),
                "--token-label", f"{name}-token", "--pin-file", str(pin), "--token-alg",
                "ecdsa-p256", "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["alg"] == "ecdsa-p256"
    write_secret(tmp / f"{name}.pass", TPIN + "\n")
    return env


def test_p256_token_participants_send_and_receive_secrets(tmp_path: Path):
    (ha, pa), (hb, pb) = (make_deployment(tmp_path / n) for n in ("a", "b"))
    for h, p in ((ha, pa), (hb, pb)):
        cli(h, p, "kek", "rotate", "--branch", "secrets")
    people = tmp_path / "people"
    people.mkdir()
    env_a = _participant(ha, people, "pat", tmp_path)
    env_b = _participant(hb, people, "tess", tmp_path)
    enc = people / "tess.enc.token.json"
    assert enc.exists(), sorted(p.name for p in people.iterdir())
    r = run_cli("secret", "put", "app/db/password", "--env", "prod", "--stdin", "--category",
                "database-credential", "--owner", "app", "--home", str(ha), "--pin-file",
                str(pa), input=VALUE)  # fmt: skip
    assert r.returncode == 0, r.stderr
    f = tmp_path / "bundle.json"
    r = run_cli("secret", "export", "app/db/password", "--env", "prod", "--to",
                str(people / "tess.pub.json"), "--key", str(people / "pat.token.json"),
                "--passphrase-file", str(tmp_path / "pat.pass"), "--out", str(f),
                "--home", str(ha), "--pin-file", str(pa), "--json", env=env_a)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert VALUE.encode() not in f.read_bytes()
    doc = json.loads(f.read_text())
    assert doc["header"]["sender_alg"] == "ecdsa-p256"
    assert len(bytes.fromhex(doc["header"]["sender"])) == 65

    def imp(bundle: Path, trust: Path):
        return run_cli("secret", "import", str(bundle), "--key", str(enc), "--passphrase-file",
                       str(tmp_path / "tess.pass"), "--trust", str(trust), "--home", str(hb),
                       "--pin-file", str(pb), "--json", env=env_b)  # fmt: skip

    def edited(name: str, change) -> Path:
        d = json.loads(f.read_text())
        change(d)
        p = tmp_path / name
        p.write_text(json.dumps(d))
        return p

    def flip(d) -> None:
        sig = bytearray(bytes.fromhex(d["signature"]))
        sig[7] ^= 1
        d["signature"] = sig.hex()

    def flip_ct(d) -> None:
        ct = bytearray(base64.urlsafe_b64decode(d["ciphertext"] + "=="))
        ct[3] ^= 1
        d["ciphertext"] = base64.urlsafe_b64encode(bytes(ct)).decode().rstrip("=")

    pat = people / "pat.pub.json"
    for name, change, why in (
        ("no-alg.json", lambda d: d["header"].pop("sender_alg"), "algorithm"),
        ("as-ed25519.json", lambda d: d["header"].update(sender_alg="ed25519"), "algorithm"),
        ("p384.json", lambda d: d["header"].update(sender_alg="ecdsa-p384"), "algorithm"),
        ("flipped.json", flip, "signature"),
        ("changed-ct.json", flip_ct, "signature"),
    ):
        r = imp(edited(name, change), pat)
        assert r.returncode == 6 and why in r.stderr, (name, r.stdout, r.stderr)
    claim = json.loads(pat.read_text())
    claim["alg"] = "ed25519"
    fake = tmp_path / "pat-claims-ed25519.pub.json"
    fake.write_text(json.dumps(claim))
    r = imp(f, fake)
    assert r.returncode != 0 and VALUE not in r.stdout, (r.stdout, r.stderr)
    got = run_cli("secret", "get", "app/db/password", "--env", "prod", "--home", str(hb),
                  "--pin-file", str(pb))  # fmt: skip
    assert got.returncode != 0 and VALUE not in got.stdout  # nothing was imported

    r = imp(f, pat)
    assert r.returncode == 0, r.stdout + r.stderr
    got = run_cli("secret", "get", "app/db/password", "--env", "prod", "--home", str(hb),
                  "--pin-file", str(pb))  # fmt: skip
    assert got.returncode == 0 and got.stdout == VALUE
    for h in (ha, hb):
        for db in ("custody.db", "audit.db"):
            assert VALUE.encode() not in (h / db).read_bytes()
