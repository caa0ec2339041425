"""A refused step changes nothing (issue 13): through the CLI, against real SoftHSMv2.

The five ways a new user left a ceremony open and blocked every later one: recover on a
token that already holds the root; a drill with too few valid shares; generate into an
``--out`` that already holds share files; ``--threshold 1`` (a 1-of-n group); a mistyped
path at the share prompt. After each, ``custody ceremony list`` shows nothing open, the
token's objects and the ``--out`` directory are as before, and the next ceremony starts.
Then: a ceremony that fails *after* an effect names itself, what it did and the commands
that resume or abort it; Ctrl-C does the same; ``ceremony list`` shows age and expiry.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ceremony_fixtures import CUST, Dep, build_enrolled, copy_dep, generated_copy, lose_token
from tests.conftest import cli_env, run_cli

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("refused-ceremonies")]
GEN = [a for n in CUST for a in ("--custodian", n)]


@pytest.fixture(scope="module")
def enrolled_tpl(tmp_path_factory) -> Dep:
    return build_enrolled(tmp_path_factory.mktemp("enr") / "home")[0]


@pytest.fixture(scope="module")
def generated_tpl(generated_master: Dep, tmp_path_factory) -> Dep:
    return generated_copy(generated_master, tmp_path_factory.mktemp("gen") / "home")


@pytest.fixture
def fresh(enrolled_tpl: Dep, tmp_path: Path) -> Dep:
    return copy_dep(enrolled_tpl, tmp_path / "home")


@pytest.fixture
def dep(generated_tpl: Dep, tmp_path: Path) -> Dep:
    return copy_dep(generated_tpl, tmp_path / "home")


def _objects(d: Dep) -> dict[str, bytes]:
    """The token's objects by file, with their content (SoftHSMv2's own token.object
    changes at every login, so only its name counts)."""
    return {
        k: b"" if k.endswith("token.object") else v for k, v in _tree(d.root / "tokens").items()
    }


def _tree(p: Path) -> dict[str, bytes]:
    """Every file under *p* with its content (links by target)."""
    if not p.exists():
        return {}
    out = {}
    for f in sorted(p.rglob("*")):
        if f.is_symlink():
            out[str(f.relative_to(p))] = os.readlink(f).encode()
        elif f.is_file():
            out[str(f.relative_to(p))] = f.read_bytes()
    return out


def _listed(d: Dep, *extra: str) -> list[dict]:
    r = run_cli("ceremony", "list", "--home", str(d.root), "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _nothing_open(d: Dep) -> None:
    assert [c for c in _listed(d) if c["state"] == "open"] == []
    assert _listed(d, "--open") == []


class Snapshot:
    """The token's objects, the ceremony rows and the transcripts of a deployment."""

    def __init__(self, d: Dep, out: Path | None = None) -> None:
        self.tokens = _objects(d)
        self.rows = [(c["id"], c["state"]) for c in _listed(d)]
        self.bundles = sorted(p.name for p in (d.root / "transcripts").iterdir())
        self.out = _tree(out) if out is not None else None
        self.out_exists = out.exists() if out is not None else None
        self.roots = d.roots()


def _unchanged(d: Dep, before: Snapshot, out: Path | None = None, *, recorded: bool) -> None:
    """Nothing changed; with *recorded*, the one new ceremony is closed as aborted and its
    transcript verifies (a refusal inside a step); else nothing at all was recorded (a
    refusal before the ceremony opened)."""
    _nothing_open(d)
    assert _objects(d) == before.tokens  # no token object made or destroyed
    assert d.roots() == before.roots
    if out is not None:
        assert out.exists() == before.out_exists and _tree(out) == before.out
    rows = [(c["id"], c["state"]) for c in _listed(d)]
    new = [r for r in rows if r not in before.rows]
    if recorded:
        assert len(new) == 1 and new[0][1] == "aborted", rows
        d.verify(str(d.root / "transcripts" / new[0][0]))
    else:
        assert rows == before.rows
        assert sorted(p.name for p in (d.root / "transcripts").iterdir()) == before.bundles


def _drill_passes(d: Dep) -> None:
    """The next ceremony starts (and here finishes)."""
    r = d.ceremony("drill", *d.coord(pin=False), *d.shares("alice", "bob", "carol"))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr


def _generate_starts(d: Dep, out: Path) -> None:
    r = d.ceremony("generate", *d.coord(), *GEN, "--threshold", "3", "--out", str(out))
    assert r.returncode == 10 and r.out["awaiting"] == "shares", r.stdout + r.stderr


