"""Issue 12, items 2 and 3, through the CLI as a subprocess against real SoftHSMv2 tokens:
custodians type their share's words at a hidden prompt through a real pty (echo off: the
words never reach the terminal), a wrong word is named by position, a mistyped path
rejects only that input, progress is shown per group, ``custody ceremony status`` says who
handed in, who is missing and what to run next; and a remote hand-in is held, not
counted, until the coordinator confirms its short authentication string (SAS) at the
prompt or with ``--confirm-sas``, while a wrong SAS rejects the share and is recorded.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import sqlite3
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.ceremony_fixtures import CUST, Dep, build_enrolled, copy_dep, generated_copy, lose_token
from tests.conftest import cli_env, run_cli

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("handin-cli")]


@pytest.fixture(scope="module")
def generated_tpl(generated_master: Dep, tmp_path_factory) -> Dep:
    return generated_copy(generated_master, tmp_path_factory.mktemp("gen") / "home")


@pytest.fixture
def dep(generated_tpl: Dep, tmp_path: Path) -> Dep:
    d = copy_dep(generated_tpl, tmp_path / "home")
    lose_token(d)  # recover into an emptied token
    return d


class Pty:
    """``custody ARGS`` on a real pseudo-terminal that is its controlling terminal (so
    that getpass turns echo off on it, as on a custodian's screen)."""

    def __init__(self, *args: str) -> None:
        master, slave = os.openpty()

        def ctty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "custody_cli", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=cli_env(),
            preexec_fn=ctty,
            close_fds=True,
        )
        os.close(slave)
        self.fd = master
        self.out = b""
        self.pos = 0

    def _read(self, timeout: float) -> bool:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return True
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.out += data
        return True

    def expect(self, needle: str, timeout: float = 90) -> str:
        """Wait for *needle* after what was already consumed; return the text up to it."""
        end = time.monotonic() + timeout
        want = needle.encode()
        while want not in self.out[self.pos :]:
            if time.monotonic() > end or not self._read(0.2):
                raise AssertionError(f"{needle!r} not seen; output:\n{self.text}")
        i = self.out.index(want, self.pos) + len(want)
        got, self.pos = self.out[self.pos : i].decode(errors="replace"), i
        return got

    def send(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def finish(self, timeout: float = 120) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end and self._read(0.2):
            if self.proc.poll() is not None and not select.select([self.fd], [], [], 0.2)[0]:
                break
        code = self.proc.wait(timeout=max(1.0, end - time.monotonic()))
        os.close(self.fd)
        return code

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")


def _coord(d: Dep) -> list[str]:
    return [a for a in d.coord() if a != "--json"]


def _words(d: Dep, name: str) -> list[str]:
    return (d.root / "shares" / f"{name}.share.txt").read_text().split()


def _env(d: Dep, name: str) -> str:
    return str(d.root / "shares" / f"{name}.envelope.json")


def _events(bundle: str) -> list[dict]:
    return [json.loads(x) for x in (Path(bundle) / "events.jsonl").read_text().splitlines()]


def _combined(d: Dep, cid: str) -> bool:
    """Whether the ceremony got as far as combining shares (rebuild-rk begun)."""
    return any(e.get("step") == "rebuild-rk" for e in _events(str(d.root / "transcripts" / cid)))


def _status(d: Dep, cid: str) -> dict:
    s = run_cli("ceremony", "status", cid, "--home", str(d.root), "--json")
    assert s.returncode == 0, s.stderr
    return json.loads(s.stdout)


def _no_words_shown(text: str, *shares: list[str]) -> None:
    """No two consecutive words of any share appear (the words never reach the screen)."""
    low = " ".join(text.lower().split())
    for words in shares:
        for i in range(len(words) - 1):
            assert f"{words[i]} {words[i + 1]}" not in low, (i, low[-2000:])
            assert f"{words[i][:4]} {words[i + 1][:4]}" not in low, (i, low[-2000:])


def test_typed_words_are_hidden_checked_by_word_and_a_bad_input_rejects_only_itself(dep: Dep):
    """At the prompt, alice types 4-letter prefixes with echo off, one wrong word named by
    position; a mistyped path is refused with a typed error and nothing else is lost; bob's
    share with one wrong (but valid) word is caught by the checksum at that position; the
    progress per group is shown; the two shares stay held for a later run, which finishes
    the recovery. ``ceremony status`` shows who handed in, who is missing and what next."""
    alice, bob = _words(dep, "alice"), _words(dep, "bob")
    t = Pty("ceremony", "recover", *_coord(dep))
    t.expect("progress: group 1: 0 of 3")
    t.expect("share (words or file): ")
    t.send(" ".join(w[:4] for w in alice[:10]))  # unique 4-letter prefixes
    t.expect("words 1-10 ok")
    t.expect("word 11: ")
    t.send("zzzq")  # not a word: named by its position, asked again
    t.expect("word 11: unknown word; type word 11 again")
    t.expect("word 11: ")
    t.send(" ".join(alice[10:]))
    t.expect("words 11-33 ok")
    t.expect("the words match alice (group 1, member 1); now its envelope")
    t.expect("envelope of alice")
    t.send(_env(dep, "alice"))
    t.expect("alice (group 1, member 1): ok")
    t.expect("progress: group 1: 1 of 3")

    t.expect("share (words or file): ")
    t.send(str(dep.root / "shares" / "bbo.share.txt"))  # mistyped path
    t.expect("error: Cannot read the share file")
    t.expect("only this share is rejected; the others stay counted")
    t.expect("progress: group 1: 1 of 3")  # alice is still counted

    t.expect("share (words or file): ")
    wrong = list(bob)
    wrong[6] = "academic" if bob[6] != "academic" else "acid"  # a valid word, the wrong one
    t.send(" ".join(wrong))
    t.expect("the checksum fails: word 7 is wrong; type word 7 again")
    t.expect("word 7: ")
    t.send(bob[6])
    t.expect("the words match bob (group 1, member 2)")
    t.expect("envelope of bob")
    t.send(_env(dep, "bob"))
    t.expect("bob (group 1, member 2): ok")
    t.expect("progress: group 1: 2 of 3")
    t.expect("share (words or file): ")
    t.send("")  # finish: both are held sealed for a later run
    t.expect("next: custody ceremony resume")
    assert t.finish() == 10, t.text
    assert "Traceback" not in t.text
    _no_words_shown(t.text, alice, bob)
    assert "zzzq" not in t.text  # not even a wrong word is echoed

    cid = next(
        r["id"]
        for r in json.loads(run_cli("ceremony", "list", "--home", str(dep.root), "--json").stdout)
    )
    st = _status(dep, cid)
    assert st["awaiting"] == "shares" and st["step"] == "collect-shares"
    assert [h["custodian"] for h in st["handed_in"]] == ["alice", "bob"]
    assert [h["custodian"] for h in st["missing"]] == ["carol", "dave", "erin"]
    assert st["progress"] == "group 1: 2 of 3" and not st["quorum_met"]
    assert st["expires_at"] > time.time() and st["waiting_sas"] == []
    assert st["next"].startswith(f"custody ceremony resume {cid}")
    txt = run_cli("ceremony", "status", cid, "--home", str(dep.root))
    assert txt.returncode == 0 and "handed in: alice (group 1), bob (group 1)" in txt.stdout
    assert "missing: carol (group 1), dave (group 1), erin (group 1)" in txt.stdout
    assert "expires: " in txt.stdout and "next: custody ceremony resume" in txt.stdout

    r = dep.ceremony("resume", cid, *dep.coord(), *dep.shares("dave"))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    assert r.out["facts"]["collect-shares.accepted"] == ["alice", "bob", "dave"]
    dep.verify(r.out["bundle"])
    dep.deks_ok()
    assert _status(dep, cid)["state"] == "closed"


def _offer_and_send(d: Dep, cid: str, name: str, out: Path) -> str:
    o = d.ceremony("offer", cid, *d.coord())
    assert o.returncode == 0, o.stderr
    s = run_cli(
        "share",
        "send",
        str(d.root / "shares" / f"{name}.share.txt"),
        "--envelope",
        _env(d, name),
        "--offer",
        o.out["offer"],
        "--trust",
        str(d.people / "admin.pub.json"),
        "--session",
        cid,
        "--out",
        str(out),
        "--json",
    )
    assert s.returncode == 0, s.stderr
    return str(json.loads(s.stdout)["sas"])


def _other_words(sas: str) -> str:
    """Four valid SLIP-0039 words that are not *sas* (one word changed)."""
    w = sas.split()
    w[2] = "academic" if w[2] != "academic" else "acid"
    return " ".join(w)


def test_a_remote_hand_in_is_held_until_its_sas_is_confirmed(dep: Dep):
    """SAS before use: ``resume --sealed-share`` opens and checks carol's share but holds
    it (exit 11, the next command named, the SAS not shown to the coordinator); the root is
    not restored. A wrong SAS rejects the share and the transcript records it
    (``sas-mismatch``); carol sends again and the coordinator types the words she reads out
    at the prompt (a pty): only then is the share counted and the recovery finished."""
    r = dep.ceremony("recover", *dep.coord(), *dep.shares("alice", "bob"))
    assert r.returncode == 10, r.stderr
    cid = r.out["ceremony_id"]
    blob = dep.root / "carol.blob"
    sas = _offer_and_send(dep, cid, "carol", blob)

    r = dep.ceremony("resume", cid, *dep.coord(), "--sealed-share", str(blob))
    assert r.returncode == 11, r.stdout + r.stderr
    assert r.out["status"] == "awaiting-input" and r.out["awaiting"] == "shares"
    assert [w["custodian"] for w in r.out["sas_waiting"]] == ["carol"]
    assert "--confirm-sas" in r.out["next"]
    (h,) = r.out["handins"]
    assert (h["custodian"], h["status"], h["reason"], h["sas"]) == (
        "carol",
        "unconfirmed",
        "sas-unconfirmed",
        None,
    )
    assert sas not in r.stdout + r.stderr  # nothing to copy instead of listening
    assert not _combined(dep, cid)  # nothing combined: root/v1 is not restored
    st = _status(dep, cid)
    assert [w["custodian"] for w in st["waiting_sas"]] == ["carol"]
    assert st["progress"] == "group 1: 2 of 3"
    assert "carol" not in [m["custodian"] for m in st["missing"]]
    assert "--confirm-sas" in st["next"]
    # the held share is sealed: no word of carol's share in the store
    c = sqlite3.connect(dep.root / "custody.db")
    pend = c.execute("SELECT pending FROM ceremonies WHERE id=?", (cid,)).fetchone()[0]
    c.close()
    carol = _words(dep, "carol")
    assert " ".join(carol[3:6]) not in pend and sas not in pend

    # a plain run does not count it either, and a confirmation naming nobody waiting fails
    again = dep.ceremony("resume", cid, *dep.coord())
    assert again.returncode == 11 and not _combined(dep, cid), again.stdout + again.stderr
    bad = dep.ceremony("resume", cid, *dep.coord(), "--confirm-sas", f"dave={sas}")
    assert bad.returncode == 2 and "No remote hand-in of dave" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr

    # the wrong words: rejected and recorded
    r = dep.ceremony("resume", cid, *dep.coord(), "--confirm-sas", _other_words(sas))
    assert r.returncode == 10, r.stdout + r.stderr
    (h,) = r.out["handins"]
    assert (h["custodian"], h["status"], h["reason"]) == ("carol", "rejected", "sas-mismatch")
    assert r.out["sas_waiting"] == [] and not _combined(dep, cid)
    rej = [e["body"] for e in _events(r.out["bundle"]) if e["kind"] == "share.rejected"]
    assert rej[-1]["custodian"] == "carol" and rej[-1]["reason"] == "sas-mismatch"
    st = _status(dep, cid)
    assert {"custodian": "carol", "reason": "sas-mismatch"} in st["rejected"]
    assert "carol" in [m["custodian"] for m in st["missing"]] and st["waiting_sas"] == []

    # carol sends again; the coordinator types the words she reads out at the prompt
    blob2 = dep.root / "carol2.blob"
    sas2 = _offer_and_send(dep, cid, "carol", blob2)
    t = Pty("ceremony", "resume", cid, *_coord(dep), "--sealed-share", str(blob2))
    t.expect("held, NOT counted, until you confirm its short authentication string")
    t.expect("SAS of carol: ")
    assert sas2 not in t.text
    t.send(" ".join(w[:4] for w in sas2.split()))  # prefixes are enough
    t.expect("SAS confirmed: carol's share is counted")
    t.expect("(recover): closed")
    assert t.finish() == 0, t.text
    assert _combined(dep, cid)
    ev = _events(str(dep.root / "transcripts" / cid))
    assert [e["body"]["custodian"] for e in ev if e["kind"] == "sas.confirmed"] == ["carol"]
    acc = [e["body"]["custodian"] for e in ev if e["kind"] == "share.accepted"]
    assert acc == ["alice", "bob", "carol"]
    dep.verify(str(dep.root / "transcripts" / cid))
    dep.deks_ok()


def test_a_wrong_sas_at_the_prompt_rejects_the_share_and_is_recorded(dep: Dep):
    """At the interactive prompt, words that differ reject carol's remote share and the
    rejection is in the transcript; the ceremony goes on: dave pastes his share as three
    lines at once (none is lost, none is echoed) and the recovery finishes without carol."""
    r = dep.ceremony("recover", *dep.coord(), *dep.shares("alice", "bob"))
    assert r.returncode == 10, r.stderr
    cid = r.out["ceremony_id"]
    blob = dep.root / "carol.blob"
    sas = _offer_and_send(dep, cid, "carol", blob)
    t = Pty("ceremony", "resume", cid, *_coord(dep), "--sealed-share", str(blob))
    t.expect("SAS of carol: ")
    t.send(_other_words(sas))
    t.expect("the SAS differs: carol's remote hand-in is rejected")
    t.expect("progress: group 1: 2 of 3")  # alice and bob are still held
    t.expect("share (words or file): ")
    dave = _words(dep, "dave")
    os.write(t.fd, ("\n".join(" ".join(dave[i : i + 11]) for i in (0, 11, 22)) + "\n").encode())
    t.expect("words 23-33 ok")
    t.expect("the words match dave (group 1, member 4)")
    t.send(_env(dep, "dave"))
    t.expect("dave (group 1, member 4): ok")
    t.expect("(recover): closed")
    assert t.finish() == 0, t.text
    _no_words_shown(t.text, dave)
    ev = _events(str(dep.root / "transcripts" / cid))
    rej = [e["body"] for e in ev if e["kind"] == "share.rejected"]
    assert [(x["custodian"], x["reason"]) for x in rej] == [("carol", "sas-mismatch")]
    acc = [e["body"]["custodian"] for e in ev if e["kind"] == "share.accepted"]
    assert acc == ["alice", "bob", "dave"]
    assert _status(dep, cid)["state"] == "closed"
    dep.verify(str(dep.root / "transcripts" / cid))
    dep.deks_ok()


@pytest.fixture(scope="module")
def enrolled_tpl(tmp_path_factory) -> Dep:
    return build_enrolled(tmp_path_factory.mktemp("enr") / "home")[0]


def test_status_of_a_verification_round_with_groups(enrolled_tpl: Dep, tmp_path: Path):
    """``ceremony status`` in generate's verification round with two groups: progress per
    group ("group 1: 1 of 2; group 2: 0 of 2; groups met: 0 of 2"), who handed in, who is
    missing by group, the expiry and the next command; a closed ceremony has no next step.
    """
    d = copy_dep(enrolled_tpl, tmp_path / "home")
    cust = [a for n in ("alice", "bob", "carol", "dave", "erin") for a in ("--custodian", n)]
    groups = ["--group", "2/3", "--group", "2/2", "--group-threshold", "2"]
    r = d.ceremony("generate", *d.coord(), *cust, *groups, "--out", str(d.root / "shares"))
    assert r.returncode == 10 and r.out["step"] == "verify-shares", r.stdout + r.stderr
    cid = r.out["ceremony_id"]
    st = _status(d, cid)
    assert st["progress"] == "group 1: 0 of 2; group 2: 0 of 2; groups met: 0 of 2"
    assert st["handed_in"] == [] and len(st["missing"]) == 5
    r = d.ceremony("resume", cid, *d.coord(), *d.shares("alice"))
    assert r.returncode == 10, r.stdout + r.stderr
    st = _status(d, cid)
    assert st["step"] == "verify-shares" and st["awaiting"] == "shares"
    assert st["progress"] == "group 1: 1 of 2; group 2: 0 of 2; groups met: 0 of 2"
    assert st["handed_in"] == [{"custodian": "alice", "group": 1, "member": 1}]
    assert [(m["custodian"], m["group"]) for m in st["missing"]] == [
        ("bob", 1),
        ("carol", 1),
        ("dave", 2),
        ("erin", 2),
    ]
    assert st["next"].startswith(f"custody ceremony resume {cid}") and not st["expired"]
    r = d.ceremony("resume", cid, *d.coord(), *d.shares("bob", "dave", "erin"))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    st = _status(d, cid)
    assert st["state"] == "closed" and st["next"] == "none: the ceremony is closed"
    missing = run_cli("ceremony", "status", "0" * 32, "--home", str(d.root))
    assert missing.returncode == 8 and "No ceremony" in missing.stderr
    assert "Traceback" not in missing.stderr


def _type_share(t: Pty, name: str, words: list[str], envelope: Path, member: int) -> None:
    t.expect("share (words or file): ")
    t.send(" ".join(w[:4] for w in words))
    t.expect(f"the words match {name} (group 1, member {member})")
    t.expect(f"envelope of {name}")
    t.send(str(envelope))
    t.expect(f"{name} (group 1, member {member}): ok")


def test_acceptance_sealed_issue_typed_hand_in_and_a_remote_share_with_its_sas(
    enrolled_tpl: Dep, tmp_path: Path
):
    """Issue 12's acceptance path: a 3-of-5 generate sealed to the custodians; each opens
    their own share on their own machine; the verification round takes three shares typed
    at the hidden prompt (a pty); after the token is lost, a recover takes two typed shares
    and carol's remote hand-in, counted only once the coordinator types the SAS she reads
    out. No file the coordinator's side wrote holds three consecutive words of any share."""
    d = copy_dep(enrolled_tpl, tmp_path / "home")
    out = tmp_path / "issued"
    cust = [a for n in CUST for a in ("--custodian", n)]
    r = run_cli(
        "ceremony", "generate", *d.coord(), *cust, "--threshold", "3", "--out", str(out),
        "--seal-to", str(d.people),
    )  # fmt: skip
    assert r.returncode == 10, r.stderr
    cid = json.loads(r.stdout)["ceremony_id"]
    mine = tmp_path / "custodians"  # each custodian's own machine
    mine.mkdir()
    words: dict[str, list[str]] = {}
    for n in CUST:
        o = run_cli(
            "share", "open", str(out / f"{n}.share.sealed"),
            "--envelope", str(out / f"{n}.envelope.json"),
            "--key", str(d.people / f"{n}.enc.pem"),
            "--passphrase-file", str(d.people / f"{n}.pass"),
            "--trust", str(d.people / "admin.pub.json"),
            "--out", str(mine / f"{n}.share.txt"), "--json",
        )  # fmt: skip
        assert o.returncode == 0, o.stderr
        words[n] = (mine / f"{n}.share.txt").read_text().split()

    t = Pty("ceremony", "resume", cid, *_coord(d))  # the verification round, typed
    for i, n in enumerate(("alice", "bob", "carol"), start=1):
        t.expect(f"progress: group 1: {i - 1} of 3")
        _type_share(t, n, words[n], out / f"{n}.envelope.json", i)
    t.expect("(generate): closed")
    assert t.finish() == 0, t.text
    _no_words_shown(t.text, *words.values())
    k = run_cli(
        "kek", "rotate", "--branch", "data", "--home", str(d.root), "--pin-file", str(d.pin)
    )
    assert k.returncode == 0, k.stderr

    lose_token(d)
    t = Pty("ceremony", "recover", *_coord(d))
    _type_share(t, "alice", words["alice"], out / "alice.envelope.json", 1)
    _type_share(t, "bob", words["bob"], out / "bob.envelope.json", 2)
    t.expect("progress: group 1: 2 of 3")
    t.expect("share (words or file): ")
    t.send("")
    assert t.finish() == 10, t.text
    _no_words_shown(t.text, *words.values())
    rid = next(
        x["id"]
        for x in json.loads(run_cli("ceremony", "list", "--home", str(d.root), "--json").stdout)
        if x["kind"] == "recover"
    )
    o = d.ceremony("offer", rid, *d.coord())
    assert o.returncode == 0, o.stderr
    blob = tmp_path / "carol.blob"
    s = run_cli(
        "share", "send", str(mine / "carol.share.txt"),
        "--envelope", str(out / "carol.envelope.json"), "--offer", o.out["offer"],
        "--trust", str(d.people / "admin.pub.json"), "--session", rid,
        "--out", str(blob), "--json",
    )  # fmt: skip
    assert s.returncode == 0, s.stderr
    sas = json.loads(s.stdout)["sas"]
    t = Pty("ceremony", "resume", rid, *_coord(d), "--sealed-share", str(blob))
    t.expect("SAS of carol: ")
    t.send(sas)
    t.expect("SAS confirmed: carol's share is counted")
    t.expect("(recover): closed")
    assert t.finish() == 0, t.text
    ev = _events(str(d.root / "transcripts" / rid))
    assert [e["body"]["custodian"] for e in ev if e["kind"] == "share.accepted"] == [
        "alice",
        "bob",
        "carol",
    ]
    d.verify(str(d.root / "transcripts" / rid))

    runs = {" ".join(w[i : i + 3]).encode() for w in words.values() for i in range(len(w) - 2)}
    written = [Path(dp) / f for root in (out, d.root) for dp, _, fs in os.walk(root) for f in fs]
    assert [str(f) for f in written if any(x in f.read_bytes() for x in runs)] == []
