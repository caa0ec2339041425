"""The headless ceremony session (ceremonies.session.CeremonySession), driven from code
against a real SoftHSMv2 token and a real store: no TUI, no CLI for the ceremony itself.

The deployment (participants and their enrolment) is built through the CLI as a
subprocess; each ceremony under test is then started, fed and closed through the session
alone, and its bundle is checked with ``custody transcript verify`` (subprocess).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ceremonies.participants import load_signer
from ceremonies.session import CeremonySession
from ceremonies.sharecheck import ShareSet, check_typed
from custody.errors import UsageError
from tests.ceremony_fixtures import CUST, copy_home, create_people, init_home, lose_token
from tests.conftest import TEST_PIN, passphrase_of, run_cli

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("ceremony-session")]


class H:
    def __init__(self, root: Path) -> None:
        self.root, self.people, self.pins = root, root / "people", root / "pins"

    def signer(self, name: str) -> Any:
        return load_signer(self.people / f"{name}.key.pem", passphrase_of(name))

    def share(self, name: str) -> str:
        return (self.root / "shares" / f"{name}.share.txt").read_text().strip()

    def envelope(self, name: str) -> bytes:
        return (self.root / "shares" / f"{name}.envelope.json").read_bytes()

    def verify(self, bundle: str) -> None:
        trust = [a for p in sorted(self.people.glob("*.pub.json")) for a in ("--trust", str(p))]
        v = run_cli("transcript", "verify", bundle, *trust)
        assert v.returncode == 0, v.stdout + v.stderr

    def roots(self) -> list[tuple[int, str]]:
        c = sqlite3.connect(self.root / "custody.db")
        try:
            return c.execute("SELECT version, state FROM root_versions ORDER BY version").fetchall()
        finally:
            c.close()

    def session(self, pin: str | None = TEST_PIN) -> CeremonySession:
        return CeremonySession(self.root, lambda: pin)


def _store_handles(root: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            t = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if t.startswith(str(root)) and Path(t).name.startswith("custody.db"):
            out.append(t)
    return out


GENERATE = {"groups": [[3, 5]], "group_threshold": 1}


def _generate(h: H, s: CeremonySession) -> Any:
    """Start a 3-of-5 generate; it stops at the verification round."""
    params = {"custodians": list(CUST), "out": str(h.root / "shares"), **GENERATE}
    st = s.start("generate", h.signer("admin"), params)
    assert st.status == "awaiting-input" and st.awaiting == "shares", st
    assert st.step == "verify-shares"
    return st


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> H:
    h = H(tmp_path_factory.mktemp("session-base") / "home")
    init_home(h.root, h.pins)
    create_people(h.people)
    adds = [a for p in sorted(h.people.glob("*.pub.json")) for a in ("--add", str(p))]
    coord = ["--home", str(h.root), "--key", str(h.people / "admin.key.pem")]
    coord += ["--passphrase-file", str(h.people / "admin.pass"), "--json"]
    r = run_cli("ceremony", "enrol", *coord, *adds)
    assert r.returncode == 0, r.stderr
    return h


def _copy(src: H, tmp: Path) -> H:
    copy_home(src.root, tmp / "home")
    return H(tmp / "home")


@pytest.fixture(scope="module")
def generated(base: H, tmp_path_factory: pytest.TempPathFactory) -> H:
    h = _copy(base, tmp_path_factory.mktemp("session-gen"))
    s = h.session()
    try:
        _generate(h, s)
        for n in ("alice", "bob", "carol"):
            st = s.hand_in(n, h.share(n), h.envelope(n))
        assert st.status == "closed", st
    finally:
        s.close()
    return h


def test_generate_with_a_verification_round_from_code(base: H, tmp_path: Path) -> None:
    h = _copy(base, tmp_path)
    s = h.session()
    try:
        st = _generate(h, s)
        assert st.cards == CUST and st.quorum is not None and not st.quorum.met
        assert h.roots() == []  # nothing final before the verification round
        # live checks before anything is counted: a word off the list, located
        words = h.share("alice").split()
        bad = " ".join([*words[:3], "zzzz", *words[4:]])
        c = s.check("alice", bad, h.envelope("alice"))
        assert c.status == "rejected" and c.word_errors == ((4, "unknown word"),)
        # an incomplete share is refused and not listed
        with pytest.raises(UsageError, match="incomplete"):
            s.hand_in("alice", " ".join(words[:10]), h.envelope("alice"))
        # typed with 4-letter prefixes, it passes
        short = " ".join(w[:4] for w in words)
        assert s.check("alice", short, h.envelope("alice")).status == "ok"
        st = s.hand_in("alice", short, h.envelope("alice"))
        assert [(c.custodian, c.status) for c in st.checks] == [("alice", "ok")]
        # bob's words with carol's envelope: the runner's own check refuses it, by name
        st = s.hand_in("bob", h.share("bob"), h.envelope("carol"))
        rej = [c for c in st.checks if c.status == "rejected"]
        assert len(rej) == 1 and rej[0].custodian == "carol", st.checks
        assert st.quorum is not None and st.quorum.describe() == "Custodians 1/3"
        # a second share of alice is a duplicate, not counted
        st = s.hand_in("alice", h.share("alice"), h.envelope("alice"))
        assert st.checks[-1].status == "rejected" and "already" in st.checks[-1].reason
        s.hand_in("bob", h.share("bob"), h.envelope("bob"))
        st = s.hand_in("carol", h.share("carol"), h.envelope("carol"))  # the quorum: run
        assert st.status == "closed", st
        assert st.awaiting is None and "finalise" in st.done
        assert any("rejected" in m for m in st.messages), st.messages
        bundle = st.bundle
    finally:
        s.close()
    assert [v for v, state in h.roots() if state == "active"] == [1]
    h.verify(bundle)
    assert _store_handles(h.root) == []  # closing the session closed the deployment
    s.close()  # twice is fine


def test_the_session_and_the_runner_share_one_checker(generated: H, tmp_path: Path) -> None:
    """The session's live check of a complete share with its envelope ends in the
    runner's own verdict (CeremonyRunner.check_share): same custodian, same acceptance."""
    from ceremonies.runner import ShareInput

    h = _copy(generated, tmp_path)
    s = h.session()
    try:
        st = s.start("drill", h.signer("admin"), {})
        assert st.awaiting == "shares" and st.share_set is not None
        assert isinstance(st.share_set, ShareSet) and st.share_set.epoch == 0  # the first set
        runner = s.runner
        assert runner is not None
        for who, env_of in (("alice", "alice"), ("bob", "dave")):
            live = s.check(who, h.share(who), h.envelope(env_of))
            ref = runner.check_share(
                ShareInput(source=who, text=h.share(who), envelope=h.envelope(env_of))
            )
            assert (live.status == "ok") == ref.ok, (live, ref)
            assert live.custodian == ref.custodian
        # the pure check agrees with the session's (same set, same function)
        assert check_typed("a", h.share("alice"), h.envelope("alice"), st.share_set) == s.check(
            "a", h.share("alice"), h.envelope("alice")
        )
        st = s.abort("test over")
        assert st.status == "aborted"
    finally:
        s.close()


