"""``custody demo``: the scripted end-to-end ceremony story, without a prompt.

Every ceremony runs as a real ``custody`` subprocess against the demo home's own
SoftHSMv2 token, exactly as an operator would type it (inputs as files). The demo's PIN
and passphrases are written under the home (``demo-pin``, ``people/*.pass``): this is a
demo only. At the end every transcript bundle is verified offline against the pinned
participant identity files.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from custody.errors import CeremonyError
from custody.hardening import child_env
from custody.privatefile import PUBLIC, private_dir, write_private

CUSTODIANS = ("alice", "bob", "carol", "dave", "erin")
NEW_CUSTODIANS = ("alice", "bob", "carol", "dave", "erin", "frank")


class Demo:
    def __init__(self, home: Path, as_json: bool) -> None:
        self.home, self.as_json = home, as_json
        self.people = home / "people"
        self.steps: list[dict[str, Any]] = []
        self.bundles: list[str] = []
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        if not self.as_json:
            print(f"[{time.monotonic() - self.t0:5.1f}s] {text}", flush=True)

    def cli(self, *args: str, ok: tuple[int, ...] = (0,)) -> dict[str, Any]:
        env = child_env(python=True)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        res = subprocess.run(
            [sys.executable, "-m", "custody_cli", *args, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode not in ok:
            sub = args[1] if len(args) > 1 else ""
            raise CeremonyError(
                f"demo step failed: custody {args[0]} {sub} exited {res.returncode}",
                res.stderr.strip()[-400:],
            )
        try:
            return json.loads(res.stdout) if res.stdout.strip() else {}
        except ValueError:
            return {"raw": res.stdout}

    def step(self, name: str, detail: str, **facts: Any) -> None:
        self.steps.append({"step": name, "detail": detail, **facts})
        self.say(f"{name}: {detail}")

    def coord(self) -> list[str]:
        return [
            "--home",
            str(self.home),
            "--pin-file",
            str(self.home / "demo-pin"),
            "--key",
            str(self.people / "root-admin.key.pem"),
            "--passphrase-file",
            str(self.people / "root-admin.pass"),
        ]

    def open_shares(self, d: Path, names: tuple[str, ...] | list[str]) -> None:
        """Each custodian opens the share sealed to them (on their own machine, in real
        life) into ``NAME.share.txt``: generate and reshare never wrote the words."""
        for n in names:
            self.cli(
                "share", "open", str(d / f"{n}.share.sealed"),
                "--envelope", str(d / f"{n}.envelope.json"),
                "--key", str(self.people / f"{n}.enc.pem"),
                "--passphrase-file", str(self.people / f"{n}.pass"),
                "--out", str(d / f"{n}.share.txt"), "--json",
            )  # fmt: skip

    def shares(self, d: Path, names: tuple[str, ...] | list[str]) -> list[str]:
        out = []
        for n in names:
            out += ["--share", str(d / f"{n}.share.txt")]
        return out

    def ceremony(self, *args: str) -> dict[str, Any]:
        res = self.cli("ceremony", *args, ok=(0, 10))
        if res.get("bundle") and res["bundle"] not in self.bundles:
            self.bundles.append(res["bundle"])
        return res

    def approve(self, req: Path, names: tuple[str, ...], *, cli: bool = True) -> list[str]:
        """Each of *names* signs the approval request *req* with their own key: with
        ``custody ceremony approve`` (*cli*), or in this process (the same signature, one
        subprocess less each, to keep the story short)."""
        from ceremonies.participants import load_signer
        from ceremonies.transcript.records import Approval

        out: list[str] = []
        for n in names:
            f = self.home / f"approval-{req.stem}-{n}.json"
            key, pw = self.people / f"{n}.key.pem", self.people / f"{n}.pass"
            if cli:
                self.cli(
                    "ceremony", "approve", str(req), "--key", str(key),
                    "--passphrase-file", str(pw), "--out", str(f),
                )  # fmt: skip
            else:
                rq = json.loads(req.read_text())
                a = Approval.create(
                    load_signer(key, pw.read_text().strip()),
                    ceremony_id=rq["ceremony_id"],
                    action=rq["action"],
                    action_id=rq["action_id"],
                    digest=rq["action_digest"],
                    now=int(time.time()),
                    window=int(rq["window"]),
                )
                f.write_text(json.dumps(a.to_json(), sort_keys=True) + "\n")
            out += ["--approval", str(f)]
        return out


def run_demo(*, home: str | None, as_json: bool) -> int:
    """Run the story; print progress (or one JSON object). Returns the exit code.

    Raises:
        ConfigError: the home exists already. CeremonyError: a step failed.
    """
    from ceremonies.participants import create_participant
    from ceremonies.transcript import parse_trust_key, verify_bundle
    from custody.errors import ConfigError
    from custody.hsm import softhsm

    root = Path(home or f"custody-demo-{secrets.token_hex(3)}").resolve()
    if (root / "custody.toml").exists():
        raise ConfigError(f"{root} already holds a deployment", "Give a new --home for the demo.")
    d = Demo(root, as_json)
    private_dir(root)
    pin, so = secrets.token_hex(8), secrets.token_hex(8)
    pinf = write_private(root / "demo-pin", f"pin={pin}\nso_pin={so}\n".encode())
    d.cli("init", "--home", str(root), "--pin-file", str(pinf))
    d.step("init", f"deployment at {root} with its own SoftHSMv2 token")

    # 1. participants
    private_dir(d.people)
    roles = (
        [("root-admin", "super-admin")]
        + [(n, "custodian") for n in NEW_CUSTODIANS]
        + [("audrey", "auditor"), ("walter", "witness")]
    )
    trust = []
    for name, role in roles:
        pw = secrets.token_hex(12)
        write_private(d.people / f"{name}.pass", (pw + "\n").encode())
        create_participant(name, role, pw, d.people)
        trust.append(str(d.people / f"{name}.pub.json"))
    enrol = [
        a for n, _ in roles if n != "frank" for a in ("--add", str(d.people / f"{n}.pub.json"))
    ]
    coord_nopin = [a for a in d.coord() if a not in ("--pin-file", str(pinf))]
    d.ceremony("enrol", *coord_nopin, *enrol)
    d.step("enrol", "5 custodians, 1 super-admin, 1 auditor and 1 witness enrolled")

    # 2. generate 3-of-5 with verification round
    gen_out = root / "shares-epoch0"
    cust = [a for n in CUSTODIANS for a in ("--custodian", n)]
    res = d.ceremony(
        "generate", *d.coord(), *cust, "--threshold", "3", "--out", str(gen_out),
        "--seal-to", str(d.people),
    )  # fmt: skip
    cid = res["ceremony_id"]
    d.open_shares(gen_out, CUSTODIANS)
    res = d.ceremony("resume", cid, *d.coord(), *d.shares(gen_out, ("alice", "carol", "erin")))
    d.step(
        "generate",
        f"root/v{res['facts']['root_version']} in the HSM, RK split 3-of-5; "
        f"verification round by {', '.join(res['facts']['verified_by'])}",
        ceremony=cid,
    )

    # 3. KEKs and DEKs
    for b in ("data", "backup", "secrets"):
        d.cli("kek", "rotate", "--branch", b, "--home", str(root), "--pin-file", str(pinf))
    d.cli(
        "dek",
        "generate",
        "--branch",
        "data",
        "--count",
        "1000",
        "--home",
        str(root),
        "--pin-file",
        str(pinf),
    )
    d.step("keys", "KEKs data/backup/secrets v1 and 1,000 wrapped DEKs")

    # 4. lose the HSM
    conf = root / softhsm.CONF_NAME
    softhsm.delete_token(conf, "custody")
    softhsm.init_token(conf, "custody", so, pin)
    d.step("lost-hsm", "token destroyed; a new empty token provisioned")

    # 5. recover with a tampered share
    tampered = root / "tampered"
    private_dir(tampered)
    words = (gen_out / "bob.share.txt").read_text().split()
    alt = (gen_out / "dave.share.txt").read_text().split()
    words[5] = alt[5] if alt[5] != words[5] else (gen_out / "erin.share.txt").read_text().split()[5]
    write_private(tampered / "bob.share.txt", (" ".join(words) + "\n").encode())
    env = (gen_out / "bob.envelope.json").read_bytes()
    write_private(tampered / "bob.envelope.json", env, mode=PUBLIC)
    res = d.ceremony(
        "recover",
        *d.coord(),
        "--share",
        str(gen_out / "alice.share.txt"),
        "--share",
        str(tampered / "bob.share.txt"),
        "--share",
        str(gen_out / "carol.share.txt"),
        "--share",
        str(gen_out / "dave.share.txt"),
    )
    rejected = [m for m in res.get("messages", []) if "rejected" in m]
    d.step(
        "recover",
        f"root restored into the new token; {'; '.join(rejected)}; "
        f"accepted {', '.join(res['facts']['collect-shares.accepted'])}",
        ceremony=res["ceremony_id"],
    )
    v = d.cli("dek", "verify", "--all", "--home", str(root), "--pin-file", str(pinf))
    d.step(
        "deks",
        f"all DEKs decrypt: {v.get('checked', v)} checked, {len(v.get('failed', []))} failed",
    )

    # 6. rotate-root with approvals
    req = root / "rotate-request.json"
    res = d.ceremony("rotate-root", *d.coord(), "--request-out", str(req))
    rid = res["ceremony_id"]
    appr = d.approve(req, ("alice", "bob", "dave"))
    res = d.ceremony("resume", rid, *d.coord(), *appr)
    d.step(
        "rotate-root",
        f"root/v{res['facts']['root_version']} active after approvals by "
        f"{', '.join(res['facts']['approved_by'])}; {res['facts']['rewrapped']} KEKs rewrapped",
        ceremony=rid,
    )

    # 7. reshare 3-of-5 -> 2-of-3 groups (frank joins)
    # after the bootstrap, the single super-admin needs a majority of the custodians
    ereq = root / "enrol-request.json"
    res = d.ceremony(
        "enrol", *coord_nopin, "--add", str(d.people / "frank.pub.json"), "--request-out", str(ereq)
    )
    res = d.ceremony(
        "resume",
        res["ceremony_id"],
        *coord_nopin,
        *d.approve(ereq, ("alice", "carol", "erin"), cli=False),
    )
    d.step(
        "enrol",
        f"frank enrolled, approved by {', '.join(res['facts']['approved_by'])}",
        ceremony=res["ceremony_id"],
    )
    new_out = root / "shares-epoch1"
    cust = [a for n in NEW_CUSTODIANS for a in ("--custodian", n)]
    res = d.ceremony(
        "reshare",
        *d.coord(),
        *cust,
        "--group",
        "2/2",
        "--group",
        "2/2",
        "--group",
        "2/2",
        "--group-threshold",
        "2",
        "--out",
        str(new_out),
        "--seal-to",
        str(d.people),
        *d.shares(gen_out, ("bob", "carol", "erin")),
    )
    sid = res["ceremony_id"]
    d.open_shares(new_out, NEW_CUSTODIANS)
    res = d.ceremony(
        "resume", sid, *d.coord(), *d.shares(new_out, ("alice", "bob", "erin", "frank"))
    )
    d.step(
        "reshare",
        f"epoch {res['facts']['epoch']}: 2 of 3 groups (2/2 each); new root/v"
        f"{res['facts']['root_version']}; old epoch {res['facts']['old_epoch']} retired",
        ceremony=sid,
    )

    # 8. drill
    coord_drill = [a for a in d.coord() if a not in ("--pin-file", str(pinf))]
    res = d.ceremony("drill", *coord_drill, *d.shares(new_out, ("carol", "dave", "alice", "bob")))
    d.step(
        "drill",
        f"scratch token KCV match; passed: {', '.join(res['facts']['passed'])}"
        + (f"; {res['facts']['warning']}" if res["facts"].get("warning") else ""),
        ceremony=res["ceremony_id"],
    )

    # 9. emergency rotation
    xreq = root / "emergency-request.json"
    res = d.ceremony(
        "emergency-rotate",
        *d.coord(),
        "--reason",
        "demo: suspected compromise",
        "--request-out",
        str(xreq),
    )
    # a second person: walter, the witness, approves the emergency rotation
    res = d.ceremony(
        "resume", res["ceremony_id"], *d.coord(), *d.approve(xreq, ("walter",), cli=False)
    )
    d.step(
        "emergency-rotate",
        f"root/v{res['facts']['root_version']} active; "
        f"{res['facts']['kek_count']} KEKs, {res['facts']['wrapped_objects']} objects, "
        f"{res['facts']['secrets']} secrets under the compromised roots; report "
        f"{res['facts']['report']}",
        ceremony=res["ceremony_id"],
    )
    v = d.cli("dek", "verify", "--all", "--home", str(root), "--pin-file", str(pinf))
    d.step("deks", f"all DEKs still decrypt: {v.get('checked', v)} checked")

    # 10. verify every transcript with pinned keys
    keys = [parse_trust_key(Path(t).read_bytes()) for t in trust]
    for b in d.bundles:
        rep = verify_bundle(b, keys)
        if not rep.ok:
            raise CeremonyError(
                f"transcript {b} did not verify: {', '.join(rep.failed)}",
                "Run 'custody transcript verify' on it for details.",
            )
    d.step(
        "verify",
        f"{len(d.bundles)} transcripts verified offline against {len(trust)} pinned identity files",
    )
    if as_json:
        json.dump(
            {"home": str(root), "bundles": d.bundles, "trust_keys": trust, "steps": d.steps},
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(
            f"\ndemo finished in {time.monotonic() - d.t0:.1f}s; home {root} (PIN in "
            f"{pinf}, demo only)"
        )
        print("transcript bundles:")
        for b in d.bundles:
            print(f"  {b}")
        print("trust keys an auditor would pin (custody transcript verify BUNDLE --trust ...):")
        for t in trust:
            print(f"  {t}")
    return 0
