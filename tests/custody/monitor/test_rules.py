"""Each monitoring rule fires on a crafted real audit log, and not on normal traffic.

Four weeks of normal traffic (a service around the clock, two people on weekdays, a
daily typo) are written once into a real :class:`AuditLog`; each test copies it, adds
one anomaly, and runs the detector over the whole log as a scan would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from custody.audit.log import attempt
from custody.errors import ConfigError
from custody.monitor import Detector, MonitorConfig, parse_config
from custody.monitor.kinds import hour_of_week
from tests.custody.monitor.traffic import CLASSES, DAY, HOUR, T0, Traffic, baseline, copy_log

D = 28  # the first day after the baseline (a Monday)
MON = T0 + D * DAY


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return baseline(tmp_path_factory.mktemp("base") / "audit.db")


@pytest.fixture
def tr(base: Path, tmp_path: Path):
    log = copy_log(base, tmp_path / "log")
    yield Traffic(log)
    log.close()


def run(log, config: MonitorConfig | None = None, **kw):
    det = Detector(config or MonitorConfig(), classes=CLASSES, **kw)
    return [a for line in log.iter_lines() for a in det.feed(json.loads(line))]


def fired(tr, kind: str, config: MonitorConfig | None = None):
    return [a for a in run(tr.log, config) if a.kind == kind]


def entries(log, seqs):
    return [json.loads(log.lines(s, s + 1)[0]) for s in seqs]


def test_normal_traffic_raises_nothing(tr):
    normal_week_after = run(tr.log)
    assert normal_week_after == []
    assert hour_of_week(T0) == 0 and hour_of_week(T0 + 6 * DAY + 23 * HOUR) == 167


def test_failed_burst(tr):
    burst = [
        s
        for i in range(6)
        for s in tr.read("bob", f"prod:x/{i}", MON + 11 * HOUR + i * 20, outcome="denied")
    ]
    [a] = fired(tr, "failed-burst")
    assert a.actor == "bob" and set(a.seqs) <= set(burst) and len(a.seqs) >= 10
    assert all(e["actor"] == "bob" and e["op"] == "secret get" for e in entries(tr.log, a.seqs))


def test_failures_spread_out_are_not_a_burst(tr):
    for i in range(6):
        tr.read("bob", f"prod:x/{i}", MON + 11 * HOUR + i * 600, outcome="denied")
    assert fired(tr, "failed-burst") == []


def test_volume_far_above_the_baseline(tr):
    for i in range(60):
        tr.read("alice", "prod:web/session", MON + 10 * HOUR + i * 60)
    [a] = fired(tr, "volume")
    assert a.actor == "alice" and a.facts["reads"] > a.facts["threshold"]
    assert {e["actor"] for e in entries(tr.log, a.seqs)} == {"alice"}


def test_a_busy_but_ordinary_day_is_not_volume(tr):
    for i in range(12):  # 8 a day is her median; 12 is a busy day, not an exfiltration
        tr.read("alice", "prod:web/session", MON + 10 * HOUR + i * 60)
    assert fired(tr, "volume") == []


def test_off_hours_for_a_person_not_for_a_service(tr):
    sat_3am = T0 + (D + 5) * DAY + 3 * HOUR
    seqs = tr.read("alice", "prod:web/session", sat_3am)
    tr.read("billing-svc", "prod:billing/db", sat_3am + 60)  # its usual hour
    [a] = fired(tr, "off-hours")
    assert a.actor == "alice" and a.seqs == tuple(seqs)
    assert a.facts["hour_of_week"] == 5 * 24 + 3


def test_an_hour_after_work_is_not_off_hours(tr):
    tr.read("alice", "prod:web/session", MON + 17 * HOUR + 300)  # next to her 16:00 hour
    assert fired(tr, "off-hours") == []


def test_enumeration_by_new_paths_and_by_listing(tr):
    new = [s for i in range(9) for s in tr.read("alice", f"prod:team{i}/key", MON + 11 * HOUR + i)]
    lists = [s for i in range(4) for s in tr.op("secret list", "bob", "prod:", MON + 14 * HOUR + i)]
    got = fired(tr, "enumeration")
    assert {(a.actor, a.facts.get("paths"), a.facts.get("lists")) for a in got} == {
        ("alice", 8, None),
        ("bob", None, 4),
    }
    by = {a.actor: a for a in got}
    assert set(by["alice"].seqs) <= set(new) and set(by["bob"].seqs) <= set(lists)


def test_rereading_known_paths_is_not_enumeration(tr):
    for i in range(30):
        tr.read("alice", ("prod:web/session", "prod:web/api-key")[i % 2], MON + 11 * HOUR + i)
    assert fired(tr, "enumeration") == []


def test_first_access_to_a_high_class_secret(tr):
    seqs = tr.read("alice", "prod:payroll/db", MON + 11 * HOUR)
    tr.read("alice", "prod:payroll/db", MON + 12 * HOUR)  # the second read: no new alert
    tr.read("alice", "prod:team/notes", MON + 13 * HOUR)  # unknown class: not high
    [a] = fired(tr, "first-high")
    assert a.actor == "alice" and a.target == "prod:payroll/db" and a.seqs == tuple(seqs)


def test_reads_of_a_rotated_out_version(tr):
    by_label = tr.read("billing-svc", "prod:billing/db", MON + 100, label="previous")
    by_state = tr.read("alice", "prod:web/session", MON + 10 * HOUR, version_state="revoked")
    tr.read("billing-svc", "prod:billing/db", MON + 200, label="current")
    got = fired(tr, "old-version")
    assert sorted(a.seqs for a in got) == sorted([tuple(by_label), tuple(by_state)])


def test_a_version_below_the_current_one(tr):
    seqs = tr.read("alice", "prod:web/session", MON + 10 * HOUR, version=2)
    [a] = [a for a in run(tr.log, versions={"prod:web/session": 3}) if a.kind == "old-version"]
    assert a.seqs == tuple(seqs) and "version 2" in a.summary
    assert [
        a for a in run(tr.log, versions={"prod:web/session": 2}) if a.kind == "old-version"
    ] == []


def test_use_of_a_revoked_token_or_an_expired_grant(tr):
    a1 = tr.read("ci-svc", "prod:billing/db", MON + 50, outcome="denied", reason="token revoked")
    tr.read("ci-svc", "prod:billing/db", MON + 60, outcome="denied", reason="token revoked")
    a2 = tr.read(
        "alice", "prod:web/session", MON + 9 * HOUR, outcome="denied", reason="grant expired"
    )
    got = fired(tr, "revoked-credential")
    # the second use inside the cooldown is folded into the first alert's window
    assert sorted(a.seqs for a in got) == sorted([tuple(a1), tuple(a2)])


def test_any_read_during_a_soft_delete_window(tr):
    tr.op("secret delete", "admin", "prod:web/session", MON + 8 * HOUR)
    win = tr.read(
        "alice",
        "prod:web/session",
        MON + 10 * HOUR,
        outcome="denied",
        notice={"kind": "read-during-recovery-window", "env": "prod", "path": "web/session"},
    )
    tr.op("secret restore", "admin", "prod:web/session", MON + 11 * HOUR)
    tr.read("alice", "prod:web/session", MON + 12 * HOUR)  # restored: an ordinary read
    tr.op("secret delete", "admin", "prod:web/api-key", MON + 13 * HOUR)
    tr.op("secret put", "admin", "prod:web/api-key", MON + 14 * HOUR)  # written anew
    tr.read("alice", "prod:web/api-key", MON + 15 * HOUR)
    [a] = fired(tr, "soft-delete-read")
    assert a.seqs == tuple(win)  # the intent, the vault's own notice, the denial
    assert [e["op"] for e in entries(tr.log, a.seqs)] == [
        "secret get",
        "secret alert",
        "secret get",
    ]


def test_rules_are_data_thresholds_exemptions_and_extra_rules(tr):
    for i in range(3):
        tr.read("bob", f"prod:x/{i}", MON + 11 * HOUR + i, outcome="denied")
    assert fired(tr, "failed-burst") == []
    cfg = parse_config(
        {
            "rules": {
                "failed-burst": {"threshold": 3},
                "strict-burst": {"kind": "failed-burst", "threshold": 2, "exempt": ["bob"]},
                "off-hours": {"enabled": False},
            }
        }
    )
    assert [a.rule for a in fired(tr, "failed-burst", cfg)] == ["failed-burst"]
    exempt = parse_config({"rules": {"failed-burst": {"exempt": ["bob"], "threshold": 3}}})
    assert fired(tr, "failed-burst", exempt) == []


def test_deviations_from_the_defaults_are_listed():
    assert MonitorConfig().deviations() == {}
    cfg = parse_config(
        {
            "learn_days": 365,
            "rules": {
                "volume": {"ratio": 50},
                "extra": {"kind": "failed-burst", "threshold": 2},
            },
        }
    )
    dev = cfg.deviations()
    assert dev["learn_days"] == 365 and dev["rules.volume.ratio"] == 50.0
    assert dev["rules.extra"]["threshold"] == 2 and len(dev) == 3


@pytest.mark.parametrize(
    "table",
    [
        {"rules": {"nope": {"threshold": 1}}},
        {"rules": {"x": {"kind": "telepathy"}}},
        {"rules": {"failed-burst": {"threshold": "five"}}},
        {"rules": {"failed-burst": {"windw": 10}}},
        {"rules": {"volume": {"ratio": -1}}},
        {"ops": {"read": "secret get"}},
        {"learn_days": -3},
    ],
)
def test_a_bad_rule_table_is_a_config_error(table):
    with pytest.raises(ConfigError):
        parse_config(table)


def test_one_attempt_refused_by_the_access_layer_and_the_op_counts_once(tr):
    t = MON + 11 * HOUR
    for i in range(4):  # four attempts, each denied twice: below the threshold of five
        first = tr.log.append("secret get", f"prod:x/{i}", "bob", outcome="intent",
                              details={"path": f"x/{i}"}, now=t + i * 10)  # fmt: skip
        with attempt(first["seq"]):  # as custody.audit.scope.run_audited runs the command
            tr.log.append("access decide", f"prod:x/{i}", "bob", outcome="denied",
                          details={"reason": "outside bob's services"}, now=t + i * 10)  # fmt: skip
        tr.log.append("secret get", f"prod:x/{i}", "bob", outcome="denied",
                      details={"intent_seq": first["seq"]}, now=t + i * 10)  # fmt: skip
    assert fired(tr, "failed-burst") == []
    tr.read("bob", "prod:x/9", t + 60, outcome="denied")
    [a] = fired(tr, "failed-burst")
    assert a.facts["count"] == 5 and len(a.seqs) == 4 * 3 + 2


def test_a_read_killed_before_its_outcome_still_counts(tr):
    """The reader kills the command once the value is printed, before 'ok' is written."""
    t = MON + 11 * HOUR
    intent = tr.log.append(
        "secret get", "prod:payroll/db", "alice", outcome="intent",
        details={"env": "prod", "path": "payroll/db"}, now=t,
    )  # fmt: skip
    assert fired(tr, "first-high") == []  # no later entry yet: it may still finish
    tr.read("billing-svc", "prod:billing/db", t + 700)  # the log moves on
    [a] = fired(tr, "first-high")
    assert a.actor == "alice" and a.seqs == (intent["seq"],)
    cfg = parse_config({"unfinished_after": 900})
    assert fired(tr, "first-high", cfg) == []