def test_rotate_root_with_approvals_signed_in_the_session(generated: H, tmp_path: Path) -> None:
    h = _copy(generated, tmp_path)
    before = max(v for v, _s in h.roots())
    s = h.session()
    try:
        st = s.start("rotate-root", h.signer("admin"), {})
        assert st.awaiting == "approvals" and st.step == "approve"
        assert st.approvals_needed == 3 and st.request and st.request["action"] == "rotate-root"
        with pytest.raises(UsageError, match="not waiting for shares"):
            s.hand_in("alice", h.share("alice"), h.envelope("alice"))
        st = s.sign_approval(h.signer("alice"))
        assert [a.approver for a in st.approvals] == ["alice"] and st.status == "awaiting-input"
        st = s.sign_approval(h.signer("alice"))  # again: one approval per approver
        assert [a.approver for a in st.approvals] == ["alice"]
        s.sign_approval(h.signer("bob"))
        st = s.sign_approval(h.signer("dave"))  # the quorum: handed in, the step goes on
        assert st.status == "closed", st
        assert dict(st.facts)["approved_by"] == ["alice", "bob", "dave"]
        bundle = st.bundle
    finally:
        s.close()
    assert max(v for v, _s in h.roots()) == before + 1
    h.verify(bundle)


def test_recover_resumed_in_a_new_session(generated: H, tmp_path: Path) -> None:
    h = _copy(generated, tmp_path)
    lose_token(h)  # type: ignore[arg-type]
    s = h.session()
    try:
        st = s.start("recover", h.signer("admin"), {})
        cid = st.ceremony_id
        s.hand_in("alice", h.share("alice"), h.envelope("alice"))
    finally:
        s.close()  # the typed share was never handed to the runner: it is gone
    s2 = h.session()
    try:
        assert cid in [r["id"] for r in s2.open_ceremonies()]
        st = s2.resume(cid, h.signer("admin"))
        assert st.ceremony_id == cid and st.awaiting == "shares" and st.checks == ()
        for n in ("bob", "carol"):
            st = s2.hand_in(n, h.share(n), h.envelope(n))
        assert st.status == "awaiting-input"  # two of three
        st = s2.hand_in("erin", h.share("erin"), h.envelope("erin"))
        assert st.status == "closed", st
        bundle = st.bundle
    finally:
        s2.close()
    h.verify(bundle)


