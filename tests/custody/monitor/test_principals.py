"""The monitor sees principals, not the OS user who ran the command.

A real deployment (SoftHSMv2, SQLite) and a real audit log, written the way the CLI writes
it: the command's intent and outcome under the OS user (``ops``), and in between, inside
:func:`custody.audit.log.attempt` as :func:`custody.audit.scope.run_audited` does, the
entries of the real :class:`AccessControl` and :class:`Mfa` (``access authenticate``,
``mfa verify``, ``access decide``). The rules must attribute reads and denials to the
principal (a service by its token, a person by ``--as``), and a fast scripted burst of
guesses (wrong tokens, wrong TOTP codes) must count attempt by attempt.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from custody.access import AccessControl, AccessDenied
from custody.access.mfa import Mfa
from custody.audit.log import AuditLog, attempt
from custody.clock import from_seconds
from custody.deployment import Deployment, open_deployment
from custody.errors import PolicyError
from custody.monitor import Detector, MonitorConfig
from custody.monitor.usage import usage_of
from custody.store.rows import SecretRow
from tests.conftest import TEST_PIN
from tests.rekey_fixtures import cli, make_deployment

# One xdist worker runs the whole module, so its module-scoped deployment is built once,
# not once on each worker.
pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("monitor-principals")]
T0 = 1767571200  # Monday 2026-01-05 00:00 UTC
DAY, HOUR = 86400, 3600
PATHS = [f"billing/app/key{i}" for i in range(12)]
HIGH = "billing/db/password"


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return from_seconds(self.t)


def _secret(path: str, cls: str) -> SecretRow:
    t = "2026-01-01T00:00:00+00:00"
    return SecretRow(env="prod", path=path, category="external-api-key", security_class=cls,
                     owner="billing", state="active", current_version=1, pending_version=None,
                     previous_version=None, next_version=2, expires="2027-01-01T00:00:00+00:00",
                     created=t, updated=t)  # fmt: skip


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    home, pins = make_deployment(tmp_path_factory.mktemp("monp") / "d")
    cli(home, pins, "kek", "rotate", "--branch", "secrets")
    d = open_deployment(home, TEST_PIN)
    with d.store.transaction():
        for p in PATHS:
            d.store.add_secret(_secret(p, "medium"))
        d.store.add_secret(_secret(HIGH, "high"))
    yield d
    d.close()


class World:
    """Access control and MFA over the deployment's store, auditing to a fresh log whose
    clock the test sets; :meth:`cli` writes one command as the CLI does."""

    def __init__(self, dep: Deployment, path: Path) -> None:
        self.clock = Clock()
        self.log = AuditLog(path, durable=False, clock=lambda: self.clock.t)
        self.mfa = Mfa(dep.store, dep.hierarchy, self.log, self.clock)
        self.ac = AccessControl(dep.store, self.log, clock=self.clock, mfa=self.mfa)

    def cli(self, t: int, path: str, body: Callable[[], object], **details: object) -> bool:
        """``custody secret get PATH --env prod`` run by OS user ``ops`` at *t*."""
        self.clock.t = t
        target = f"prod:{path}"
        what = {"env": "prod", "path": path, **details}
        first = self.log.append("secret get", target, "ops", outcome="intent", details=what)
        ref = {"intent_seq": first["seq"]}
        try:
            with attempt(first["seq"]):
                body()
        except PolicyError as err:
            det = {**ref, "error": type(err).__name__, "title": err.title}
            self.log.append("secret get", target, "ops", outcome="denied", details=det)
            return False
        self.log.append("secret get", target, "ops", details={**ref, "exit": 0})
        return True

    def read_with_token(self, token: str, t: int, path: str) -> bool:
        def body() -> None:
            self.ac.authorize(self.ac.authenticate_token(token), "read", "prod", path)

        return self.cli(t, path, body)

    def alerts(self) -> list:
        det = Detector(MonitorConfig())
        return [a for line in self.log.iter_lines() for a in det.feed(json.loads(line))]


@pytest.fixture
def world(dep: Deployment, tmp_path: Path) -> Iterator[World]:
    w = World(dep, tmp_path / "audit.db")
    yield w
    w.log.close()


def _service(w: World, name: str) -> str:
    if w.ac.store.principal(name) is None:
        _p, token = w.ac.add_principal(name, kind="service", role="service-admin",
                                       services=("billing",), by="root")  # fmt: skip
        assert token is not None
        return token
    return w.ac.new_token(name, by="root")


def _history(w: World, token: str, days: int = 14) -> None:
    """Weekday working hours: two reads of two paths an hour, 09:00-17:00."""
    for d in range(days):
        if d % 7 >= 5:
            continue
        for h in range(9, 17):
            for i in (0, 1):
                assert w.read_with_token(token, T0 + d * DAY + h * HOUR + 60 * i, PATHS[i])


def test_token_reads_are_the_services_and_every_rule_sees_them(world: World):
    token = _service(world, "svc-a")
    _history(world, token)
    assert world.alerts() == []
    day = T0 + 14 * DAY  # a Monday
    for k in range(60):  # volume: far more than the service's baseline of 16 a day
        world.read_with_token(token, day + 10 * HOUR + k * 30, PATHS[k % 2])
    world.read_with_token(token, day + 11 * HOUR, HIGH)  # first-high
    for i, p in enumerate(PATHS[2:]):  # enumeration: ten paths it never read, in minutes
        world.read_with_token(token, day + 12 * HOUR + i * 20, p)
    world.read_with_token(token, day + 5 * DAY + 3 * HOUR, PATHS[0])  # Saturday 03:00
    got = {a.kind: a for a in world.alerts()}
    assert {"volume", "first-high", "enumeration", "off-hours"} <= set(got), got
    assert {a.actor for a in got.values()} == {"svc-a"}  # never the OS user "ops"
    # the evidence is the command's entries and the decision that named the service
    entries = {json.loads(x)["seq"]: json.loads(x) for x in world.log.lines()}
    behind = [entries[s] for s in got["first-high"].seqs]
    assert [(e["op"], e["actor"], e["outcome"]) for e in behind] == [
        ("secret get", "ops", "intent"),
        ("access decide", "svc-a", "ok"),
        ("secret get", "ops", "ok"),
    ]
    assert behind[1]["details"]["attempt"] == behind[0]["seq"]


def test_as_principal_and_a_decision_without_the_link_are_attributed(world: World):
    """A log written before the link existed: the decision on the same target a moment
    after the intent names the actor; then (the log now carries links) ``--as NAME``
    (as_principal in the intent)."""
    _service(world, "svc-b")
    who = world.ac.principal("svc-b")
    for i in range(4):
        world.clock.t = T0 + i
        first = world.log.append("secret get", "prod:billing/x", "ops", outcome="intent",
                                 details={"env": "prod", "path": "billing/x"})  # fmt: skip
        world.log.append("access decide", "prod:billing/x", "svc-b", outcome="denied",
                         details={"action": "read", "reason": "no such secret"})  # fmt: skip
        world.log.append("secret get", "prod:billing/x", "ops", outcome="denied",
                         details={"intent_seq": first["seq"], "error": "AccessDenied"})  # fmt: skip
    world.cli(T0 + 4, "billing/y",
              lambda: world.ac.refuse(who, "read", "prod", "billing/y", "x"),
              as_principal="svc-b")  # fmt: skip
    [a] = [a for a in world.alerts() if a.kind == "failed-burst"]
    assert a.actor == "svc-b" and a.facts["count"] == 5 and len(a.seqs) == 5 * 3


def test_a_fast_burst_of_wrong_tokens_is_ten_attempts(world: World):
    good = _service(world, "svc-c")
    prefix, tid, _secret = good.split("_", 2)
    for _ in range(10):  # one second, the same target: a script guessing the token
        guess = f"{prefix}_{tid}_{base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip('=')}"
        assert not world.read_with_token(guess, T0 + 100, PATHS[0])
    got = [a for a in world.alerts() if a.kind == "failed-burst"]
    assert [(a.actor, a.facts["count"]) for a in got] == [("svc-c", 5), ("svc-c", 5)]
    ops = {json.loads(world.log.lines(s, s + 1)[0])["op"] for a in got for s in a.seqs}
    assert ops == {"secret get", "access authenticate"}


def test_a_fast_burst_of_wrong_totp_codes_raises_the_alert(world: World):
    _service(world, "svc-d")
    if not world.mfa.enrolled("svc-d"):
        world.mfa.enrol("svc-d")
    world.clock.t = T0 + 200
    for i in range(10):  # 'custody mfa verify svc-d' ten times in a second (no link)
        with pytest.raises(PolicyError):
            world.mfa.verify("svc-d", f"{i:06d}" if i else "abcdef")
    got = [a for a in world.alerts() if a.kind == "failed-burst"]
    assert [(a.actor, a.facts["count"]) for a in got] == [("svc-d", 5), ("svc-d", 5)]


def test_a_server_denial_beside_another_actors_command_is_its_own_attempt(world: World):
    """The server (or a library caller: the TUI) asks access control with no audited
    command around it, so its ``access decide`` carries no link. Written while another
    actor's audited command on the same target is pending, it must not be folded into
    that command (hiding the refusal and naming the wrong principal): the insider who
    times their guesses to an operator's reads still raises failed-burst, even in a fresh
    log whose first entries are these."""
    good = _service(world, "svc-f")  # reads billing/app/key0 through the CLI with its token
    if world.ac.store.principal("svc-e") is None:
        world.ac.add_principal("svc-e", kind="service", role="service-user",
                               services=("payments",), by="root")  # fmt: skip
    intruder = world.ac.principal("svc-e")  # not a member of billing: every read refused
    target = f"prod:{PATHS[0]}"
    server: list[int] = []
    for i in range(5):
        world.clock.t = T0 + 300 + i
        first = world.log.append("secret get", target, "ops", outcome="intent",
                                 details={"env": "prod", "path": PATHS[0]})  # fmt: skip
        with pytest.raises(AccessDenied):  # the server, meanwhile, outside any command
            world.ac.authorize(intruder, "read", "prod", PATHS[0])
        server.append(len(world.log.lines()) - 1)
        with attempt(first["seq"]):
            world.ac.authorize(world.ac.authenticate_token(good), "read", "prod", PATHS[0])
        world.log.append("secret get", target, "ops",
                         details={"intent_seq": first["seq"], "exit": 0})  # fmt: skip
    entries = [json.loads(x) for x in world.log.lines()]
    assert [(entries[s]["op"], entries[s]["actor"], entries[s]["outcome"]) for s in server] == [
        ("access decide", "svc-e", "denied")
    ] * 5
    assert all("attempt" not in entries[s]["details"] for s in server)
    [a] = [a for a in world.alerts() if a.kind == "failed-burst"]
    assert a.actor == "svc-e" and a.facts["count"] == 5 and sorted(a.seqs) == server
    # the operator's commands stay the service's reads, without the intruder's entries
    det = Detector(MonitorConfig())
    events = [ev for e in entries for ev in det.joiner.feed(e)]
    reads = [ev for ev in events if ev.op == "secret get"]
    assert [(ev.actor, ev.outcome, len(ev.seqs)) for ev in reads] == [("svc-f", "ok", 3)] * 5
    assert not {s for ev in reads for s in ev.seqs} & set(server)
    # and the services screen's fold counts the refusals as the intruder's
    use = usage_of(entries, {"svc-e", "svc-f"})
    assert (use["svc-e"].refused, use["svc-e"].reads) == (5, 0)
    assert (use["svc-f"].refused, use["svc-f"].reads) == (0, 5)
