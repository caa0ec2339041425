"""``custody agent`` against a real ``custody serve`` on 127.0.0.1 (real certificates): files
written 0600 and atomically, rotations picked up and acknowledged, a planted symlink or an
open directory refused, the token never in argv or the logs, a typed error on bad config."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from custody_client import CustodyClient
from custody_client.agent import (
    Agent,
    AgentConfigError,
    Ref,
    UnsafeTarget,
    build_parser,
    load_config,
    main,
    read_pid_file,
    write_atomic,
)
from tests.conftest import cli_env
from tests.server_fixtures import Server, audit_entries, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-agent")]
PEOPLE = {
    "ag-admin": ("service-admin", ("payments",)),
    "ag-svc": ("service-admin", ("payments",)),  # the service's own identity
    "ag-other": ("service-admin", ("billing",)),
}
VALUE = "Agent-Canary-7q!Wx3#Lm8@Zt5$Rb"
PATH = "payments/agentdb"


ENV_DUMP = (
    "import os, sys; f = open(sys.argv[1], 'a'); f.write(' '.join(sorted(os.environ)) + '\\n')"
)


def value_of(n: int) -> str:
    return f"Agent-Rotated-{n:02d}-Kx9#Qv2@Tn6$"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("agent")
    home, pins, tokens, env = server_home(root, PEOPLE)
    pki = make_pki(root / "pki")
    s = Server(home, pins, pki, env=env)
    s.tokens = tokens
    with admin(s) as c:
        for p, v in ((PATH, VALUE), ("payments/agentcfg", "cfg-" + VALUE),
                     ("payments/agentreload", "r-" + VALUE),
                     ("payments/agentflaky", "f-" + VALUE)):  # fmt: skip
            c._once("POST", f"/v1/prod/data/{p}", json={"data": {"value": v}})
    yield s
    s.stop()


def admin(s) -> CustodyClient:
    return CustodyClient(s.url, token=s.tokens["ag-admin"], ca=str(s.pki.ca))


def private_dir(tmp_path: Path, name: str = "run") -> Path:
    d = tmp_path / name
    d.mkdir(mode=0o700)
    d.chmod(0o700)
    return d


def token_file(tmp_path: Path, token: str, mode: int = 0o600) -> Path:
    p = tmp_path / "svc.token"
    p.write_text(token + "\n")
    p.chmod(mode)
    return p


def agent_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "custody_cli", "agent", *args]


def test_once_writes_0600_files_and_acknowledges(srv, tmp_path):
    run = private_dir(tmp_path)
    tmpl = tmp_path / "app.conf.tmpl"
    tmpl.write_text("[db]\npassword = custody://prod/payments/agentdb\n")
    tok = token_file(tmp_path, srv.tokens["ag-svc"])
    r = subprocess.run(
        agent_cmd("--once", "--json", "--url", srv.url, "--ca", str(srv.pki.ca),
                  "--token-file", str(tok),
                  "--secret", f"custody://prod/{PATH}={run}/db_password",
                  "--template", f"{tmpl}={run}/app.conf"),
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["versions"] == {f"prod:{PATH}": 1}
    assert out["acknowledged"] == {f"prod:{PATH}": 1}
    db, conf = run / "db_password", run / "app.conf"
    assert db.read_text() == VALUE
    assert conf.read_text() == f"[db]\npassword = {VALUE}\n"
    for f in (db, conf):
        assert f.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in run.iterdir()) == ["app.conf", "db_password"]  # no temp left
    assert r.stderr.count('"msg": "wrote"') == 2
    for text in (r.stdout, r.stderr, srv.output()):
        assert VALUE not in text and srv.tokens["ag-svc"] not in text
    inodes = (db.stat().st_ino, conf.stat().st_ino)
    again = subprocess.run(r.args, capture_output=True, text=True, env=cli_env(), timeout=60)
    assert again.returncode == 0, again.stderr
    assert '"msg": "wrote"' not in again.stderr  # same versions: nothing rewritten (cron)
    assert (db.stat().st_ino, conf.stat().st_ino) == inodes
    with admin(srv) as c:
        assert c.consumers("prod", PATH)["consumers"]["ag-svc"] == 1
    acks = [e for e in audit_entries(srv.home) if e["op"] == "secret ack"]
    assert any(e["actor"] == "ag-svc" and e["outcome"] == "ok" for e in acks)
    assert VALUE not in json.dumps(acks)


def test_a_symlink_planted_at_the_target_is_refused(srv, tmp_path):
    run = private_dir(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (run / "db_password").symlink_to(victim)
    tok = token_file(tmp_path, srv.tokens["ag-svc"])
    r = subprocess.run(
        agent_cmd("--once", "--url", srv.url, "--ca", str(srv.pki.ca), "--token-file",
                  str(tok), "--secret", f"custody://prod/{PATH}={run}/db_password"),
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert r.returncode == 6, r.stderr
    assert "is a symlink" in r.stderr
    assert victim.read_text() == "precious"
    assert (run / "db_password").is_symlink()
    assert VALUE not in r.stderr + r.stdout


def _agent(srv, tmp_path, target: Path) -> Agent:
    args = build_parser().parse_args(
        ["--url", srv.url, "--ca", str(srv.pki.ca), "--secret", f"custody://prod/{PATH}={target}"]
    )
    cfg = load_config(args, {"CUSTODY_TOKEN": srv.tokens["ag-svc"]})
    return Agent(cfg, log=lambda *a, **k: None)


def test_an_open_directory_or_a_non_file_target_is_refused_before_any_read(srv, tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    a = _agent(srv, tmp_path, open_dir / "db")
    with pytest.raises(UnsafeTarget, match="Others may write"):
        a.render(force=True)
    a.close()
    assert list(open_dir.iterdir()) == []
    run = private_dir(tmp_path)
    (run / "db").mkdir()
    a = _agent(srv, tmp_path, run / "db")
    with pytest.raises(UnsafeTarget, match="not a regular file"):
        a.render(force=True)
    a.close()
    # the dir itself a symlink to a private dir: refused as well (it could be re-pointed)
    (tmp_path / "link").symlink_to(private_dir(tmp_path, "real"))
    with pytest.raises(UnsafeTarget, match=r"directory .* is a symlink"):
        write_atomic(tmp_path / "link" / "db", "x")
    assert list((tmp_path / "real").iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--secret", "custody://prod/payments/agentdb=OUT"], "No credential"),
        (["--token-file", "TOKEN644", "--secret", "custody://prod/x=OUT"], "readable by others"),
        (["--token-file", "TOKEN", "--secret", "prod/payments/agentdb=OUT"], "Not a secret ref"),
        (["--token-file", "TOKEN"], "Nothing to render"),
        (["--token-file", "TOKEN", "--secret", "custody://prod/x=OUT", "--signal", "HUP"],
         "needs pid"),
        (["--token-file", "TOKEN", "--secret", "custody://prod/x=OUT", "--poll", "0"], "poll"),
        (["--config", "BADCONF"], "unknown keys"),
    ],
)  # fmt: skip
def test_bad_config_is_a_typed_error_and_nothing_is_written(tmp_path, capsys, argv, needle):
    run = private_dir(tmp_path)
    tok = token_file(tmp_path, "t" * 43)
    tok644 = tmp_path / "t644"
    tok644.write_text("t" * 43)
    tok644.chmod(0o644)
    conf = tmp_path / "agent.toml"
    conf.write_text('url = "https://127.0.0.1:1"\ntoken = "inline-tokens-are-refused"\n')
    subst = {"OUT": str(run / "out"), "TOKEN": str(tok), "TOKEN644": str(tok644),
             "BADCONF": str(conf)}  # fmt: skip
    full = ["--url", "https://127.0.0.1:1", *[_sub(a, subst) for a in argv], "--once"]
    env_token = os.environ.pop("CUSTODY_TOKEN", None)
    try:
        with pytest.raises(AgentConfigError, match=needle):
            load_config(build_parser().parse_args(full), {})
        rc = main(full)
    finally:
        if env_token is not None:
            os.environ["CUSTODY_TOKEN"] = env_token
    assert rc == 3
    assert needle in capsys.readouterr().err
    assert list(run.iterdir()) == []


def _sub(arg: str, subst: dict[str, str]) -> str:
    for k in sorted(subst, key=len, reverse=True):
        if arg == k or arg.endswith("=" + k):
            return arg[: len(arg) - len(k)] + subst[k]
    return arg


def test_poll_mode_follows_rotations_atomically_acks_and_signals(srv, tmp_path):
    run = private_dir(tmp_path)
    target = run / "cfg"
    conf = tmp_path / "agent.toml"
    envs = tmp_path / "reload-envs"
    conf.write_text(
        f'url = "{srv.url}"\nca = "{srv.pki.ca}"\npoll = 0.3\n'
        f'[[secret]]\nref = "custody://prod/payments/agentcfg"\nout = "{target}"\n'
        f'[reload]\nsignal = "HUP"\npid = {os.getpid()}\n'
        f"command = [{json.dumps(sys.executable)}, '-c', {json.dumps(ENV_DUMP)}, '{envs}']\n"
    )
    hups: list[float] = []
    old = signal.signal(signal.SIGHUP, lambda *_: hups.append(time.time()))
    token = srv.tokens["ag-svc"]
    log = tmp_path / "agent.log"
    valid = {"cfg-" + VALUE} | {value_of(n) for n in range(1, 4)}
    seen: list[tuple[int, str]] = []
    bad: list[str] = []
    stop = threading.Event()

    def reader() -> None:  # a service reading its config file all the time
        while not stop.is_set():
            try:
                with target.open() as f:
                    st, text = os.fstat(f.fileno()), f.read()
            except FileNotFoundError:
                continue
            if text not in valid:
                bad.append(text[:80])
            if not seen or seen[-1] != (st.st_ino, text):
                seen.append((st.st_ino, text))

    with log.open("wb") as lf:
        proc = subprocess.Popen(
            agent_cmd("--config", str(conf)), stdout=lf, stderr=subprocess.STDOUT,
            env={**cli_env(), "CUSTODY_TOKEN": token},
        )  # fmt: skip
    t = threading.Thread(target=reader, daemon=True)
    try:
        _wait(lambda: target.exists() and target.read_text() == "cfg-" + VALUE, proc, log)
        t.start()
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"custody_client.agent" in cmdline  # custody agent handed over to it
        assert token.encode() not in cmdline
        with admin(srv) as c:
            for n in range(1, 4):
                c.rotate("prod", "payments/agentcfg", value=value_of(n), overlap_seconds=600)
                _wait(lambda n=n: target.read_text() == value_of(n), proc, log)
                _wait(lambda n=n: c.consumers("prod", "payments/agentcfg")["consumers"]
                      .get("ag-svc") == 1 + n, proc, log)  # fmt: skip
                # every consumer acknowledged current: previous is revoked at once
                assert c.metadata("prod", "payments/agentcfg")["labels"]["previous"] is None
            time.sleep(1.0)  # a few idle polls: nothing is rewritten
            ino = target.stat().st_ino
            time.sleep(1.0)
            assert target.stat().st_ino == ino
    finally:
        stop.set()
        proc.terminate()
        rc = proc.wait(timeout=20)
        signal.signal(signal.SIGHUP, old)
    assert rc == 0
    assert bad == []  # a reader never saw a partial or foreign file
    texts = [x for _i, x in seen]
    assert texts == ["cfg-" + VALUE, value_of(1), value_of(2), value_of(3)]
    # each version arrived as another inode (renamed in whole over the old one; a freed
    # inode number may come back later, so only neighbours are compared)
    assert all(a[0] != b[0] for a, b in itertools.pairwise(seen))
    assert target.stat().st_mode & 0o777 == 0o600
    assert len(hups) >= 4  # the first render and each rotation
    runs = envs.read_text().splitlines()
    assert len(runs) == 4  # the reload command ran after each write
    assert all("PATH" in r.split() and "CUSTODY_TOKEN" not in r for r in runs)  # no token
    out = log.read_text()
    assert out.count('"msg": "wrote"') == 4
    assert token not in out and all(v not in out for v in valid)
    assert token not in srv.output()


def _wait(cond, proc, log, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the agent exited: {log.read_text()}")
        try:
            if cond():
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out: {log.read_text()}")


def test_another_service_may_not_render_our_secret(srv, tmp_path):
    """An insider with a valid token for billing points an agent at payments' secret."""
    run = private_dir(tmp_path)
    tok = token_file(tmp_path, srv.tokens["ag-other"])
    r = subprocess.run(
        agent_cmd("--once", "--url", srv.url, "--ca", str(srv.pki.ca), "--token-file",
                  str(tok), "--secret", f"custody://prod/{PATH}={run}/stolen"),
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert r.returncode == 7, r.stderr
    assert "may not read" in r.stderr
    assert list(run.iterdir()) == []
    assert VALUE not in r.stdout + r.stderr
    denied = [e for e in audit_entries(srv.home)
              if e["actor"] == "ag-other" and e["outcome"] == "denied"]  # fmt: skip
    assert denied


def test_mutual_tls_and_no_ack_when_the_reload_fails(srv, tmp_path):
    run = private_dir(tmp_path)
    crt, key = srv.pki.client("ag-svc")  # a service with a client certificate
    target = run / "reload"
    args = build_parser().parse_args(
        ["--url", srv.url, "--ca", str(srv.pki.ca), "--cert", crt, "--key", key,
         "--secret", f"custody://prod/payments/agentreload={target}",
         "--reload-command", f"{sys.executable} -c 'raise SystemExit(3)'"]
    )  # fmt: skip
    cfg = load_config(args, {})
    assert cfg.token is None and cfg.cert == (crt, key)
    lines: list[tuple[str, dict]] = []
    a = Agent(cfg, log=lambda msg, **kw: lines.append((msg, kw)))
    try:
        assert a.render(force=True) == [str(target)]
        assert target.read_text() == "r-" + VALUE
        assert a.served and a.acked == {}  # the service did not take it: not acknowledged
        assert ("reloaded", {"exit": 3}) in lines
        with admin(srv) as c:
            assert c.consumers("prod", "payments/agentreload")["consumers"].get("ag-svc") != 1
        ino = target.stat().st_ino
        assert a.render() == []  # nothing changed: not rewritten
        assert target.stat().st_ino == ino
        assert a.acked == {}  # the reload failed again: still not acknowledged
        a.config = dataclasses.replace(cfg, reload_command=(sys.executable, "-c", "pass"))
        assert a.render() == []  # the reload works now: acknowledged, still not rewritten
        assert a.acked == a.served == {Ref("prod", "payments/agentreload"): 1}
        assert target.stat().st_ino == ino
        with admin(srv) as c:
            assert c.consumers("prod", "payments/agentreload")["consumers"]["ag-svc"] == 1
    finally:
        a.close()
    assert all(VALUE not in repr(kw) for _m, kw in lines)
    assert VALUE not in repr(cfg) and VALUE not in repr(a)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another user")
def test_files_of_another_user_are_refused(tmp_path):
    """Another local user pre-creates the target, owns the directory, or writes the pid file
    (to choose whom the agent signals)."""
    run = private_dir(tmp_path)
    (run / "db").write_text("planted")
    os.chown(run / "db", 12345, 12345)
    with pytest.raises(UnsafeTarget, match="belongs to another user"):
        write_atomic(run / "db", "x")
    assert (run / "db").read_text() == "planted"
    theirs = private_dir(tmp_path, "theirs")
    os.chown(theirs, 12345, 12345)
    with pytest.raises(UnsafeTarget, match="belongs to another user"):
        write_atomic(theirs / "db", "x")
    pid = tmp_path / "app.pid"
    pid.write_text(f"{os.getpid()}\n")
    pid.chmod(0o600)
    assert read_pid_file(pid) == os.getpid()
    pid.chmod(0o666)
    with pytest.raises(UnsafeTarget, match="only its owner may write"):
        read_pid_file(pid)
    pid.chmod(0o644)
    os.chown(pid, 12345, 12345)
    with pytest.raises(UnsafeTarget, match="another user"):
        read_pid_file(pid)


def test_an_unreachable_server_keeps_the_files_and_the_agent_recovers(srv, tmp_path):
    run = private_dir(tmp_path)
    target = run / "flaky"
    args = build_parser().parse_args(
        ["--url", srv.url, "--ca", str(srv.pki.ca), "--poll", "0.2",
         "--secret", f"custody://prod/payments/agentflaky={target}"]
    )  # fmt: skip
    cfg = load_config(args, {"CUSTODY_TOKEN": srv.tokens["ag-svc"]})
    lines: list[str] = []
    a = Agent(cfg, log=lambda msg, **kw: lines.append(msg))
    live = a.client
    a.render(force=True)
    assert target.read_text() == "f-" + VALUE
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    a.client = CustodyClient(f"https://127.0.0.1:{dead_port}", token="x" * 43, retries=1)
    t = threading.Thread(target=a.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while "poll failed" not in lines and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "poll failed" in lines and t.is_alive()  # it keeps going
        assert target.read_text() == "f-" + VALUE  # and the file stays
        with admin(srv) as c:
            c.rotate("prod", "payments/agentflaky", value=value_of(9), overlap_seconds=600)
            a.client.close()
            a.client = live  # the server is back
            while target.read_text() != value_of(9) and time.monotonic() < deadline + 10:
                time.sleep(0.05)
            assert target.read_text() == value_of(9)
    finally:
        a.stop()
        t.join(timeout=10)
        live.close()
    assert not t.is_alive()
    assert a.acked == {Ref("prod", "payments/agentflaky"): 2}
    assert "revoked before the switch" not in lines  # v1 was still previous when it switched
    with admin(srv) as c:  # two rotations with no overlap while the agent is not looking
        for n in (10, 11):
            c.rotate("prod", "payments/agentflaky", value=value_of(n), overlap_seconds=0)
    a = Agent(cfg, log=lambda msg, **kw: lines.append(msg))
    a.served = {Ref("prod", "payments/agentflaky"): 2}
    try:
        a.render()
    finally:
        a.close()
    assert "revoked before the switch" in lines  # v2 is neither current nor previous now
    assert target.read_text() == value_of(11)