def test_no_pin_is_a_typed_error_and_nothing_is_opened(base: H, tmp_path: Path) -> None:
    h = _copy(base, tmp_path)
    closed: list[str] = []

    class Signer:  # stands for a token-held key: the session must close it
        def __init__(self) -> None:
            self.inner = h.signer("admin")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def close(self) -> None:
            closed.append("admin")

    def listed() -> list[Any]:
        rows = json.loads(run_cli("ceremony", "list", "--home", str(h.root), "--json").stdout)
        return [(r["id"], r["state"], r["updated"]) for r in rows]  # not the age: it runs

    before = listed()
    s = h.session(pin=None)
    with pytest.raises(UsageError, match="token PIN is needed"):
        s.start("generate", Signer(), {"custodians": list(CUST), "out": str(h.root / "s")})
    assert closed == ["admin"] and s.state() is None
    assert _store_handles(h.root) == []
    with pytest.raises(UsageError, match="No ceremony is open"):
        s.submit()
    assert listed() == before  # no ceremony was opened


def test_cli_interactive_hand_in_goes_through_the_session(generated: H, tmp_path: Path) -> None:
    """``custody ceremony drill`` at a terminal, with no share files: the custodians give
    their share files one by one; each is checked by the session as it is given (a share
    under another custodian's envelope is refused by name) and the drill runs at the
    quorum."""
    import subprocess
    import sys

    from tests.conftest import ROOT, cli_env

    h = _copy(generated, tmp_path)
    sh = h.root / "shares"
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "bob.share.txt").write_text(h.share("bob"))
    (mixed / "bob.envelope.json").write_bytes(h.envelope("carol"))
    answers = [mixed / "bob.share.txt", *(sh / f"{n}.share.txt" for n in ("alice", "bob", "dave"))]
    master, slave = os.openpty()
    try:
        os.write(master, "".join(f"{p}\n" for p in answers).encode())
        coord = ["--home", str(h.root), "--key", str(h.people / "admin.key.pem")]
        coord += ["--passphrase-file", str(h.people / "admin.pass"), "--json"]
        p = subprocess.run(
            [sys.executable, "-m", "custody_cli", "ceremony", "drill", *coord],
            stdin=slave,
            capture_output=True,
            text=True,
            env=cli_env(),
            cwd=ROOT,
            timeout=120,
            check=False,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [x.strip() for x in p.stderr.splitlines()]
    assert any(x.startswith("carol") and "rejected" in x for x in lines), p.stderr
    assert "alice (group 1, member 1): ok" in lines, p.stderr
    out = json.loads(p.stdout[p.stdout.index("{") :])
    assert out["status"] == "closed" and out["kind"] == "drill", out
    h.verify(out["bundle"])