# ------------------------------------------------------------------ the five refusals
def test_recover_on_a_token_that_holds_the_root_changes_nothing(dep: Dep):
    before = Snapshot(dep)
    r = dep.ceremony("recover", *dep.coord(), *dep.shares("alice", "bob", "carol"))
    assert r.returncode == 8 and r.out["error"] == "CeremonyError", r.stdout + r.stderr
    assert "already holds root/v1" in r.out["title"]
    _unchanged(dep, before, recorded=False)
    _drill_passes(dep)
    lose_token(dep)  # and a real recover still works after the refusal
    r = dep.ceremony("recover", *dep.coord(), *dep.shares("alice", "bob", "carol"))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    dep.deks_ok()


def test_drill_with_too_few_valid_shares_changes_nothing(dep: Dep, tmp_path: Path):
    bad = tmp_path / "bad"
    bad.mkdir()
    # dave's words under bob's envelope: a substituted share, rejected by name
    (bad / "bob.share.txt").write_text((dep.root / "shares" / "dave.share.txt").read_text())
    (bad / "bob.envelope.json").write_bytes(
        (dep.root / "shares" / "bob.envelope.json").read_bytes()
    )
    before = Snapshot(dep)
    r = dep.ceremony(
        "drill",
        *dep.coord(pin=False),  # no PIN: shares cannot be held between runs
        *dep.shares("alice", "alice"),
        "--share",
        str(bad / "bob.share.txt"),
    )
    assert r.returncode == 6 and r.out["error"] == "ShareError", r.stdout + r.stderr
    assert "1 accepted, 3 needed" in r.out["title"]
    [cid] = [c["id"] for c in _listed(dep) if (c["id"], c["state"]) not in before.rows]
    assert f"ceremony {cid} (drill) was closed as aborted" in r.out["hint"]
    assert "Nothing was changed" in r.out["hint"]
    _unchanged(dep, before, recorded=True)
    lines = (dep.root / "transcripts" / cid / "events.jsonl").read_text().splitlines()
    kinds = [json.loads(ln)["kind"] for ln in lines]
    assert "share.rejected" in kinds and "rollback" in kinds  # the refusal is on record
    _drill_passes(dep)


def test_generate_into_an_out_that_holds_share_files_changes_nothing(fresh: Dep):
    out = fresh.root / "out"
    out.mkdir(mode=0o700)
    (out / "alice.share.txt").write_text("the share of an earlier ceremony\n")
    (out / "notes.txt").write_text("kept\n")
    before = Snapshot(fresh, out)
    r = fresh.ceremony("generate", *fresh.coord(), *GEN, "--threshold", "3", "--out", str(out))
    assert r.returncode == 2 and "alice.share.txt already exists" in r.out["title"], r.stdout
    _unchanged(fresh, before, out, recorded=False)
    # a link planted at a share name is refused the same way, before anything is recorded
    (out / "bob.card.svg").symlink_to(fresh.root / "elsewhere")
    (out / "alice.share.txt").unlink()
    before = Snapshot(fresh, out)
    r = fresh.ceremony("generate", *fresh.coord(), *GEN, "--threshold", "3", "--out", str(out))
    assert r.returncode == 4 and "symbolic link" in r.out["title"], r.stdout
    _unchanged(fresh, before, out, recorded=False)
    _generate_starts(fresh, fresh.root / "empty")


@pytest.mark.parametrize(
    "scheme",
    [
        ("--threshold", "1"),  # 1 of 5
        ("--group", "1/5"),  # the same as a group: this one used to make root/v1 first
        ("--group", "2/2", "--group", "2/3", "--group-threshold", "3"),
        ("--group", "0/2", "--group", "3/3"),
        ("--group", "x/5"),
        ("--threshold", "6"),
    ],
)
def test_a_share_scheme_that_cannot_be_made_changes_nothing(fresh: Dep, scheme):
    out = fresh.root / "out"
    before = Snapshot(fresh, out)
    r = fresh.ceremony("generate", *fresh.coord(), *GEN, *scheme, "--out", str(out))
    assert r.returncode == 2 and r.out["error"] == "UsageError", r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    _unchanged(fresh, before, out, recorded=False)
    assert not out.exists()
    _generate_starts(fresh, out)


def test_custodians_that_cannot_take_a_share_change_nothing(fresh: Dep):
    out = fresh.root / "out"
    before = Snapshot(fresh, out)
    for names in (("alice", "zed", "bob"), ("alice", "audrey", "bob"), ("alice", "bob", "alice")):
        cust = [a for n in names for a in ("--custodian", n)]
        r = fresh.ceremony("generate", *fresh.coord(), *cust, "--threshold", "2", "--out", str(out))
        assert r.returncode == 2, r.stdout + r.stderr
        _unchanged(fresh, before, out, recorded=False)
    _generate_starts(fresh, out)


def test_an_unreadable_share_file_on_the_command_line_opens_nothing(dep: Dep):
    lose_token(dep)
    before = Snapshot(dep)
    r = dep.ceremony(
        "recover", *dep.coord(), *dep.shares("alice", "bob"), "--share", "/no/such/carol.share.txt"
    )
    assert r.returncode == 3 and "Cannot read share" in r.out["title"], r.stdout + r.stderr
    _unchanged(dep, before, recorded=False)


# ------------------------------------------------------------------- at a terminal
class Tty:
    """``custody ARGS`` on a pseudo-terminal (stdin, stdout and stderr), read as it goes."""

    def __init__(self, *args: str) -> None:
        master, slave = os.openpty()
        self.master, self.buf = master, b""
        self.p = subprocess.Popen(
            [sys.executable, "-m", "custody_cli", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=cli_env(),
            close_fds=True,
        )
        os.close(slave)

    def _read(self, timeout: float) -> None:
        r, _, _ = select.select([self.master], [], [], timeout)
        if r:
            try:
                self.buf += os.read(self.master, 65536)
            except OSError:  # the child closed the terminal
                time.sleep(timeout)

    def expect(self, needle: str, count: int = 1, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while self.text.count(needle) < count:
            assert time.monotonic() < end, f"{needle!r} not seen in:\n{self.text}"
            self._read(0.2)

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def wait(self, timeout: float = 120) -> int:
        end = time.monotonic() + timeout
        while self.p.poll() is None:
            assert time.monotonic() < end, self.text
            self._read(0.2)
        self._read(0.2)
        os.close(self.master)
        return self.p.returncode

    @property
    def text(self) -> str:
        return self.buf.decode(errors="replace").replace("\r\n", "\n")


def _coord_text(d: Dep, pin: bool = True) -> list[str]:
    return [a for a in d.coord(pin=pin) if a != "--json"]


def test_mistyped_paths_at_the_share_prompt_are_refused_alone(dep: Dep, tmp_path: Path):
    before = Snapshot(dep)
    binary = dep.root / "shares" / "alice.card.pdf"  # a card, not the share file
    t = Tty("ceremony", "drill", *_coord_text(dep, pin=False))
    t.expect("share (words or file): ")
    for n, typed in enumerate(
        (
            "/no/such/alice.share.txt",  # mistyped
            str(dep.root / "shares"),  # a directory
            str(binary),  # not text
            str(tmp_path / "nul\\x00"),  # odd characters
            str(dep.root / "shares" / "alice.envelope.json"),  # the envelope, not the share
        ),
        start=2,
    ):
        t.send(typed)
        t.expect("share (words or file): ", count=n)
    assert t.text.count("error: Cannot read") == 5, t.text
    assert t.text.count("only this share is rejected") == 5, t.text
    assert "Traceback" not in t.text
    for i, name in enumerate(("alice", "bob", "carol")):
        t.send(f"'{dep.root / 'shares' / name}.share.txt'")  # pasted with quotes
        if i < 2:
            t.expect("share (words or file): ", count=7 + i)
    assert t.wait() == 0, t.text
    assert "(drill): closed" in t.text and "Traceback" not in t.text
    _nothing_open(dep)
    assert _objects(dep) == before.tokens
    _drill_passes(dep)


def test_ctrl_c_at_the_prompt_of_a_ceremony_that_changed_nothing_closes_it(dep: Dep):
    before = Snapshot(dep)
    t = Tty("ceremony", "drill", *_coord_text(dep, pin=False))
    t.expect("share (words or file): ")
    t.send("/no/such/alice.share.txt")  # mistyped, then the custodians give up
    t.expect("share (words or file): ", count=2)
    t.p.send_signal(signal.SIGINT)
    assert t.wait() == 130, t.text
    [cid] = [c["id"] for c in _listed(dep) if (c["id"], c["state"]) not in before.rows]
    assert f"ceremony {cid} (drill) was closed as aborted" in t.text, t.text
    assert "Traceback" not in t.text
    _unchanged(dep, before, recorded=True)
    _drill_passes(dep)


def test_ctrl_c_after_an_effect_names_the_ceremony_and_the_next_step(fresh: Dep):
    out = fresh.root / "out"
    t = Tty(
        "ceremony", "generate", *_coord_text(fresh), *GEN, "--threshold", "3", "--out", str(out),
        "--plain-shares",
    )  # fmt: skip
    t.expect("share (words or file): ")  # verification round: root/v1 and the share files exist
    t.p.send_signal(signal.SIGINT)
    assert t.wait() == 130, t.text
    [row] = _listed(fresh, "--open")
    cid = row["id"]
    text = " ".join(t.text.split())
    assert f"Ceremony {cid} (generate) is still open" in text, text
    assert "root/v1, which it created" in text and "Traceback" not in text
    assert f"'custody ceremony resume {cid}'" in text and f"'custody ceremony abort {cid}'" in text
    # consistent: it resumes where it stopped
    r = fresh.ceremony(
        "resume", cid, *fresh.coord(), *fresh.shares("alice", "bob", "carol", d="out")
    )
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
    fresh.verify(r.out["bundle"])


# ------------------------------------------------------------ after an effect; the list
def test_a_failure_after_an_effect_names_the_ceremony_what_it_did_and_the_commands(dep: Dep):
    r = dep.ceremony("drill", *dep.coord(), *dep.shares("alice"))  # held on the token
    assert r.returncode == 10 and r.out["awaiting"] == "shares", r.stdout + r.stderr
    cid = r.out["ceremony_id"]
    # resumed without the token PIN: the held share cannot be opened
    r = dep.ceremony("resume", cid, *dep.coord(pin=False), *dep.shares("bob", "carol"))
    assert r.returncode == 2, r.stdout + r.stderr
    hint = r.out["hint"]
    assert f"Ceremony {cid} (drill) is still open" in hint, hint
    assert "its hold key" in hint and "1 held share(s)" in hint, hint
    assert f"'custody ceremony resume {cid}'" in hint and f"'custody ceremony abort {cid}'" in hint
    assert [c["id"] for c in _listed(dep, "--open")] == [cid]
    r = dep.ceremony("resume", cid, *dep.coord(), *dep.shares("bob", "carol"))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr


def test_ceremony_list_shows_age_and_expiry(fresh: Dep):
    r = fresh.ceremony(
        "generate", *fresh.coord(), *GEN, "--threshold", "3", "--out", str(fresh.root / "o")
    )
    assert r.returncode == 10, r.stderr
    cid = r.out["ceremony_id"]
    rows = _listed(fresh)
    assert [c["state"] for c in rows] == ["open", "closed"]  # newest first
    row = rows[0]
    assert row["id"] == cid and row["expired"] is False and 0 <= row["age"] < 120
    assert row["expires"] - row["created"] == 240 * 60  # ceremony_expiry_minutes
    assert 0 < row["expires_in"] <= 240 * 60
    assert rows[1]["expires_in"] is None and rows[1]["expired"] is None
    assert [c["id"] for c in _listed(fresh, "--open")] == [cid]
    text = run_cli("ceremony", "list", "--home", str(fresh.root), "--open").stdout.splitlines()
    assert text[0].split("\t") == ["ID", "KIND", "STATE", "AGE", "EXPIRES", "TRANSCRIPT"]
    cols = text[1].split("\t")
    assert cols[:3] == [cid, "generate", "open"] and cols[3].endswith("s")
    assert cols[4].startswith("in 3h5") and len(text) == 2
    # the refusal of the next ceremony says how to go on
    r = fresh.ceremony(
        "generate", *fresh.coord(), *GEN, "--threshold", "3", "--out", str(fresh.root / "p")
    )
    assert r.returncode == 8 and cid in r.out["title"] and f"abort {cid}" in r.out["hint"]
    a = fresh.ceremony("abort", cid, *fresh.coord())
    assert a.returncode == 0, a.stderr
    empty = run_cli("ceremony", "list", "--home", str(fresh.root), "--open")
    assert empty.stdout.strip() == "no open ceremony"


def test_a_resume_whose_token_will_not_open_names_the_open_ceremony(dep: Dep, tmp_path: Path):
    r = dep.ceremony("drill", *dep.coord(), *dep.shares("alice"))  # held on the token
    assert r.returncode == 10 and r.out["awaiting"] == "shares", r.stdout + r.stderr
    cid = r.out["ceremony_id"]
    before = Snapshot(dep)
    bad = tmp_path / "wrong.pin"
    bad.write_text("pin=not-the-pin-0000\n")
    bad.chmod(0o600)
    args = [a if a != str(dep.pin) else str(bad) for a in dep.coord()]
    r = dep.ceremony("resume", cid, *args, *dep.shares("bob", "carol"))
    assert r.returncode == 5, r.stdout + r.stderr  # HsmError: the PIN was refused
    hint = r.out["hint"]
    assert f"Ceremony {cid} (drill) is still open and unchanged" in hint, hint
    assert f"'custody ceremony resume {cid}'" in hint and f"custody ceremony abort {cid}" in hint
    assert "not-the-pin" not in r.stdout + r.stderr
    assert [c["id"] for c in _listed(dep, "--open")] == [cid]
    assert _objects(dep) == before.tokens and dep.roots() == before.roots
    r = dep.ceremony("resume", cid, *dep.coord(), *dep.shares("bob", "carol"))
    assert r.returncode == 0 and r.out["status"] == "closed", r.stdout + r.stderr
